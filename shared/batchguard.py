"""The batching rules, checked: a query must not miss rows that are still only in the session.

Two units run with autoflush off, so their rows wait in the session for one flush at the end:
a request in a write group (``shared.groupcommit``) and a batched event handler in a consumer's
slice (``shared.bus.batched_writes``).  A query run meanwhile does not see those pending rows,
which is right only under two rules stated in those modules:

* a batched handler reads only rows of its own matter and never reads back a row it wrote
  (the slice is flushed before an event of a matter already written in it, so the only pending
  rows of its own matter are its own);
* a request that must see what the earlier requests of its group added also looks at the
  session's pending rows (``shared.slice_rows.pending_rows``).

With the guard on (``BATCHING_GUARD=1``: the tests turn it on, production leaves it off, since
it costs a look at the session's pending rows per query) a unit breaking them fails with
``BatchingRuleBroken`` instead of answering from a database that lacks its group's rows.  A
query (an ORM ``SELECT`` through the session) on a table of which the session holds pending
rows passes only when

* the unit has looked at that model's pending rows (``pending_rows``) before, or
* the unit handles one matter, the query is restricted to that matter (``case_id = :matter``)
  and none of the pending rows belongs to it.

Core statements run on the session's connection (``session.connection().execute``) bypass the
ORM's events and are not checked; the code using them says why nothing pending concerns them.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Table, event, inspect
from sqlalchemy.orm import ORMExecuteState, Session
from sqlalchemy.sql import operators, visitors
from sqlalchemy.sql.elements import BinaryExpression, BindParameter, ColumnElement
from sqlmodel.ext.asyncio.session import AsyncSession

GUARD_ENVIRONMENT_VARIABLE = "BATCHING_GUARD"
_UNIT = "batching_unit"
MATTER_COLUMN = "case_id"


class BatchingRuleBroken(AssertionError):
    """A grouped or batched unit queried a table whose pending rows its query cannot see.

    An ``AssertionError``: a bug in the unit, never something to retry or to redo alone (which
    would hide it, since a unit run alone has autoflush on).
    """


def guard_enabled_by_environment() -> bool:
    """The default when no setting is passed: on when ``BATCHING_GUARD`` says yes."""
    return os.environ.get(GUARD_ENVIRONMENT_VARIABLE, "").strip().lower() in {"1", "true", "yes", "on"}


@dataclass
class _Unit:
    kind: str
    matter: str | None
    looked_at: set[type[Any]] = field(default_factory=set)


@contextlib.contextmanager
def guarded(session: AsyncSession | Session, *, kind: str, matter: str | None = None) -> Iterator[None]:
    """Check the batching rules for the queries run in the block (one unit: a request, a handler).

    ``kind`` names the unit in the error ("write group", "slice"); ``matter`` is the case id a
    batched handler handles (None for a request, which may read across matters).
    """
    _install()
    sync_session = session.sync_session if isinstance(session, AsyncSession) else session
    outer = sync_session.info.get(_UNIT)
    sync_session.info[_UNIT] = _Unit(kind=kind, matter=matter)
    try:
        yield
    finally:
        if outer is None:
            sync_session.info.pop(_UNIT, None)
        else:
            sync_session.info[_UNIT] = outer


# Where a consumer's slice keeps the rows its batched handlers add with ``shared.slice_rows.add_later``
# until it inserts them: pending rows as far as the rules go, model -> the rows.
LATER_ROWS = "rows_added_later"


def note_pending_rows_seen(session: Session, model: type[Any]) -> None:
    """The unit looks at ``model``'s pending rows (``shared.slice_rows.pending_rows`` says so)."""
    unit = session.info.get(_UNIT)
    if unit is not None:
        unit.looked_at.add(model)


_installed = False


def _install() -> None:
    # Listening on the Session class costs every session's every statement a call; only a
    # process that turned the guard on pays it.
    global _installed
    if not _installed:
        event.listen(Session, "do_orm_execute", _check_query)
        _installed = True


def _check_query(state: ORMExecuteState) -> None:
    unit: _Unit | None = state.session.info.get(_UNIT)
    later: dict[type[Any], list[Any]] = state.session.info.get(LATER_ROWS) or {}
    if unit is None or not state.is_select or not (state.session.new or any(later.values())):
        return
    tables = _tables_of(state.statement)
    if not tables:
        return
    pending_by_model: dict[type[Any], list[Any]] = {}
    for row in (*state.session.new, *(row for rows in later.values() for row in rows)):
        model = type(row)
        if model not in unit.looked_at and _table_of(model) in tables:
            pending_by_model.setdefault(model, []).append(row)
    for model, pending in pending_by_model.items():
        if unit.matter is not None and _restricted_to_matter(state, _table_of(model), unit.matter):
            if not any(getattr(row, MATTER_COLUMN, None) == unit.matter for row in pending):
                continue
            why = f"it reads back a {model.__name__} row of its own matter that it wrote"
        else:
            why = (
                f"{len(pending)} pending {model.__name__} row(s) are not flushed and it did not look at them"
            )
        raise BatchingRuleBroken(
            f"a {unit.kind} unit queried {_table_of(model).name} with autoflush off, but {why} "
            "(see shared/batchguard.py)"
        )


_TABLES: dict[type[Any], Table] = {}


def _table_of(model: type[Any]) -> Table:
    table = _TABLES.get(model)
    if table is None:
        local = inspect(model).local_table
        assert isinstance(local, Table)
        table = _TABLES[model] = local
    return table


def _tables_of(statement: Any) -> set[Table]:
    return {element for element in visitors.iterate(statement) if isinstance(element, Table)}


def _restricted_to_matter(state: ORMExecuteState, table: Table, matter: str) -> bool:
    """Whether the query's criteria include ``<table>.case_id = <matter>``."""
    where: ColumnElement[Any] | None = getattr(state.statement, "whereclause", None)
    if where is None:
        return False
    parameters = state.parameters if isinstance(state.parameters, dict) else {}
    for element in visitors.iterate(where):
        if not isinstance(element, BinaryExpression) or element.operator is not operators.eq:
            continue
        for column, value in ((element.left, element.right), (element.right, element.left)):
            if (
                getattr(column, "name", None) == MATTER_COLUMN
                and getattr(column, "table", None) is table
                and isinstance(value, BindParameter)
                and parameters.get(value.key, value.effective_value) == matter
            ):
                return True
    return False
