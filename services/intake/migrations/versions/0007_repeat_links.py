"""repeat calls linked to the open complaint, or recorded as a new matter with a reason

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
    with op.batch_alter_table("intake_complaint", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("linked_repeat", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch_op.add_column(
            sa.Column("new_matter_reason", sqlmodel.sql.sqltypes.AutoString(length=500), nullable=True)
        )


def downgrade() -> None:
    with op.batch_alter_table("intake_complaint", schema=None) as batch_op:
        batch_op.drop_column("new_matter_reason")
        batch_op.drop_column("linked_repeat")
