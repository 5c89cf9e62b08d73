"""check_access as a table: teams x adapters x pools x caps -> decision and reason."""

from __future__ import annotations

import pytest

from gateway.policy import Ask, check_access
from gateway.registry import Adapter, Pool, Team
from gateway.registry.models import Caps, Policy
from gateway.routing import Candidate

OWN = Adapter(id="org/own", owner="a")
PRIVATE_OTHER = Adapter(id="org/private", owner="b")
GRANTED = Adapter(id="org/granted", owner="b", grants=("a",))
SHARED = None  # an adapter no record describes is shared

INTERNAL_US = Pool(
    name="us",
    base_model="m/b",
    endpoints=("http://us:1",),
    labels={"region": "us"},
    clearance="internal",
)
CONFIDENTIAL_EU = Pool(
    name="eu",
    base_model="m/b",
    endpoints=("http://eu:1",),
    labels={"region": "eu"},
    clearance="confidential",
)
RESTRICTED_EU = Pool(
    name="eu-r",
    base_model="m/b",
    endpoints=("http://eur:1",),
    labels={"region": "eu"},
    clearance="restricted",
)
BOTH = (INTERNAL_US, CONFIDENTIAL_EU)


def team(**policy: object) -> Team:
    return Team(name="a", policy=Policy.model_validate(policy))


def found(record: Adapter | None, pools: tuple[Pool, ...] = BOTH) -> Candidate:
    return Candidate("t", record.id if record else "org/shared", record, pools)


TABLE = [
    # (case, team, adapter record, pools, ask, allowed, reason, eligible pool names)
    ("own adapter", team(), OWN, BOTH, None, True, "ok", ["us", "eu"]),
    ("shared adapter", team(), SHARED, BOTH, None, True, "ok", ["us", "eu"]),
    ("granted adapter", team(), GRANTED, BOTH, None, True, "ok", ["us", "eu"]),
    (
        "another team's private adapter",
        team(),
        PRIVATE_OTHER,
        BOTH,
        None,
        False,
        "adapter_not_granted",
        ["us", "eu"],
    ),
    (
        "public data goes anywhere",
        team(data_class="public"),
        OWN,
        BOTH,
        None,
        True,
        "ok",
        ["us", "eu"],
    ),
    (
        "confidential data skips the internal pool",
        team(data_class="confidential"),
        OWN,
        BOTH,
        None,
        True,
        "ok",
        ["eu"],
    ),
    (
        "restricted data has no pool here",
        team(data_class="restricted"),
        OWN,
        BOTH,
        None,
        False,
        "no_eligible_pool",
        [],
    ),
    (
        "restricted data reaches a restricted pool",
        team(data_class="restricted"),
        OWN,
        (*BOTH, RESTRICTED_EU),
        None,
        True,
        "ok",
        ["eu-r"],
    ),
    (
        "region label required",
        team(pool_labels={"region": "eu"}),
        OWN,
        BOTH,
        None,
        True,
        "ok",
        ["eu"],
    ),
    (
        "no pool carries the label",
        team(pool_labels={"region": "ap"}),
        OWN,
        BOTH,
        None,
        False,
        "no_eligible_pool",
        [],
    ),
    (
        "within every cap",
        team(caps={"max_tokens": 100, "max_messages": 2}),
        OWN,
        BOTH,
        Ask(max_tokens=100, messages=2),
        True,
        "ok",
        ["us", "eu"],
    ),
    (
        "max_tokens over the cap",
        team(caps={"max_tokens": 100}),
        OWN,
        BOTH,
        Ask(max_tokens=101),
        False,
        "max_tokens_cap",
        ["us", "eu"],
    ),
    (
        "prompt too large",
        team(caps={"max_prompt_chars": 10}),
        OWN,
        BOTH,
        Ask(prompt_chars=11),
        False,
        "prompt_too_large",
        ["us", "eu"],
    ),
    (
        "too many messages",
        team(caps={"max_messages": 2}),
        OWN,
        BOTH,
        Ask(messages=3),
        False,
        "too_many_messages",
        ["us", "eu"],
    ),
    (
        "tools not allowed",
        team(caps={"allow_tools": False}),
        OWN,
        BOTH,
        Ask(tools=True),
        False,
        "tools_not_allowed",
        ["us", "eu"],
    ),
    (
        "response_format not allowed",
        team(caps={"allow_response_format": False}),
        OWN,
        BOTH,
        Ask(response_format=True),
        False,
        "response_format_not_allowed",
        ["us", "eu"],
    ),
    (
        "logprobs not allowed",
        team(caps={"allow_logprobs": False}),
        OWN,
        BOTH,
        Ask(logprobs=True),
        False,
        "logprobs_not_allowed",
        ["us", "eu"],
    ),
    (
        "access is decided before caps",
        team(caps={"max_messages": 1}),
        PRIVATE_OTHER,
        BOTH,
        Ask(messages=5),
        False,
        "adapter_not_granted",
        ["us", "eu"],
    ),
    (
        "shadow: served, reason kept",
        team(shadow=True, caps={"max_messages": 1}),
        OWN,
        BOTH,
        Ask(messages=5),
        True,
        "too_many_messages",
        ["us", "eu"],
    ),
    (
        "shadow mode never opens another team's private adapter",
        team(shadow=True),
        PRIVATE_OTHER,
        BOTH,
        None,
        False,
        "adapter_not_granted",
        ["us", "eu"],
    ),
    (
        "shadow without an eligible pool: all candidates",
        team(shadow=True, data_class="restricted"),
        OWN,
        BOTH,
        None,
        True,
        "no_eligible_pool",
        ["us", "eu"],
    ),
]


@pytest.mark.parametrize(
    ("case", "who", "record", "pools", "ask", "allowed", "reason", "eligible"),
    TABLE,
    ids=[row[0] for row in TABLE],
)
def test_decision(
    case: str,
    who: Team,
    record: Adapter | None,
    pools: tuple[Pool, ...],
    ask: Ask | None,
    allowed: bool,
    reason: str,
    eligible: list[str],
) -> None:
    decision = check_access(who, found(record, pools), ask)
    assert (decision.allowed, decision.reason) == (allowed, reason)
    assert [p.name for p in decision.pools] == eligible
    assert decision.shadowed == (who.policy.shadow and allowed and reason != "ok")


def test_caps_are_validated_at_load() -> None:
    with pytest.raises(ValueError, match="greater than 0"):
        Caps(max_tokens=0)
