"""Every metric the gateway exports, declared once (docs/observability.md lists them).

Label values come only from registry names and fixed vocabularies, never from a
client's input: an unknown team, task or adapter is ``other``, a request that never
reached a pool has ``pool="none"``. Served on the admin port's ``/metrics``.

Latency buckets are sized for LLM serving: time to first token and per-token times
from a few milliseconds (a warm GPU, small prompts) to seconds (queueing, long
prefills); request durations up to ten minutes (long generations).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector

OTHER = "other"
NONE = "none"
TTFT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
TPOT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.035, 0.05, 0.075, 0.1, 0.25, 0.5, 1)
DURATION_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
ADMISSION_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25)

REQUEST = ("team", "task", "adapter", "pool", "code")
TEAM_ADAPTER = ("team", "adapter")
TOKENS = ("team", "adapter", "direction")
ADAPTER = ("adapter",)
POOL = ("pool",)
TEAM_LIMIT = ("team", "limit")
TEAM_REASON = ("team", "reason")
POOL_REASON = ("pool", "reason")
REASON = ("reason",)
PLANE_REASON = ("plane", "reason")
TEAM_POLICY = ("team", "policy")


class Metrics:
    """The gateway's metrics in a registry of their own (no global state)."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        ProcessCollector(registry=r)
        self.requests = Counter(
            "lgw_requests_total",
            "Requests by outcome (code: ok or the error code).",
            REQUEST,
            registry=r,
        )
        self.tokens = Counter(
            "lgw_tokens_total", "Tokens by direction (input, output).", TOKENS, registry=r
        )
        self.pool_tokens = Counter(
            "lgw_pool_tokens_total", "Tokens a pool processed.", POOL, registry=r
        )
        self.cost = Counter(
            "lgw_cost_total", "Token cost from registry prices.", TEAM_ADAPTER, registry=r
        )
        self.duration = Histogram(
            "lgw_request_duration_seconds",
            "Whole request time.",
            ADAPTER,
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.ttft = Histogram(
            "lgw_time_to_first_token_seconds",
            "Time to the first streamed token.",
            ADAPTER,
            buckets=TTFT_BUCKETS,
            registry=r,
        )
        self.tpot = Histogram(
            "lgw_time_per_output_token_seconds",
            "Time per output token after the first (streams).",
            ADAPTER,
            buckets=TPOT_BUCKETS,
            registry=r,
        )
        self.inflight = Gauge(
            "lgw_inflight_requests", "Requests being forwarded.", POOL, registry=r
        )
        self.gpu_hour_price = Gauge(
            "lgw_pool_gpu_hour_price", "GPU price per replica-hour.", POOL, registry=r
        )
        self.ratelimit_rejections = Counter(
            "lgw_ratelimit_rejections_total",
            "Requests refused by a rate limit.",
            TEAM_LIMIT,
            registry=r,
        )
        self.policy_denials = Counter(
            "lgw_policy_denials_total", "Requests refused by policy.", TEAM_REASON, registry=r
        )
        self.policy_would_deny = Counter(
            "lgw_policy_would_deny_total",
            "Requests a policy in shadow mode would have refused (served).",
            TEAM_REASON,
            registry=r,
        )
        self.upstream_errors = Counter(
            "lgw_upstream_errors_total", "Backend failures.", POOL_REASON, registry=r
        )
        self.registry_version = Gauge(
            "lgw_registry_version", "Registry version in use.", registry=r
        )
        self.registry_age = Gauge(
            "lgw_registry_age_seconds",
            "Seconds since the registry was last loaded or confirmed current.",
            registry=r,
        )
        self.admission = Histogram(
            "lgw_admission_duration_seconds",
            "Redis admission round trip.",
            buckets=ADMISSION_BUCKETS,
            registry=r,
        )
        self.limiter_errors = Counter(
            "lgw_limiter_redis_errors_total",
            "Admission calls that could not use Redis (error, timeout, open breaker).",
            REASON,
            registry=r,
        )
        self.limiter_fallbacks = Counter(
            "lgw_limiter_fallback_total",
            "Admissions decided by a team's Redis failure policy.",
            TEAM_POLICY,
            registry=r,
        )
        self.probe_failures = Counter(
            "lgw_probe_failures_total",
            "Failed replica probes (reason: unreachable, status, malformed).",
            POOL_REASON,
            registry=r,
        )
        self.probe_rounds = Counter(
            "lgw_probe_rounds_total",
            "Completed probe rounds over every replica (flat: probing stopped).",
            registry=r,
        )
        self.connections_shed = Counter(
            "lgw_connections_shed_total",
            "Connections closed to protect the plane (reason: header_timeout, body_timeout, "
            "evicted, evicted_idle, connection_limit, write_stall).",
            PLANE_REASON,
            registry=r,
        )
        self.limiter_breaker_open = Gauge(
            "lgw_limiter_breaker_open",
            "1 while the limiter's Redis circuit breaker is open.",
            registry=r,
        )

    def rejected(self, team: str, limit: str) -> None:
        """Count one rate-limit refusal."""
        self.ratelimit_rejections.labels(team, limit).inc()
