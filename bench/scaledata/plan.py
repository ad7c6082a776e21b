"""The plan of each matter: who, what, where, and how far its life went, decided before any row.

Every service module reads the same plans, so the four databases tell one story.  The shares are
in shares.py.
"""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from services.routing.rules import Decision, Facts, decide
from shared.events import ClockSet

from .common import World, pick, tracking_code
from .shares import (
    ACCOUNTABILITY,
    ANONYMOUS_SHARE,
    CATEGORY_WEIGHTS,
    CHANNELS,
    CITY_UNIT_SHARE,
    CLASSIFICATIONS,
    COUNTY_POPULATION,
    EXTENSION_APPROVED,
    EXTENSION_DAYS,
    EXTENSION_SHARE,
    OPEN_AGES,
    OUTCOMES,
    RATINGS,
    REPEAT_SHARE,
    REPEAT_WINDOW,
    SUBSTANTIATED,
    SURNAMES,
    UNITS_BELOW,
)


@dataclass(slots=True)
class ExtensionPlan:
    """A request for more time on one clock, and the supervisor's decision (None: pending)."""

    clock: str
    days: int
    requested_at: datetime
    original_due_at: datetime
    approved: bool | None = None
    decided_at: datetime | None = None
    new_due_at: datetime | None = None


@dataclass(slots=True)
class Round:
    """One round of handling: an assignment, its task, and what came of it."""

    number: int
    decision: Decision
    assigned_at: datetime
    clocks: list[ClockSet]
    assignment_id: str = ""
    task_id: str = ""
    task_status: str = "open"
    claimed_at: datetime | None = None
    concluded_at: datetime | None = None
    outcome: str | None = None
    accountability: list[str] = field(default_factory=list)
    classification: str | None = None
    answer_id: str = ""
    approved_at: datetime | None = None
    served_at: datetime | None = None
    rating: str | None = None
    rated_at: datetime | None = None
    follow_up_done_at: datetime | None = None
    # A B-class reply (正在解决或列入计划解决): the team's follow-up reply, its approval and rating.
    b_reply_at: datetime | None = None
    b_approved_at: datetime | None = None
    b_rated_at: datetime | None = None
    extension: ExtensionPlan | None = None

    @property
    def awaiting_b_reply(self) -> bool:
        """The deputy accepted a B-class reply; the follow-up reply is not published yet."""
        return (
            self.classification == "B"
            and self.rating in ("satisfied", "basically_satisfied")
            and self.b_approved_at is None
        )


@dataclass(slots=True)
class Matter:
    id: str
    kind: str  # complaint or suggestion
    tracking_code: str
    secret_hash: str
    received_at: datetime
    county_code: str
    accused_unit: str
    channel: str = "phone"
    anonymous: bool = False
    phone: int = -1
    categories: list[tuple[str, bool]] = field(default_factory=list)
    officers: list[dict[str, Any]] = field(default_factory=list)
    injury: bool = False
    repeat_of: Matter | None = None
    linked_repeat: bool = False
    repeat_after_rejection: bool = False
    facts: list[str] = field(default_factory=list)
    # Suggestions.
    suggestion_kind: str = ""
    session: str = ""
    number: str = ""
    title: str = ""
    deputy: tuple[str, str, str] = ("", "", "")  # account, name, delegation
    lead_unit: str = ""
    co_units: list[str] = field(default_factory=list)
    complex_matter: bool = False
    rounds: list[Round] = field(default_factory=list)
    linked_calls: list[Matter] = field(default_factory=list)
    marked: str | None = None

    @property
    def last(self) -> Round:
        return self.rounds[-1]

    @property
    def is_open(self) -> bool:
        return not self.linked_repeat and self.last.concluded_at is None

    @property
    def text(self) -> str:
        if self.kind == "suggestion":
            return f"建议公安机关就{self.title[2:-3]}加强工作，完善相关措施。"
        names = "、".join(c for c, _ in self.categories)
        return f"我到{self.accused_unit}办事，民警存在{names}的问题，希望督察部门核查处理。"


class Planner:
    """Makes matters one batch at a time; remembers what later matters repeat."""

    def __init__(self, world: World, *, phones: int, deputies: list[tuple[str, str, str]]) -> None:
        self.world = world
        self.rng = random.Random(world.seed)
        self.phones = phones
        self.deputies = deputies
        self.serial = 0
        self.numbers: dict[str, int] = {}
        self._decisions: dict[tuple[Any, ...], Decision] = {}
        self._by_phone: dict[int, Matter] = {}
        self._open_pool: list[Matter] = []
        # Named complaints of the last repeat window (closed ones arrive in time order).
        self._recent: deque[Matter] = deque()
        org = world.organisation
        self.counties = list(COUNTY_POPULATION)
        self.county_weights = [COUNTY_POPULATION[c] for c in self.counties]
        self.bureaus = {c.code: c.bureau for c in org.counties.values()}
        self.city_units = list(org.city_units.values())
        self.cats = {c.name: c.serious for c in world.categories.categories}
        self.cat_names = [n for n in CATEGORY_WEIGHTS if n in self.cats]
        self.cat_weights = [CATEGORY_WEIGHTS[n] for n in self.cat_names]

    # ----------------------------------------------------------------------------- routing

    def decision(self, facts: Facts) -> Decision:
        key = (
            facts.case_kind,
            facts.county_code,
            facts.facts,
            facts.lead_unit,
            facts.co_units,
            facts.previous_team_codes,
        )
        found = self._decisions.get(key)
        if found is None:
            found = decide(
                facts=facts, rules=self.world.rules, organisation=self.world.organisation, workload={}
            )
            self._decisions[key] = found
        return found

    def _round(self, matter: Matter, number: int, assigned_at: datetime, previous: tuple[str, ...]) -> Round:
        facts = set(matter.facts) | ({"reopened"} if number > 1 else set())
        decision = self.decision(
            Facts(
                case_kind=matter.kind,
                county_code=matter.county_code,
                accused_unit=matter.accused_unit,
                facts=frozenset(facts),
                previous_team_codes=previous,
                lead_unit=matter.lead_unit or None,
                co_units=tuple(matter.co_units),
            )
        )
        traits = set(facts) | ({"complex"} if matter.complex_matter else set())
        if matter.channel == "transfer_xinfang":
            traits.add("petition")
        clocks = self.world.deadlines.initial_clocks(
            calendar=self.world.calendar,
            case_kind=matter.kind,
            received_at=matter.received_at if number == 1 else assigned_at,
            assigned_at=assigned_at,
            traits=traits,
            named_complainant=not matter.anonymous,
            has_co_units=bool(matter.co_units),
        )
        return Round(number=number, decision=decision, assigned_at=assigned_at, clocks=clocks)

    # ----------------------------------------------------------------------------- matters

    def _new_id(self) -> str:
        return str(UUID(int=self.rng.getrandbits(128), version=4))

    def _identity(self, matter: Matter, secret_prefix: str) -> None:
        self.serial += 1
        matter.tracking_code = tracking_code(secret_prefix, matter.received_at, self.serial, self.world)
        matter.secret_hash = self.world.secret_hash(
            matter.tracking_code, self.world.query_secret(matter.tracking_code)
        )

    def complaint(self, received_at: datetime, *, open_: bool) -> Matter:
        rng = self.rng
        if rng.random() < CITY_UNIT_SHARE:
            county = self.world.organisation.city_code
            unit = rng.choice(self.city_units)
        else:
            county = rng.choices(self.counties, self.county_weights)[0]
            unit = self.bureaus[county] + rng.choice(UNITS_BELOW)
        matter = Matter(
            id=self._new_id(),
            kind="complaint",
            tracking_code="",
            secret_hash="",
            received_at=received_at,
            county_code=county,
            accused_unit=unit,
        )
        matter.channel = pick(rng, CHANNELS)
        matter.anonymous = rng.random() < ANONYMOUS_SHARE
        if not matter.anonymous:
            # A few callers call often (about different units): the pool is drawn with a skew.
            matter.phone = int(self.phones * rng.random() ** 1.6)
        names = {rng.choices(self.cat_names, self.cat_weights)[0] for _ in range(1 + (rng.random() < 0.15))}
        matter.categories = [(n, self.cats[n]) for n in sorted(names)]
        leadership = rng.random() < 0.02
        if rng.random() < 0.7:
            badge = f"{rng.randrange(10**6):06d}"
            name = ("局长" if leadership else "") or rng.choice(SURNAMES) + "某"
            matter.officers = [{"name": name, "badge_no": badge, "leadership": leadership}]
        matter.injury = rng.random() < 0.01
        self._repeat(matter, open_)
        if not (open_ or matter.anonymous or matter.linked_repeat):
            self._recent.append(matter)
        self._identity(matter, "C")
        matter.facts = self._complaint_facts(matter, leadership)
        return matter

    def _repeat(self, matter: Matter, open_: bool) -> None:
        """Make the named complaint a repeat (about 7 % of complaints), or keep it a new matter."""
        if matter.phone < 0:
            return
        rng = self.rng
        if open_ and self._open_pool and rng.random() < 0.06:
            # A caller ringing again about their open complaint (重复件).
            original = rng.choice(self._open_pool)
            self._copy_caller(matter, original)
            matter.repeat_of, matter.linked_repeat = original, True
            latest = self.world.now - timedelta(hours=1)
            matter.received_at = min(latest, original.received_at + timedelta(days=rng.uniform(1, 10)))
            return
        earlier = None
        if rng.random() < REPEAT_SHARE / (1 - ANONYMOUS_SHARE):
            earlier = self._earlier(matter.received_at, in_order=not open_)
        if earlier is not None and earlier.is_open and not open_:
            earlier = None  # a repeat of an open complaint is linked, and so open itself
        if earlier is None:
            self._keep_new(matter)
            return
        self._copy_caller(matter, earlier)
        matter.repeat_of = earlier
        if earlier.is_open and not earlier.linked_repeat:
            matter.linked_repeat = True
            earlier.linked_calls.append(matter)
            # The call comes after the matter it repeats, while that one is still open.
            latest = self.world.now - timedelta(hours=1)
            matter.received_at = min(latest, earlier.received_at + timedelta(days=rng.uniform(1, 10)))
        elif earlier.last.rating == "unsatisfied":
            matter.repeat_after_rejection = True

    def _earlier(self, received_at: datetime, *, in_order: bool) -> Matter | None:
        """A named closed complaint of the repeat window before ``received_at``, or None.

        Closed matters are planned in time order (``in_order``): the window slides with them.
        An open matter's receipt is recent, out of that order: it only takes what the window holds.
        """
        recent = self._recent
        start = received_at - REPEAT_WINDOW
        while in_order and recent and recent[0].received_at < start:
            recent.popleft()
        if not recent:
            return None
        earlier = recent[self.rng.randrange(len(recent))]
        if not earlier.rounds or not start <= earlier.received_at < received_at:
            return None
        return earlier

    def _copy_caller(self, matter: Matter, earlier: Matter) -> None:
        matter.phone = earlier.phone
        matter.accused_unit, matter.county_code = earlier.accused_unit, earlier.county_code
        self._by_phone[matter.phone] = matter

    def _keep_new(self, matter: Matter) -> None:
        """A caller's new matter: another unit than their last one in the window, so that intake's
        rule (same caller, same unit, within the window) would not call it a repeat either."""
        last = self._by_phone.get(matter.phone)
        if (
            last is not None
            and last.accused_unit == matter.accused_unit
            and last.received_at >= matter.received_at - REPEAT_WINDOW
        ):
            prefix = self.bureaus.get(matter.county_code)
            units = [prefix + u for u in UNITS_BELOW] if prefix else self.city_units
            matter.accused_unit = self.rng.choice([u for u in units if u != matter.accused_unit])
        self._by_phone[matter.phone] = matter

    def _complaint_facts(self, matter: Matter, leadership: bool) -> list[str]:
        facts = []
        if leadership:
            facts.append("accused_leadership")
        if any(serious for _, serious in matter.categories):
            facts.append("serious_category")
        if matter.injury:
            facts.append("injury_or_death")
        if matter.repeat_after_rejection:
            facts.append("repeat_after_rejection")
        if matter.county_code == self.world.organisation.city_code:
            facts.append("city_unit")
        if matter.channel == "transfer_xinfang":
            facts.append("petition")
        return facts

    def suggestion(self, received_at: datetime) -> Matter:
        rng = self.rng
        org = self.world.organisation
        kind = "npc_suggestion" if rng.random() < 0.6 else "cppcc_proposal"
        local = received_at.astimezone(self.world.calendar.tz)
        body = "人民代表大会" if kind == "npc_suggestion" else "政协"
        session = f"周口市{body}{local.year}年会议"
        self.numbers[session] = self.numbers.get(session, 0) + 1
        topic = rng.choice(
            ["校园周边交通安全", "农村治安防控", "电信诈骗防范", "户籍办理便民", "夜市治安管理"]
        )
        lead = org.city_bureau if rng.random() < 0.5 else self.bureaus[rng.choice(self.counties)]
        weights = [8] + [1] * (len(self.deputies) - 1)
        matter = Matter(
            id=self._new_id(),
            kind="suggestion",
            tracking_code="",
            secret_hash="",
            received_at=received_at,
            county_code=org.city_code,
            accused_unit="",
            suggestion_kind=kind,
            session=session,
            number=f"{self.numbers[session]:04d}",
            title=f"关于{topic}的建议",
            deputy=rng.choices(self.deputies, weights)[0],
            lead_unit=lead,
            complex_matter=rng.random() < 0.1,
            facts=["suggestion"],
        )
        if rng.random() < 0.2:
            matter.co_units = [self.bureaus[rng.choice(self.counties)]]
            if matter.co_units[0] == lead:
                matter.co_units = []
        self._identity(matter, "S")
        return matter

    # ----------------------------------------------------------------------------- life

    def live(self, matter: Matter, *, open_: bool, now: datetime) -> None:
        """Decide how far the matter went: its rounds, each concluded, answered and rated, or open."""
        if matter.linked_repeat:
            return
        rng = self.rng
        assigned_at = matter.received_at + timedelta(minutes=rng.randint(1, 30))
        previous: tuple[str, ...] = ()
        while True:
            rnd = self._round(matter, len(matter.rounds) + 1, assigned_at, previous)
            matter.rounds.append(rnd)
            rnd.claimed_at = assigned_at + timedelta(hours=rng.uniform(1, 60))
            if matter.kind == "complaint":
                self._extension(rnd, open_=open_ and len(matter.rounds) == 1, now=now)
            if open_ and len(matter.rounds) == 1:
                self._open(matter, rnd, now)
                if matter.kind == "complaint" and not matter.anonymous:
                    self._open_pool.append(matter)
                    del self._open_pool[:-5000]
                return
            self._conclude(matter, rnd, now)
            if rnd.rating != "unsatisfied" or len(matter.rounds) == 2 or matter.kind == "suggestion":
                return
            previous = (*previous, rnd.decision.team_code)
            assert rnd.rated_at is not None  # a rating was given
            assigned_at = rnd.rated_at + timedelta(minutes=5)

    def _extension(self, rnd: Round, *, open_: bool, now: datetime) -> None:
        """Maybe ask for more time on the verification clock, as the team would before its deadline;
        an approval moves the due date by natural days (``extensions._approve``)."""
        rng = self.rng
        index = next((i for i, c in enumerate(rnd.clocks) if c.name == "verification"), None)
        if index is None or rnd.claimed_at is None or rng.random() >= EXTENSION_SHARE:
            return
        main = rnd.clocks[index]
        requested = rnd.claimed_at + (main.due_at - rnd.claimed_at) * rng.uniform(0.4, 0.9)
        if requested >= main.due_at or requested > now - timedelta(hours=3):
            return
        plan = ExtensionPlan(
            clock=main.name,
            days=pick(rng, EXTENSION_DAYS),
            requested_at=requested,
            original_due_at=main.due_at,
        )
        decided = requested + timedelta(hours=rng.uniform(2, 48))
        if decided > now - timedelta(hours=3):
            if not open_:
                return  # a concluded round's request was decided; this one would not be yet
        else:
            plan.approved, plan.decided_at = rng.random() < EXTENSION_APPROVED, decided
        if plan.approved:
            plan.new_due_at = self.world.calendar.add_calendar_days(main.due_at, plan.days)
            rnd.clocks[index] = main.model_copy(update={"due_at": plan.new_due_at})
        rnd.extension = plan

    def _open(self, matter: Matter, rnd: Round, now: datetime) -> None:
        rng = self.rng
        if (rnd.claimed_at is not None and rnd.claimed_at > now) or rng.random() < 0.2:
            rnd.claimed_at = None
            rnd.task_status = "open"
            return
        rnd.task_status = "in_review" if rnd.decision.review_required and rng.random() < 0.3 else "claimed"
        if rnd.task_status == "in_review":
            rnd.outcome = pick(rng, OUTCOMES[:-1])
        age = (now - matter.received_at).days
        if age > 40 and rng.random() < 0.35:
            matter.marked = "leader_assigned" if rng.random() < 0.15 else "supervised"

    def _conclude(self, matter: Matter, rnd: Round, now: datetime) -> None:
        rng = self.rng
        main = next((c for c in rnd.clocks if c.name in ("verification", "deputy_reply")), rnd.clocks[-1])
        span = (main.due_at - rnd.assigned_at).total_seconds()
        # Nine in ten on time; the rest up to twenty days late.
        late = rng.random() < 0.1
        offset = span * rng.uniform(0.3, 0.98) if not late else span + rng.uniform(0.5, 20) * 86400
        rnd.concluded_at = min(rnd.assigned_at + timedelta(seconds=offset), now - timedelta(hours=2))
        decided = rnd.extension.decided_at if rnd.extension else None
        if decided is not None and rnd.concluded_at <= decided:
            # Concluded after the extension was decided, whatever the decision.
            rnd.concluded_at = min(decided + timedelta(hours=rng.uniform(1, 72)), now - timedelta(hours=2))
        if rnd.claimed_at is None or rnd.claimed_at >= rnd.concluded_at:
            rnd.claimed_at = rnd.assigned_at + (rnd.concluded_at - rnd.assigned_at) / 3
        rnd.task_status = "concluded"
        if matter.kind == "suggestion":
            rnd.outcome = "substantiated"
            rnd.classification = pick(rng, CLASSIFICATIONS)
        else:
            rnd.outcome = pick(rng, OUTCOMES)
            if rnd.outcome in SUBSTANTIATED and rng.random() < 0.45:
                rnd.accountability = [pick(rng, ACCOUNTABILITY)]
        approval = rnd.concluded_at + timedelta(hours=rng.uniform(2, 40))
        if approval > now:
            return  # the answer waits for a supervisor's approval
        rnd.approved_at = approval
        rnd.served_at = approval + timedelta(minutes=rng.randint(1, 30))
        follow_up = rnd.served_at + timedelta(hours=rng.uniform(4, 30))
        if follow_up > now:
            return
        rnd.follow_up_done_at = follow_up
        rnd.rating = pick(rng, RATINGS)
        if rnd.rating is not None:
            rnd.rated_at = follow_up
        if rnd.classification == "B" and rnd.rating in ("satisfied", "basically_satisfied"):
            self._b_reply(rnd, now)

    def _b_reply(self, rnd: Round, now: datetime) -> None:
        """The follow-up reply of a B-class suggestion: within the three months, one in ten late."""
        assert rnd.concluded_at is not None
        days = self.rng.uniform(30, 88) if self.rng.random() < 0.9 else self.rng.uniform(95, 120)
        reply = rnd.concluded_at + timedelta(days=days)
        if reply > now:
            return
        rnd.b_reply_at = reply
        if reply + timedelta(days=2) < now:
            rnd.b_approved_at = reply + timedelta(days=1)
            if reply + timedelta(days=4) < now:
                rnd.b_rated_at = reply + timedelta(days=3)


def open_received_at(rng: random.Random, now: datetime) -> datetime:
    low, high = rng.choices([r for r, _ in OPEN_AGES], [w for _, w in OPEN_AGES])[0]
    return now - timedelta(days=rng.uniform(low, high), minutes=rng.randint(0, 600))
