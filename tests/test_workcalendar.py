"""The working-day calendar: weekends, the State Council's holidays and make-up days, overrides."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, time, timedelta, timezone
from pathlib import Path

import chinese_calendar
import pytest
from structlog.testing import capture_logs

from shared.workcalendar import WorkCalendar

CST = timezone(timedelta(hours=8))


def at(year: int, month: int, day: int, hour: int = 10, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=CST)


def due(day: date) -> datetime:
    return datetime.combine(day, time(17, 30), tzinfo=CST)


def assert_end_of_shanghai_day(moment: datetime) -> None:
    assert moment.tzinfo is not None and getattr(moment.tzinfo, "key", None) == "Asia/Shanghai"
    assert moment.utcoffset() == timedelta(hours=8)
    assert moment.timetz().replace(tzinfo=None) == time(17, 30)


def days(first: date, last: date) -> list[date]:
    return [first + timedelta(n) for n in range((last - first).days + 1)]


@pytest.fixture
def calendar() -> WorkCalendar:
    return WorkCalendar.load()


def test_weekend_is_skipped(calendar: WorkCalendar) -> None:
    friday, saturday, sunday, monday = days(date(2026, 11, 6), date(2026, 11, 9))
    weekend_around = (friday, saturday, sunday, monday)
    assert [chinese_calendar.is_workday(d) for d in weekend_around] == [True, False, False, True]
    assert [calendar.is_working_day(d) for d in weekend_around] == [True, False, False, True]
    assert calendar.next_working_day(friday) == monday
    assert calendar.add_working_days(at(2026, 11, 5), 2) == due(monday)


def test_national_day_2026_follows_the_published_schedule(calendar: WorkCalendar) -> None:
    # Known facts of the 2026 schedule, as the package has them.
    assert chinese_calendar.is_holiday(date(2026, 10, 1))
    assert chinese_calendar.is_workday(date(2026, 10, 10))  # a Saturday, made up for the long holiday
    assert not calendar.is_working_day(date(2026, 10, 1))
    assert calendar.is_working_day(date(2026, 10, 10))

    span = days(date(2026, 9, 14), date(2026, 10, 18))
    assert [calendar.is_working_day(d) for d in span] == [chinese_calendar.is_workday(d) for d in span]
    holidays = [d for d in span if d.month == 10 and not chinese_calendar.is_workday(d) and d.weekday() < 5]
    assert date(2026, 10, 1) in holidays and len(holidays) >= 3

    # From the last working day of September, one working day lands after the whole holiday.
    last_before = max(d for d in span if d < date(2026, 10, 1) and chinese_calendar.is_workday(d))
    first_after = min(d for d in span if d > date(2026, 10, 1) and chinese_calendar.is_workday(d))
    assert first_after > date(2026, 10, 4)
    start = datetime.combine(last_before, time(11, 0), tzinfo=CST)
    assert calendar.add_working_days(start, 1) == due(first_after)


def test_make_up_saturday_is_a_working_day(calendar: WorkCalendar) -> None:
    autumn = days(date(2026, 9, 1), date(2026, 10, 31))
    make_up_days = [d for d in autumn if d.weekday() >= 5 and chinese_calendar.is_workday(d)]
    assert date(2026, 10, 10) in make_up_days
    for day in make_up_days:
        assert calendar.is_working_day(day)
    # Friday 9 October, one working day: Saturday 10 October, not Monday.
    assert calendar.add_working_days(at(2026, 10, 9, 15), 1) == due(date(2026, 10, 10))
    assert calendar.working_days_between(at(2026, 10, 9), at(2026, 10, 12)) == 2


def test_add_working_days_from_friday_afternoon(calendar: WorkCalendar) -> None:
    friday_afternoon = at(2026, 11, 6, 16, 45)
    # The day of receipt does not count, and the weekend is skipped.
    assert calendar.add_working_days(friday_afternoon, 1) == due(date(2026, 11, 9))
    assert calendar.add_working_days(friday_afternoon, 5) == due(date(2026, 11, 13))
    assert calendar.add_working_days(friday_afternoon, 0) == due(date(2026, 11, 6))
    # Thursday 18:00 UTC is already Friday 02:00 in Shanghai: the Shanghai date is what counts.
    assert calendar.add_working_days(datetime(2026, 11, 5, 18, 0, tzinfo=UTC), 1) == due(date(2026, 11, 9))


def test_calendar_days_ending_on_a_rest_day_move_to_the_next_working_day(calendar: WorkCalendar) -> None:
    # 2 November + 5 days = Saturday 7 November -> Monday 9 November (民法典 art. 203).
    assert calendar.add_calendar_days(at(2026, 11, 2), 5) == due(date(2026, 11, 9))
    # Ending on a working day: no move.
    assert calendar.add_calendar_days(at(2026, 11, 2), 4) == due(date(2026, 11, 6))
    # Ending inside the National Day holiday: to the first working day after it.
    end = date(2026, 9, 1) + timedelta(days=30)
    assert end == date(2026, 10, 1)
    expected = next(d for d in days(end, end + timedelta(days=20)) if chinese_calendar.is_workday(d))
    assert calendar.add_calendar_days(at(2026, 9, 1), 30) == due(expected)


def test_add_months_from_january_31_gives_the_end_of_february(calendar: WorkCalendar) -> None:
    # 2026-02-28 is a Saturday but a make-up working day, so it stays.
    assert chinese_calendar.is_workday(date(2026, 2, 28))
    assert calendar.add_months(at(2026, 1, 31), 1) == due(date(2026, 2, 28))
    assert calendar.add_months(at(2025, 1, 31), 1) == due(date(2025, 2, 28))
    assert calendar.add_months(at(2024, 1, 31), 1) == due(date(2024, 2, 29))  # leap year
    # Across a year end, and onto a rest day.
    assert calendar.add_months(at(2025, 11, 30), 3) == due(date(2026, 2, 28))
    assert calendar.add_months(at(2026, 8, 31), 1) == due(date(2026, 9, 30))
    # 3 October 2026 is inside the National Day holiday: on to the next working day.
    assert calendar.add_months(at(2026, 9, 3), 1) == due(date(2026, 10, 8))


def test_unpublished_year_counts_weekends_only_and_warns_once_per_year() -> None:
    calendar = WorkCalendar.load()
    with pytest.raises(NotImplementedError):
        chinese_calendar.is_workday(date(2031, 1, 1))
    with capture_logs() as logs:
        # 1 January 2031 is a Wednesday: a holiday in reality, a working day until someone says otherwise.
        assert calendar.is_working_day(date(2031, 1, 1))
        assert not calendar.is_working_day(date(2031, 1, 4))  # Saturday
        assert calendar.add_working_days(at(2031, 1, 3), 1) == due(date(2031, 1, 6))
        assert calendar.add_calendar_days(at(2031, 1, 1), 3) == due(date(2031, 1, 6))
        assert calendar.add_months(at(2031, 1, 31), 1) == due(date(2031, 2, 28))
        assert calendar.working_days_between(at(2031, 3, 2), at(2031, 3, 9)) == 5
        assert calendar.add_working_days(at(2032, 12, 31), 1) == due(date(2033, 1, 3))
    warnings = [entry for entry in logs if entry["log_level"] == "warning"]
    assert sorted(entry["year"] for entry in warnings) == [2031, 2033]
    assert all("not published" in entry["event"] for entry in warnings)


def test_override_file_adds_a_holiday_and_a_working_sunday(tmp_path: Path) -> None:
    wednesday, sunday = date(2026, 11, 4), date(2026, 11, 8)
    assert chinese_calendar.is_workday(wednesday) and not chinese_calendar.is_workday(sunday)
    override = tmp_path / "calendar.json"
    override.write_text(
        json.dumps({"holidays": [wednesday.isoformat()], "workdays": [sunday.isoformat(), "2031-01-04"]}),
        encoding="utf-8",
    )
    calendar = WorkCalendar.load(override)
    assert not calendar.is_working_day(wednesday)
    assert calendar.is_working_day(sunday)
    assert not calendar.is_working_day(date(2026, 11, 7))  # the Saturday before is still a rest day
    assert calendar.add_working_days(at(2026, 11, 3), 1) == due(date(2026, 11, 5))
    assert calendar.add_working_days(at(2026, 11, 6), 1) == due(sunday)
    # An override decides without consulting the package: no warning for a covered day of an unknown year.
    with capture_logs() as logs:
        assert calendar.is_working_day(date(2031, 1, 4))
    assert logs == []


def test_naive_datetimes_are_refused(calendar: WorkCalendar) -> None:
    naive = datetime(2026, 11, 2, 9, 14)
    with pytest.raises(ValueError, match="naive"):
        calendar.add_working_days(naive, 1)
    with pytest.raises(ValueError, match="naive"):
        calendar.add_calendar_days(naive, 1)
    with pytest.raises(ValueError, match="naive"):
        calendar.add_months(naive, 1)
    with pytest.raises(ValueError, match="naive"):
        calendar.working_days_between(naive, at(2026, 11, 3))
    with pytest.raises(ValueError, match="naive"):
        calendar.local_date(naive)


def test_every_deadline_is_17_30_shanghai(calendar: WorkCalendar) -> None:
    starts = [
        at(2026, 11, 2, 9, 14),
        at(2026, 11, 6, 23, 59),
        datetime(2026, 11, 6, 16, 30, tzinfo=UTC),  # Saturday 00:30 in Shanghai
        datetime(2026, 9, 30, 23, 0, tzinfo=timezone(timedelta(hours=-5))),
    ]
    for start in starts:
        for result in (
            calendar.add_working_days(start, 3),
            calendar.add_calendar_days(start, 10),
            calendar.add_months(start, 2),
            calendar.end_of(calendar.local_date(start)),
        ):
            assert_end_of_shanghai_day(result)
            assert result > start or result.date() == calendar.local_date(start)


def test_a_deadline_asked_again_is_the_same_and_each_calendar_keeps_its_own_days(tmp_path: Path) -> None:
    """Deadlines are remembered per day of receipt and length; the answer depends on the day only,
    and a calendar with an override holiday does not share another calendar's answers."""
    plain = WorkCalendar.load()
    override = tmp_path / "calendar.json"
    override.write_text(json.dumps({"holidays": ["2026-03-03"]}), encoding="utf-8")
    with_holiday = WorkCalendar.load(override)
    monday_morning, monday_evening = at(2026, 3, 2, 9), at(2026, 3, 2, 22, 30)
    first = plain.add_working_days(monday_morning, 3)
    assert first == due(date(2026, 3, 5))
    assert plain.add_working_days(monday_evening, 3) == first
    assert plain.add_working_days(monday_morning.astimezone(UTC), 3) == first
    assert with_holiday.add_working_days(monday_morning, 3) == due(date(2026, 3, 6))
    assert plain.add_working_days(monday_morning, 3) == first
    # Late in the evening in UTC is the next morning in Shanghai: another day of receipt.
    assert plain.add_working_days(datetime(2026, 3, 2, 17, tzinfo=UTC), 3) == due(date(2026, 3, 6))
