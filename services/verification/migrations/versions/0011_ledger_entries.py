"""what is on the ledger, kept as rows (``verification_ledger_entry``)

Back-filled by 0012, with the service's own rebuild (``ledger_entries.rebuild``), which writes the
entries' newest columns: a database that ran this revision when it still back-filled is filled
again there.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-01 07:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

import shared.db

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _string(length: int) -> sqlmodel.sql.sqltypes.AutoString:
    return sqlmodel.sql.sqltypes.AutoString(length=length)


def upgrade() -> None:
    op.create_table(
        "verification_ledger_entry",
        sa.Column("task_id", _string(64), nullable=False),
        sa.Column("case_id", _string(64), nullable=False),
        sa.Column("received_at", shared.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("county_code", _string(16), nullable=True),
        sa.Column("team_code", _string(32), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("created_at", shared.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("leading", sa.Boolean(), nullable=False),
        sa.Column("alone", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("task_id"),
    )
    op.create_index(
        "ix_verification_ledger_entry_leading",
        "verification_ledger_entry",
        ["leading", "received_at", "case_id"],
    )
    op.create_index(
        "ix_verification_ledger_entry_county",
        "verification_ledger_entry",
        ["leading", "county_code", "received_at", "case_id"],
    )
    op.create_index(
        "ix_verification_ledger_entry_team",
        "verification_ledger_entry",
        ["team_code", "received_at", "case_id"],
    )
    op.create_index("ix_verification_ledger_entry_case", "verification_ledger_entry", ["case_id"])


def downgrade() -> None:
    op.drop_table("verification_ledger_entry")
