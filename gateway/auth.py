"""Stage 1, authenticate: ``Authorization: Bearer <key>`` -> the caller's team and key."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

from gateway import keys
from gateway.errors import AuthenticationFailed
from gateway.registry import Limits, Snapshot, Team

_NO_KEY = "Missing API key: send 'Authorization: Bearer <key>'."
_BAD_KEY = "Incorrect API key provided."


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: a team, through one of its keys."""

    team: Team
    key_id: str
    key_limits: Limits = field(default_factory=Limits)


def authenticate(authorization: str | None, snapshot: Snapshot, pepper: bytes) -> Principal:
    """The principal behind an ``Authorization`` header, or ``AuthenticationFailed``.

    Every refusal says the same thing, so a caller learns nothing about which keys exist.
    """
    if not authorization:
        raise AuthenticationFailed(_NO_KEY)
    scheme, _, token = authorization.partition(" ")
    parts = keys.split(token.strip()) if scheme.lower() == "bearer" else None
    if parts is None:
        raise AuthenticationFailed(_BAD_KEY)
    key_id, secret = parts
    found = snapshot.keys.get(key_id)
    if found is None:
        raise AuthenticationFailed(_BAD_KEY)
    team, key = found
    if not keys.matches(pepper, secret, key.hash):
        raise AuthenticationFailed(_BAD_KEY)
    if key.expires_at is not None and key.expires_at <= datetime.now(UTC):
        raise AuthenticationFailed(_BAD_KEY)
    return Principal(team=team, key_id=key.id, key_limits=key.limits)
