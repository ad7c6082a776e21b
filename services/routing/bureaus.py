"""Each bureau's 分管领导 and how to reach them: organisation data that supervisors keep.

A 通报 names the head of the accused unit's bureau; feedback's delivery worker reads the
leader's phone and e-mail here (``/internal/bureaus/{code}/contact``) when it sends them a
notice, so the contact never travels on the bus.  Every bureau of the organisation is listed,
with or without a stored contact; a supervisor's change is recorded in the audit trail.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from services.routing.models import BureauContact
from shared.audit import audit
from shared.auth import Principal
from shared.db import insert_missing, utcnow
from shared.errors import FieldProblems, NotFound
from shared.masking import mask_email, mask_phone
from shared.reference import Organisation

# A mobile number, or a landline with its area code (0394-8123456).
PHONE_PATTERN = re.compile(r"^(1[3-9]\d{9}|0\d{2,3}-?\d{7,8})$")
EMAIL_PATTERN = re.compile(r"^[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}$")

# Fictional leaders for the demo, by bureau (city first, then the counties in the units data's order).
DEMO_LEADERS = (
    "周建华",
    "李振国",
    "王卫东",
    "张志刚",
    "刘长青",
    "陈国栋",
    "杨明远",
    "赵永胜",
    "孙立新",
    "吴海峰",
    "郑光明",
)


@dataclass(frozen=True)
class Bureau:
    """A bureau of the organisation, with its stored contact if one is kept."""

    code: str
    name: str
    contact: BureauContact | None


def bureau_names(organisation: Organisation) -> dict[str, str]:
    """The bureaus a leader can answer for: the city's and each county's, by area code."""
    names = {organisation.city_code: organisation.city_bureau}
    names.update({county.code: county.bureau for county in organisation.counties.values()})
    return names


def demo_contacts(organisation: Organisation) -> list[BureauContact]:
    """Fictional leaders for every bureau; some with a phone, some with an e-mail, 沈丘 (411624) with both."""
    rows = []
    for index, (code, name) in enumerate(bureau_names(organisation).items()):
        city = code == organisation.city_code
        with_phone = index % 2 == 0 or code == "411624"
        with_email = index % 3 != 2
        rows.append(
            BureauContact(
                bureau_code=code,
                bureau_name=name,
                leader_name=DEMO_LEADERS[index % len(DEMO_LEADERS)],
                leader_title="副局长（分管督察）" if city else "副局长（分管督察工作）",
                phone=f"1390000{index + 1:04d}" if with_phone else None,
                email=f"leader{code}@example.gov.cn" if with_email else None,
                leader_username=None if city else f"leader-{code}",
                updated_by="seed",
            )
        )
    return rows


async def seed_demo_contacts(*, session: AsyncSession, organisation: Organisation) -> None:
    """Demo mode: a leader for each bureau that has none stored yet (edited ones are kept)."""
    await insert_missing(session, BureauContact, demo_contacts(organisation))


async def list_bureaus(*, session: AsyncSession, organisation: Organisation) -> list[Bureau]:
    stored = {c.bureau_code: c for c in await session.exec(select(BureauContact))}
    names = bureau_names(organisation)
    bureaus = [Bureau(code=code, name=name, contact=stored.pop(code, None)) for code, name in names.items()]
    # A contact kept for a bureau no longer in the organisation still shows, so it can be seen and fixed.
    bureaus += [Bureau(code=c.bureau_code, name=c.bureau_name, contact=c) for c in stored.values()]
    return bureaus


def check_contact(values: dict[str, Any]) -> dict[str, Any]:
    """Trimmed values (empty ones as None); a malformed phone or e-mail refuses the change."""
    cleaned = {
        key: (value.strip() or None) if isinstance(value, str) else value for key, value in values.items()
    }
    problems: list[tuple[str, str, str]] = []
    phone = cleaned.get("phone")
    if phone is not None and not PHONE_PATTERN.fullmatch(phone):
        problems.append(
            (
                "phone",
                "联系电话格式不正确：应为11位手机号码或带区号的固定电话（如0394-8123456）",
                "invalid phone",
            )
        )
    email = cleaned.get("email")
    if email is not None and not EMAIL_PATTERN.fullmatch(email):
        problems.append(("email", "电子邮箱格式不正确（如 name@example.gov.cn）", "invalid e-mail address"))
    if problems:
        raise FieldProblems(problems)
    return cleaned


async def put_bureau(
    *, session: AsyncSession, organisation: Organisation, code: str, values: dict[str, Any], actor: Principal
) -> BureauContact:
    """Store a bureau's leader and contact; recorded in the audit trail (phone and e-mail masked)."""
    names = bureau_names(organisation)
    contact = await session.get(BureauContact, code)
    if contact is None and code not in names:
        raise NotFound("没有该单位")
    cleaned = check_contact(values)
    if contact is None:
        contact = BureauContact(bureau_code=code, bureau_name=names[code])
    for key, value in cleaned.items():
        setattr(contact, key, value)
    contact.updated_by = actor.username
    contact.updated_at = utcnow()
    session.add(contact)
    await audit(
        session,
        case_id=f"org:bureau:{code}",
        action="bureau_contact_changed",
        actor=actor.username,
        detail={
            **contact.model_dump(include={"leader_name", "leader_title", "leader_username"}),
            "phone": mask_phone(contact.phone),
            "email": mask_email(contact.email),
        },
    )
    return contact


async def contact_of(*, session: AsyncSession, code: str) -> BureauContact:
    contact = (
        await session.exec(select(BureauContact).where(col(BureauContact.bureau_code) == code))
    ).first()
    if contact is None:
        raise NotFound("没有该单位的分管领导信息")
    return contact
