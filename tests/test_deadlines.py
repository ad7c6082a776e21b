"""Named clocks from the bundled deadline rules, checked against dates worked out from chinese_calendar."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta, timezone

import chinese_calendar

from shared.deadlines import DeadlineBook, load_deadlines
from shared.events import ClockSet
from shared.workcalendar import WorkCalendar

CST = timezone(timedelta(hours=8))
RECEIVED = datetime(2026, 11, 2, 9, 14, tzinfo=CST)  # a Monday
BOOK: DeadlineBook = load_deadlines()
CALENDAR = WorkCalendar.load()


def nth_working_day_after(day: date, n: int) -> date:
    """The n-th day after ``day`` that chinese_calendar calls a working day."""
    found = 0
    while found < n:
        day += timedelta(days=1)
        if chinese_calendar.is_workday(day):
            found += 1
    return day


def first_working_day_from(day: date) -> date:
    while not chinese_calendar.is_workday(day):
        day += timedelta(days=1)
    return day


def end_of(day: date) -> datetime:
    return datetime.combine(day, time(17, 30), tzinfo=CST)


def complaint_clocks(**kwargs: object) -> dict[str, ClockSet]:
    options: dict[str, object] = {
        "received_at": RECEIVED,
        "assigned_at": RECEIVED + timedelta(hours=2),
        "traits": set(),
    }
    options.update(kwargs)
    clocks = BOOK.initial_clocks(calendar=CALENDAR, case_kind="complaint", **options)  # type: ignore[arg-type]
    return {clock.name: clock for clock in clocks}


def suggestion_clocks(*, assigned_at: datetime, traits: set[str], has_co_units: bool) -> dict[str, ClockSet]:
    clocks = BOOK.initial_clocks(
        calendar=CALENDAR,
        case_kind="suggestion",
        received_at=assigned_at - timedelta(days=9),
        assigned_at=assigned_at,
        traits=traits,
        has_co_units=has_co_units,
    )
    return {clock.name: clock for clock in clocks}


def assert_documented(clock: ClockSet) -> None:
    assert clock.label.strip()
    assert clock.rule.strip() and clock.source.strip()
    assert clock.due_at.utcoffset() == timedelta(hours=8)
    assert clock.due_at.timetz().replace(tzinfo=None) == time(17, 30)


def test_named_complaint_gets_acceptance_notice_and_verification() -> None:
    clocks = complaint_clocks(named_complainant=True)
    assert set(clocks) == {"acceptance_notice", "verification"}

    # The day of receipt does not count; November 2026 has no public holiday.
    assert clocks["acceptance_notice"].due_at == end_of(nth_working_day_after(RECEIVED.date(), 15))
    assert clocks["verification"].due_at == end_of(nth_working_day_after(RECEIVED.date(), 13))
    assert clocks["acceptance_notice"].due_at.date() == date(2026, 11, 23)
    assert clocks["verification"].due_at.date() == date(2026, 11, 19)

    assert "15个工作日" in clocks["acceptance_notice"].rule
    assert "13个工作日" in clocks["verification"].rule
    assert "检举控告" in clocks["acceptance_notice"].source
    for clock in clocks.values():
        assert_documented(clock)


def test_anonymous_complaint_has_no_acceptance_notice() -> None:
    clocks = complaint_clocks(named_complainant=False)
    assert set(clocks) == {"verification"}
    assert clocks["verification"].due_at == end_of(nth_working_day_after(RECEIVED.date(), 13))


def test_complaint_clocks_run_across_the_national_day_holiday() -> None:
    received = datetime(2026, 9, 28, 16, 0, tzinfo=CST)
    clocks = complaint_clocks(received_at=received, assigned_at=received)
    expected = nth_working_day_after(received.date(), 13)
    assert clocks["verification"].due_at == end_of(expected)
    # Seven holiday days and a make-up Saturday in between: well over 13 natural days.
    assert (expected - received.date()).days > 13 + 4


def test_petition_trait_gives_sixty_natural_days() -> None:
    received = datetime(2026, 8, 3, 11, 0, tzinfo=CST)
    clocks = complaint_clocks(received_at=received, assigned_at=received, traits={"petition"})
    sixtieth = received.date() + timedelta(days=60)
    assert sixtieth == date(2026, 10, 2)  # inside the National Day holiday
    assert not chinese_calendar.is_workday(sixtieth)
    assert clocks["verification"].due_at == end_of(first_working_day_from(sixtieth))
    assert "60日" in clocks["verification"].rule
    # The other complaint clock is not touched by the trait.
    assert clocks["acceptance_notice"].due_at == end_of(nth_working_day_after(received.date(), 15))
    for clock in clocks.values():
        assert_documented(clock)


def test_suggestion_reply_runs_three_months_from_assignment() -> None:
    assigned = datetime(2026, 4, 3, 15, 0, tzinfo=CST)
    clocks = suggestion_clocks(assigned_at=assigned, traits=set(), has_co_units=False)
    assert set(clocks) == {"deputy_reply"}
    assert clocks["deputy_reply"].due_at == end_of(first_working_day_from(date(2026, 7, 3)))
    assert "3个月" in clocks["deputy_reply"].rule
    assert_documented(clocks["deputy_reply"])


def test_complex_suggestion_gets_six_months() -> None:
    assigned = datetime(2026, 4, 3, 15, 0, tzinfo=CST)
    clocks = suggestion_clocks(assigned_at=assigned, traits={"complex"}, has_co_units=False)
    six_months = date(2026, 10, 3)
    assert not chinese_calendar.is_workday(six_months)
    assert clocks["deputy_reply"].due_at == end_of(first_working_day_from(six_months))
    assert clocks["deputy_reply"].due_at.date() == date(2026, 10, 8)
    assert "6个月" in clocks["deputy_reply"].rule


def test_co_handling_view_only_with_co_units() -> None:
    assigned = datetime(2026, 4, 3, 15, 0, tzinfo=CST)
    without = suggestion_clocks(assigned_at=assigned, traits=set(), has_co_units=False)
    with_co = suggestion_clocks(assigned_at=assigned, traits=set(), has_co_units=True)
    assert "co_handling_view" not in without
    assert set(with_co) == {"deputy_reply", "co_handling_view"}
    assert with_co["co_handling_view"].due_at == end_of(first_working_day_from(date(2026, 5, 3)))
    assert with_co["deputy_reply"] == without["deputy_reply"]
    for clock in with_co.values():
        assert_documented(clock)


def test_complaint_and_suggestion_clocks_do_not_mix() -> None:
    complaint = complaint_clocks(traits={"complex"}, has_co_units=True)
    assert set(complaint) == {"acceptance_notice", "verification"}
    suggestion = suggestion_clocks(assigned_at=RECEIVED, traits={"petition"}, has_co_units=True)
    assert set(suggestion) == {"deputy_reply", "co_handling_view"}


def test_later_clocks_carry_rule_and_source() -> None:
    concluded = datetime(2026, 11, 6, 16, 0, tzinfo=CST)  # a Friday
    answer = BOOK.later_clock("answer", calendar=CALENDAR, start=concluded)
    assert answer.due_at == end_of(nth_working_day_after(concluded.date(), 5))
    review = BOOK.later_clock("review_request", calendar=CALENDAR, start=concluded)
    assert review.due_at == end_of(first_working_day_from(concluded.date() + timedelta(days=30)))
    for name in BOOK.later:
        assert_documented(BOOK.later_clock(name, calendar=CALENDAR, start=concluded))
