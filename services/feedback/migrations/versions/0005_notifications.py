"""notifications and their read receipts; the accused county of a matter

Also the two columns of a delivery that staff messages and the message log need: its staff
recipient and the masked address it went to.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30 13:40:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

import shared.db

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "feedback_notification",
        sa.Column("id", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("kind", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column("audience", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("dedupe_key", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
        sa.Column("case_id", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
        sa.Column("tracking_code", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=True),
        sa.Column("county_code", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=True),
        sa.Column("team_code", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=True),
        sa.Column("title", sqlmodel.sql.sqltypes.AutoString(length=300), nullable=False),
        sa.Column("link", sqlmodel.sql.sqltypes.AutoString(length=300), nullable=True),
        sa.Column("due_at", shared.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("created_at", shared.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("handled_at", shared.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("handled_by", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("dedupe_key", "audience", name="uq_feedback_notification_dedupe"),
    )
    with op.batch_alter_table("feedback_notification", schema=None) as batch_op:
        batch_op.create_index("ix_feedback_notification_audience", ["audience", "created_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_feedback_notification_case_id"), ["case_id"], unique=False)

    op.create_table(
        "feedback_notification_read",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("notification_id", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("username", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("read_at", shared.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("notification_id", "username", name="uq_feedback_notification_read"),
    )

    with op.batch_alter_table("feedback_case", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("county_code", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=True)
        )

    with op.batch_alter_table("feedback_delivery", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("recipient", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True)
        )
        batch_op.add_column(
            sa.Column("sent_to_masked", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True)
        )


def downgrade() -> None:
    with op.batch_alter_table("feedback_delivery", schema=None) as batch_op:
        batch_op.drop_column("sent_to_masked")
        batch_op.drop_column("recipient")

    with op.batch_alter_table("feedback_case", schema=None) as batch_op:
        batch_op.drop_column("county_code")

    op.drop_table("feedback_notification_read")
    with op.batch_alter_table("feedback_notification", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_feedback_notification_case_id"))
        batch_op.drop_index("ix_feedback_notification_audience")
    op.drop_table("feedback_notification")
