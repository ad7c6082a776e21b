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


class SuggestionKind(StrEnum):
    """Stored by intake and feedback, carried by ``SuggestionReceived``."""

    NPC_SUGGESTION = "npc_suggestion"
    CPPCC_PROPOSAL = "cppcc_proposal"


class ReclassifyTarget(StrEnum):
    """The track a matter filed as the wrong kind moves to; a citizen suggestion is passed on.

    Chosen in intake, carried by ``MatterReclassified`` to the services that leave the matter.
    """

    COMPLAINT = "complaint"
    SUGGESTION = "suggestion"
    CITIZEN_SUGGESTION = "citizen_suggestion"
