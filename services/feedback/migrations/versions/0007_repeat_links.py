"""repeat calls (重复件) linked to the open matter they repeat

A linked repeat's public view shows the open matter's status, timeline and answer, and the
answer is delivered to its caller too.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30 13:40:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("feedback_case", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("repeat_of", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True)
        )
        batch_op.create_index(batch_op.f("ix_feedback_case_repeat_of"), ["repeat_of"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("feedback_case", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_feedback_case_repeat_of"))
        batch_op.drop_column("repeat_of")
