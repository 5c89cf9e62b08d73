"""Stage 3, authorize: what a team may ask of a route. Pure (no I/O), and the only
place these rules live: the data plane, ``GET /v1/models`` and the validation of
mappings (policy files, the admin API, ``lora-gateway policies``) all call
``check_access``, so they can never disagree.

Refusal reasons are stable codes (counted in ``lgw_policy_denials_total``) and the 403
names no other team, adapter or pool.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.errors import InvalidRequest, PermissionDenied
from gateway.registry import Adapter, Pool, Registry, Team
from gateway.registry.models import DATA_CLASSES, Caps, Problem
from gateway.routing import Candidate
from gateway.schemas import ChatRequest, OpenAIRequest
from gateway.settings import Settings

REASONS = (
    "adapter_not_granted",
    "no_eligible_pool",
    "max_tokens_cap",
    "prompt_too_large",
    "too_many_messages",
    "tools_not_allowed",
    "response_format_not_allowed",
    "logprobs_not_allowed",
)


@dataclass(frozen=True, slots=True)
class Ask:
    """What one request asks for, as policy sees it (sizes and switches, no content)."""

    max_tokens: int | None = None
    prompt_chars: int = 0
    messages: int = 1
    tools: bool = False
    response_format: bool = False
    logprobs: bool = False

    @classmethod
    def of(cls, asked: OpenAIRequest) -> Ask:
        """The policy view of an OpenAI request."""
        if isinstance(asked, ChatRequest):
            return cls(
                asked.requested_max_tokens,
                asked.prompt_chars,
                len(asked.messages),
                asked.uses_tools,
                asked.response_format is not None,
                bool(asked.logprobs) or asked.top_logprobs is not None,
            )
        prompts = [asked.prompt] if isinstance(asked.prompt, str) else asked.prompt
        chars = sum(len(p) for p in prompts) + asked.stop_chars
        return cls(asked.max_tokens, chars, len(prompts))


@dataclass(frozen=True, slots=True)
class Decision:
    """Allowed or not, why, and which pools may receive the request."""

    allowed: bool
    reason: str
    """``ok`` or a refusal code from ``REASONS``."""
    pools: tuple[Pool, ...]
    shadowed: bool = False
    """Would have been refused, but the team's policy is in shadow mode."""


def may_use(adapter: Adapter | None, team: str | None) -> bool:
    """Whether ``team`` may use an adapter described by ``adapter`` (None: shared)."""
    if adapter is None or adapter.owner is None:
        return True
    return team is not None and (team == adapter.owner or team in adapter.grants)


def eligible(team: Team, pool: Pool) -> bool:
    """Whether ``pool`` may receive the team's data: clearance and required labels."""
    policy = team.policy
    cleared = DATA_CLASSES.index(pool.clearance) >= DATA_CLASSES.index(policy.data_class)
    return cleared and all(pool.labels.get(k) == v for k, v in policy.pool_labels.items())


def check_access(team: Team, found: Candidate, ask: Ask | None) -> Decision:
    """The decision for one team, one resolved adapter and (when given) one request.

    Shadow mode relaxes only the team's own restrictions (data class, pool labels, caps):
    another team's ownership of an adapter holds whatever the caller's policy says.
    """
    pools = tuple(p for p in found.pools if eligible(team, p))
    reason = _refusal(team, found.record, found.adapter, pools, found.pools, ask)
    if reason is None:
        return Decision(True, "ok", pools)
    if team.policy.shadow and reason != "adapter_not_granted":
        return Decision(True, reason, pools or found.pools, shadowed=True)
    return Decision(False, reason, pools)


def _refusal(
    team: Team,
    record: Adapter | None,
    adapter: str,
    pools: tuple[Pool, ...],
    candidates: tuple[Pool, ...],
    ask: Ask | None,
) -> str | None:
    if not may_use(record, team.name):
        return "adapter_not_granted"
    if candidates and not pools:
        return "no_eligible_pool"
    return None if ask is None else _cap_refusal(team.policy.caps, ask)


def _cap_refusal(caps: Caps, ask: Ask) -> str | None:
    checks = (
        (caps.max_tokens is not None and (ask.max_tokens or 0) > caps.max_tokens, "max_tokens_cap"),
        (
            caps.max_prompt_chars is not None and ask.prompt_chars > caps.max_prompt_chars,
            "prompt_too_large",
        ),
        (caps.max_messages is not None and ask.messages > caps.max_messages, "too_many_messages"),
        (ask.tools and not caps.allow_tools, "tools_not_allowed"),
        (ask.response_format and not caps.allow_response_format, "response_format_not_allowed"),
        (ask.logprobs and not caps.allow_logprobs, "logprobs_not_allowed"),
    )
    return next((reason for refused, reason in checks if refused), None)


def enforce(decision: Decision) -> tuple[Pool, ...]:
    """The pools the request may go to, or the 403 when it is refused."""
    if not decision.allowed:
        raise refusal(decision)
    return decision.pools


def refusal(decision: Decision) -> PermissionDenied:
    """The 403 for a refusal: the reason code, and nothing about anyone else."""
    error = PermissionDenied(
        f"This request is not allowed by your team's policy ({decision.reason})."
    )
    error.param = decision.reason
    return error


def max_tokens_for(requested: int | None, settings: Settings, caps: Caps | None = None) -> int:
    """The ``max_tokens`` to send upstream: always explicit, never above a cap.

    Without it TGI generates up to the whole context window (docs/reference/tgi-protocol.md §7).
    """
    team_cap = caps.max_tokens if caps is not None and caps.max_tokens else None
    if requested is None:
        return min(settings.default_max_tokens, settings.max_tokens_cap, team_cap or 10**9)
    if requested > settings.max_tokens_cap:
        raise InvalidRequest(
            f"max_tokens is too large: {requested}. This model supports at most "
            f"{settings.max_tokens_cap} completion tokens.",
            param="max_tokens",
        )
    return requested


def mapping_problems(registry: Registry) -> list[Problem]:
    """Mappings that send a team to an adapter it may not use, or that only pools its
    policy forbids serve: the data plane's own decision, at the mapping's location."""
    teams = {t.name: t for t in registry.teams}
    adapters = {a.id: a for a in registry.adapters}
    problems: list[Problem] = []
    for i, mapping in enumerate(registry.mappings):
        field = "adapter" if mapping.adapter is not None else "targets"
        team = teams.get(mapping.team) if mapping.team is not None else None
        for target in mapping.choices:
            pools = tuple(p for p in registry.pools if p.serves(target.adapter))
            found = Candidate(mapping.task, target.adapter, adapters.get(target.adapter), pools)
            problem = _mapping_problem(team, found)
            if problem:
                problems.append((("mappings", i, field), problem))
    return problems


def _mapping_problem(team: Team | None, found: Candidate) -> str | None:
    if not found.pools:
        return None  # no pool serves it at all: a reference problem, reported as such
    if team is None:  # the org default (or an unknown team, reported as such)
        return None if may_use(found.record, None) else f"{found.adapter!r} is private"
    decision = check_access(team, found, None)
    if decision.allowed:
        return None
    if decision.reason == "adapter_not_granted":
        return f"{found.adapter!r} is private"
    return f"no pool the team's policy allows serves {found.adapter!r}"
