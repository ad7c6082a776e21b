"""notifications: the moment each counts as unread, and its first reading, for the figures

The 通知送达 figures (``inbox.statistics``) were computed per notification in Python; they are
now one aggregate over an index holding every column they read.  Existing notifications are
back-filled: ``first_read_at`` is the earliest read receipt, ``read_deadline`` one working day
after sending by the product's calendar (``shared.workcalendar``: the published holidays, and the
time zone and override file of the environment the migration runs in, as the service reads
them).  The deadline depends only on the local day of sending, so it is written per run of days
sharing one deadline (a Friday and the weekend after it are one run): a few thousand UPDATEs
over the ``created_at`` index for five years, whatever the number of notifications.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-30 17:30:00.000000
"""

from collections.abc import Iterator, Sequence
from datetime import date, datetime, time, timedelta
from pathlib import Path

import sqlalchemy as sa
from alembic import op
from pydantic_settings import BaseSettings, SettingsConfigDict

import shared.db
from shared.workcalendar import WorkCalendar

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEX = "ix_feedback_notification_stats"
INDEX_COLUMNS = ["created_at", "county_code", "team_code", "kind", "read_deadline", "first_read_at"]


class _CalendarSettings(BaseSettings):
    """The two settings the service's calendar is built from (``ServiceSettings``), read alone: the
    migration must not need the service's keys."""

    model_config = SettingsConfigDict(extra="ignore", case_sensitive=False, env_file=None)

    timezone: str = "Asia/Shanghai"
    calendar_override_file: Path | None = None


def _deadline_runs(calendar: WorkCalendar, first: date, last: date) -> Iterator[tuple[date, date, datetime]]:
    """``(from_day, to_day, deadline)``: consecutive local days sent on which share one deadline."""
    start = first
    deadline = calendar.end_of(calendar.next_working_day(start))
    day = first
    while day < last:
        following = day + timedelta(days=1)
        next_deadline = calendar.end_of(calendar.next_working_day(following))
        if next_deadline != deadline:
            yield start, day, deadline
            start, deadline = following, next_deadline
        day = following
    yield start, last, deadline


def _backfill_deadlines(connection: sa.Connection, notifications: sa.TableClause) -> None:
    settings = _CalendarSettings()
    calendar = WorkCalendar.load(settings.calendar_override_file, tz=settings.timezone)
    created = notifications.c.created_at
    first, last = connection.execute(sa.select(sa.func.min(created), sa.func.max(created))).one()
    if first is None:
        return

    def local_midnight(day: date) -> datetime:
        return datetime.combine(day, time(0), tzinfo=calendar.tz)

    for from_day, to_day, deadline in _deadline_runs(
        calendar, calendar.local_date(first), calendar.local_date(last)
    ):
        connection.execute(
            notifications.update()
            .where(created >= local_midnight(from_day), created < local_midnight(to_day + timedelta(days=1)))
            .values(read_deadline=deadline)
        )


def upgrade() -> None:
    with op.batch_alter_table("feedback_notification", schema=None) as batch_op:
        batch_op.add_column(sa.Column("read_deadline", shared.db.UTCDateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("first_read_at", shared.db.UTCDateTime(timezone=True), nullable=True))
        batch_op.create_index(INDEX, INDEX_COLUMNS, unique=False)

    notifications = sa.table(
        "feedback_notification",
        sa.column("id", sa.String),
        sa.column("created_at", shared.db.UTCDateTime(timezone=True)),
        sa.column("read_deadline", shared.db.UTCDateTime(timezone=True)),
        sa.column("first_read_at", shared.db.UTCDateTime(timezone=True)),
    )
    reads = sa.table(
        "feedback_notification_read",
        sa.column("notification_id", sa.String),
        sa.column("read_at", shared.db.UTCDateTime(timezone=True)),
    )
    connection = op.get_bind()
    _backfill_deadlines(connection, notifications)
    # The read receipts' unique (notification_id, username) index serves the correlated min().
    first_read = (
        sa.select(sa.func.min(reads.c.read_at))
        .where(reads.c.notification_id == notifications.c.id)
        .scalar_subquery()
    )
    connection.execute(notifications.update().values(first_read_at=first_read))

    with op.batch_alter_table("feedback_notification", schema=None) as batch_op:
        batch_op.alter_column(
            "read_deadline", existing_type=shared.db.UTCDateTime(timezone=True), nullable=False
        )


def downgrade() -> None:
    with op.batch_alter_table("feedback_notification", schema=None) as batch_op:
        batch_op.drop_index(INDEX)
        batch_op.drop_column("first_read_at")
        batch_op.drop_column("read_deadline")
