"""Request and response shapes of intake's API.

Field-level checks that need no data (phone format, ID checksum, lengths) live
here so a 422 names the field; checks against reference data (units,
categories) are in ``complaints.py``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal, get_args

from pydantic import BaseModel, EmailStr, Field, field_validator, model_validator

from services.intake.identity import id_number_problem, is_valid_phone, normalise_phone
from services.intake.models import Channel
from shared.errors import LocalisedError
from shared.states import ReclassifyTarget, SuggestionKind
from shared.validation import Line, RequestBody, Text

# Request fields name the states' values as Literals, not the enums, so that a wrong value is
# answered as it always was (422 "literal_error") and the OpenAPI schema does not change.
ChannelName = Literal[
    "phone", "web", "letter", "visit", "wechat", "email", "transfer_12345", "transfer_xinfang", "open311"
]
SuggestionKindName = Literal["npc_suggestion", "cppcc_proposal"]
ReclassifyTargetName = Literal["complaint", "suggestion", "citizen_suggestion"]
assert set(get_args(ChannelName)) == set(Channel)
assert set(get_args(SuggestionKindName)) == set(SuggestionKind)
assert set(get_args(ReclassifyTargetName)) == set(ReclassifyTarget)

CHANNEL_LABELS = {
    Channel.PHONE: "电话",
    Channel.WEB: "网站",
    Channel.LETTER: "来信",
    Channel.VISIT: "来访",
    Channel.WECHAT: "微信",
    Channel.EMAIL: "电子邮件",
    Channel.TRANSFER_12345: "12345转办",
    Channel.TRANSFER_XINFANG: "信访转办",
    Channel.OPEN311: "对接平台",
}

MAX_SHORT_TEXT = 200
MAX_PLACE = 500
MAX_TITLE = 300
MAX_SUGGESTION_TEXT = 50_000
MAX_ITEMS = 50
MIN_REASON = 2
MAX_REASON = 500


def _check_phone(value: str | None) -> str | None:
    if value is None or not value.strip():
        return None
    phone = normalise_phone(value)
    if not is_valid_phone(phone):
        raise LocalisedError(
            "电话号码格式不正确：手机为1开头的11位数字，座机为区号加号码，如0394-8888888",
            "not a mainland mobile (11 digits starting with 1) or landline (area code + number) number",
        )
    return phone


def _check_id_number(value: str | None) -> str | None:
    if value is None or not value.strip():
        return None
    problem = id_number_problem(value)
    if problem:
        raise LocalisedError(*problem)
    return value.strip().upper()


def _not_blank(value: str, *, zh: str = "不能为空", en: str = "must not be empty") -> str:
    stripped = value.strip()
    if not stripped:
        raise LocalisedError(zh, en)
    return stripped


class ComplainantIn(RequestBody):
    anonymous: bool = False
    name: Line | None = Field(default=None, max_length=64)
    phone: Line | None = Field(default=None, max_length=32)
    id_number: Line | None = Field(default=None, max_length=32)
    email: EmailStr | None = None
    address: Text | None = Field(default=None, max_length=MAX_PLACE)

    @field_validator("phone")
    @classmethod
    def _phone(cls, value: str | None) -> str | None:
        return _check_phone(value)

    @field_validator("id_number")
    @classmethod
    def _id_number(cls, value: str | None) -> str | None:
        return _check_id_number(value)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str | None) -> str | None:
        return value.strip() or None if value is not None else None

    @model_validator(mode="after")
    def _named_needs_contact(self) -> ComplainantIn:
        if not self.anonymous:
            if not self.name:
                raise LocalisedError(
                    "实名投诉需填写投诉人姓名（或勾选匿名）",
                    "name is required unless anonymous",
                    field="name",
                )
            if not (self.phone or self.email or self.address):
                raise LocalisedError(
                    "实名投诉需填写联系电话、电子邮箱或通信地址之一",
                    "a phone, e-mail or address is required",
                    field="phone",
                )
        return self


class OfficerIn(RequestBody):
    name: Line | None = Field(default=None, max_length=64)
    badge_no: str | None = Field(default=None, max_length=16, pattern=r"^[0-9A-Za-z]{4,16}$")
    leadership: bool = False


class AccusedIn(RequestBody):
    """The acceptance contract's flat shape: one unit and at most one officer."""

    unit: Line = Field(min_length=1, max_length=MAX_SHORT_TEXT)
    county_code: Line = Field(min_length=6, max_length=16)
    officer_name: Line | None = Field(default=None, max_length=64)
    badge_no: str | None = Field(default=None, max_length=16, pattern=r"^[0-9A-Za-z]{4,16}$")
    leadership: bool | None = None
    officers: list[OfficerIn] = Field(default_factory=list, max_length=MAX_ITEMS)

    @field_validator("unit")
    @classmethod
    def _unit(cls, value: str) -> str:
        return _not_blank(value)


class AllegationIn(RequestBody):
    category: Line = Field(min_length=1, max_length=64)
    description: Text | None = Field(default=None, max_length=2000)


class AttachmentIn(RequestBody):
    filename: Line = Field(min_length=1, max_length=255)
    content_type: Line = Field(min_length=1, max_length=100)
    size_bytes: int = Field(ge=0, le=500 * 1024 * 1024)
    sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")
    description: Text | None = Field(default=None, max_length=500)


class ComplaintCreate(RequestBody):
    channel: ChannelName
    platform_ticket_no: Line | None = Field(default=None, max_length=64)
    received_at: datetime | None = None
    complainant: ComplainantIn
    accused: AccusedIn
    category: Line | None = Field(default=None, max_length=64)
    allegations: list[AllegationIn] = Field(default_factory=list, max_length=MAX_ITEMS)
    incident_at: datetime | None = None
    place: Text | None = Field(default=None, max_length=MAX_PLACE)
    account: Text = Field(min_length=1)
    attachments: list[AttachmentIn] = Field(default_factory=list, max_length=MAX_ITEMS)
    new_matter: bool = Field(
        default=False,
        description="the caller has an open complaint about the same unit, but this is another matter: "
        "recorded on its own (作为新事项登记) instead of linked to it as a repeat (重复件)",
    )
    new_matter_reason: Text | None = Field(
        default=None, max_length=MAX_REASON, description="required with new_matter: why it is another matter"
    )

    @field_validator("account")
    @classmethod
    def _account(cls, value: str) -> str:
        return _not_blank(value, zh="请填写投诉人陈述的事情经过", en="the account must not be empty")

    @field_validator("received_at", "incident_at")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise LocalisedError(
                "时间需带时区，如 2026-11-02T09:14:00+08:00", "time needs a time zone offset"
            )
        return value

    @model_validator(mode="after")
    def _needs_a_category(self) -> ComplaintCreate:
        if not self.category and not self.allegations:
            raise LocalisedError("请选择投诉类别", "category (or allegations) is required", field="category")
        return self

    @model_validator(mode="after")
    def _new_matter_needs_a_reason(self) -> ComplaintCreate:
        reason = (self.new_matter_reason or "").strip()
        if self.new_matter and len(reason) < MIN_REASON:
            raise LocalisedError(
                f"作为新事项登记时需填写理由（至少{MIN_REASON}个字），说明与办理中的投诉不是同一事项",
                "new_matter_reason is required with new_matter",
                field="new_matter_reason",
            )
        self.new_matter_reason = reason if self.new_matter else None
        return self


class ComplaintCreated(BaseModel):
    id: str
    tracking_code: str
    query_secret: str
    kind: Literal["complaint"] = "complaint"
    status: str
    received_at: datetime
    repeat_of: str | None
    linked_repeat: bool = Field(
        default=False,
        description="a repeat of the open complaint ``repeat_of`` (重复件): linked to it, not worked "
        "on its own; its caller gets that complaint's answer",
    )
    repeat_after_rejection: bool
    key_clue_hints: list[str]
    earlier_matters: list[EarlierMatter]


class EarlierMatter(BaseModel):
    id: str
    tracking_code: str
    received_at: datetime
    accused_unit: str
    status: str
    last_rating: str | None
    linked_repeat: bool = Field(default=False, description="itself a repeat linked to another complaint")
    open: bool = Field(default=False, description="still being worked on: a repeat of it would be linked")


class RepeatCheckIn(RequestBody):
    """Before submitting: would a complaint by this caller about this unit repeat an open one?"""

    phone: Line | None = Field(default=None, max_length=32)
    id_number: Line | None = Field(default=None, max_length=32)
    unit: Line = Field(min_length=1, max_length=MAX_SHORT_TEXT)
    county_code: Line = Field(min_length=6, max_length=16)

    @field_validator("phone")
    @classmethod
    def _phone(cls, value: str | None) -> str | None:
        return _check_phone(value)

    @field_validator("id_number")
    @classmethod
    def _id_number(cls, value: str | None) -> str | None:
        return _check_id_number(value)


class RepeatCheckOut(BaseModel):
    open_matter: EarlierMatter | None = Field(
        description="the open complaint a new one would be linked to (重复件), unless recorded as a new matter"
    )
    earlier: EarlierMatter | None = Field(
        description="the earlier complaint about the same unit within the repeat window, open or not"
    )


class ComplaintRead(BaseModel):
    id: str
    tracking_code: str
    kind: Literal["complaint"] = "complaint"
    channel: str
    platform_ticket_no: str | None
    received_at: datetime
    anonymous: bool
    complainant_name: str | None = Field(description="masked")
    complainant_phone: str | None = Field(description="masked")
    accused_unit: str
    accused_unit_code: str | None
    county_code: str
    officers: list[dict[str, object]]
    allegations: list[dict[str, object]]
    attachments: list[dict[str, object]]
    incident_at: datetime | None
    place: str | None
    account: str
    injury_or_death: bool
    repeat_of: str | None
    linked_repeat: bool = False
    new_matter_reason: str | None = None
    repeat_after_rejection: bool
    status: str
    assigned_team_code: str | None
    last_rating: str | None
    created_by: str
    created_at: datetime


class IdentityRead(BaseModel):
    complaint_id: str
    anonymous: bool
    name: str | None
    phone: str | None
    id_number: str | None


class ContactRead(BaseModel):
    complaint_id: str
    anonymous: bool
    name: str | None
    phone: str | None
    email: str | None
    address: str | None


class DeputyIn(RequestBody):
    name: Line = Field(min_length=1, max_length=64)
    delegation: Line = Field(min_length=1, max_length=128)
    phone: Line | None = Field(default=None, max_length=32)
    account: Line | None = Field(
        default=None,
        max_length=64,
        description="the deputy's account (username, GET /api/v1/deputies); needed when several "
        "deputies of this name are in the delegation, found by name when only one is",
    )

    @field_validator("phone")
    @classmethod
    def _phone(cls, value: str | None) -> str | None:
        return _check_phone(value)

    @field_validator("name", "delegation")
    @classmethod
    def _strip(cls, value: str) -> str:
        return _not_blank(value)


class SuggestionCreate(RequestBody):
    kind: SuggestionKindName
    session: Line = Field(min_length=1, max_length=MAX_SHORT_TEXT)
    number: str = Field(min_length=1, max_length=32, pattern=r"^[0-9A-Za-z\-]+$")
    title: Line = Field(min_length=1, max_length=MAX_TITLE)
    text: Text = Field(min_length=1, max_length=MAX_SUGGESTION_TEXT)
    deputy: DeputyIn
    co_signers: list[Line] = Field(default_factory=list, max_length=MAX_ITEMS)
    lead_unit: Line = Field(min_length=1, max_length=MAX_SHORT_TEXT)
    co_units: list[Line] = Field(default_factory=list, max_length=MAX_ITEMS)
    received_at: datetime | None = None
    complex_matter: bool = False

    @field_validator("session", "title", "text", "lead_unit")
    @classmethod
    def _strip(cls, value: str) -> str:
        return _not_blank(value)

    @field_validator("received_at")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise LocalisedError(
                "时间需带时区，如 2026-02-20T09:00:00+08:00", "time needs a time zone offset"
            )
        return value


class SuggestionCreated(BaseModel):
    id: str
    tracking_code: str
    query_secret: str
    kind: SuggestionKindName
    status: str
    received_at: datetime


class SuggestionRead(BaseModel):
    id: str
    tracking_code: str
    kind: str
    session: str
    number: str
    title: str
    text: str
    deputy_name: str
    deputy_delegation: str
    deputy_account: str | None = None
    co_signers: list[str]
    lead_unit: str
    co_units: list[str]
    received_at: datetime
    status: str
    assigned_team_code: str | None
    created_at: datetime


class TokenResponse(BaseModel):
    access_token: str
    token_type: Literal["bearer"] = "bearer"  # noqa: S105 - the OAuth2 token type, not a secret
    expires_in: int
    role: str
    team_code: str | None = None
    display_name: str | None = None


class DeputyAccountRead(BaseModel):
    username: str
    name: str
    delegation: str
    display_name: str | None = None
    active: bool


class MeRead(BaseModel):
    username: str
    role: str
    team_code: str | None
    display_name: str | None
    deputy_name: str | None
    deputy_delegation: str | None


class ReclassifyIn(RequestBody):
    """Move a matter filed as the wrong kind to the right track; the reason is recorded."""

    to_kind: ReclassifyTargetName
    reason: Text = Field(min_length=2, max_length=1000)
    forwarded_to: Line | None = Field(
        default=None,
        max_length=MAX_SHORT_TEXT,
        description="citizen_suggestion: the unit the suggestion is passed to",
    )
    suggestion: SuggestionCreate | None = None
    complaint: ComplaintCreate | None = None

    @model_validator(mode="after")
    def _payload_for_target(self) -> ReclassifyIn:
        target = ReclassifyTarget(self.to_kind)
        if target == ReclassifyTarget.SUGGESTION and self.suggestion is None:
            raise LocalisedError(
                "转为代表建议或委员提案时需填写建议信息",
                "suggestion details are required",
                field="suggestion",
            )
        if target == ReclassifyTarget.COMPLAINT and self.complaint is None:
            raise LocalisedError(
                "转为投诉时需填写投诉信息", "complaint details are required", field="complaint"
            )
        if target == ReclassifyTarget.CITIZEN_SUGGESTION and not (self.forwarded_to or "").strip():
            raise LocalisedError(
                "转为群众建议时需填写转交单位", "forwarded_to is required", field="forwarded_to"
            )
        return self


class ReclassifyOut(BaseModel):
    id: str
    status: str
    to_kind: str
    new_case_id: str | None = None
    tracking_code: str | None = None
    query_secret: str | None = None
