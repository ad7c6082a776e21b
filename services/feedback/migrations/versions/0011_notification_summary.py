"""the 通知送达 figures' summary: per local day, county, team and kind, sent and late

``inbox.statistics`` read every notification of its window; the days whose notifications are all
past their read deadline are now read from this summary (``notification_summary``), kept by a
worker of the service.  Back-filled here from the existing notifications with the service's own
statements (``notification_summary.summarise_settled``: two grouped INSERT ... SELECT per year of
days, whatever the number of notifications), so a bureau that upgrades with years of them reads
its figures from the summary at once.  The local day is the bureau's (``TIMEZONE``, as the service
reads it); a day cut in another time zone is read from the notifications until the worker cuts it
again, so the figures never depend on the two agreeing.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-01 12:00:00.000000
"""

from collections.abc import Sequence
from zoneinfo import ZoneInfo

import sqlalchemy as sa
import sqlmodel
from alembic import op
from pydantic_settings import BaseSettings, SettingsConfigDict

import shared.db

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


class _TimeZoneSettings(BaseSettings):
    """The one setting the service's calendar takes its time zone from (``ServiceSettings``), read
    alone: the migration must not need the service's keys."""

    model_config = SettingsConfigDict(extra="ignore", case_sensitive=False, env_file=None)

    timezone: str = "Asia/Shanghai"


def _string(length: int) -> sqlmodel.sql.sqltypes.AutoString:
    return sqlmodel.sql.sqltypes.AutoString(length=length)


def upgrade() -> None:
    op.create_table(
        "feedback_notification_day",
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("starts_at", shared.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("ends_at", shared.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("notifications", sa.Integer(), nullable=False),
        sa.Column("last_deadline", shared.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("summarised_at", shared.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("day"),
        sqlite_with_rowid=False,
    )
    op.create_table(
        "feedback_notification_figure",
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("county_code", _string(16), nullable=False),
        sa.Column("team_code", _string(32), nullable=False),
        sa.Column("kind", _string(32), nullable=False),
        sa.Column("sent", sa.Integer(), nullable=False),
        sa.Column("late", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("day", "county_code", "team_code", "kind"),
        sqlite_with_rowid=False,
    )
    # Imported here: the back-fill is the service's own, from the notifications as they stand.
    from services.feedback.notification_summary import summarise_settled

    summarise_settled(op.get_bind(), ZoneInfo(_TimeZoneSettings().timezone))


def downgrade() -> None:
    op.drop_table("feedback_notification_figure")
    op.drop_table("feedback_notification_day")
