"""connecting systems' Open311 API keys, stored as hashes (the complaints they send name them in created_by)

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-30 14:10:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

import shared.db

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "intake_open311_key",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sqlmodel.sql.sqltypes.AutoString(length=100), nullable=False),
        sa.Column("key_hash", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("created_by", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("created_at", shared.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("revoked_by", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
        sa.Column("revoked_at", shared.db.UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("intake_open311_key", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_intake_open311_key_key_hash"), ["key_hash"], unique=True)
        batch_op.create_index(batch_op.f("ix_intake_open311_key_name"), ["name"], unique=True)


def downgrade() -> None:
    with op.batch_alter_table("intake_open311_key", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_intake_open311_key_name"))
        batch_op.drop_index(batch_op.f("ix_intake_open311_key_key_hash"))
    op.drop_table("intake_open311_key")
