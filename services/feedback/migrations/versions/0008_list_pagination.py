"""keyset pagination of the long lists (indexes)

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-30 17:00:00.000000
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEXES = (
    ("ix_feedback_answer_status_created", "feedback_answer", ["status", "created_at", "id"]),
    ("ix_feedback_delivery_status_sent", "feedback_delivery", ["status", "sent_at", "id"]),
    ("ix_feedback_delivery_updated", "feedback_delivery", ["updated_at", "id"]),
    ("ix_feedback_clock_status_due", "feedback_clock", ["status", "due_at", "id"]),
)


def upgrade() -> None:
    for name, table, columns in INDEXES:
        op.create_index(name, table, columns)


def downgrade() -> None:
    for name, table, _ in reversed(INDEXES):
        op.drop_index(name, table_name=table)
