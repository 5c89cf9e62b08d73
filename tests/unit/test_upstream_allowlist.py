"""Pool endpoints an admin may set: allowlisted hosts and CIDRs only, never the gateway."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from gateway.errors import Unprocessable
from gateway.registry import Pool
from gateway.settings import Settings
from gateway.upstream.allowlist import check_endpoints, speakable

SETTINGS = Settings(
    upstream_allow="tgi.internal, 10.8.0.0/16, 127.0.0.1/32", port=8080, admin_port=8081
)


def _pool(endpoint: str) -> Pool:
    return Pool(name="p", base_model="m/b", endpoints=(endpoint,))


@pytest.mark.parametrize(
    "endpoint",
    [
        "http://tgi.internal:8080",
        "http://TGI.internal",
        "https://10.8.3.4:443",
        "http://127.0.0.1:3000",
    ],
)
def test_allowlisted_endpoints_pass(endpoint: str) -> None:
    check_endpoints(_pool(endpoint), SETTINGS)


@pytest.mark.parametrize(
    "endpoint",
    [
        "http://169.254.169.254",  # cloud metadata
        "http://metadata.google.internal",
        "http://tgi.internal.evil.com",  # a near-prefix of an allowed name
        "http://10.9.0.1",  # outside the CIDR
        "http://167772161",  # 10.0.0.1 written as a decimal integer
        "http://0x0a080001",  # ... as hex
        "http://[::ffff:10.8.0.1]",  # IPv4-mapped IPv6
        "http://127.0.0.1:8080",  # the gateway's own data port
        "http://localhost:8081",  # the gateway's own admin port
    ],
)
def test_other_endpoints_are_refused(endpoint: str) -> None:
    with pytest.raises(Unprocessable):
        check_endpoints(_pool(endpoint), SETTINGS)


def test_an_empty_allowlist_allows_nothing() -> None:
    with pytest.raises(Unprocessable):
        check_endpoints(_pool("http://tgi.internal"), Settings())


PORTED = Settings(
    upstream_allow="127.0.0.1, tgi.internal:8080, 10.8.0.0/16:9000, [fd00::/8]:8000, db:6379",
    port=8080,
    admin_port=8081,
)


@pytest.mark.parametrize(
    ("endpoint", "allowed"),
    [
        ("http://127.0.0.1:3000", True),  # a host entry without a port: any HTTP port
        ("http://127.0.0.1:6379", False),  # ... but never Redis
        ("http://127.0.0.1:22", False),  # ... nor SSH
        ("http://127.0.0.1:5432", False),  # ... nor PostgreSQL
        ("http://127.0.0.1:8081", False),  # ... nor the gateway's own ports
        ("http://tgi.internal:8080", True),  # an entry with a port: that port
        ("http://tgi.internal:8081", False),  # ... only
        ("http://10.8.1.2:9000", True),
        ("http://10.8.1.2:9001", False),
        ("http://[fd00::5]:8000", True),
        ("http://[fd00::5]:8001", False),
        ("http://db:6379", True),  # naming a denied port opens it, for that host only
    ],
)
def test_the_allowlist_checks_ports_not_only_hosts(endpoint: str, allowed: bool) -> None:
    if allowed:
        check_endpoints(_pool(endpoint), PORTED)
    else:
        with pytest.raises(Unprocessable):
            check_endpoints(_pool(endpoint), PORTED)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://tgi:8080", True),  # files are trusted for hosts, not for ports
        ("http://tgi:6379", False),
        ("http://127.0.0.1:8081", False),  # the admin port of this gateway
        ("http://db:6379", True),  # named with its port in the allowlist
        # The gateway itself, however its loopback address is spelled:
        ("http://[::ffff:127.0.0.1]:8080", False),
        ("http://127.1:8080", False),
        ("http://2130706433:8080", False),
        ("http://0x7f000001:8080", False),
        ("http://0177.0.0.1:8080", False),
        ("http://0:8080", False),
        ("http://localhost.:8080", False),
        ("http://ip6-localhost:8081", False),
    ],
)
def test_only_speakable_replicas_are_ever_contacted(url: str, expected: bool) -> None:
    assert speakable(url, PORTED) is expected


@pytest.mark.parametrize(
    "entry",
    [
        *("host:0", "host:70000", "10.0.0.0/33", "[fd00::/8]:x", "tgi:80:80", "10.0.0.0/8:"),
        *("a b", "[::1]junk", "[fd00::1]8080", "[::1", "tgi:\u0668\u0660"),
    ],
)
def test_a_malformed_entry_fails_the_settings_at_start(entry: str) -> None:
    with pytest.raises(ValidationError, match="upstream_allow"):
        Settings(upstream_allow=f"tgi.internal, {entry}")
