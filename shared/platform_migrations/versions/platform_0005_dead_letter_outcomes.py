"""dead-letter outcomes: what a person decided about a parked event (replayed, or discarded and why)

Every service parks events it cannot handle, so every service database gets the table
(``shared.deadletters``).  One row per decision, keyed to the parked copy by its sequence in
the dead-letter stream, with the consumer and event id that tell it from a copy of a stream
made anew.  Like the other platform revisions it is created only where it is missing.

Revision ID: platform_0005
Revises: platform_0004
Create Date: 2026-11-30 11:20:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlmodel.sql.sqltypes import AutoString

from shared.db import UTCDateTime
from shared.migrations import table_exists

revision: str = "platform_0005"
down_revision: str | None = "platform_0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    if table_exists("dead_letter_outcome"):
        return
    op.create_table(
        "dead_letter_outcome",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("dlq_seq", sa.BigInteger(), nullable=False),
        sa.Column("consumer", AutoString(length=100), nullable=False),
        sa.Column("event_id", AutoString(length=64), nullable=False),
        sa.Column("case_id", AutoString(length=64), nullable=False),
        sa.Column("status", AutoString(length=16), nullable=False),
        sa.Column("actor", AutoString(length=100), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("replay_msg_id", AutoString(length=200), nullable=True),
        sa.Column("at", UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("dead_letter_outcome", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_dead_letter_outcome_dlq_seq"), ["dlq_seq"], unique=False)


def downgrade() -> None:
    op.drop_table("dead_letter_outcome")
