"""suggestions: the deputy's account, by which a suggestion is the deputy's own

Names repeat within a delegation, so ownership by name and delegation let two deputies of one
name see each other's suggestions.  Existing suggestions are linked to the account of their
name and delegation when exactly one deputy account has that pair; the others stay unlinked
(no deputy matches them by name unless the pair is unique, see feedback's ``is_deputys_own``).

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30 11:20:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("intake_suggestion", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("deputy_account", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True)
        )
        batch_op.create_index(
            batch_op.f("ix_intake_suggestion_deputy_account"), ["deputy_account"], unique=False
        )
    users = sa.table(
        "intake_user",
        sa.column("username", sa.String),
        sa.column("role", sa.String),
        sa.column("deputy_name", sa.String),
        sa.column("deputy_delegation", sa.String),
    )
    suggestions = sa.table(
        "intake_suggestion",
        sa.column("deputy_name", sa.String),
        sa.column("deputy_delegation", sa.String),
        sa.column("deputy_account", sa.String),
    )
    connection = op.get_bind()
    pairs = connection.execute(
        sa.select(users.c.deputy_name, users.c.deputy_delegation, sa.func.min(users.c.username))
        .where(users.c.role == "deputy", users.c.deputy_name.is_not(None))
        .group_by(users.c.deputy_name, users.c.deputy_delegation)
        .having(sa.func.count() == 1)
    ).all()
    for name, delegation, username in pairs:
        connection.execute(
            suggestions.update()
            .where(
                suggestions.c.deputy_name == name,
                suggestions.c.deputy_delegation == delegation,
                suggestions.c.deputy_account.is_(None),
            )
            .values(deputy_account=username)
        )


def downgrade() -> None:
    with op.batch_alter_table("intake_suggestion", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_intake_suggestion_deputy_account"))
        batch_op.drop_column("deputy_account")
