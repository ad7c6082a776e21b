"""the monthly and yearly 督察工作通报 reports

Each report's Word and Excel files live in its row (every instance serves every report, and a
database backup keeps them); the scheduled run's key is unique, so a scheduled report is made once.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30 17:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

import shared.db

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _string(length: int) -> sqlmodel.sql.sqltypes.AutoString:
    return sqlmodel.sql.sqltypes.AutoString(length=length)


def upgrade() -> None:
    op.create_table(
        "verification_report",
        sa.Column("id", _string(64), nullable=False),
        sa.Column("scope", _string(16), nullable=False),
        sa.Column("scope_name", _string(100), nullable=False),
        sa.Column("period", _string(8), nullable=False),
        sa.Column("start", sa.Date(), nullable=False),
        sa.Column("end", sa.Date(), nullable=False),
        sa.Column("generated_at", shared.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("generated_by", _string(64), nullable=False),
        sa.Column("status", _string(16), nullable=False),
        sa.Column("schedule_key", _string(80), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("docx", sa.LargeBinary(), nullable=True),
        sa.Column("xlsx", sa.LargeBinary(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("uq_verification_report_schedule", "verification_report", ["schedule_key"], unique=True)
    op.create_index("ix_verification_report_generated", "verification_report", ["generated_at"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_verification_report_generated", table_name="verification_report")
    op.drop_index("uq_verification_report_schedule", table_name="verification_report")
    op.drop_table("verification_report")
