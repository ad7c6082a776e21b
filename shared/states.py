"""States that more than one service stores: defined once, so their values cannot drift apart.

A StrEnum compares equal to its string, so the stored values and the events' JSON stay plain strings.
"""

from __future__ import annotations

from enum import StrEnum


class CaseKind(StrEnum):
    COMPLAINT = "complaint"
    SUGGESTION = "suggestion"


class Rating(StrEnum):
    """The complainant's rating of an answer: given in feedback, reported to intake."""

    SATISFIED = "satisfied"
    BASICALLY_SATISFIED = "basically_satisfied"
    UNSATISFIED = "unsatisfied"
