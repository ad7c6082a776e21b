"""matters: the deputy's account, by which a suggestion is the deputy's own

Filled from ``SuggestionReceived`` v2.  Suggestions projected before stay without one: they are
matched by name and delegation only for a deputy whose pair intake vouches is unique.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30 11:20:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("feedback_case", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("deputy_account", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True)
        )
        batch_op.create_index("ix_feedback_case_deputy_account", ["deputy_account"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("feedback_case", schema=None) as batch_op:
        batch_op.drop_index("ix_feedback_case_deputy_account")
        batch_op.drop_column("deputy_account")
