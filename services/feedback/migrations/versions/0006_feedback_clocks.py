"""feedback's own clocks: acceptance notice, answer approval, follow-up call (回访)

The acceptance notice is a delivery (its clock is verification's); answer approval and the
follow-up call are clocks here, each with the steps of its ladder, taken once per clock.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30 13:40:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

import shared.db

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "feedback_clock",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("case_id", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("name", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column("subject_id", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("label", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("rule", sa.Text(), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("started_at", shared.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("due_at", shared.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("status", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("stopped_at", shared.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("stop_note", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=True),
        sa.Column("next_step", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=True),
        sa.Column("next_step_at", shared.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("feedback_clock", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_feedback_clock_case_id"), ["case_id"], unique=False)
        batch_op.create_index("ix_feedback_clock_due", ["status", "next_step_at"], unique=False)
        batch_op.create_index("uq_feedback_clock_name_subject", ["name", "subject_id"], unique=True)

    op.create_table(
        "feedback_clock_step",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("clock_id", sa.Integer(), nullable=False),
        sa.Column("case_id", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("step", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("due_at", shared.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("at", shared.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["clock_id"], ["feedback_clock.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("feedback_clock_step", schema=None) as batch_op:
        batch_op.create_index("uq_feedback_clock_step", ["clock_id", "step"], unique=True)


def downgrade() -> None:
    with op.batch_alter_table("feedback_clock_step", schema=None) as batch_op:
        batch_op.drop_index("uq_feedback_clock_step")
    op.drop_table("feedback_clock_step")
    with op.batch_alter_table("feedback_clock", schema=None) as batch_op:
        batch_op.drop_index("uq_feedback_clock_name_subject")
        batch_op.drop_index("ix_feedback_clock_due")
        batch_op.drop_index(batch_op.f("ix_feedback_clock_case_id"))
    op.drop_table("feedback_clock")
