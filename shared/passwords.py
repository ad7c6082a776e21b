"""Password hashes: Argon2id (argon2-cffi); scrypt hashes of earlier releases still verify.

``verify_password`` says whether the stored hash should be replaced: a scrypt hash, or an
Argon2 hash made with weaker parameters than today's, is rehashed at the next sign-in.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

# argon2-cffi's defaults are RFC 9106's "low memory" profile: Argon2id, t=3, 64 MiB, p=4.
_HASHER = PasswordHasher()


@dataclass(frozen=True)
class PasswordCheck:
    ok: bool
    needs_rehash: bool = False

    def __bool__(self) -> bool:
        return self.ok


def hash_password(password: str) -> str:
    return _HASHER.hash(password)


def verify_password(password: str, stored: str) -> PasswordCheck:
    if stored.startswith("scrypt$"):
        return PasswordCheck(ok=_verify_scrypt(password, stored), needs_rehash=True)
    try:
        _HASHER.verify(stored, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return PasswordCheck(ok=False)
    return PasswordCheck(ok=True, needs_rehash=_HASHER.check_needs_rehash(stored))


def _verify_scrypt(password: str, stored: str) -> bool:
    try:
        _scheme, n, r, p, salt, digest = stored.split("$")
        candidate = hashlib.scrypt(
            password.encode(), salt=bytes.fromhex(salt), n=int(n), r=int(r), p=int(p), maxmem=2**26
        )
    except ValueError:
        return False
    return hmac.compare_digest(candidate.hex(), digest)
