"""What the generator's service modules share: the reference data, the keys, the audit chains,
and writing rows to the four databases."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import SQLModel

from services.intake.identity import IdentityVault
from services.routing.rules import Rule
from services.verification.ladder import LadderPolicy
from shared.audit import AuditEntry, entry_digest
from shared.auth import derive_key
from shared.db import UTCDateTime, table_of
from shared.deadlines import DeadlineBook, load_deadlines
from shared.reference import CategoryBook, Organisation, load_categories, load_organisation
from shared.workcalendar import WorkCalendar

SERVICES = ("intake", "routing", "verification", "feedback")
# The alphabet of tracking codes and query secrets (services/intake/identity.py).
CODE_ALPHABET = "23456789ABCDEFGHJKMNPQRSTUVWXYZ"
RULES_FILE = "services/routing/default_rules.json"


def load_rules(path: str) -> list[Rule]:
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    return [
        Rule(
            name=raw["name"],
            priority=raw["priority"],
            case_kinds=tuple(raw["case_kinds"]),
            when=tuple(raw["when"]),
            assign=raw["assign"],
            review=raw.get("review", False),
            description=raw["description"],
            enabled=raw.get("enabled", True),
        )
        for raw in data["rules"]
    ]


@dataclass
class CachedCalendar(WorkCalendar):
    """The working-day calendar with its periods remembered: a deadline depends only on the day it
    starts, and a million matters start on fewer than two thousand days."""

    _periods: dict[tuple[str, date, int], datetime] = field(default_factory=dict)

    def _remembered(
        self, kind: str, start: datetime, count: int, compute: Callable[[], datetime]
    ) -> datetime:
        key = (kind, self.local_date(start), count)
        found = self._periods.get(key)
        if found is None:
            found = self._periods[key] = compute()
        return found

    def add_working_days(self, start: datetime, days: int) -> datetime:
        return self._remembered(
            "w", start, days, lambda: super(CachedCalendar, self).add_working_days(start, days)
        )

    def add_calendar_days(self, start: datetime, days: int) -> datetime:
        return self._remembered(
            "d", start, days, lambda: super(CachedCalendar, self).add_calendar_days(start, days)
        )

    def add_months(self, start: datetime, months: int) -> datetime:
        return self._remembered(
            "m", start, months, lambda: super(CachedCalendar, self).add_months(start, months)
        )


@dataclass
class World:
    """The reference data and keys every service module reads; built once per run."""

    now: datetime
    signing_key: str
    identity_key: str
    seed: int
    organisation: Organisation = field(default_factory=load_organisation)
    categories: CategoryBook = field(default_factory=load_categories)
    calendar: WorkCalendar = field(default_factory=CachedCalendar.load)
    deadlines: DeadlineBook = field(default_factory=load_deadlines)
    rules: list[Rule] = field(default_factory=list)
    vault: IdentityVault | None = None
    _secret_key: bytes = b""
    _query_key: bytes = b""

    def __post_init__(self) -> None:
        import base64

        self.vault = IdentityVault(base64.urlsafe_b64decode(self.identity_key.strip() + "=="))
        self._secret_key = hashlib.sha256(f"scale-data-{self.seed}".encode()).digest()
        self._query_key = derive_key(self.signing_key, "query-secret")

    _policy: LadderPolicy | None = None
    _step_times: dict[tuple[int, str, datetime], datetime] = field(default_factory=dict)

    @property
    def policy(self) -> LadderPolicy:
        if self._policy is None:
            self._policy = LadderPolicy(calendar=self.calendar)
        return self._policy

    def step_time(self, policy: LadderPolicy, step: str, due_at: datetime) -> datetime:
        """``policy.step_time``, remembered: deadlines fall on few distinct moments, and a step
        walks the calendar day by day (sixty working days for feedback's first reminder)."""
        key = (id(policy), step, due_at)
        found = self._step_times.get(key)
        if found is None:
            found = self._step_times[key] = policy.step_time(step, due_at)
        return found

    def query_secret(self, tracking_code: str) -> str:
        """The matter's query secret, derived from the run's seed: any code's secret can be recomputed."""
        digest = hmac.new(self._secret_key, tracking_code.encode(), hashlib.sha256).digest()
        raw = "".join(CODE_ALPHABET[b % len(CODE_ALPHABET)] for b in digest[:10])
        return f"{raw[:5]}-{raw[5:]}"

    def secret_hash(self, tracking_code: str, secret: str) -> str:
        # shared.auth.query_secret_hash with the derived key kept: one HMAC per matter.
        normalised = secret.strip().upper().replace("-", "").replace(" ", "")
        message = f"{tracking_code.strip().upper()}:{normalised}".encode()
        return hmac.new(self._query_key, message, hashlib.sha256).hexdigest()


class AuditChain:
    """One service's audit chain, numbered and hashed here as ``shared.audit`` does at a flush."""

    def __init__(self) -> None:
        self.seq = 0
        self.prev = "0" * 64

    def entry(
        self,
        *,
        case_id: str,
        action: str,
        actor: str,
        at: datetime,
        reason: str | None = None,
        detail: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        self.seq += 1
        text = json.dumps(detail or {}, ensure_ascii=False, sort_keys=True, default=str)
        at = at.astimezone(UTC).replace(microsecond=0)
        digest = entry_digest(
            seq=self.seq,
            prev=self.prev,
            case_id=case_id,
            action=action,
            actor=actor,
            reason=reason,
            detail=text,
            at=at,
        )
        row = {
            "seq": self.seq,
            "case_id": case_id,
            "action": action,
            "actor": actor,
            "reason": reason,
            "detail": text,
            "at": at,
            "prev_hash": self.prev,
            "entry_hash": digest,
        }
        self.prev = digest
        return row


class NullChain(AuditChain):
    """The chain of a database this process does not write: nothing is numbered or hashed."""

    def entry(self, **_: Any) -> dict[str, Any]:
        return {}


class Rows:
    """A batch's rows for one database, by model, with the ids the database would generate."""

    def __init__(self, next_ids: dict[str, int]) -> None:
        self.by_model: dict[type[SQLModel], list[dict[str, Any]]] = defaultdict(list)
        self._next_ids = next_ids

    def add(self, model: type[SQLModel], row: dict[str, Any]) -> dict[str, Any]:
        self.by_model[model].append(row)
        return row

    def new_id(self, model: type[SQLModel]) -> int:
        """An integer key given here, so that rows of other tables can point at it in the same batch."""
        name = table_of(model).name
        self._next_ids[name] = self._next_ids.get(name, 0) + 1
        return self._next_ids[name]

    def count(self) -> int:
        return sum(len(rows) for rows in self.by_model.values())


@dataclass
class Timer:
    """Seconds spent per database (building its rows and writing them)."""

    seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(("plan", *SERVICES), 0.0))
    rows: dict[str, int] = field(default_factory=lambda: dict.fromkeys(("plan", *SERVICES), 0))

    def add(self, service: str, started: float, rows: int = 0) -> None:
        self.seconds[service] += time.perf_counter() - started
        self.rows[service] += rows


def _defaults(table: sa.Table) -> dict[str, Any]:
    """Python-side column defaults of a model's table (default_factory ones included)."""
    found: dict[str, Any] = {}
    for column in table.columns:
        if column.name == "sentinel":
            continue
        default = column.default
        if default is not None and getattr(default, "is_scalar", False):
            found[column.name] = getattr(default, "arg")  # noqa: B009 - not every default has one
    return found


def _sqlite_value(column: sa.Column[Any]) -> Callable[[Any], Any]:
    """What SQLite is given for a value of ``column``: the text the column's bind processor makes."""
    if isinstance(column.type, UTCDateTime):
        # Every datetime here is aware: in UTC, its ISO text without the offset is the stored text.
        return lambda v: None if v is None else v.astimezone(UTC).isoformat(" ", "microseconds")[:26]
    if isinstance(column.type, sa.JSON):
        return lambda v: None if v is None else json.dumps(v)
    return lambda v: v


async def write_rows(engine: AsyncEngine, rows: Rows, *, audit: list[dict[str, Any]]) -> int:
    """Insert the batch in one transaction, tables in the order of their foreign keys.

    On SQLite the rows go to the driver's ``executemany`` as tuples, converted column by column
    as the models' types would; on PostgreSQL through SQLAlchemy Core's executemany.
    """
    written = 0
    ordered = {table_of(model): data for model, data in rows.by_model.items() if data}
    if audit:
        ordered[table_of(AuditEntry)] = audit
    async with engine.begin() as connection:
        sqlite = connection.dialect.name == "sqlite"
        for table in SQLModel.metadata.sorted_tables:
            data = ordered.get(table)
            if not data:
                continue
            columns = [
                c for c in table.columns if c.name != "sentinel" and (not c.primary_key or c.name in data[0])
            ]
            defaults = _defaults(table)
            if sqlite:
                converters = [(c.name, defaults.get(c.name), _sqlite_value(c)) for c in columns]
                params = [
                    tuple(convert(row.get(name, default)) for name, default, convert in converters)
                    for row in data
                ]
                names = ", ".join(f'"{c.name}"' for c in columns)
                marks = ", ".join("?" for _ in columns)
                sql = f'INSERT INTO "{table.name}" ({names}) VALUES ({marks})'  # noqa: S608 - the models' names
                await connection.exec_driver_sql(sql, params)
            else:
                full = [{**defaults, **row} for row in data]
                for row in full:
                    for column in columns:
                        row.setdefault(column.name, None)
                await connection.execute(sa.insert(table), full)
            written += len(data)
    return written


def utc(moment: datetime) -> datetime:
    return moment.astimezone(UTC)


def pick(rng: Any, weighted: Sequence[tuple[Any, float]]) -> Any:
    """One value of ``(value, weight)`` pairs."""
    values = [v for v, _ in weighted]
    weights = [w for _, w in weighted]
    return rng.choices(values, weights)[0]


def sub_id(matter_id: str, salt: int) -> str:
    """A row id derived from its matter's: unique per (matter, salt), no lookup needed."""
    from uuid import UUID

    return str(UUID(int=UUID(matter_id).int ^ salt))


# The salts of the ids derived from a matter's (``sub_id``), per round where it applies.
ASSIGNMENT, TASK, FINDING, ANSWER, FOLLOW_UP_ANSWER, DELIVERY, NOTICE = (
    0x10,
    0x20,
    0x30,
    0x40,
    0x50,
    0x60,
    0x70,
)


def tracking_code(prefix: str, received_at: datetime, serial: int, world: World) -> str:
    """Unique by construction: the serial number, scrambled, in the code's six characters."""
    size = len(CODE_ALPHABET) ** 6
    value = (serial * 48271 + world.seed * 7919) % size
    chars = []
    for _ in range(6):
        value, digit = divmod(value, len(CODE_ALPHABET))
        chars.append(CODE_ALPHABET[digit])
    local = received_at.astimezone(world.calendar.tz)
    return f"{prefix}{local:%y%m%d}{''.join(chars)}"
