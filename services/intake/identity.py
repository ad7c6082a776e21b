"""Complainant identity: encrypted at rest, masked in lists, matched by keyed hash.

The key comes from settings, never the database, so a copied database file
does not reveal who complained.  Repeat detection compares a keyed hash of the
normalised phone or ID number, never the plain value.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
import secrets
from dataclasses import dataclass
from datetime import date

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

_MOBILE = re.compile(r"^1[3-9]\d{9}$")
# Landline: area code 0 + 2-3 digits, then 7-8 digits, optional extension.
_LANDLINE = re.compile(r"^0\d{2,3}-?\d{7,8}(-\d{1,6})?$")
_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_ID_CHECK = "10X98765432"
_CODE_ALPHABET = "23456789ABCDEFGHJKMNPQRSTUVWXYZ"  # no 0/O, 1/I/L: read aloud over the phone


@dataclass(frozen=True)
class Identity:
    name: str | None
    phone: str | None
    id_number: str | None
    email: str | None = None
    address: str | None = None


def normalise_phone(raw: str) -> str:
    digits = raw.strip().replace(" ", "").replace("－", "-")
    if digits.startswith("+86"):
        digits = digits[3:]
    elif digits.startswith("0086"):
        digits = digits[4:]
    return digits.lstrip("-")


def is_valid_phone(phone: str) -> bool:
    return bool(_MOBILE.match(phone) or _LANDLINE.match(phone))


def id_number_problem(raw: str) -> tuple[str, str] | None:
    """Why an 18-character resident ID number (GB 11643) is invalid, in Chinese and English; None if valid."""
    value = raw.strip().upper()
    if not re.fullmatch(r"\d{17}[\dX]", value):
        return ("身份证号应为18位，最后一位可为X", "ID number must be 18 characters, the last may be X")
    try:
        born = date(int(value[6:10]), int(value[10:12]), int(value[12:14]))
    except ValueError:
        return ("身份证号中的出生日期无效", "the birth date in the ID number is not a real date")
    if born > date.today() or born.year < 1900:
        return ("身份证号中的出生日期不合理", "the birth date in the ID number is impossible")
    total = sum(int(d) * w for d, w in zip(value[:17], _ID_WEIGHTS, strict=True))
    if _ID_CHECK[total % 11] != value[17]:
        return ("身份证号校验位错误", "ID number checksum (GB 11643) does not match")
    return None


class IdentityVault:
    def __init__(self, key: bytes) -> None:
        self._aead = AESGCM(key)
        self._match_key = hmac.new(key, b"complainant-match", hashlib.sha256).digest()

    def seal(self, identity: Identity) -> str:
        nonce = os.urandom(12)
        plaintext = json.dumps(
            {
                "name": identity.name,
                "phone": identity.phone,
                "id_number": identity.id_number,
                "email": identity.email,
                "address": identity.address,
            },
            ensure_ascii=False,
        ).encode()
        return base64.b64encode(nonce + self._aead.encrypt(nonce, plaintext, b"identity-v1")).decode()

    def open(self, sealed: str) -> Identity:
        blob = base64.b64decode(sealed)
        data = json.loads(self._aead.decrypt(blob[:12], blob[12:], b"identity-v1"))
        return Identity(
            name=data.get("name"),
            phone=data.get("phone"),
            id_number=data.get("id_number"),
            email=data.get("email"),
            address=data.get("address"),
        )

    def seal_text(self, value: str, *, context: str) -> str:
        """``value`` encrypted for storage; it opens only with the same ``context`` (bound as AAD)."""
        nonce = os.urandom(12)
        sealed = self._aead.encrypt(nonce, value.encode(), b"text-v1\x1f" + context.encode())
        return base64.b64encode(nonce + sealed).decode()

    def open_text(self, sealed: str, *, context: str) -> str:
        """The value; ValueError when it was sealed with another key or for another context."""
        blob = base64.b64decode(sealed)
        try:
            return self._aead.decrypt(blob[:12], blob[12:], b"text-v1\x1f" + context.encode()).decode()
        except InvalidTag:
            raise ValueError("sealed with another key or for another context") from None

    def match_keys(self, *, phone: str | None, id_number: str | None) -> list[str]:
        keys = []
        if phone:
            keys.append(self._hash("phone:" + normalise_phone(phone)))
        if id_number:
            keys.append(self._hash("id:" + id_number.strip().upper()))
        return keys

    def phone_key(self, phone: str) -> str:
        return self._hash("phone:" + normalise_phone(phone))

    def _hash(self, value: str) -> str:
        return hmac.new(self._match_key, value.encode(), hashlib.sha256).hexdigest()


def random_code(length: int) -> str:
    return "".join(secrets.choice(_CODE_ALPHABET) for _ in range(length))


def new_query_secret() -> str:
    raw = random_code(10)
    return f"{raw[:5]}-{raw[5:]}"
