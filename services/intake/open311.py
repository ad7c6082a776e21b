"""Open311 GeoReport v2: the complaint categories as services, requests as complaints.

A request a connecting system posts becomes a ``ComplaintCreate`` and goes through
``complaints.create_complaint``, the form's own path and rules; a refusal is answered in the
Open311 error shape, naming the Open311 field. What anyone may read about a request is its
status, category, times and the team handling it: never the complainant, nor the account (which
may name them), nor the place (which may be their address).

The query secret: an Open311 request has no field for it, so the answer to the POST carries it in
``service_notice``, once, for the connecting system to pass on to the complainant with the
tracking code (``service_request_id``); intake keeps only its hash, as for every complaint.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy.orm import load_only
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from services.intake.context import IntakeContext
from services.intake.models import CLOSED_STATUSES, CaseStatus, Channel, Complaint
from services.intake.schemas import ComplaintCreate
from shared.db import utcnow
from shared.errors import FieldProblems, LocalisedError, field_path, translate
from shared.reference import Category

# GeoReport v2: a search spans at most 90 days, the last 90 when no dates are given.
MAX_SPAN = timedelta(days=90)
MAX_RESULTS = 200
_SCAN_BATCH = 500

STATUS_NOTES: dict[str, str] = {
    CaseStatus.RECEIVED: "已受理",
    CaseStatus.ROUTED: "已分派办理",
    CaseStatus.CONCLUDED: "核查已办结，待答复",
    CaseStatus.ANSWERED: "已答复",
    CaseStatus.REOPENED: "重新办理",
    CaseStatus.CLOSED: "已办结",
    CaseStatus.RECLASSIFIED: "已转为其他类型事项办理",
}

# The form's field (as ``ComplaintCreate`` names it) -> the Open311 field that fills it.
OPEN311_FIELDS = {
    "category": "service_code",
    "account": "description",
    "complainant.name": "first_name",
    "complainant.phone": "attribute[phone]",
    "complainant.email": "email",
    "complainant.anonymous": "attribute[anonymous]",
    "accused.unit": "attribute[accused_unit]",
    "accused.county_code": "attribute[county_code]",
    "accused.officer_name": "attribute[officer_name]",
    "accused.badge_no": "attribute[badge_no]",
    "incident_at": "attribute[incident_at]",
    "platform_ticket_no": "attribute[platform_ticket_no]",
    "place": "address_string",
}


class Problem(Exception):
    """A refusal in the Open311 error shape: ``[{"code": 400, "description": "…"}]``."""

    def __init__(self, code: int, descriptions: list[str]) -> None:
        super().__init__("; ".join(descriptions))
        self.code = code
        self.descriptions = descriptions


class RequestIn(BaseModel):
    """POST requests: the GeoReport v2 form fields, all optional here so that a missing one is
    refused by the form's rules, naming the Open311 field."""

    model_config = ConfigDict(populate_by_name=True)

    api_key: str | None = None
    service_code: str | None = None
    description: str | None = None
    lat: str | None = None
    long: str | None = None
    address_string: str | None = None
    first_name: str | None = None
    last_name: str | None = None
    phone: str | None = None
    email: str | None = None
    county_code: str | None = Field(default=None, alias="attribute[county_code]")
    accused_unit: str | None = Field(default=None, alias="attribute[accused_unit]")
    officer_name: str | None = Field(default=None, alias="attribute[officer_name]")
    badge_no: str | None = Field(default=None, alias="attribute[badge_no]")
    attribute_phone: str | None = Field(default=None, alias="attribute[phone]")
    anonymous: str | None = Field(default=None, alias="attribute[anonymous]")
    incident_at: str | None = Field(default=None, alias="attribute[incident_at]")
    platform_ticket_no: str | None = Field(default=None, alias="attribute[platform_ticket_no]")


def services(ctx: IntakeContext) -> list[dict[str, Any]]:
    """GET services: every complaint category, with attributes (``metadata``) to fill."""
    return [
        {
            "service_code": c.code,
            "service_name": c.name,
            "description": _category_description(c),
            "metadata": True,
            "type": "realtime",
            "keywords": ", ".join((c.name, *c.aliases)),
            "group": "重点类别" if c.serious else "一般类别",
        }
        for c in ctx.categories.categories
    ]


def _category_description(category: Category) -> str:
    if category.serious:
        return f"投诉民警或公安机关“{category.name}”（严重类别，一律作为重点线索办理）"
    return f"投诉民警或公安机关“{category.name}”"


def _attribute(
    order: int, code: str, datatype: str, description: str, *, required: bool = False, values: Any = None
) -> dict[str, Any]:
    return {
        "variable": True,
        "code": code,
        "datatype": datatype,
        "required": required,
        "datatype_description": None,
        "order": order,
        "description": description,
        "values": values or [],
    }


def service_definition(ctx: IntakeContext, code: str) -> dict[str, Any]:
    """GET services/{code}: the attributes a request of this category carries."""
    category = _category(ctx, code)
    if category is None:
        raise Problem(404, [f"service_code：未知的投诉类别“{code}”"])
    organisation = ctx.organisation
    areas = [{"key": organisation.city_code, "name": f"{organisation.city_name}（市局直属单位）"}]
    areas += [{"key": c.code, "name": c.name} for c in organisation.counties.values()]
    yes_no = [{"key": "false", "name": "实名投诉"}, {"key": "true", "name": "匿名投诉"}]
    return {
        "service_code": category.code,
        "attributes": [
            _attribute(
                1, "county_code", "singlevaluelist", "被投诉单位所属县（市、区）", required=True, values=areas
            ),
            _attribute(
                2, "accused_unit", "string", "被投诉单位名称，如“项城市公安局花园派出所”", required=True
            ),
            _attribute(3, "officer_name", "string", "被投诉民警姓名（知道时填写）"),
            _attribute(4, "badge_no", "string", "被投诉民警警号（4-16位字母或数字）"),
            _attribute(5, "phone", "string", "投诉人联系电话（实名投诉需填写联系电话或电子邮箱）"),
            _attribute(6, "anonymous", "singlevaluelist", "是否匿名投诉（默认实名）", values=yes_no),
            _attribute(7, "incident_at", "datetime", "事发时间，带时区，如 2026-11-02T09:14:00+08:00"),
            _attribute(8, "platform_ticket_no", "string", "对接平台自己的工单号"),
        ],
    }


def _category(ctx: IntakeContext, code: str) -> Category | None:
    return next((c for c in ctx.categories.categories if c.code == code), None)


def _present(value: str | None) -> str | None:
    return value.strip() if value is not None and value.strip() else None


def _place(form: RequestIn) -> str | None:
    """The address as given, else the coordinates; malformed coordinates are refused."""
    lat, long = _present(form.lat), _present(form.long)
    if lat is None and long is None:
        return _present(form.address_string)
    try:
        latitude, longitude = float(lat or "x"), float(long or "x")
    except ValueError:
        raise Problem(400, ["lat/long：经纬度格式不正确，应为十进制度数，如 lat=33.6 long=114.6"]) from None
    if not (math.isfinite(latitude) and abs(latitude) <= 90 and abs(longitude) <= 180):
        raise Problem(400, ["lat/long：经纬度超出范围"])
    coordinates = f"经纬度 {latitude:.6f},{longitude:.6f}"
    address = _present(form.address_string)
    return f"{address}（{coordinates}）" if address else coordinates


def complaint_in(form: RequestIn) -> ComplaintCreate:
    """The form's complaint from an Open311 request, checked by the form's own schema."""
    name = "".join(p for p in (_present(form.last_name), _present(form.first_name)) if p) or None
    anonymous = (_present(form.anonymous) or "false").lower() in ("true", "1", "yes", "是")
    complainant = {
        "anonymous": anonymous,
        "name": name,
        "phone": _present(form.attribute_phone) or _present(form.phone),
        "email": _present(form.email),
    }
    accused = {
        "unit": _present(form.accused_unit),
        "county_code": _present(form.county_code),
        "officer_name": _present(form.officer_name),
        "badge_no": _present(form.badge_no),
    }
    body = {
        "channel": Channel.OPEN311.value,
        "platform_ticket_no": _present(form.platform_ticket_no),
        "complainant": _given(complainant),
        "accused": _given(accused),
        "category": _present(form.service_code),
        "incident_at": _present(form.incident_at),
        "place": _place(form),
        "account": _present(form.description),
    }
    try:
        return ComplaintCreate.model_validate(_given(body))
    except ValidationError as error:
        raise Problem(400, [_described(e) for e in error.errors()]) from None


def _given(values: dict[str, Any]) -> dict[str, Any]:
    # A field left out is "missing" (必填项) to the schema, not "not a text".
    return {key: value for key, value in values.items() if value is not None}


def _open311_field(field: str) -> str:
    return OPEN311_FIELDS.get(field, field or "request")


def _described(error: Any) -> str:
    field = field_path(error.get("loc", ()))
    custom = (error.get("ctx") or {}).get("error")
    if isinstance(custom, LocalisedError) and custom.field:
        field = f"{field}.{custom.field}" if field else custom.field
    return f"{_open311_field(field)}：{translate(error, english=False, field=field)}"


def refusal(problems: FieldProblems) -> Problem:
    """The form's refusal against the reference data, naming the Open311 fields."""
    return Problem(400, [f"{_open311_field(field)}：{zh}" for field, zh, _ in problems.problems])


def service_notice(*, tracking_code: str, query_secret: str, linked_repeat: bool) -> str:
    notice = (
        f"已受理，受理编号 {tracking_code}，查询密码 {query_secret}（仅在此显示一次，本系统不保存其明文）。"
        "请将受理编号和查询密码告知投诉人，凭此查询办理进度和答复。"
    )
    if linked_repeat:
        notice += "该投诉人对同一单位的投诉正在办理中，本件已作为重复件关联，答复时一并告知。"
    return notice


@dataclass(frozen=True)
class Search:
    """GET requests' filters, as GeoReport v2 defines them."""

    tracking_codes: list[str]
    service_codes: list[str]
    start: datetime
    end: datetime
    statuses: list[str]


def _listed(value: str | None) -> list[str]:
    return [part.strip() for part in (value or "").split(",") if part.strip()]


def _moment(name: str, value: str | None) -> datetime | None:
    if not _present(value):
        return None
    try:
        moment = datetime.fromisoformat(str(value).strip())
    except ValueError:
        raise Problem(400, [f"{name}：时间格式不正确，应如 2026-11-01T00:00:00Z"]) from None
    if moment.tzinfo is None:
        raise Problem(400, [f"{name}：时间需带时区，如 2026-11-01T00:00:00+08:00"])
    return moment


def search(
    *,
    service_request_id: str | None,
    service_code: str | None,
    start_date: str | None,
    end_date: str | None,
    status: str | None,
) -> Search:
    """The filters, checked: a wrong one is refused naming it, in Chinese."""
    statuses = [s.lower() for s in _listed(status)]
    if any(s not in ("open", "closed") for s in statuses):
        raise Problem(400, ["status：取值无效，可选：open、closed"])
    start, end = _moment("start_date", start_date), _moment("end_date", end_date)
    if start is None and end is None:
        end = utcnow()
    if start is None:
        assert end is not None
        start = end - MAX_SPAN
    if end is None:
        end = start + MAX_SPAN
    if end < start:
        raise Problem(400, ["end_date：结束时间不能早于开始时间"])
    if end - start > MAX_SPAN:
        raise Problem(400, ["end_date：查询时间范围不能超过90天"])
    return Search(
        tracking_codes=[c.upper() for c in _listed(service_request_id)],
        service_codes=_listed(service_code),
        start=start,
        end=end,
        statuses=statuses,
    )


# What a request's answer reads: never the identity, the account or the place.
_COLUMNS = load_only(
    *(
        getattr(Complaint, name)
        for name in (
            "tracking_code",
            "status",
            "allegations",
            "received_at",
            "answered_at",
            "assigned_team_code",
        )
    )
)


async def find_requests(*, session: AsyncSession, ctx: IntakeContext, wanted: Search) -> list[dict[str, Any]]:
    """The requests (complaints) the filters select, newest first, at most ``MAX_RESULTS``.

    ``service_request_id`` overrides the other filters, as the spec says. The category is in the
    complaint's allegations (JSON), so a ``service_code`` filter is applied here, batch by batch.
    """
    query = select(Complaint).options(_COLUMNS).order_by(col(Complaint.received_at).desc(), col(Complaint.id))
    if wanted.tracking_codes:
        query = query.where(col(Complaint.tracking_code).in_(wanted.tracking_codes))
    else:
        query = query.where(
            col(Complaint.received_at) >= wanted.start, col(Complaint.received_at) <= wanted.end
        )
        if len(wanted.statuses) == 1:
            closed = col(Complaint.status).in_([s.value for s in CLOSED_STATUSES])
            query = query.where(closed if wanted.statuses[0] == "closed" else ~closed)
    names = {c.name for c in ctx.categories.categories if c.code in wanted.service_codes}
    found: list[dict[str, Any]] = []
    offset = 0
    while len(found) < MAX_RESULTS:
        rows = list(await session.exec(query.limit(_SCAN_BATCH).offset(offset)))
        for row in rows:
            if wanted.tracking_codes or not wanted.service_codes or _category_name(row.allegations) in names:
                found.append(request_read(ctx, row))
        if len(rows) < _SCAN_BATCH:
            break
        offset += _SCAN_BATCH
    return found[:MAX_RESULTS]


async def find_request(*, session: AsyncSession, ctx: IntakeContext, tracking_code: str) -> dict[str, Any]:
    query = (
        select(Complaint)
        .options(_COLUMNS)
        .where(col(Complaint.tracking_code) == tracking_code.strip().upper())
    )
    row = (await session.exec(query)).first()
    if row is None:
        raise Problem(404, [f"service_request_id：受理编号“{tracking_code}”不存在"])
    return request_read(ctx, row)


def _category_name(allegations: list[dict[str, Any]]) -> str | None:
    return str(allegations[0].get("category")) if allegations else None


def request_read(ctx: IntakeContext, row: Complaint) -> dict[str, Any]:
    """A request as anyone may read it: no name, phone, account or place — nothing about a person."""
    name = _category_name(row.allegations)
    category = ctx.categories.find(name) if name else None
    team = row.assigned_team_code
    return {
        "service_request_id": row.tracking_code,
        "status": "closed" if row.status in CLOSED_STATUSES else "open",
        "status_notes": STATUS_NOTES.get(row.status, row.status),
        "service_name": category.name if category else name,
        "service_code": category.code if category else None,
        "description": None,
        "agency_responsible": ctx.organisation.team_name(team) if team else ctx.organisation.city_bureau,
        "service_notice": None,
        "requested_datetime": row.received_at.isoformat(),
        "updated_datetime": row.answered_at.isoformat() if row.answered_at else None,
        "expected_datetime": None,
        "address": None,
        "address_id": None,
        "zipcode": None,
        "lat": None,
        "long": None,
        "media_url": None,
    }
