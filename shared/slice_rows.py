"""The rows a consumer's slice works with, kept in the session between its events.

A slice applies a few dozen events in one transaction (``shared.slices``): it loads the rows of
its matters with one query each (``prefetch_rows``), answers the handlers' look-ups from the
session (``lookup``, ``rows_with``), and inserts the append-only rows its handlers add with one
statement per table (``add_later``, ``insert_later_rows``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, TypeVar, cast

from sqlalchemy import bindparam, event, insert, inspect
from sqlalchemy.orm import InstrumentedAttribute, Mapped, Session
from sqlmodel import SQLModel, select
from sqlmodel.ext.asyncio.session import AsyncSession

from shared.batchguard import LATER_ROWS, note_pending_rows_seen
from shared.db import built_once, table_of

_Row = TypeVar("_Row", bound=SQLModel)


def keep_loaded_rows_for_the_slice(session: AsyncSession) -> None:
    """Hold every row the session loads or writes until the session ends.

    The session's identity map holds rows weakly: a row a handler looked up and let go of is
    forgotten, and the next event of the slice that asks for it by key (the same team, the
    matter the previous event created) costs a query and the autoflush before it.  A slice
    is a few dozen events, so holding its rows costs little memory.
    """
    held: list[object] = []
    session.sync_session.info["held_rows"] = held

    def hold(_session: Session, instance: object) -> None:
        held.append(instance)

    for lifecycle in ("pending_to_persistent", "loaded_as_persistent"):
        event.listen(session.sync_session, lifecycle, hold)


_PREFETCHED = "prefetched_keys"
# What a slice prefetches by its matters' case ids: a table keyed by the case id, or the case id
# column of a table with several rows per matter (``col(Task.case_id)``).
Prefetched = type[SQLModel] | Mapped[Any]


async def prefetch_rows(session: AsyncSession, model: Prefetched, keys: Iterable[str]) -> None:
    """Load the rows of ``model`` with these keys in one query, and remember which were asked.

    ``model`` is a table keyed by the matter (its primary key), or a column of a table that
    holds several rows per matter (``Task.case_id``).  Used at the start of a consumer's slice
    with the slice's matters: ``lookup`` and ``rows_with`` then answer from the session, found
    or not, instead of one query per event.  The session must hold its rows
    (``keep_loaded_rows_for_the_slice``), or the loaded rows could be forgotten.
    """
    wanted = set(keys)
    if not wanted:
        return
    if isinstance(model, InstrumentedAttribute):
        query = select(model.class_).where(model.in_(wanted))
    else:
        query = select(model).where(inspect(model).primary_key[0].in_(wanted))
    list(await session.exec(query))
    session.sync_session.info.setdefault(_PREFETCHED, {}).setdefault(model, set()).update(wanted)


async def rows_with(session: AsyncSession, column: Mapped[Any], key: str) -> list[Any]:
    """The rows whose ``column`` (``Task.case_id``) is ``key``.

    From the session, without a query, when the slice prefetched ``column`` for ``key``
    (``prefetch_rows``): every such row was loaded then or written since (held by the session),
    and a pending one counts as a query's autoflush would have made it count.  Otherwise one query.
    """
    sync_session = session.sync_session
    assert isinstance(column, InstrumentedAttribute)
    model: Any = column.class_
    if key not in sync_session.info.get(_PREFETCHED, {}).get(column, ()):
        return list(await session.exec(_rows_with_query(column), params={"key": key}))
    held = (*sync_session.identity_map.values(), *sync_session.new)
    return [row for row in held if isinstance(row, model) and getattr(row, column.key) == key]


@built_once
def _rows_with_query(column: InstrumentedAttribute[Any]) -> Any:
    return select(column.class_).where(column == bindparam("key"))


def prefetched_without_rows(session: Session, column: Mapped[Any], keys: Iterable[str]) -> set[str]:
    """Those of ``keys`` that the slice prefetched ``column`` for and that no row the session
    holds has (``rows_with`` would answer an empty list); a sync session, for a commit hook."""
    prefetched: set[str] = session.info.get(_PREFETCHED, {}).get(column, set())
    wanted = prefetched.intersection(keys)
    if not wanted:
        return set()
    assert isinstance(column, InstrumentedAttribute)
    model: Any = column.class_
    held = (*session.identity_map.values(), *session.new)
    return wanted - {getattr(row, column.key) for row in held if isinstance(row, model)}


def pending_rows(session: AsyncSession, model: type[_Row]) -> list[_Row]:
    """Rows of ``model`` added to the session and not flushed yet.

    With autoflush off (a write group's requests and a slice's batched handlers run so) a query
    does not see them; a unit that must see what the earlier units added looks here too, which
    also tells the batching guard (``shared.batchguard``) that it did.
    """
    note_pending_rows_seen(session.sync_session, model)
    return [row for row in session.sync_session.new if isinstance(row, model)]


def add_later(session: AsyncSession, row: SQLModel) -> bool:
    """``session.add`` for a new row (``new_row``) that nothing reads back as an object.

    In a consumer's slice, from a batched handler (autoflush off), the row waits with the
    slice's others of its table and ``insert_later_rows`` inserts them with one Core
    statement at the slice's next flush: the unit of work cost several times that per row
    (adding, sorting, ids read back, py-spy).  Elsewhere it is ``session.add``.  For rows of
    append-only tables (a history line, a timeline entry, a clock): the row never enters the
    session, so it has no generated id and is not found by ``lookup``; a query sees it once
    the slice flushed, like any pending row (``shared.batchguard`` checks the same rules).
    Returns whether the row was kept for later (else it was added to the session).
    """
    sync_session = session.sync_session
    later: dict[type[Any], list[Any]] | None = sync_session.info.get(LATER_ROWS)
    if later is None or sync_session.autoflush:
        session.add(row)
        return False
    later.setdefault(type(row), []).append(row)
    return True


# What a table's kept rows need just before their insert, registered by the module that owns the
# table (the audit chain numbers its entries then): model -> hook(sync session, rows, in order).
_BEFORE_INSERT: dict[type[Any], Callable[[Session, list[Any]], None]] = {}


def before_later_insert(model: type[Any]) -> Callable[[Callable[[Session, list[Any]], None]], Any]:
    """Register ``hook(session, rows)`` to run on ``model``'s kept rows just before their insert."""

    def register(hook: Callable[[Session, list[Any]], None]) -> Callable[[Session, list[Any]], None]:
        _BEFORE_INSERT[model] = hook
        return hook

    return register


def collect_later_rows(session: AsyncSession) -> None:
    """Let ``add_later`` keep this session's rows until ``insert_later_rows`` (a slice's session)."""
    session.sync_session.info[LATER_ROWS] = {}


async def insert_later_rows(session: AsyncSession) -> None:
    """Insert the rows ``add_later`` kept: one multi-row statement per table, after the ORM's flush.

    After it, since such a row may refer to a row the flush writes (a task's clock, its task).
    A generated id is left to the database: the table's own default, as the ORM would.
    """
    await session.flush()
    later: dict[type[Any], list[Any]] = session.sync_session.info.get(LATER_ROWS) or {}
    for model, rows in later.items():
        if not rows:
            continue
        hook = _BEFORE_INSERT.get(model)
        if hook is not None:
            await session.run_sync(hook, rows)
        table = table_of(model)
        keys = {column.name for column in table.primary_key.columns}
        by_columns: dict[tuple[str, ...], list[dict[str, Any]]] = {}
        for row in rows:
            values = {k: v for k, v in row.__dict__.items() if k in table.c and not (v is None and k in keys)}
            by_columns.setdefault(tuple(values), []).append(values)
        rows.clear()
        for params in by_columns.values():
            await session.exec(insert(table), params=params)


def loaded_row(session: AsyncSession, model: type[_Row], key: str) -> _Row | None:
    """The row with this primary key if the session already holds it; never a query."""
    sync_session = session.sync_session
    return cast(_Row | None, sync_session.identity_map.get(sync_session.identity_key(model, key)))


async def lookup(session: AsyncSession, model: type[_Row], key: str) -> _Row | None:
    """``session.get``, except that a key prefetched for this slice and not found costs no query."""
    found = loaded_row(session, model, key)
    if found is not None:
        return found
    if key in session.sync_session.info.get(_PREFETCHED, {}).get(model, ()):
        return None
    return await session.get(model, key)
