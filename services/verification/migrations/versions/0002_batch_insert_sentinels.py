"""batch insert sentinels: a column on each of this service's hot append-only tables

On SQLite the ORM cannot match RETURNING rows to new objects by order, so it inserted rows with
generated ids one statement each; ``shared.db.batch_insert_sentinel`` explains the column.  The
audit log's and the outbox's are ``platform_0002``, which says why a database migrated before
the platform branch existed upgrades cleanly.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28 06:56:45.369106
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("verification_clock", schema=None) as batch_op:
        batch_op.add_column(sa.Column("sentinel", sa.Integer(), nullable=True))

    with op.batch_alter_table("verification_task_event", schema=None) as batch_op:
        batch_op.add_column(sa.Column("sentinel", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("verification_task_event", schema=None) as batch_op:
        batch_op.drop_column("sentinel")

    with op.batch_alter_table("verification_clock", schema=None) as batch_op:
        batch_op.drop_column("sentinel")
