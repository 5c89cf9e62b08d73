"""Admin request and response bodies. Requests are strict: an unknown or privileged
field is a 422, never silently applied. Responses never carry a key hash."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from gateway.registry import ApiKey, Limits, Mapping, Target, Team
from gateway.registry.models import Name, Policy


class Body(BaseModel):
    """Base of every admin body."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class TeamIn(Body):
    """``POST /admin/v1/teams``."""

    name: Name
    limits: Limits = Limits()
    on_limiter_failure: Literal["fail_open", "fail_closed"] = "fail_open"
    policy: Policy = Policy()


class TeamPatch(Body):
    """``PATCH /admin/v1/teams/{team}``: only the fields given change."""

    limits: Limits | None = None
    on_limiter_failure: Literal["fail_open", "fail_closed"] | None = None
    policy: Policy | None = None


class TeamOut(Body):
    """A team as the admin plane shows it (keys are listed on their own route)."""

    name: str
    limits: Limits
    on_limiter_failure: str
    policy: Policy
    keys: int = Field(description="How many keys the team has.")

    @classmethod
    def of(cls, team: Team) -> TeamOut:
        return cls(
            name=team.name,
            limits=team.limits,
            on_limiter_failure=team.on_limiter_failure,
            policy=team.policy,
            keys=len(team.keys),
        )


class KeyIn(Body):
    """``POST /admin/v1/teams/{team}/keys``."""

    name: str = Field(min_length=1, max_length=100)
    role: Literal["member", "admin"] = "member"
    expires_at: AwareDatetime | None = None
    limits: Limits = Limits()


class RotateIn(Body):
    """``POST .../keys/{id}/rotate``: the old key keeps working for ``grace_seconds``."""

    grace_seconds: int = Field(3600, ge=0, le=30 * 24 * 3600)


class KeyOut(Body):
    """A key by id and name: never its value, never its hash."""

    id: str
    name: str
    role: str
    expires_at: datetime | None
    limits: Limits

    @classmethod
    def of(cls, key: ApiKey) -> KeyOut:
        return cls(
            id=key.id, name=key.name, role=key.role, expires_at=key.expires_at, limits=key.limits
        )


class KeyCreated(KeyOut):
    """A new key: ``key`` is shown this once and stored only as a keyed hash."""

    key: str


class MappingIn(Body):
    """``PUT /admin/v1/teams/{team}/mappings/{task}``: one adapter or weighted targets."""

    adapter: str | None = None
    targets: tuple[Target, ...] | None = None


class MappingOut(Body):
    """A (team, task) mapping."""

    team: str | None
    task: str
    adapter: str | None
    targets: tuple[Target, ...] | None

    @classmethod
    def of(cls, mapping: Mapping) -> MappingOut:
        return cls(
            team=mapping.team, task=mapping.task, adapter=mapping.adapter, targets=mapping.targets
        )


class Page(Body):
    """One page of a list; pass ``next`` back as ``after`` for the following page."""

    data: list[Any]
    next: str | None = None


class AuditEntry(Body):
    """One change: who, what, before and after, when. Key hashes never appear."""

    id: str
    at: datetime
    actor: str
    action: str
    team: str | None
    target: str
    before: Any
    after: Any


class UsageOut(Body):
    """Totals of one (team, adapter) since the requested time (default: the last day)."""

    team: str
    adapter: str
    input_tokens: int
    output_tokens: int
    cost: float
