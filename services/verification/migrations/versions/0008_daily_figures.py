"""the dashboard's summary: counters per local day, county, team and kind of matter

Back-filled from the existing rows with the dashboard's own SQL (``figures.rebuild``), so a bureau
that upgrades with years of data reads the same figures as before.  The local day is the bureau's
(``TIMEZONE``, as the service reads it).

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-30 20:00:00.000000
"""

import os
from collections.abc import Sequence
from zoneinfo import ZoneInfo

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COUNTERS = (
    "received",
    "concluded",
    "on_time",
    "with_outcome",
    "substantiated",
    "rated",
    "satisfied",
    "basically_satisfied",
    "unsatisfied",
)


def _string(length: int) -> sqlmodel.sql.sqltypes.AutoString:
    return sqlmodel.sql.sqltypes.AutoString(length=length)


def upgrade() -> None:
    op.create_table(
        "verification_daily_figure",
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("county_code", _string(16), nullable=False),
        sa.Column("team_code", _string(32), nullable=False),
        sa.Column("case_kind", _string(16), nullable=False),
        *(sa.Column(name, sa.Integer(), nullable=False) for name in COUNTERS),
        sa.PrimaryKeyConstraint("day", "county_code", "team_code", "case_kind"),
        sqlite_with_rowid=False,
    )
    # Imported here: the back-fill is the service's own rebuild, from the tables as they stand.
    from services.verification.figures import rebuild

    rebuild(op.get_bind(), ZoneInfo(os.environ.get("TIMEZONE") or "Asia/Shanghai"))


def downgrade() -> None:
    op.drop_table("verification_daily_figure")
