"""keyset pagination of the long lists (indexes)

The ledger's keyset (received_at, case_id) is served by 0005's ix_verification_matter_received
and ix_verification_matter_county_received; its per-task lookups by the task_id indexes; its
candidates (services.verification.ledger._candidates) by the status indexes and this one.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30 17:00:00.000000
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_verification_task_status_id", "verification_task", ["status", "id"])
    op.create_index("ix_verification_task_classification", "verification_task", ["classification", "status"])


def downgrade() -> None:
    op.drop_index("ix_verification_task_classification", table_name="verification_task")
    op.drop_index("ix_verification_task_status_id", table_name="verification_task")
