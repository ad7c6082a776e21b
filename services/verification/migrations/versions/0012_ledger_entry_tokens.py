"""the ledger's entries keep what its filters by category, clock and step match

Back-filled with the service's own rebuild (``ledger_entries.rebuild``), from the tables as they
stand, so the ledger reads the same after the upgrade.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-01 11:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_COLUMNS = (("categories", 400), ("clocks", 400), ("steps", 100))


def upgrade() -> None:
    for name, length in _COLUMNS:
        op.add_column(
            "verification_ledger_entry",
            sa.Column(
                name, sqlmodel.sql.sqltypes.AutoString(length=length), nullable=False, server_default=""
            ),
        )
    # Imported here: the back-fill is the service's own rebuild, from the tables as they stand.
    from services.verification.ledger_entries import rebuild

    rebuild(op.get_bind())


def downgrade() -> None:
    with op.batch_alter_table("verification_ledger_entry") as batch:
        for name, _ in reversed(_COLUMNS):
            batch.drop_column(name)
