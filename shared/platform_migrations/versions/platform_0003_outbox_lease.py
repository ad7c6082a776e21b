"""outbox lease: until when a relay instance has taken a row to publish it

On PostgreSQL several relay instances share the outbox: each leases a batch in a short
transaction and publishes it with no transaction open, and the others skip a row whose lease
has not run out (``shared.outbox.OutboxRelay``).  The column is nullable: a row nobody is
publishing, and every row written before this revision, has no lease.  Like the other platform
revisions it is added only where it is missing.

No index is added.  The claim query selects rows with ``published_at IS NULL`` whose lease is
null or past, ordered by ``id``; ``ix_outbox_unpublished`` (``published_at, id``) yields the
unpublished rows in that order already, and the lease test filters out only the batches being
published at that moment (a relay clears the lease when it marks a row).  An index on
``(published_at, lease_until, id)`` could not give ``id`` order across the two lease cases, so
the database would have to sort every unpublished row.

Revision ID: platform_0003
Revises: platform_0002
Create Date: 2026-11-30 10:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import shared.db
from shared.migrations import column_exists

revision: str = "platform_0003"
down_revision: str | None = "platform_0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    if not column_exists("outbox", "lease_until"):
        with op.batch_alter_table("outbox", schema=None) as batch_op:
            batch_op.add_column(sa.Column("lease_until", shared.db.UTCDateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.drop_column("lease_until")
