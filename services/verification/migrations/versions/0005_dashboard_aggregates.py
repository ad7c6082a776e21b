"""the dashboard's and measures' figures aggregated in SQL (indexes, summary tables)

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30 17:00:00.000000
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# (name, table, columns): what the figures' GROUP BY queries range over; the ledger's keyset pages
# (0006) seek on the matters' two.
INDEXES = (
    ("ix_verification_matter_received", "verification_matter", ["received_at", "case_id"]),
    (
        "ix_verification_matter_county_received",
        "verification_matter",
        ["county_code", "received_at", "case_id"],
    ),
    ("ix_verification_task_case_created", "verification_task", ["case_id", "created_at"]),
    ("ix_verification_task_concluded", "verification_task", ["status", "concluded_at"]),
    ("ix_verification_repeat_call_received", "verification_repeat_call", ["received_at"]),
    ("ix_verification_rating_at", "verification_rating", ["at"]),
)


def upgrade() -> None:
    for name, table, columns in INDEXES:
        op.create_index(name, table, columns)


def downgrade() -> None:
    for name, table, _ in reversed(INDEXES):
        op.drop_index(name, table_name=table)
