"""Every metric the gateway exports, declared once (DESIGN.md, Metrics).

Label values come only from registry names and fixed vocabularies, never from a
client's input. Served on the admin port's ``/metrics``.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, ProcessCollector

TEAM_LIMIT = ("team", "limit")
REASON = ("reason",)
TEAM_POLICY = ("team", "policy")


class Metrics:
    """The gateway's metrics in a registry of their own (no global state)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        self.ratelimit_rejections = Counter(
            "lgw_ratelimit_rejections_total",
            "Requests refused by a rate limit.",
            TEAM_LIMIT,
            registry=self.registry,
        )
        self.limiter_errors = Counter(
            "lgw_limiter_redis_errors_total",
            "Admission calls that could not use Redis (error, timeout or open breaker).",
            REASON,
            registry=self.registry,
        )
        self.limiter_fallbacks = Counter(
            "lgw_limiter_fallback_total",
            "Admissions decided by a team's Redis failure policy instead of Redis.",
            TEAM_POLICY,
            registry=self.registry,
        )
        self.limiter_breaker_open = Gauge(
            "lgw_limiter_breaker_open",
            "1 while the limiter's Redis circuit breaker is open.",
            registry=self.registry,
        )

    def rejected(self, team: str, limit: str) -> None:
        """Count one rate-limit refusal."""
        self.ratelimit_rejections.labels(team, limit).inc()
