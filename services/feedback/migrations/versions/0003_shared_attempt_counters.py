"""shared attempt counters: the public query's limits, one table for every feedback instance

Before this, each instance counted failed attempts in its own memory, so N instances allowed N
times the rate and a restart forgot the counts.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30 10:19:33.708098
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "feedback_attempt_counter",
        sa.Column("key", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("free_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("key"),
    )
    with op.batch_alter_table("feedback_attempt_counter", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_feedback_attempt_counter_free_at"), ["free_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("feedback_attempt_counter", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_feedback_attempt_counter_free_at"))

    op.drop_table("feedback_attempt_counter")
