"""the dashboard's open tasks: each task's worst overdue step, and a summary of the open tasks

Back-filled from the existing rows with the dashboard's own SQL (``open_figures.rebuild``), so a
bureau that upgrades reads the same open and overdue figures as before.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01 03:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _string(length: int) -> sqlmodel.sql.sqltypes.AutoString:
    return sqlmodel.sql.sqltypes.AutoString(length=length)


def upgrade() -> None:
    with op.batch_alter_table("verification_task") as batch:
        batch.add_column(sa.Column("overdue_rank", sa.Integer(), nullable=False, server_default="0"))
    op.create_table(
        "verification_open_figure",
        sa.Column("county_code", _string(16), nullable=False),
        sa.Column("team_code", _string(32), nullable=False),
        sa.Column("case_kind", _string(16), nullable=False),
        sa.Column("overdue_rank", sa.Integer(), nullable=False),
        sa.Column("open", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("county_code", "team_code", "case_kind", "overdue_rank"),
        sqlite_with_rowid=False,
    )
    # Imported here: the back-fill is the service's own rebuild, from the tables as they stand.
    from services.verification.open_figures import rebuild

    rebuild(op.get_bind())


def downgrade() -> None:
    op.drop_table("verification_open_figure")
    with op.batch_alter_table("verification_task") as batch:
        batch.drop_column("overdue_rank")
