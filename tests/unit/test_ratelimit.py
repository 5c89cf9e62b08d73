"""Pure parts of admission: key naming, headers, the circuit breaker."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from gateway.ratelimit.limits import (
    Bucket,
    Plan,
    Verdict,
    duration,
    limiter_key,
    rate_headers,
    refused,
)
from gateway.ratelimit.redis_limiter import Breaker

names = st.text(min_size=1, max_size=20)


@given(
    names, st.lists(names, min_size=1, max_size=3), names, st.lists(names, min_size=1, max_size=3)
)
def test_limiter_keys_are_injective(
    team_a: str, parts_a: list[str], team_b: str, parts_b: list[str]
) -> None:
    if limiter_key(team_a, *parts_a) == limiter_key(team_b, *parts_b):
        assert (team_a, parts_a) == (team_b, parts_b)


@given(names, names)
def test_one_teams_keys_share_one_cluster_slot(team: str, part: str) -> None:
    key = limiter_key(team, part)
    tag = key[key.index("{") + 1 : key.index("}")]
    assert "{" not in tag and "}" not in tag
    assert limiter_key(team, "other").startswith(f"lgw:{{{tag}}}:")


def test_durations_use_openais_format() -> None:
    assert [duration(ms) for ms in (0, 120, 999, 1000, 6000, 59_001, 60_000, 90_000)] == [
        "0ms",
        "120ms",
        "999ms",
        "1s",
        "6s",
        "1m0s",
        "1m0s",
        "1m30s",
    ]


PLAN = Plan(
    "t",
    (Bucket("k1", "requests", 10), Bucket("k2", "requests", 5), Bucket("k3", "tokens", 1000)),
    (("k4", 2),),
)


def test_headers_report_the_tightest_limit_of_each_kind() -> None:
    verdict = Verdict(True, -1, 0, ((7, 18000), (2, 36000), (900, 6000)))
    assert rate_headers(PLAN, verdict) == {
        "x-ratelimit-limit-requests": "5",
        "x-ratelimit-remaining-requests": "2",
        "x-ratelimit-reset-requests": "36s",
        "x-ratelimit-limit-tokens": "1000",
        "x-ratelimit-remaining-tokens": "900",
        "x-ratelimit-reset-tokens": "6s",
    }


def test_a_concurrency_refusal_says_so_and_when_to_retry() -> None:
    error = refused(PLAN, Verdict(False, 3, 1000, ((7, 1), (2, 1), (900, 1))), 10, None)
    assert "concurrent" in error.message
    assert error.headers["Retry-After"] == "1"
    assert error.headers["retry-after-ms"] == "1000"


def test_the_breaker_opens_after_the_threshold_then_lets_one_probe_through() -> None:
    now = [0.0]
    breaker = Breaker(threshold=3, cooldown=2.0, clock=lambda: now[0])
    for _ in range(2):
        breaker.failed()
    assert breaker.allows() and breaker.state == "closed"
    breaker.failed()
    assert breaker.state == "open" and not breaker.allows()
    now[0] = 2.5
    assert breaker.state == "half-open"
    assert breaker.allows()  # the probe
    assert not breaker.allows()  # only one
    breaker.succeeded()
    assert breaker.state == "closed" and breaker.allows()
