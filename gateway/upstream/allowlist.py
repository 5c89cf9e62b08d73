"""Where an admin may point a pool: only at hosts the deployment allowed, never at the
gateway itself, so the admin plane cannot turn the gateway into an open proxy."""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

from gateway.errors import Unprocessable
from gateway.registry import Pool
from gateway.settings import Settings

_SELF_HOSTS = {"localhost", "0.0.0.0", "::"}  # noqa: S104 - names compared, not bound


def check_endpoints(pool: Pool, settings: Settings) -> None:
    """422 unless every endpoint's host is in ``LGW_UPSTREAM_ALLOW`` and is not this gateway."""
    allowed = [
        entry.strip().lower() for entry in settings.upstream_allow.split(",") if entry.strip()
    ]
    for endpoint in pool.endpoints:
        parts = urlsplit(endpoint)
        host = (parts.hostname or "").lower()
        port = parts.port or (443 if parts.scheme == "https" else 80)
        if _is_self(host, port, settings):
            raise Unprocessable(f"Endpoint {endpoint} is this gateway itself.")
        if not any(_matches(host, entry) for entry in allowed):
            raise Unprocessable(f"Endpoint host {host!r} is not in LGW_UPSTREAM_ALLOW.")


def _matches(host: str, entry: str) -> bool:
    """Exact host name, or an IP address (literal, canonical form only) inside a CIDR."""
    if "/" not in entry:
        return host == entry
    try:
        return ipaddress.ip_address(host) in ipaddress.ip_network(entry, strict=False)
    except ValueError:  # a name, or an IP in a non-canonical form (decimal, octal, hex)
        return False


def _is_self(host: str, port: int, settings: Settings) -> bool:
    if port not in (settings.port, settings.admin_port):
        return False
    if host in _SELF_HOSTS or host == settings.host.lower():
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return address.is_loopback or address.is_unspecified
