"""identity reads: the reader's own words beside the purpose chosen from the list

Reads recorded before this keep a NULL reason: their purpose was free text then.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30 11:10:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("intake_identity_access", schema=None) as batch_op:
        batch_op.add_column(sa.Column("reason", sqlmodel.sql.sqltypes.AutoString(length=500), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("intake_identity_access", schema=None) as batch_op:
        batch_op.drop_column("reason")
