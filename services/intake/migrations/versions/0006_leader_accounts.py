"""leader accounts: the county a leader answers for

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30 13:40:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("intake_user", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("county_code", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=True)
        )


def downgrade() -> None:
    with op.batch_alter_table("intake_user", schema=None) as batch_op:
        batch_op.drop_column("county_code")
