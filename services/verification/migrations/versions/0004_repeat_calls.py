"""repeat calls shown on the open matter's task

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30 13:40:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

import shared.db

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "verification_repeat_call",
        sa.Column("repeat_case_id", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("case_id", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("tracking_code", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column("channel", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column("received_at", shared.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("recorded_by", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
        sa.PrimaryKeyConstraint("repeat_case_id"),
    )
    with op.batch_alter_table("verification_repeat_call", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_verification_repeat_call_case_id"), ["case_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("verification_repeat_call", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_verification_repeat_call_case_id"))
    op.drop_table("verification_repeat_call")
