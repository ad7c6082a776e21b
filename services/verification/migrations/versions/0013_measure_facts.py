"""each matter's part in the 12345 measures, and each rating's, kept as rows and summed per day

Left empty: the service's worker (``measure_facts.fact_builder``) makes them a batch at a time once
it starts with the bureau's own settings, and until then the measures are read from the tables.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-01 14:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

import shared.db

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


# The columns the covering indexes hold after their first (``measure_facts._SUMMED``), as they stood.
_SUMMED = [
    "county_code",
    "team_code",
    "complaint",
    "responded",
    "concluded_at",
    "on_time",
    "with_outcome",
    "substantiated",
    "pleased_at",
    "reopened",
]
_RATING_SUMMED = ["county_code", "team_code", "rating", "at"]


def _string(length: int) -> sqlmodel.sql.sqltypes.AutoString:
    return sqlmodel.sql.sqltypes.AutoString(length=length)


def _moment() -> shared.db.UTCDateTime:
    return shared.db.UTCDateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "verification_measure_fact",
        sa.Column("case_id", _string(64), nullable=False),
        sa.Column("received_at", _moment(), nullable=False),
        sa.Column("county_code", _string(16), nullable=True),
        sa.Column("team_code", _string(32), nullable=True),
        sa.Column("complaint", sa.Boolean(), nullable=False),
        sa.Column("responded", sa.Boolean(), nullable=False),
        sa.Column("concluded_at", _moment(), nullable=True),
        sa.Column("on_time", sa.Boolean(), nullable=False),
        sa.Column("with_outcome", sa.Boolean(), nullable=False),
        sa.Column("substantiated", sa.Boolean(), nullable=False),
        sa.Column("pleased_at", _moment(), nullable=True),
        sa.Column("reopened", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("case_id"),
    )
    op.create_index(
        "ix_verification_measure_fact_received", "verification_measure_fact", ["received_at", *_SUMMED]
    )
    op.create_index(
        "ix_verification_measure_fact_county",
        "verification_measure_fact",
        ["county_code", "received_at", *_SUMMED[1:]],
    )
    op.create_index("ix_verification_measure_fact_concluded", "verification_measure_fact", ["concluded_at"])
    op.create_index("ix_verification_measure_fact_pleased", "verification_measure_fact", ["pleased_at"])
    op.create_table(
        "verification_measure_rating_fact",
        sa.Column("rating_id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("case_id", _string(64), nullable=False),
        sa.Column("received_at", _moment(), nullable=False),
        sa.Column("county_code", _string(16), nullable=True),
        sa.Column("team_code", _string(32), nullable=True),
        sa.Column("rating", _string(32), nullable=False),
        sa.Column("at", _moment(), nullable=False),
        sa.PrimaryKeyConstraint("rating_id"),
    )
    op.create_index(
        "ix_verification_measure_rating_fact_received",
        "verification_measure_rating_fact",
        ["received_at", *_RATING_SUMMED],
    )
    op.create_index(
        "ix_verification_measure_rating_fact_county",
        "verification_measure_rating_fact",
        ["county_code", "received_at", *_RATING_SUMMED[1:]],
    )
    op.create_index(
        "ix_verification_measure_rating_fact_case", "verification_measure_rating_fact", ["case_id"]
    )
    op.create_index("ix_verification_measure_rating_fact_at", "verification_measure_rating_fact", ["at"])
    op.create_table(
        "verification_measure_repeat_fact",
        sa.Column("repeat_case_id", _string(64), nullable=False),
        sa.Column("case_id", _string(64), nullable=False),
        sa.Column("received_at", _moment(), nullable=False),
        sa.Column("county_code", _string(16), nullable=True),
        sa.Column("team_code", _string(32), nullable=True),
        sa.PrimaryKeyConstraint("repeat_case_id"),
    )
    for name, columns in (
        ("received", ["received_at", "county_code", "team_code"]),
        ("county", ["county_code", "received_at", "team_code"]),
        ("case", ["case_id"]),
    ):
        op.create_index(
            f"ix_verification_measure_repeat_fact_{name}", "verification_measure_repeat_fact", columns
        )
    counters = ("received", "complaints", "responded_on_time", "concluded", "concluded_on_time")
    counters += ("with_outcome", "substantiated", "resolved")
    op.create_table(
        "verification_measure_day",
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("county_code", _string(16), nullable=False),
        sa.Column("team_code", _string(32), nullable=False),
        *(sa.Column(name, sa.Integer(), nullable=False) for name in counters),
        sa.PrimaryKeyConstraint("day", "county_code", "team_code"),
        sqlite_with_rowid=False,
    )
    op.create_table(
        "verification_measure_rating_day",
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("county_code", _string(16), nullable=False),
        sa.Column("team_code", _string(32), nullable=False),
        sa.Column("rating", _string(32), nullable=False),
        sa.Column("rated", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("day", "county_code", "team_code", "rating"),
        sqlite_with_rowid=False,
    )
    op.create_table(
        "verification_measure_fact_state",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("fingerprint", _string(64), nullable=False),
        sa.Column("next_case_id", _string(64), nullable=True),
        sa.Column("complete", sa.Boolean(), nullable=False),
        sa.Column("updated_at", _moment(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )


def downgrade() -> None:
    op.drop_table("verification_measure_fact_state")
    op.drop_table("verification_measure_repeat_fact")
    op.drop_table("verification_measure_rating_day")
    op.drop_table("verification_measure_day")
    op.drop_table("verification_measure_rating_fact")
    op.drop_table("verification_measure_fact")
