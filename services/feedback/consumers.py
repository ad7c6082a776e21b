"""Feedback follows every step of a matter, in stream order, through one durable consumer."""

from __future__ import annotations

from functools import partial

from services.feedback import service
from services.feedback.context import FeedbackContext
from services.feedback.models import CaseView
from shared.bus import Subscription
from shared.events import (
    CaseAssigned,
    CaseConcluded,
    ComplaintReceived,
    DeadlineExtended,
    FindingSentBack,
    MatterReclassified,
    ReviewStarted,
    SuggestionReceived,
    TaskClaimed,
)


def subscriptions(ctx: FeedbackContext) -> list[Subscription]:
    return [
        Subscription(
            durable="feedback-progress",
            handlers={
                ComplaintReceived: service.on_complaint_received,
                SuggestionReceived: service.on_suggestion_received,
                CaseAssigned: service.on_case_assigned,
                TaskClaimed: service.on_task_claimed,
                ReviewStarted: service.on_review_started,
                FindingSentBack: service.on_finding_sent_back,
                CaseConcluded: partial(service.on_case_concluded, ctx=ctx),
                DeadlineExtended: partial(service.on_deadline_extended, ctx=ctx),
                MatterReclassified: service.on_matter_reclassified,
            },
            batched_writes=frozenset({ComplaintReceived, SuggestionReceived, CaseAssigned}),
            prefetch_by_case=(CaseView,),
        )
    ]
