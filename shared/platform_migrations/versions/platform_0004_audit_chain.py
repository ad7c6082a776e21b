"""audit log: one hash chain per service (a sequence number per entry), and no UPDATE or DELETE

Until now each matter had its own chain in each service: deleting a matter's newest entries,
or all of them, left chains that were still intact.  From here every entry of the database
is one link of the service's chain (``shared.audit``): ``seq`` numbers the entries 1, 2, 3 ...
and each entry's hash covers its ``seq``, the hash of the entry before it and its content.

The entries already there are rechained in ``id`` order, which is the order they were
written in (``id`` is the table's autoincrement key): each gets its ``seq`` and a new
``prev_hash`` and ``entry_hash``.  That rewrites the old hashes, which is acceptable because
the old per-matter chains are verified first and the result is recorded: the rechained chain
ends with an entry ``audit_chain_rebuilt`` (case id ``audit:chain``, actor ``migration``)
whose detail counts the entries and matters and names the matters whose old chain was already
broken.  Tampering before the migration therefore stays visible (in that entry, itself now
protected by the chain), and nothing the old chains could prove is lost: they could not prove
that no entry was deleted, which is what the new chain and its checkpoints add.

Then the table refuses changes: on PostgreSQL a trigger raises on UPDATE and DELETE (row
level) and on TRUNCATE (statement level); on SQLite ``BEFORE UPDATE`` and ``BEFORE DELETE``
triggers abort the statement.  A later revision that rebuilds ``audit_log`` with a batch
operation on SQLite (which copies the table and drops the old one, triggers included) must
create the triggers again.

The downgrade drops the triggers and the ``seq`` column; the hashes stay those of the chain.

Revision ID: platform_0004
Revises: platform_0003
Create Date: 2026-11-30 11:00:00.000000
"""

import hashlib
import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from alembic import op

from shared.audit import GENESIS, entry_digest
from shared.db import UTCDateTime
from shared.migrations import column_exists

revision: str = "platform_0004"
down_revision: str | None = "platform_0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

REBUILT_CASE_ID = "audit:chain"
REBUILT_ACTION = "audit_chain_rebuilt"
# The record names at most this many matters with a broken old chain (and counts them all).
NAMED_BROKEN_MATTERS = 200
UPDATE_BATCH = 1000

_audit = sa.table(
    "audit_log",
    sa.column("id", sa.Integer()),
    sa.column("seq", sa.BigInteger()),
    sa.column("case_id", sa.String()),
    sa.column("action", sa.String()),
    sa.column("actor", sa.String()),
    sa.column("reason", sa.Text()),
    sa.column("detail", sa.Text()),
    sa.column("at", UTCDateTime(timezone=True)),
    sa.column("prev_hash", sa.String()),
    sa.column("entry_hash", sa.String()),
)

POSTGRES_TRIGGERS = (
    """
    CREATE OR REPLACE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        RAISE EXCEPTION 'audit_log is append-only: % refused', TG_OP
            USING ERRCODE = 'insufficient_privilege';
    END
    $$
    """,
    "CREATE TRIGGER audit_log_no_update_or_delete BEFORE UPDATE OR DELETE ON audit_log "
    "FOR EACH ROW EXECUTE FUNCTION audit_log_append_only()",
    "CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log "
    "FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only()",
)
SQLITE_TRIGGERS = (
    "CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log "
    "BEGIN SELECT RAISE(ABORT, 'audit_log is append-only: UPDATE refused'); END",
    "CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log "
    "BEGIN SELECT RAISE(ABORT, 'audit_log is append-only: DELETE refused'); END",
)


def _old_digest(entry: Any, prev: str) -> str:
    """The hash of an entry of a per-matter chain, as ``shared.audit`` computed it before."""
    material = json.dumps(
        [entry.case_id, entry.action, entry.actor, entry.reason, entry.detail, entry.at.isoformat(), prev],
        ensure_ascii=False,
        separators=(",", ":"),
    )
    return hashlib.sha256(material.encode()).hexdigest()


def _rechain() -> None:
    """Number the existing entries in id order, chain them, and record the old chains' state."""
    bind = op.get_bind()
    rows = bind.execute(sa.select(_audit).order_by(_audit.c.id)).all()
    if not rows:
        return
    matter_heads: dict[str, str] = {}
    broken: set[str] = set()
    updates: list[dict[str, Any]] = []
    prev = GENESIS
    for seq, row in enumerate(rows, start=1):
        matter_prev = matter_heads.get(row.case_id, GENESIS)
        if row.prev_hash != matter_prev or _old_digest(row, matter_prev) != row.entry_hash:
            broken.add(row.case_id)
        matter_heads[row.case_id] = row.entry_hash
        digest = entry_digest(
            seq=seq,
            prev=prev,
            case_id=row.case_id,
            action=row.action,
            actor=row.actor,
            reason=row.reason,
            detail=row.detail,
            at=row.at,
        )
        updates.append({"row_id": row.id, "seq": seq, "prev": prev, "digest": digest})
        prev = digest
    statement = (
        sa.update(_audit)
        .where(_audit.c.id == sa.bindparam("row_id"))
        .values(seq=sa.bindparam("seq"), prev_hash=sa.bindparam("prev"), entry_hash=sa.bindparam("digest"))
    )
    for start in range(0, len(updates), UPDATE_BATCH):
        bind.execute(statement, updates[start : start + UPDATE_BATCH])
    _record_rebuild(bind, head=(len(rows), prev), matters=len(matter_heads), broken=broken)


def _record_rebuild(bind: Any, *, head: tuple[int, str], matters: int, broken: set[str]) -> None:
    """The chain's next entry: what the old chains were found to be before the rechain."""
    entries, prev = head
    detail = json.dumps(
        {
            "entries": entries,
            "matters": matters,
            "matters_with_broken_chain": len(broken),
            "broken_matters": sorted(broken)[:NAMED_BROKEN_MATTERS],
        },
        ensure_ascii=False,
        sort_keys=True,
    )
    seq = entries + 1
    at = datetime.now(UTC).replace(microsecond=0)
    record: dict[str, Any] = {
        "case_id": REBUILT_CASE_ID,
        "action": REBUILT_ACTION,
        "actor": "migration",
        "reason": "per-matter chains verified, then rechained as one chain per service",
        "detail": detail,
        "at": at,
    }
    bind.execute(
        sa.insert(_audit).values(
            seq=seq, prev_hash=prev, entry_hash=entry_digest(seq=seq, prev=prev, **record), **record
        )
    )


def upgrade() -> None:
    if not column_exists("audit_log", "seq"):
        with op.batch_alter_table("audit_log", schema=None) as batch_op:
            batch_op.add_column(sa.Column("seq", sa.BigInteger(), nullable=True))
        _rechain()
        with op.batch_alter_table("audit_log", schema=None) as batch_op:
            batch_op.alter_column("seq", existing_type=sa.BigInteger(), nullable=False)
            batch_op.create_index(batch_op.f("ix_audit_log_seq"), ["seq"], unique=True)
    # Last: on SQLite the batch operations above rebuild the table, which drops its triggers.
    for statement in POSTGRES_TRIGGERS if op.get_bind().dialect.name == "postgresql" else SQLITE_TRIGGERS:
        op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS audit_log_no_truncate ON audit_log")
        op.execute("DROP TRIGGER IF EXISTS audit_log_no_update_or_delete ON audit_log")
        op.execute("DROP FUNCTION IF EXISTS audit_log_append_only()")
    else:
        op.execute("DROP TRIGGER IF EXISTS audit_log_no_update")
        op.execute("DROP TRIGGER IF EXISTS audit_log_no_delete")
    with op.batch_alter_table("audit_log", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_audit_log_seq"))
        batch_op.drop_column("seq")
