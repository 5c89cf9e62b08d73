"""Every setting of the service, read from the environment (prefix ``LGW_``).

Nothing else in the package reads ``os.environ``: ``create_app(settings)`` receives a
``Settings`` and passes what each part needs.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DENIED_PORTS = frozenset(
    {
        *(22, 23, 25, 53, 110, 111, 135, 139, 143, 389, 445, 465, 587, 636, 993, 995),
        *(1433, 1521, 2049, 2181, 2375, 2376, 2379, 2380, 3306, 3389, 4222, 5432, 5672),
        *(6379, 6443, 7000, 7001, 9042, 9092, 9200, 10250, 10255, 11211, 26379, 27017),
    }
)
"""SSH, telnet, mail, DNS, RPC, SMB, LDAP, databases, ZooKeeper, Docker, etcd, RDP, NATS,
AMQP, Redis, the Kubernetes API and kubelet, Cassandra, Kafka, Elasticsearch, memcached,
Redis Sentinel, MongoDB."""


Network = ipaddress.IPv4Network | ipaddress.IPv6Network
_HOST = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*$")


@dataclass(frozen=True, slots=True)
class Entry:
    """One allowlist entry: a host name or a network, and the one port it names, if any."""

    host: str | None
    network: Network | None
    port: int | None

    def allows(self, host: str, port: int) -> bool:
        """Whether ``host:port`` is what this entry names."""
        if self.port is not None and port != self.port:
            return False
        if self.host is not None:
            return host == self.host
        try:
            assert self.network is not None
            return ipaddress.ip_address(host) in self.network
        except ValueError:  # a name, or an IP in a non-canonical form (decimal, octal, hex)
            return False


def parse_entry(text: str) -> Entry:
    """``host``, ``host:port``, ``cidr``, ``cidr:port`` or ``[v6-cidr]:port``."""
    text = text.strip().lower()
    where, number, has_port = text, "", False
    if text.startswith("["):
        where, bracket, rest = text[1:].partition("]")
        if not bracket:
            raise ValueError(f"no closing ']' in allowlist entry {text!r}")
        if rest and not rest.startswith(":"):
            raise ValueError(f"text after ']' in allowlist entry {text!r}")
        number, has_port = rest.removeprefix(":"), bool(rest)
    elif text.count(":") == 1:
        where, _, number = text.partition(":")
        has_port = True
    port = int(number) if number.isascii() and number.isdigit() else None
    if has_port and (port is None or not 0 < port < 65536):
        raise ValueError(f"no valid port in allowlist entry {text!r}")
    if "/" in where:
        return Entry(None, ipaddress.ip_network(where, strict=False), port)
    if ":" in where:
        ipaddress.IPv6Address(where)  # an IPv6 literal, or a mistake: ValueError
    elif not _HOST.match(where):
        raise ValueError(f"not a host name or address: allowlist entry {text!r}")
    return Entry(where, None, port)


@lru_cache(maxsize=64)  # settings are fixed: parsed once per value
def entries(allow: str) -> tuple[Entry, ...]:
    """The entries of an ``LGW_UPSTREAM_ALLOW`` value."""
    return tuple(parse_entry(e) for e in allow.split(",") if e.strip())


class Settings(BaseSettings):
    """Service settings; each field maps to ``LGW_<NAME>``."""

    model_config = SettingsConfigDict(env_prefix="LGW_", extra="ignore", frozen=True)

    host: str = "0.0.0.0"  # noqa: S104 - a container listens on all interfaces
    """Address both planes bind to."""
    port: int = Field(8080, ge=0, le=65535)
    """Data-plane port: ``/v1/*``, ``/healthz``, ``/readyz``."""
    admin_port: int = Field(8081, ge=0, le=65535)
    """Admin-plane port: ``/admin/v1/*``, ``/metrics``. Keep it off the public Service."""
    server: Literal["uvicorn", "granian"] = "uvicorn"
    """HTTP server of both planes. ``granian`` (its embedded server, experimental
    upstream; ``pip install 'lora-gateway[granian]'``) is there to compare: on the
    benchmark it was not faster (bench/README.md)."""

    policies: Path | None = None
    """A policy YAML file or a folder of them: the registry when no Redis is configured."""
    redis_url: str | None = None
    """Redis holding the shared registry and limits; unset means single-node demo mode."""
    redis_cluster: bool = False
    """``LGW_REDIS_URL`` names a node of a Redis Cluster (Memorystore cluster mode)."""
    redis_timeout: float = Field(0.15, gt=0)
    """Seconds an admission call may wait on Redis before the team's failure policy applies."""
    limiter_lease_seconds: float = Field(30.0, gt=0)
    """Lifetime of a concurrency slot unless renewed; what a crashed replica leaks at most."""
    breaker_failures: int = Field(3, gt=0)
    """Consecutive Redis failures that open the limiter's circuit breaker."""
    breaker_cooldown_seconds: float = Field(2.0, gt=0)
    """How long an open breaker keeps admission off Redis before one probe."""
    registry_poll_seconds: float = Field(1.0, gt=0)
    """Safety-net interval of the registry version check (changes also arrive by pub/sub)."""
    admin_token: SecretStr | None = None
    """The org admin token; without it the admin plane refuses every call."""
    otlp_endpoint: str | None = Field(
        None,
        validation_alias=AliasChoices(
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT"
        ),
    )
    """Where to send traces (the standard OTEL variables); unset: tracing off."""
    upstream_allow: str = ""
    """Hosts and CIDRs (comma-separated), each optionally with ``:port``, that pool
    endpoints created through the admin API may point to; empty allows none. Policy files
    are trusted deploy-time config (``gateway/upstream/allowlist.py``)."""
    upstream_deny_ports: frozenset[int] = DENIED_PORTS
    """Ports never contacted (admin-created pools, probes, requests) unless an
    ``LGW_UPSTREAM_ALLOW`` entry names the port: services that do not speak HTTP."""

    @field_validator("upstream_allow")
    @classmethod
    def _allow_parses(cls, value: str) -> str:
        entries(value)  # a malformed entry fails at start, naming itself
        return value

    key_pepper: SecretStr | None = None
    """Secret mixed into every stored API-key hash (HMAC-SHA256). Required once keys exist."""

    max_body_bytes: int = Field(1_000_000, gt=0)
    """Largest request body accepted on the data plane; larger gets 413."""
    default_max_tokens: int = Field(1024, gt=0)
    """``max_tokens`` sent upstream when the client gives none (TGI would use the context)."""
    max_tokens_cap: int = Field(4096, gt=0)
    """Largest ``max_tokens`` the gateway forwards; larger requests get 400."""

    header_timeout_seconds: float = Field(10.0, gt=0)
    """How long a connection may take to send a request's headers (from opening, or from
    the first byte of its next request); later, a 408 and the connection closes."""
    body_timeout_seconds: float = Field(30.0, gt=0)
    """How long a request's body may take to arrive once its headers did; later, a 408
    and the connection closes (a slow body would hold its request and slot)."""
    client_write_timeout_seconds: float = Field(30.0, gt=0)
    """How long a client may leave the gateway unable to write to it (it stopped reading)
    before its connection is cut, releasing the request's slot and upstream connection."""
    keepalive_seconds: float = Field(5.0, gt=0)
    """How long an idle kept-alive connection stays open."""
    max_connections: int = Field(10_000, gt=0)
    """Open connections per plane; past it, a new one evicts the oldest still waiting for
    headers, or gets a 503 (keep it well under the process's file-descriptor limit)."""
    shutdown_grace_seconds: float = Field(25.0, ge=0)
    """On SIGTERM, how long in-flight requests (streams included) may take to finish."""

    upstream_connect_timeout: float = Field(2.0, gt=0)
    """Seconds to open a connection to a TGI replica."""
    upstream_first_event_timeout: float = Field(60.0, gt=0)
    """Seconds to wait for the response head and the first streamed event."""
    upstream_idle_timeout: float = Field(30.0, gt=0)
    """Seconds without an event from upstream (keep-alive comments do not count) before a
    stream is cut with an error event."""
    upstream_deadline: float = Field(120.0, gt=0)
    """Seconds for all tries of one request together, until the answer (or a stream's first
    event); past it the client gets 504."""
    probe_interval: float = Field(5.0, gt=0)
    """Seconds between active probes (``/health``, ``/metrics``, ``/info``) of every replica."""
    eject_after_failures: int = Field(5, gt=0)
    """Consecutive failures after which a replica is taken out of its pool for a while."""
    ejection_seconds: float = Field(30.0, gt=0)
    """How long a first ejection lasts; each further one lasts that much longer."""
    upstream_total_timeout: float = Field(600.0, gt=0)
    """Overall deadline of one upstream exchange, stream included."""
    upstream_max_connections: int = Field(512, gt=0)
    """Connection-pool size of the process towards all upstreams."""
