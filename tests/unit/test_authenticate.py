"""Stage 1, authenticate: a valid key -> its team, key id and key limits; every refusal of
a presented key says the same thing, so a caller learns nothing about which keys exist.
(Key format and hashing themselves: test_keys.py.)"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from gateway import keys
from gateway.auth import authenticate
from gateway.errors import AuthenticationFailed
from gateway.registry import ApiKey, Limits, Registry, Snapshot, Team

PEPPER = b"the deployment's pepper"
BAD_KEY = "Incorrect API key provided."
NO_KEY = "Missing API key: send 'Authorization: Bearer <key>'."
KEY_LIMITS = Limits(rpm=7, tpm=700, concurrency=2)

KEY = keys.mint(PEPPER)
EXPIRED = keys.mint(PEPPER)
LATER = keys.mint(PEPPER)
OTHER_TEAMS = keys.mint(PEPPER)
NOT_STORED = keys.mint(PEPPER)
OTHER_PEPPER = keys.mint(b"another deployment's pepper")
NOW = datetime.now(UTC)


def _record(key: keys.NewKey, expires_at: datetime | None = None, **more: object) -> ApiKey:
    return ApiKey.model_validate(
        {"id": key.id, "name": "k", "hash": key.hash, "expires_at": expires_at, **more}
    )


TEAM_A = Team(
    name="a",
    limits=Limits(rpm=100),
    keys=(
        _record(KEY, limits=KEY_LIMITS, role="admin"),
        _record(EXPIRED, NOW - timedelta(days=1)),
        _record(LATER, NOW + timedelta(days=1)),
        _record(OTHER_PEPPER),
    ),
)
TEAM_B = Team(name="b", keys=(_record(OTHER_TEAMS),))
SNAPSHOT = Snapshot(Registry(teams=(TEAM_A, TEAM_B)))


def _secret(key: keys.NewKey) -> str:
    return key.plaintext.split("-", 2)[2]


def _flip_last(text: str) -> str:
    return text[:-1] + ("A" if text[-1] != "A" else "B")


ACCEPTED = [
    # header, team, key id, key limits
    pytest.param(f"Bearer {KEY.plaintext}", "a", KEY.id, KEY_LIMITS, id="valid-key"),
    pytest.param(f"BEARER {KEY.plaintext}", "a", KEY.id, KEY_LIMITS, id="scheme-upper-case"),
    pytest.param(f"BeArEr {KEY.plaintext}", "a", KEY.id, KEY_LIMITS, id="scheme-mixed-case"),
    pytest.param(f"Bearer   {KEY.plaintext} ", "a", KEY.id, KEY_LIMITS, id="spaces-around-key"),
    pytest.param(f"Bearer {LATER.plaintext}", "a", LATER.id, Limits(), id="expiry-in-future"),
    pytest.param(f"Bearer {OTHER_TEAMS.plaintext}", "b", OTHER_TEAMS.id, Limits(), id="team-b"),
]


@pytest.mark.parametrize(("header", "team", "key_id", "limits"), ACCEPTED)
def test_a_valid_key_is_its_team_key_id_and_key_limits(
    header: str, team: str, key_id: str, limits: Limits
) -> None:
    principal = authenticate(header, SNAPSHOT, PEPPER)
    assert principal.team == SNAPSHOT.teams[team]
    assert (principal.key_id, principal.key_limits) == (key_id, limits)


REFUSED = [
    pytest.param(f"Bearer {_flip_last(KEY.plaintext)}", id="wrong-secret"),
    pytest.param(f"Bearer lgw-{KEY.id}-{_secret(OTHER_TEAMS)}", id="another-keys-secret"),
    pytest.param(f"Bearer {NOT_STORED.plaintext}", id="unknown-id"),
    pytest.param(f"Bearer lgw-{KEY.id}-{KEY.hash}", id="stored-hash-as-secret"),
    pytest.param(f"Bearer {EXPIRED.plaintext}", id="expired"),
    pytest.param(f"Bearer {OTHER_PEPPER.plaintext}", id="minted-with-another-pepper"),
    pytest.param(f"Basic {KEY.plaintext}", id="wrong-scheme"),
    pytest.param(KEY.plaintext, id="no-scheme"),
    pytest.param(f"Bearer\t{KEY.plaintext}", id="tab-after-scheme"),
    pytest.param(f" Bearer {KEY.plaintext}", id="space-before-scheme"),
    pytest.param("Bearer", id="scheme-only"),
    pytest.param("Bearer    ", id="blank-token"),
    pytest.param(f"Bearer sk-{_secret(KEY)}", id="foreign-prefix"),
    pytest.param(f"Bearer lgw-{KEY.id}", id="no-secret"),
    pytest.param(f"Bearer lgw-{KEY.id}-short", id="secret-too-short"),
    pytest.param(f"Bearer lgw-{KEY.id}-{'s' * 129}", id="secret-too-long"),
    pytest.param(f"Bearer lgw-{KEY.id.upper()}-{_secret(KEY)}", id="id-is-case-sensitive"),
    pytest.param(f"Bearer lgw-{KEY.id}x-{_secret(KEY)}", id="id-too-long"),
]


@pytest.mark.parametrize("header", REFUSED)
def test_every_refused_key_gets_the_same_message(header: str) -> None:
    with pytest.raises(AuthenticationFailed) as raised:
        authenticate(header, SNAPSHOT, PEPPER)
    assert raised.value.message == BAD_KEY
    assert (raised.value.status, raised.value.code, raised.value.param) == (
        401,
        "invalid_api_key",
        None,
    )
    assert raised.value.headers == {}


@pytest.mark.parametrize("header", [pytest.param(None, id="none"), pytest.param("", id="empty")])
def test_no_header_asks_for_a_key(header: str | None) -> None:
    with pytest.raises(AuthenticationFailed) as raised:
        authenticate(header, SNAPSHOT, PEPPER)
    assert raised.value.message == NO_KEY  # names no key: it cannot tell which keys exist


def test_the_right_key_under_the_wrong_pepper_is_refused_like_any_other() -> None:
    with pytest.raises(AuthenticationFailed, match=BAD_KEY):
        authenticate(f"Bearer {OTHER_PEPPER.plaintext}", SNAPSHOT, PEPPER)
    principal = authenticate(
        f"Bearer {OTHER_PEPPER.plaintext}", SNAPSHOT, b"another deployment's pepper"
    )
    assert principal.key_id == OTHER_PEPPER.id


@pytest.mark.parametrize(
    ("expires", "accepted"),
    [
        pytest.param(lambda now: now - timedelta(seconds=1), False, id="a-second-ago"),
        pytest.param(lambda now: now + timedelta(hours=1), True, id="in-an-hour"),
        pytest.param(
            lambda now: (now + timedelta(hours=1)).astimezone(datetime.now().astimezone().tzinfo),
            True,
            id="in-an-hour-local-zone",
        ),
        pytest.param(lambda now: now - timedelta(days=365), False, id="a-year-ago"),
    ],
)
def test_a_key_works_until_its_expiry(
    expires: Callable[[datetime], datetime], accepted: bool
) -> None:
    key = keys.mint(PEPPER)
    team = Team(name="a", keys=(_record(key, expires(datetime.now(UTC))),))
    snapshot = Snapshot(Registry(teams=(team,)))
    if accepted:
        assert authenticate(f"Bearer {key.plaintext}", snapshot, PEPPER).key_id == key.id
    else:
        with pytest.raises(AuthenticationFailed, match=BAD_KEY):
            authenticate(f"Bearer {key.plaintext}", snapshot, PEPPER)
