"""ledger close-off, rectification clocks, early-warning thresholds

The ledger's close-offs (挂账销号); clock names long enough for a rectification item's clock
("rectification:<item id>"); the early-warning thresholds supervisors change, the matters counted
against each officer or unit, and the warnings raised, once per crossing; the ratings of each
round, which statistics count for the team that concluded the round.

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


def _string(length: int) -> sqlmodel.sql.sqltypes.AutoString:
    return sqlmodel.sql.sqltypes.AutoString(length=length)


def upgrade() -> None:
    with op.batch_alter_table("verification_clock", schema=None) as batch_op:
        batch_op.alter_column("name", existing_type=_string(32), type_=_string(64), existing_nullable=False)

    op.create_table(
        "verification_ledger_closeoff",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("case_id", _string(64), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("closed_by", _string(64), nullable=False),
        sa.Column("closed_at", shared.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "ix_verification_ledger_closeoff_case_id", "verification_ledger_closeoff", ["case_id"], unique=False
    )
    op.create_table(
        "verification_warning_threshold",
        sa.Column("measure", _string(32), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("window_months", sa.Integer(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("updated_by", _string(64), nullable=False),
        sa.Column("updated_at", shared.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("measure"),
    )
    op.create_table(
        "verification_warning_hit",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("subject_kind", _string(16), nullable=False),
        sa.Column("subject_key", _string(200), nullable=False),
        sa.Column("measure", _string(32), nullable=False),
        sa.Column("case_id", _string(64), nullable=False),
        sa.Column("county_code", _string(16), nullable=True),
        sa.Column("at", shared.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "uq_verification_warning_hit",
        "verification_warning_hit",
        ["subject_kind", "subject_key", "measure", "case_id"],
        unique=True,
    )
    op.create_table(
        "verification_early_warning",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("subject_kind", _string(16), nullable=False),
        sa.Column("subject_key", _string(200), nullable=False),
        sa.Column("measure", _string(32), nullable=False),
        sa.Column("county_code", _string(16), nullable=True),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("threshold", sa.Integer(), nullable=False),
        sa.Column("window_months", sa.Integer(), nullable=False),
        sa.Column("crossing_case_id", _string(64), nullable=False),
        sa.Column("case_ids", sa.JSON(), nullable=False),
        sa.Column("raised_at", shared.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "uq_verification_early_warning",
        "verification_early_warning",
        ["subject_kind", "subject_key", "measure", "crossing_case_id"],
        unique=True,
    )
    op.create_table(
        "verification_rating",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("case_id", _string(64), nullable=False),
        sa.Column("round", sa.Integer(), nullable=False),
        sa.Column("rating", _string(32), nullable=False),
        sa.Column("at", shared.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "uq_verification_rating_case_round", "verification_rating", ["case_id", "round"], unique=True
    )


def downgrade() -> None:
    op.drop_index("uq_verification_rating_case_round", table_name="verification_rating")
    op.drop_table("verification_rating")
    op.drop_index("uq_verification_early_warning", table_name="verification_early_warning")
    op.drop_table("verification_early_warning")
    op.drop_index("uq_verification_warning_hit", table_name="verification_warning_hit")
    op.drop_table("verification_warning_hit")
    op.drop_table("verification_warning_threshold")
    op.drop_index("ix_verification_ledger_closeoff_case_id", table_name="verification_ledger_closeoff")
    op.drop_table("verification_ledger_closeoff")
    with op.batch_alter_table("verification_clock", schema=None) as batch_op:
        batch_op.alter_column("name", existing_type=_string(64), type_=_string(32), existing_nullable=False)
