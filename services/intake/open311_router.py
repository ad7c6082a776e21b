"""Open311 GeoReport v2 over HTTP (``/open311/v2/``, JSON and XML by the extension), and the
supervisor's API for the connecting systems' keys (``/api/v1/open311-keys``)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Annotated, Any, Literal
from xml.etree.ElementTree import Element, SubElement, tostring

from fastapi import APIRouter, Depends, Form, Query, status
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field, field_validator
from sqlmodel.ext.asyncio.session import AsyncSession

from services.intake import complaints, open311, open311_keys
from services.intake.context import IntakeContext
from services.intake.models import Open311Key
from shared.app import current_correlation_id
from shared.auth import Principal, Role
from shared.deps import Session, Supervisor, app_state
from shared.errors import DomainError, FieldProblems
from shared.groupcommit import GroupCommitter, get_write_groups
from shared.pagination import page_headers, whole
from shared.validation import Line, RequestBody

Format = Literal["json", "xml"]
FORMATS: tuple[Format, ...] = ("json", "xml")
PREFIX = "/open311/v2"
TAGS: list[str | Any] = ["open311"]

Context = Annotated[IntakeContext, Depends(app_state("intake", IntakeContext))]
WriteGroups = Annotated[GroupCommitter, Depends(get_write_groups)]
open311_router = APIRouter()

# The element a list's items get in GeoReport v2's XML.
_ITEM = {
    "services": "service",
    "service_requests": "request",
    "errors": "error",
    "attributes": "attribute",
    "values": "value",
}


def _xml_value(parent: Element, name: str, value: Any) -> None:
    element = SubElement(parent, name)
    if isinstance(value, dict):
        for key, inner in value.items():
            _xml_value(element, key, inner)
    elif isinstance(value, list):
        for inner in value:
            _xml_value(element, _ITEM.get(name, "item"), inner)
    elif isinstance(value, bool):
        element.text = "true" if value else "false"
    elif value is not None:
        element.text = str(value)


def _answer(fmt: Format, root: str, body: Any, status_code: int = 200) -> Response:
    """``body`` as JSON, or as GeoReport v2's XML under ``root`` (a list's items named as it names them)."""
    if fmt == "json":
        return JSONResponse(body, status_code=status_code)
    document = Element(root)
    if isinstance(body, list):
        for item in body:
            _xml_value(document, _ITEM[root], item)
    else:
        for key, value in body.items():
            _xml_value(document, key, value)
    text = b'<?xml version="1.0" encoding="utf-8"?>\n' + tostring(document, encoding="unicode").encode()
    return Response(text, status_code=status_code, media_type="application/xml; charset=utf-8")


def _problem(fmt: Format, problem: open311.Problem) -> Response:
    errors = [{"code": problem.code, "description": d} for d in problem.descriptions]
    return _answer(fmt, "errors", errors, status_code=problem.code)


async def _open311(fmt: Format, run: Callable[[], Awaitable[Response]]) -> Response:
    """``run``'s answer, or its refusal in the Open311 error shape of ``fmt``."""
    try:
        return await run()
    except open311.Problem as problem:
        return _problem(fmt, problem)


_MEDIA = {"json": "application/json", "xml": "application/xml"}
_ERRORS_SCHEMA: dict[str, Any] = {
    "type": "array",
    "items": {
        "type": "object",
        "properties": {"code": {"type": "integer"}, "description": {"type": "string"}},
        "required": ["code", "description"],
    },
}


def _declared(
    fmt: Format, success: int, body: dict[str, Any], refusals: tuple[int, ...]
) -> dict[int | str, Any]:
    """What the OpenAPI document says these answer: the body and the Open311 errors, in ``fmt``."""

    def content(schema: dict[str, Any]) -> dict[str, Any]:
        return {_MEDIA[fmt]: {"schema": schema if fmt == "json" else {"type": "string"}}}

    answers: dict[int | str, Any] = {
        success: {"description": "GeoReport v2 answer", "content": content(body)}
    }
    for code in refusals:
        answers[code] = {"description": "GeoReport v2 errors", "content": content(_ERRORS_SCHEMA)}
    return answers


def _formats(
    path: str,
    method: str,
    summary: str,
    *,
    success: int = 200,
    body: dict[str, Any] | None = None,
    refusals: tuple[int, ...] = (400, 404),
) -> Callable[[Callable[[Format], Any]], None]:
    """Register the endpoint ``make(fmt)`` makes at ``path.json`` and ``path.xml``."""

    def register(make: Callable[[Format], Any]) -> None:
        for fmt in FORMATS:
            open311_router.add_api_route(
                f"{PREFIX}{path}.{fmt}",
                make(fmt),
                methods=[method],
                summary=f"{summary} ({fmt.upper()})",
                tags=TAGS,
                response_model=None,
                status_code=success,
                response_class=JSONResponse if fmt == "json" else Response,
                responses=_declared(fmt, success, body or {"type": "array"}, refusals),
                name=f"open311_{method.lower()}_{path.strip('/').replace('/', '_').replace('{', '').replace('}', '')}_{fmt}",
            )

    return register


@_formats("/services", "GET", "GeoReport v2 services: the complaint categories", refusals=())
def _services(fmt: Format) -> Callable[..., Awaitable[Response]]:
    async def list_services(ctx: Context) -> Response:
        return _answer(fmt, "services", open311.services(ctx))

    return list_services


@_formats(
    "/services/{code}",
    "GET",
    "GeoReport v2 service definition: the attributes of a category",
    body={"type": "object"},
    refusals=(404,),
)
def _definition(fmt: Format) -> Callable[..., Awaitable[Response]]:
    async def service_definition(code: str, ctx: Context) -> Response:
        async def run() -> Response:
            return _answer(fmt, "service_definition", open311.service_definition(ctx, code))

        return await _open311(fmt, run)

    return service_definition


@_formats(
    "/requests",
    "POST",
    "GeoReport v2 create a request: a complaint, as the form records it",
    success=201,
    refusals=(400, 403, 404),
)
def _create(fmt: Format) -> Callable[..., Awaitable[Response]]:
    async def create_request(
        form: Annotated[open311.RequestIn, Form()], session: Session, writes: WriteGroups, ctx: Context
    ) -> Response:
        async def run() -> Response:
            return await _create_request(form=form, session=session, writes=writes, ctx=ctx, fmt=fmt)

        return await _open311(fmt, run)

    return create_request


async def _create_request(
    *, form: open311.RequestIn, session: AsyncSession, writes: GroupCommitter, ctx: IntakeContext, fmt: Format
) -> Response:
    async with session.begin():
        system = await open311_keys.connecting_system(session=session, api_key=form.api_key)
    if system is None:
        raise open311.Problem(403, ["api_key：API密钥无效或已停用，请向督察部门申请"])
    complaint_in = open311.complaint_in(form)
    actor = Principal(username=f"open311:{system.name}", role=Role.SERVICE, display_name=system.name)
    correlation_id = current_correlation_id()

    async def record(session: AsyncSession) -> complaints.NewComplaint:
        return await complaints.create_complaint(
            session=session, ctx=ctx, complaint_in=complaint_in, actor=actor, correlation_id=correlation_id
        )

    try:
        created = await writes.run(record)
    except FieldProblems as problems:
        raise open311.refusal(problems) from None
    except DomainError as error:
        raise open311.Problem(error.status_code, [error.detail]) from None
    notice = open311.service_notice(
        tracking_code=created.complaint.tracking_code,
        query_secret=created.query_secret,
        linked_repeat=created.complaint.linked_repeat,
    )
    answer = [
        {"service_request_id": created.complaint.tracking_code, "service_notice": notice, "account_id": None}
    ]
    return _answer(fmt, "service_requests", answer, status_code=status.HTTP_201_CREATED)


QueryText = Annotated[str | None, Query(max_length=2000)]


@_formats(
    "/requests", "GET", "GeoReport v2 requests: status of complaints, without any identity", refusals=(400,)
)
def _search(fmt: Format) -> Callable[..., Awaitable[Response]]:
    async def list_requests(
        session: Session,
        ctx: Context,
        service_request_id: QueryText = None,
        service_code: QueryText = None,
        start_date: QueryText = None,
        end_date: QueryText = None,
        status: QueryText = None,
    ) -> Response:
        async def run() -> Response:
            wanted = open311.search(
                service_request_id=service_request_id,
                service_code=service_code,
                start_date=start_date,
                end_date=end_date,
                status=status,
            )
            found = await open311.find_requests(session=session, ctx=ctx, wanted=wanted)
            return _answer(fmt, "service_requests", found)

        return await _open311(fmt, run)

    return list_requests


@_formats(
    "/requests/{tracking_code}", "GET", "GeoReport v2 one request (service_request_id: the tracking code)"
)
def _one(fmt: Format) -> Callable[..., Awaitable[Response]]:
    async def read_request(tracking_code: str, session: Session, ctx: Context) -> Response:
        async def run() -> Response:
            found = await open311.find_request(session=session, ctx=ctx, tracking_code=tracking_code)
            return _answer(fmt, "service_requests", [found])

        return await _open311(fmt, run)

    return read_request


# --- the connecting systems' keys (supervisor) ------------------------------------------------


class Open311KeyIn(RequestBody):
    name: Line = Field(min_length=2, max_length=100, description="the connecting system, e.g. 12345热线平台")

    @field_validator("name")
    @classmethod
    def _strip(cls, value: str) -> str:
        return value.strip()


class Open311KeyRead(BaseModel):
    id: int
    name: str
    created_by: str
    created_at: datetime
    active: bool
    revoked_by: str | None
    revoked_at: datetime | None


class Open311KeyIssued(Open311KeyRead):
    api_key: str = Field(description="shown this once: only its hash is kept")


def key_read(key: Open311Key) -> Open311KeyRead:
    return Open311KeyRead.model_validate(key, from_attributes=True)


keys_router = APIRouter(prefix="/api/v1/open311-keys", tags=["open311"])


@keys_router.post("", status_code=status.HTTP_201_CREATED, response_model=Open311KeyIssued)
async def issue_open311_key(body: Open311KeyIn, session: Session, principal: Supervisor) -> Open311KeyIssued:
    """A key for a connecting system; the key is in this answer only."""
    async with session.begin():
        issued = await open311_keys.issue_key(session=session, name=body.name, actor=principal)
        read = key_read(issued.key)
    return Open311KeyIssued(**read.model_dump(), api_key=issued.api_key)


@keys_router.get("", response_model=list[Open311KeyRead], responses=page_headers())
async def list_open311_keys(
    session: Session, principal: Supervisor, response: Response
) -> list[Open311KeyRead]:
    """The connecting systems' keys (a handful), whole, with their total."""
    return whole(response, [key_read(k) for k in await open311_keys.list_keys(session=session)])


@keys_router.post("/{name}/revoke", response_model=Open311KeyRead)
async def revoke_open311_key(name: str, session: Session, principal: Supervisor) -> Open311KeyRead:
    """Revoke a connecting system's key (by the system's name): its requests are refused from now on."""
    async with session.begin():
        return key_read(await open311_keys.revoke_key(session=session, name=name, actor=principal))


open311_router.include_router(keys_router)
