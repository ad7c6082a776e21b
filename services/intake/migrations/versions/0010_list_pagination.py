"""keyset pagination of the suggestions list (index)

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-30 17:00:00.000000
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_intake_suggestion_received", "intake_suggestion", ["received_at", "id"])


def downgrade() -> None:
    op.drop_index("ix_intake_suggestion_received", table_name="intake_suggestion")
