"""batch insert sentinels on the platform's hot append-only tables (audit log, outbox)

On SQLite the ORM cannot match RETURNING rows to new objects by order, so it inserted rows with
generated ids one statement each; ``shared.db.batch_insert_sentinel`` explains the column.

This change was first written four times, once in each service's ``0002``; those revisions now
add the column only to the service's own tables.  A database migrated before the platform branch
existed already has the column here (its service's ``0002`` added it), so the column is added
only where it is missing.

Revision ID: platform_0002
Revises: platform_0001
Create Date: 2026-11-30 10:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from shared.migrations import column_exists

revision: str = "platform_0002"
down_revision: str | None = "platform_0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLES = ("audit_log", "outbox")


def upgrade() -> None:
    for table in TABLES:
        if not column_exists(table, "sentinel"):
            with op.batch_alter_table(table, schema=None) as batch_op:
                batch_op.add_column(sa.Column("sentinel", sa.Integer(), nullable=True))


def downgrade() -> None:
    for table in reversed(TABLES):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_column("sentinel")
