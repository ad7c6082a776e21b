"""batch insert sentinels: nothing left here, the audit log's and outbox's are ``platform_0002``

Kept, empty, because databases migrated before the platform branch record it.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28 06:56:43.433468
"""

from collections.abc import Sequence

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
