"""The measures' facts summed per day received: what a year of measures reads at a million matters.

Summed over the kept rows themselves (``measure_facts``), a year for the city reads 230,000 rows at
a million matters.  The sums here are kept per local day received, county and team, as they stand
now (concluded at all, first pleased at all); a period that ended before some of its matters were
concluded or rated pleasing takes those matters back out (``corrections``: the few of the
period's rows with a time after its end, found in the covering index without reading the table).

Kept by differences (``shared`` summaries' upsert, ``summaries.upsert_for``): a refresh of some
matters' rows subtracts what their old rows added and adds what the new ones add, in the same
transaction.  "" stands for no county or no team (a primary key has no NULLs to match an upsert on).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Connection
from sqlmodel import Field, SQLModel

from services.verification import summaries
from shared.db import table_of

INSERT_BATCH = 5_000

# The counts of ``measures.COUNT_KEYS`` that a matter's row gives, as they stand now.
DAY_COUNTERS = (
    "received",
    "complaints",
    "responded_on_time",
    "concluded",
    "concluded_on_time",
    "with_outcome",
    "substantiated",
    "resolved",
)


class MeasureDay(SQLModel, table=True):
    """The measures' counts of the matters received on one local day, per county and team."""

    __tablename__ = "verification_measure_day"
    # SQLite: a year of days is one range of the primary key's b-tree.
    __table_args__ = {"sqlite_with_rowid": False}

    day: date = Field(primary_key=True)
    county_code: str = Field(primary_key=True, max_length=16)
    team_code: str = Field(primary_key=True, max_length=32)
    received: int = 0
    complaints: int = 0
    responded_on_time: int = 0
    concluded: int = 0
    concluded_on_time: int = 0
    with_outcome: int = 0
    substantiated: int = 0
    resolved: int = 0


class MeasureRatingDay(SQLModel, table=True):
    """The ratings of the matters received on one local day, per county, team and rating."""

    __tablename__ = "verification_measure_rating_day"
    __table_args__ = {"sqlite_with_rowid": False}

    day: date = Field(primary_key=True)
    county_code: str = Field(primary_key=True, max_length=16)
    team_code: str = Field(primary_key=True, max_length=32)
    rating: str = Field(primary_key=True, max_length=32)
    rated: int = 0


DAY = table_of(MeasureDay)
RATING_DAY = table_of(MeasureRatingDay)
DAYS = summaries.Summary(DAY, ("day", "county_code", "team_code"), DAY_COUNTERS)
RATING_DAYS = summaries.Summary(RATING_DAY, ("day", "county_code", "team_code", "rating"), ("rated",))


def counts_of(fact: Any, *, before: datetime | None = None) -> list[int]:
    """What one matter's row adds, in ``DAY_COUNTERS`` order: as it stands now, or (``before``) as
    it stood by that moment.  ``fact`` is a row or a mapping of the row's names."""
    get = fact.get if isinstance(fact, Mapping) else fact._mapping.get

    def by(moment: datetime | None) -> bool:
        return moment is not None and (before is None or moment < before)

    concluded = by(get("concluded_at"))
    resolved = concluded and (by(get("pleased_at")) or not get("reopened"))
    return [
        1,
        int(bool(get("complaint"))),
        int(bool(get("responded"))),
        int(concluded),
        int(concluded and bool(get("on_time"))),
        int(concluded and bool(get("with_outcome"))),
        int(concluded and bool(get("substantiated"))),
        int(resolved),
    ]


def _key(row: Any, tz: ZoneInfo) -> tuple[date, str, str]:
    received: datetime = row["received_at"]
    return received.astimezone(tz).date(), row["county_code"] or "", row["team_code"] or ""


def _parts(
    tz: ZoneInfo, facts: Iterable[tuple[int, Iterable[Any]]], ratings: Iterable[tuple[int, Iterable[Any]]]
) -> tuple[summaries.Part, summaries.Part]:
    """What rows of facts and of ratings add to the days' sums, each group of rows with its sign."""
    days: summaries.Part = {}
    for sign, rows in facts:
        for fact in rows:
            counts = days.setdefault(_key(fact, tz), [0] * len(DAY_COUNTERS))
            for index, value in enumerate(counts_of(fact)):
                counts[index] += sign * value
    by_rating: summaries.Part = {}
    for sign, rows in ratings:
        for rating in rows:
            by_rating.setdefault((*_key(rating, tz), rating["rating"]), [0])[0] += sign
    return days, by_rating


def apply(
    connection: Connection,
    *,
    tz: ZoneInfo,
    old_facts: Iterable[dict[str, Any]],
    new_facts: Iterable[dict[str, Any]],
    old_ratings: Iterable[dict[str, Any]],
    new_ratings: Iterable[dict[str, Any]],
) -> None:
    """Add to the sums what the new rows add and take out what the old ones added."""
    days, ratings = _parts(tz, ((-1, old_facts), (1, new_facts)), ((-1, old_ratings), (1, new_ratings)))
    for summary, part in ((DAYS, days), (RATING_DAYS, ratings)):
        rows = summary.rows(part)
        if rows:
            connection.execute(summaries.upsert_for(connection.dialect.name, summary), rows)


def rebuild(connection: Connection, *, tz: ZoneInfo, facts: Iterable[Any], ratings: Iterable[Any]) -> None:
    """The sums made again from all the kept rows (a rebuild's last step)."""
    connection.execute(RATING_DAY.delete())
    connection.execute(DAY.delete())
    days, by_rating = _parts(
        tz, [(1, (row._mapping for row in facts))], [(1, (row._mapping for row in ratings))]
    )
    for summary, part in ((DAYS, days), (RATING_DAYS, by_rating)):
        rows = summary.rows(part)
        for start in range(0, len(rows), INSERT_BATCH):
            connection.execute(summary.table.insert(), rows[start : start + INSERT_BATCH])
