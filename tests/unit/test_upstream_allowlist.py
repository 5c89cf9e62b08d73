"""Pool endpoints an admin may set: allowlisted hosts and CIDRs only, never the gateway."""

from __future__ import annotations

import pytest

from gateway.admin.upstreams import check_endpoints
from gateway.errors import Unprocessable
from gateway.registry import Pool
from gateway.settings import Settings

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
