"""repeat calls (重复件) linked to the open matter they repeat

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30 13:40:00.000000
"""

from collections.abc import Sequence

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
