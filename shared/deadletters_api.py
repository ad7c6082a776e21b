"""The dead-letter API every service serves (supervisors only), and the page that shows all four.

``shared.deadletters`` holds what they do; here is only HTTP.  The page (死信队列) is served by
every service like the API, and the navigation links to verification's: from the browser it
calls each service's API with the signed-in supervisor's cookie, as the other pages call
their sibling services.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field

from shared.auth import Principal, Role, require_roles
from shared.deadletters import (
    BusUnavailable,
    DeadLetterBox,
    DeadLetterStatus,
    discard_dead_letter,
    list_dead_letters,
    replay_all,
    replay_dead_letter,
)
from shared.validation import Text
from shared.web import TEMPLATES_DIR, page_templates, page_user, render

if TYPE_CHECKING:
    from shared.app import Runtime

dead_letters_router = APIRouter(prefix="/api/v1/dead-letters", tags=["dead letters"])
dead_letters_page_router = APIRouter(include_in_schema=False)
_templates = page_templates(TEMPLATES_DIR)

Supervisor = Annotated[Principal, Depends(require_roles(Role.SUPERVISOR))]
LetterId = Annotated[
    int, Path(ge=1, le=2**63 - 1, description="the dead letter's sequence in the dead-letter stream")
]


class DiscardRequest(BaseModel):
    reason: Text = Field(min_length=2, max_length=1000, description="why the event is given up; recorded")


def dead_letter_box(runtime: Runtime) -> DeadLetterBox:
    """The service's dead letters on the bus; ``BusUnavailable`` until the bus is set up."""
    if runtime.js is None or not runtime.bus_ready:
        raise BusUnavailable("消息总线尚未就绪，请稍后重试")
    settings = runtime.settings
    return DeadLetterBox(
        js=runtime.js,
        stream=settings.nats_stream,
        durables=runtime.durables,
        timeout=settings.nats_request_timeout_seconds,
    )


def _runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


def _service(request: Request) -> str:
    return str(request.app.state.settings.service_name)


@dead_letters_router.get("")
async def read_dead_letters(
    request: Request,
    principal: Supervisor,
    status: Annotated[DeadLetterStatus | None, Query(description="only those of this status")] = None,
) -> list[dict[str, Any]]:
    """This service's parked events, oldest first, with the reason, tries and what was decided."""
    runtime = _runtime(request)
    letters = await list_dead_letters(
        sessions=runtime.session_factory, box=dead_letter_box(runtime), status=status
    )
    service = _service(request)
    return [{"service": service, **letter.as_json()} for letter in letters]


@dead_letters_router.post("/replay-all")
async def replay_every_dead_letter(request: Request, principal: Supervisor) -> dict[str, Any]:
    """Republish every parked event of this service for the consumer that parked it."""
    runtime = _runtime(request)
    replayed = await replay_all(
        sessions=runtime.session_factory, box=dead_letter_box(runtime), actor=principal.username
    )
    service = _service(request)
    return {
        "replayed": len(replayed),
        "dead_letters": [{"service": service, **x.as_json()} for x in replayed],
    }


@dead_letters_router.post("/{letter_id}/replay")
async def replay_one_dead_letter(
    letter_id: LetterId, request: Request, principal: Supervisor
) -> dict[str, Any]:
    """Republish one parked event for the consumer that parked it (its replay subject)."""
    runtime = _runtime(request)
    letter = await replay_dead_letter(
        sessions=runtime.session_factory,
        box=dead_letter_box(runtime),
        letter_id=letter_id,
        actor=principal.username,
    )
    return {"service": _service(request), **letter.as_json()}


@dead_letters_router.post("/{letter_id}/discard")
async def discard_one_dead_letter(
    letter_id: LetterId, body: DiscardRequest, request: Request, principal: Supervisor
) -> dict[str, Any]:
    """Give up on one parked event; the reason is required and recorded."""
    runtime = _runtime(request)
    letter = await discard_dead_letter(
        sessions=runtime.session_factory,
        box=dead_letter_box(runtime),
        letter_id=letter_id,
        actor=principal.username,
        reason=body.reason,
    )
    return {"service": _service(request), **letter.as_json()}


SupervisorPage = Annotated[Principal, Depends(page_user(Role.SUPERVISOR))]


@dead_letters_page_router.get("/dead-letters")
async def dead_letters_page(request: Request, principal: SupervisorPage) -> Response:
    return render(_templates, request, "dead_letters.html", principal, title="死信队列")
