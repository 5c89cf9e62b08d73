"""API keys: format, keyed hashing, constant-time matching, authentication outcomes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from gateway import keys
from gateway.auth import authenticate
from gateway.errors import AuthenticationFailed
from gateway.registry import ApiKey, Registry, Snapshot, Team

PEPPER = b"pepper"


def _snapshot(key: keys.NewKey, expires_at: datetime | None = None) -> Snapshot:
    record = ApiKey(id=key.id, name="k", hash=key.hash, expires_at=expires_at)
    return Snapshot(Registry(teams=(Team(name="analytics", keys=(record,)),)))


def test_a_minted_key_authenticates_its_team() -> None:
    key = keys.mint(PEPPER)
    assert key.plaintext.startswith(f"lgw-{key.id}-")
    principal = authenticate(f"Bearer {key.plaintext}", _snapshot(key), PEPPER)
    assert (principal.team.name, principal.key_id) == ("analytics", key.id)


def test_only_the_hash_is_stored_and_it_depends_on_the_pepper() -> None:
    key = keys.mint(PEPPER)
    secret = key.plaintext.split("-", 2)[2]
    assert secret not in key.hash
    assert keys.hash_secret(b"other pepper", secret) != key.hash


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "Bearer",
        "Token x",
        "Bearer lgw-short-x",
        "Bearer sk-abc",
    ],
)
def test_malformed_headers_are_refused(header: str | None) -> None:
    with pytest.raises(AuthenticationFailed):
        authenticate(header, _snapshot(keys.mint(PEPPER)), PEPPER)


def test_a_wrong_pepper_or_secret_is_refused() -> None:
    key = keys.mint(PEPPER)
    with pytest.raises(AuthenticationFailed):
        authenticate(f"Bearer {key.plaintext}", _snapshot(key), b"wrong")
    with pytest.raises(AuthenticationFailed):
        authenticate(f"Bearer {key.plaintext[:-1]}x", _snapshot(key), PEPPER)


def test_an_expired_key_is_refused() -> None:
    key = keys.mint(PEPPER)
    past = datetime.now(UTC) - timedelta(seconds=1)
    with pytest.raises(AuthenticationFailed):
        authenticate(f"Bearer {key.plaintext}", _snapshot(key, past), PEPPER)


def test_the_scheme_is_case_insensitive() -> None:
    key = keys.mint(PEPPER)
    assert authenticate(f"bearer {key.plaintext}", _snapshot(key), PEPPER).key_id == key.id
