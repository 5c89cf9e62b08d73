"""Where the gateway may send a request: the upstream allowlist and the ports it never
speaks to, so neither the admin plane nor a backend can turn it into an open proxy.

``LGW_UPSTREAM_ALLOW`` entries are a host name (``tgi.internal``), an IP network in
CIDR form (``10.8.0.0/16``), either with a port (``tgi.internal:8080``,
``10.8.0.0/16:8080``, ``[fd00::/8]:8080``: that port only). An entry without a port
allows any port but the denied ones: the gateway's own ports on its own host, and the
well-known ports of services that do not speak HTTP (``LGW_UPSTREAM_DENY_PORTS``: SSH,
mail, DNS, databases, caches, brokers, the Kubernetes API and kubelet...), which only an
entry naming the port opens.

Pools created through the admin API must pass ``check_endpoints``; every replica the
prober or the data plane would contact (DNS-discovered addresses included) must pass
``speakable``, whatever wrote the pool.
"""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit

from gateway.errors import Unprocessable
from gateway.registry import Pool
from gateway.settings import Settings, entries

_SELF_HOSTS = {"localhost", "ip6-localhost", "ip6-loopback", "0.0.0.0", "::"}  # noqa: S104


def check_endpoints(pool: Pool, settings: Settings) -> None:
    """422 unless every endpoint is allowlisted, speakable, and not this gateway."""
    allowed = entries(settings.upstream_allow)
    for endpoint in pool.endpoints:
        host, port = _host_port(endpoint)
        if _is_self(host, port, settings):
            raise Unprocessable(f"Endpoint {endpoint} is this gateway itself.")
        named = [e for e in allowed if e.allows(host, port)]
        if not named:
            raise Unprocessable(f"Endpoint {host}:{port} is not in LGW_UPSTREAM_ALLOW.")
        if port in settings.upstream_deny_ports and all(e.port != port for e in named):
            raise Unprocessable(
                f"Port {port} is not an HTTP backend's (LGW_UPSTREAM_DENY_PORTS); "
                "an LGW_UPSTREAM_ALLOW entry naming the port opens it."
            )


def speakable(url: str, settings: Settings) -> bool:
    """Whether a replica URL may be contacted at all: not this gateway, not a denied port
    (unless an allowlist entry names that port for that host)."""
    host, port = _host_port(url)
    if _is_self(host, port, settings):
        return False
    if port not in settings.upstream_deny_ports:
        return True
    return any(e.port == port and e.allows(host, port) for e in entries(settings.upstream_allow))


def _host_port(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    host = (parts.hostname or "").lower().rstrip(".")  # "localhost." is localhost
    return host, parts.port or (443 if parts.scheme == "https" else 80)


def _address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address ``host`` spells, in any form a resolver accepts (``127.1``,
    ``2130706433``, ``0x7f000001``, ``::ffff:127.0.0.1``); ``None`` for a name."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        try:
            return ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return None
    mapped = address.ipv4_mapped if isinstance(address, ipaddress.IPv6Address) else None
    return mapped or address


def _is_self(host: str, port: int, settings: Settings) -> bool:
    if port not in (settings.port, settings.admin_port):
        return False
    if host in _SELF_HOSTS or host == settings.host.lower():
        return True
    address = _address(host)
    return address is not None and (address.is_loopback or address.is_unspecified)
