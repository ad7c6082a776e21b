"""bulk imports of transferred matters (.xlsx): each import and its rows, keyed by the platform's ticket number

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-30 14:10:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

import shared.db

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _text(length: int) -> sqlmodel.sql.sqltypes.AutoString:
    return sqlmodel.sql.sqltypes.AutoString(length=length)


def upgrade() -> None:
    op.create_table(
        "intake_import",
        sa.Column("id", _text(64), nullable=False),
        sa.Column("filename", _text(255), nullable=False),
        sa.Column("status", _text(16), nullable=False),
        sa.Column("rows", sa.Integer(), nullable=False),
        sa.Column("processed", sa.Integer(), nullable=False),
        sa.Column("accepted", sa.Integer(), nullable=False),
        sa.Column("refused", sa.Integer(), nullable=False),
        sa.Column("duplicates", sa.Integer(), nullable=False),
        sa.Column("rows_sealed", sa.Text(), nullable=True),
        sa.Column("failure", _text(500), nullable=True),
        sa.Column("lease_until", shared.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("created_by", _text(64), nullable=False),
        sa.Column("created_at", shared.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("finished_at", shared.db.UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("intake_import", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_intake_import_status"), ["status"], unique=False)
    op.create_table(
        "intake_import_row",
        sa.Column("import_id", _text(64), nullable=False),
        sa.Column("row", sa.Integer(), nullable=False),
        sa.Column("result", _text(16), nullable=False),
        sa.Column("platform_ticket_no", _text(64), nullable=True),
        sa.Column("tracking_code", _text(32), nullable=True),
        sa.Column("field", _text(64), nullable=True),
        sa.Column("message", _text(500), nullable=True),
        sa.ForeignKeyConstraint(["import_id"], ["intake_import.id"]),
        sa.PrimaryKeyConstraint("import_id", "row"),
    )
    op.create_table(
        "intake_imported_ticket",
        sa.Column("platform_ticket_no", _text(64), nullable=False),
        sa.Column("complaint_id", _text(64), nullable=False),
        sa.Column("tracking_code", _text(32), nullable=False),
        sa.Column("import_id", _text(64), nullable=False),
        sa.Column("row", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("platform_ticket_no"),
    )


def downgrade() -> None:
    op.drop_table("intake_imported_ticket")
    op.drop_table("intake_import_row")
    with op.batch_alter_table("intake_import", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_intake_import_status"))
    op.drop_table("intake_import")
