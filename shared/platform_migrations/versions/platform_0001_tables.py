"""platform tables: the outbox, inbox, audit log and idempotency keys every service database has

The base of the ``platform`` branch, which every service's script directory includes (see
``shared.migrations``).  Each service's ``0001`` depends on it, so on a fresh database these
tables come first and the service's own tables after.

Until this branch existed each service's ``0001`` created these four tables itself.  A database
made then records only its service's revisions; Alembic counts this revision as applied there
(a ``depends_on`` target is an ancestor of the revision that depends on it), so it does not run.
Each table is still created only where it is missing: it costs nothing, and a database that has
the tables but whose version table does not say so (stamped back, or the version table lost)
then upgrades instead of failing on a table that exists.  The definitions are those the
services' ``0001`` had, so a database made either way has the same tables.

Revision ID: platform_0001
Revises:
Create Date: 2026-11-30 10:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlmodel.sql.sqltypes import AutoString

from shared.db import UTCDateTime
from shared.migrations import table_exists

revision: str = "platform_0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = ("platform",)
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    if not table_exists("audit_log"):
        op.create_table(
            "audit_log",
            sa.Column("id", sa.Integer(), nullable=False),
            sa.Column("case_id", AutoString(length=64), nullable=False),
            sa.Column("action", AutoString(length=64), nullable=False),
            sa.Column("actor", AutoString(length=100), nullable=False),
            sa.Column("reason", sa.Text(), nullable=True),
            sa.Column("detail", sa.Text(), nullable=False),
            sa.Column("at", UTCDateTime(timezone=True), nullable=False),
            sa.Column("prev_hash", AutoString(length=64), nullable=False),
            sa.Column("entry_hash", AutoString(length=64), nullable=False),
            sa.PrimaryKeyConstraint("id"),
        )
        with op.batch_alter_table("audit_log", schema=None) as batch_op:
            batch_op.create_index(batch_op.f("ix_audit_log_case_id"), ["case_id"], unique=False)

    if not table_exists("idempotency"):
        op.create_table(
            "idempotency",
            sa.Column("key", AutoString(length=128), nullable=False),
            sa.Column("username", AutoString(length=64), nullable=False),
            sa.Column("endpoint", AutoString(length=100), nullable=False),
            sa.Column("request_hash", AutoString(length=64), nullable=False),
            sa.Column("status_code", sa.Integer(), nullable=False),
            sa.Column("response_body", sa.Text(), nullable=False),
            sa.Column("created_at", UTCDateTime(timezone=True), nullable=False),
            sa.PrimaryKeyConstraint("key", "username"),
        )

    if not table_exists("inbox"):
        op.create_table(
            "inbox",
            sa.Column("consumer", AutoString(length=100), nullable=False),
            sa.Column("event_id", AutoString(length=64), nullable=False),
            sa.Column("event_type", AutoString(length=100), nullable=False),
            sa.Column("case_id", AutoString(length=64), nullable=False),
            sa.Column("processed_at", UTCDateTime(timezone=True), nullable=False),
            sa.PrimaryKeyConstraint("consumer", "event_id"),
        )
        with op.batch_alter_table("inbox", schema=None) as batch_op:
            batch_op.create_index(batch_op.f("ix_inbox_case_id"), ["case_id"], unique=False)

    if not table_exists("outbox"):
        op.create_table(
            "outbox",
            sa.Column("id", sa.Integer(), nullable=False),
            sa.Column("event_id", AutoString(length=64), nullable=False),
            sa.Column("subject", AutoString(length=200), nullable=False),
            sa.Column("event_type", AutoString(length=100), nullable=False),
            sa.Column("event_version", sa.Integer(), nullable=False),
            sa.Column("case_id", AutoString(length=64), nullable=False),
            sa.Column("correlation_id", AutoString(length=64), nullable=True),
            sa.Column("payload", sa.Text(), nullable=False),
            sa.Column("created_at", UTCDateTime(timezone=True), nullable=False),
            sa.Column("published_at", UTCDateTime(timezone=True), nullable=True),
            sa.Column("attempts", sa.Integer(), nullable=False),
            sa.PrimaryKeyConstraint("id"),
            sa.UniqueConstraint("event_id"),
        )
        with op.batch_alter_table("outbox", schema=None) as batch_op:
            batch_op.create_index("ix_outbox_unpublished", ["published_at", "id"], unique=False)


def downgrade() -> None:
    op.drop_table("outbox")
    op.drop_table("inbox")
    op.drop_table("idempotency")
    op.drop_table("audit_log")
