"""each bureau's leader (分管领导) and duty contacts, for notices

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30 13:40:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

import shared.db

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "routing_bureau_contact",
        sa.Column("bureau_code", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("bureau_name", sqlmodel.sql.sqltypes.AutoString(length=100), nullable=False),
        sa.Column("leader_name", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
        sa.Column("leader_title", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
        sa.Column("phone", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=True),
        sa.Column("email", sqlmodel.sql.sqltypes.AutoString(length=254), nullable=True),
        sa.Column("leader_username", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
        sa.Column("updated_by", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("updated_at", shared.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("bureau_code"),
    )


def downgrade() -> None:
    op.drop_table("routing_bureau_contact")
