"""the 待办 list's index: each audience's open notifications, newest first

A person's open items (``inbox.own_items`` with ``open``) were found through the (audience,
created_at) index, each item read to see whether it was handled, and a supervisor's audience holds
most notifications ever sent.  This partial index holds only the open ones, in the list's order
(created_at, id), so a page reads a page of entries and the total counts the open items alone.
It is built from the existing rows: nothing to back-fill.

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-30 20:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OPEN = sa.text("handled_at IS NULL")


def upgrade() -> None:
    op.create_index(
        "ix_feedback_notification_open",
        "feedback_notification",
        ["audience", "created_at", "id"],
        sqlite_where=OPEN,
        postgresql_where=OPEN,
    )


def downgrade() -> None:
    op.drop_index("ix_feedback_notification_open", table_name="feedback_notification")
