"""The measures report (考核指标) as the API returns it."""

from __future__ import annotations

from datetime import date

from pydantic import BaseModel, Field

from services.verification.measure_rules import MeasureDefinition
from services.verification.measures import GroupMeasures, MeasuresReport


class MeasureDefinitionOut(BaseModel):
    key: str = Field(description="response_rate, completion_rate, on_time_rate, resolution_rate, …")
    name: str = Field(description="the measure's name as 12345 platforms name it, e.g. 响应率")
    definition: str
    numerator: str = Field(description="the key of the numerator in counts")
    denominator: str = Field(description="the key of the denominator in counts")

    @classmethod
    def of(cls, definition: MeasureDefinition) -> MeasureDefinitionOut:
        return cls(
            key=definition.key,
            name=definition.name,
            definition=definition.definition,
            numerator=definition.numerator,
            denominator=definition.denominator,
        )


class GroupMeasuresOut(BaseModel):
    code: str
    name: str
    counts: dict[str, int]
    rates: dict[str, float | None] = Field(description="per measure key; null when the denominator is 0")

    @classmethod
    def of(cls, group: GroupMeasures) -> GroupMeasuresOut:
        return cls(code=group.code, name=group.name, counts=group.counts, rates=group.rates)


class MeasuresOut(BaseModel):
    start: date
    end: date
    by: str
    county: str | None
    definitions: list[MeasureDefinitionOut]
    groups: list[GroupMeasuresOut]
    total: GroupMeasuresOut

    @classmethod
    def of(cls, report: MeasuresReport) -> MeasuresOut:
        return cls(
            start=report.start,
            end=report.end,
            by=report.by,
            county=report.county,
            definitions=[MeasureDefinitionOut.of(d) for d in report.definitions],
            groups=[GroupMeasuresOut.of(g) for g in report.groups],
            total=GroupMeasuresOut.of(report.total),
        )
