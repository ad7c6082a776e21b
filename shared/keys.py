"""Ed25519 keys in settings: PEM text, also written on one line (environment files, compose).

``TOKEN_PUBLIC_KEYS`` and the like list one or more public keys with their ``kid``: either a
JSON object ``{"kid": "PEM", ...}`` or ``kid=PEM`` entries separated by commas.
"""

from __future__ import annotations

import hashlib
import json
import re

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

_PEM = re.compile(r"-----BEGIN ([A-Z ]+)-----(.*?)-----END \1-----", re.DOTALL)
_KEY_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


def normalise_pem(text: str) -> bytes:
    """PEM with its line breaks back, whether they came as real breaks, ``\\n`` or spaces."""
    match = _PEM.search(text.replace("\\n", "\n"))
    if match is None:
        raise ValueError("not a PEM key (-----BEGIN ...----- ... -----END ...-----)")
    label, body = match.group(1), re.sub(r"\s+", "", match.group(2))
    lines = [body[i : i + 64] for i in range(0, len(body), 64)]
    return ("\n".join([f"-----BEGIN {label}-----", *lines, f"-----END {label}-----"]) + "\n").encode()


def load_private_key(text: str) -> Ed25519PrivateKey:
    key = serialization.load_pem_private_key(normalise_pem(text), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError("the private key must be an Ed25519 key")
    return key


def load_public_key(text: str) -> Ed25519PublicKey:
    key = serialization.load_pem_public_key(normalise_pem(text))
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError("the public key must be an Ed25519 key")
    return key


def parse_key_list(text: str) -> dict[str, str]:
    """``kid`` → public key PEM, from a JSON object or ``kid=PEM,kid=PEM``; each key checked."""
    raw = text.strip()
    if raw.startswith("{"):
        loaded = json.loads(raw)
        if not isinstance(loaded, dict):
            raise ValueError("expected a JSON object of kid to PEM")
        entries = {str(k): str(v) for k, v in loaded.items()}
    else:
        entries = {}
        for part in filter(None, (p.strip() for p in raw.split(","))):
            kid, sep, pem = part.partition("=")
            if not sep:
                raise ValueError("each entry is kid=PEM")
            entries[kid.strip()] = pem.strip()
    if not entries:
        raise ValueError("no public key listed")
    for kid, pem in entries.items():
        if not _KEY_ID.match(kid):
            raise ValueError(f"key id {kid!r}: letters, digits, '.', '_' or '-' only, at most 64")
        load_public_key(pem)
    return entries


def check_key_id(kid: str) -> str:
    if not _KEY_ID.match(kid):
        raise ValueError("a key id is letters, digits, '.', '_' or '-' only, at most 64")
    return kid


def public_pem(key: Ed25519PrivateKey) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def private_pem(key: Ed25519PrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def one_line(pem: str) -> str:
    """A PEM on one line, for an environment file: ``normalise_pem`` restores it."""
    return "".join(pem.strip().splitlines())


def same_public_key(a: Ed25519PublicKey, b: Ed25519PublicKey) -> bool:
    raw = serialization.Encoding.Raw, serialization.PublicFormat.Raw
    return hashlib.sha256(a.public_bytes(*raw)).digest() == hashlib.sha256(b.public_bytes(*raw)).digest()


def new_key_pair(kid: str) -> dict[str, str]:
    """A fresh key: its private PEM, and the ``kid=PEM`` entry of its public key (both on one line)."""
    key = Ed25519PrivateKey.generate()
    return {"private": one_line(private_pem(key)), "public_entry": f"{kid}={one_line(public_pem(key))}"}


if __name__ == "__main__":
    import sys

    kid = sys.argv[1] if len(sys.argv) > 1 else ""
    check_key_id(kid)
    pair = new_key_pair(kid)
    print(f"# the private key, for the signer alone\n{pair['private']}")
    print(f"# its public key entry, for the verifiers' list (with the key id {kid})\n{pair['public_entry']}")
