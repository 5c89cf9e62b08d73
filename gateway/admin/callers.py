"""Who is calling the admin plane: the org admin, a team admin, or nobody allowed.

Deny by default: the org token (``LGW_ADMIN_TOKEN``, compared in constant time) may do
everything; a key with ``role: admin`` may manage its own team's keys and mappings and
read what its team may use; any other key gets 403; no admin plane without the token.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from gateway.auth import authenticate
from gateway.errors import AuthenticationFailed, NotFound, PermissionDenied
from gateway.registry import Snapshot
from gateway.settings import Settings


@dataclass(frozen=True, slots=True)
class Caller:
    """An authenticated admin: ``team is None`` means the org admin."""

    actor: str
    """What the audit log records: ``org-admin`` or ``key:<public id>``."""
    team: str | None

    @property
    def is_org(self) -> bool:
        """The org admin."""
        return self.team is None

    def require_org(self) -> None:
        """Only the org admin may go on."""
        if not self.is_org:
            raise PermissionDenied("This action needs the org admin token.")

    def require_team(self, team: str) -> None:
        """The org admin, or an admin of ``team``; other teams look absent (404)."""
        if not self.is_org and self.team != team:
            raise NotFound("No such team.")


def identify(
    authorization: str | None, settings: Settings, snapshot: Snapshot, pepper: bytes
) -> Caller:
    """The caller behind an admin request's ``Authorization`` header."""
    if settings.admin_token is None:
        raise PermissionDenied("The admin plane is disabled: LGW_ADMIN_TOKEN is not set.")
    scheme, _, token = (authorization or "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise AuthenticationFailed("Missing admin credentials: send 'Authorization: Bearer'.")
    expected = settings.admin_token.get_secret_value().encode()
    if hmac.compare_digest(token.encode(), expected):
        return Caller(actor="org-admin", team=None)
    principal = authenticate(f"Bearer {token}", snapshot, pepper)  # 401 when unknown
    key = next(k for k in principal.team.keys if k.id == principal.key_id)
    if key.role != "admin":
        raise PermissionDenied("Data-plane keys cannot use the admin plane.")
    return Caller(actor=f"key:{key.id}", team=principal.team.name)
