"""sign-in security: wrong-password counters and locks, refresh tokens

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30 10:40:00.000000
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
        "intake_sign_in_throttle",
        sa.Column("key", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("window_started_at", shared.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("blocked_until", shared.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("locked_at", shared.db.UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("key"),
    )
    op.create_table(
        "intake_refresh_token",
        sa.Column("token_hash", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("family", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("username", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("expires_at", shared.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("used_at", shared.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("created_at", shared.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("token_hash"),
    )
    with op.batch_alter_table("intake_refresh_token", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_intake_refresh_token_family"), ["family"], unique=False)
        batch_op.create_index(batch_op.f("ix_intake_refresh_token_username"), ["username"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("intake_refresh_token", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_intake_refresh_token_username"))
        batch_op.drop_index(batch_op.f("ix_intake_refresh_token_family"))
    op.drop_table("intake_refresh_token")
    op.drop_table("intake_sign_in_throttle")
