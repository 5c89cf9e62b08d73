"""API key format and hashing: ``lgw-<public id>-<secret>``, stored as HMAC-SHA256.

The public id finds the record; the secret is checked against its stored keyed hash in
constant time, so neither the key nor an unkeyed digest of it is ever at rest.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass

PREFIX = "lgw"
_ID_BYTES = 15  # 12 base32 characters
_SECRET_BYTES = 32  # 256 bits of entropy


@dataclass(frozen=True, slots=True)
class NewKey:
    """A freshly minted key: ``plaintext`` is shown once, ``hash`` is what is stored."""

    id: str
    plaintext: str
    hash: str


def hash_secret(pepper: bytes, secret: str) -> str:
    """The stored form of a key's secret: HMAC-SHA256 under the deployment's pepper, hex."""
    return hmac.new(pepper, secret.encode(), hashlib.sha256).hexdigest()


def mint(pepper: bytes) -> NewKey:
    """A new random key and its stored hash."""
    key_id = base64.b32encode(secrets.token_bytes(_ID_BYTES)).decode().lower()[:12]
    secret = secrets.token_urlsafe(_SECRET_BYTES)
    return NewKey(key_id, f"{PREFIX}-{key_id}-{secret}", hash_secret(pepper, secret))


def split(plaintext: str) -> tuple[str, str] | None:
    """``(public id, secret)`` of a well-formed key, else ``None``."""
    prefix, _, rest = plaintext.partition("-")
    key_id, _, secret = rest.partition("-")
    if prefix != PREFIX or len(key_id) != 12 or not 20 <= len(secret) <= 128:
        return None
    return key_id, secret


def fingerprint(pepper: bytes) -> str:
    """What is stored beside the keys to tell which pepper hashed them: an HMAC of a
    fixed text, so it says nothing about the pepper itself."""
    return hmac.new(pepper, b"lora-gateway pepper fingerprint v1", hashlib.sha256).hexdigest()[:16]


def matches(pepper: bytes, secret: str, stored_hash: str) -> bool:
    """Whether ``secret`` is the one behind ``stored_hash``; constant time in the secret."""
    return hmac.compare_digest(hash_secret(pepper, secret), stored_hash)
