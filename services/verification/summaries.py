"""Summary tables kept by differences: each change records what it adds to a summary's rows, and
the rows are added to just before the transaction commits, in key order (one upsert statement per
summary; rows locked in the same order by every transaction, and only for the commit's last
moment).  A savepoint rolled back forgets what was recorded inside it.  A redelivered event changes
nothing: the consumers record the events they processed in the same transaction (the inbox), so a
redelivery never runs the handler.

The summaries: the dashboard's daily figures (``figures``) and its open tasks (``open_figures``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Table, event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, SessionTransaction
from sqlmodel.ext.asyncio.session import AsyncSession

from shared.db import built_once

# Counters per key, in the summary's counter order.
Part = dict[Any, list[int]]

_DELTAS = "verification_figure_deltas"
_MARKS = "verification_figure_marks"


@dataclass(frozen=True)
class Summary:
    """A summary table kept by differences: its key columns and its counters, in a ``Part``'s order."""

    table: Table
    key_columns: tuple[str, ...]
    counters: tuple[str, ...]

    def rows(self, part: Part) -> list[dict[str, Any]]:
        """``part`` as the table's rows, in key order, without the keys that count nothing."""
        return [
            dict(zip(self.key_columns, key, strict=True)) | dict(zip(self.counters, counts, strict=True))
            for key, counts in sorted(part.items())
            if any(counts)
        ]


def record(session: AsyncSession, part: Part, summary: Summary) -> None:
    """Add ``part`` to ``summary`` when the session's transaction commits (forgotten if it, or the
    savepoint it was recorded in, rolls back)."""
    if part:
        session.sync_session.info.setdefault(_DELTAS, []).append((summary, part))


@event.listens_for(Session, "after_transaction_create")
def _mark_savepoint(session: Session, transaction: SessionTransaction) -> None:
    if transaction.nested:
        session.info.setdefault(_MARKS, {})[transaction] = len(session.info.get(_DELTAS, ()))


@event.listens_for(Session, "after_soft_rollback")
def _forget(session: Session, previous_transaction: SessionTransaction) -> None:
    """What the rolled-back savepoint recorded (the whole transaction's, at the root) is forgotten."""
    deltas = session.info.get(_DELTAS)
    if not deltas:
        return
    boundary: SessionTransaction | None = previous_transaction
    while boundary is not None and not boundary.nested and boundary.parent is not None:
        boundary = boundary.parent
    # The marks outlive their savepoints (the transaction's end comes before this event), until
    # the outermost transaction ends.
    marks = session.info.get(_MARKS, {})
    mark = marks.get(boundary) if boundary is not None and boundary.nested else None
    if mark is None:
        session.info.pop(_DELTAS, None)
        session.info.pop(_MARKS, None)
    else:
        del deltas[mark:]


@event.listens_for(Session, "before_commit")
def _apply(session: Session) -> None:
    """At the outermost commit: one upsert per summary of the rows the transaction changed, in key
    order."""
    if session.in_nested_transaction():
        return
    session.info.pop(_MARKS, None)
    recorded = session.info.pop(_DELTAS, None)
    if not recorded:
        return
    totals: dict[Summary, dict[Any, list[int]]] = {}
    for summary, part in recorded:
        total = totals.setdefault(summary, {})
        for key, counts in part.items():
            kept = total.get(key)
            if kept is None:
                total[key] = list(counts)
            else:
                kept[:] = [a + b for a, b in zip(kept, counts, strict=True)]
    connection = session.connection()
    for summary, total in sorted(totals.items(), key=lambda item: item[0].table.name):
        rows = summary.rows(total)
        if rows:
            connection.execute(upsert_for(connection.dialect.name, summary), rows)


@built_once
def upsert_for(dialect: str, summary: Summary) -> Any:
    """INSERT … ON CONFLICT (the key) DO UPDATE SET each counter = counter + the new one."""
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    statement = insert(summary.table)
    return statement.on_conflict_do_update(
        index_elements=list(summary.key_columns),
        set_={name: summary.table.c[name] + statement.excluded[name] for name in summary.counters},
    )
