"""How a person's contact is shown where it must not be usable: 138****0001, l***@example.gov.cn.

One set of rules for every list, log of messages and page, so no place shows more than another.
"""

from __future__ import annotations


def mask_phone(phone: str | None) -> str | None:
    if not phone:
        return None
    phone = phone.strip()
    return phone[:3] + "****" + phone[-4:] if len(phone) >= 7 else "****"


def mask_email(email: str | None) -> str | None:
    if not email or "@" not in email:
        return None
    local, domain = email.split("@", 1)
    return f"{local[:1]}***@{domain}"


def mask_address(address: str) -> str:
    """A phone number or an e-mail address, whichever it is, masked (at most 64 characters)."""
    masked = mask_email(address) if "@" in address else mask_phone(address)
    return (masked or "****")[:64]


def mask_name(name: str | None) -> str | None:
    if not name:
        return None
    return name[0] + "*" * max(len(name) - 1, 1)
