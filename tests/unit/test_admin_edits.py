"""Admin registry edits as pure functions (registry in -> registry, audit before, audit
after out) and the validation every edited registry passes before it is saved."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from gateway import keys
from gateway.admin.changes import (
    Edit,
    add_key,
    add_team,
    delete_mapping,
    delete_record,
    delete_team,
    find_key,
    patch_team,
    public,
    put_mapping,
    put_record,
    revoke_key,
    rotate_key,
)
from gateway.admin.schemas import KeyIn, MappingIn, TeamIn, TeamPatch
from gateway.auth import authenticate
from gateway.errors import AuthenticationFailed, Conflict, GatewayError, NotFound, Unprocessable
from gateway.registry import (
    Adapter,
    ApiKey,
    Limits,
    Mapping,
    Pool,
    Price,
    Registry,
    Snapshot,
    Target,
    Team,
)
from gateway.registry.models import Policy
from gateway.store.validation import InvalidRegistry, registry_problems, validated

PEPPER = b"pepper"
KEY_A = keys.mint(PEPPER)
KEY_A2 = keys.mint(PEPPER)
KEY_B = keys.mint(PEPPER)
LIMITS = Limits(rpm=9)


def _key(minted: keys.NewKey, name: str, **more: Any) -> ApiKey:
    return ApiKey(id=minted.id, name=name, hash=minted.hash, **more)


INTERNAL = Pool(
    name="internal",
    base_model="m/base",
    adapters=("org/x", "org/b-only", "org/b-granted"),
    endpoints=("http://internal:1",),
    labels={"region": "us"},
)
REGISTRY = Registry(
    version=4,
    teams=(
        Team(name="a", keys=(_key(KEY_A, "app", role="admin", limits=LIMITS), _key(KEY_A2, "ci"))),
        Team(name="b", keys=(_key(KEY_B, "b-app"),)),
    ),
    adapters=(
        Adapter(id="org/b-only", owner="b"),
        Adapter(id="org/b-granted", owner="b", grants=("a",)),
    ),
    pools=(INTERNAL,),
    mappings=(
        Mapping(task="chat", adapter="org/x"),
        Mapping(team="a", task="chat", adapter="org/b-granted"),
        Mapping(team="b", task="private", adapter="org/b-only"),
    ),
)
HASHES = (KEY_A.hash, KEY_A2.hash, KEY_B.hash)
SECTIONS = ("version", "teams", "adapters", "pools", "mappings")


def _team(registry: Registry, name: str) -> Team | None:
    return next((t for t in registry.teams if t.name == name), None)


def _mapping(registry: Registry, team: str | None, task: str) -> Mapping | None:
    return next((m for m in registry.mappings if (m.team, m.task) == (team, task)), None)


def _pool(registry: Registry, name: str) -> Pool | None:
    return next((p for p in registry.pools if p.name == name), None)


def _adapter(registry: Registry, ident: str) -> Adapter | None:
    return next((a for a in registry.adapters if a.id == ident), None)


def _changed(before: Registry, after: Registry) -> set[str]:
    return {s for s in SECTIONS if getattr(before, s) != getattr(after, s)}


def _no_hash_in(*audited: Any) -> bool:
    text = json.dumps(audited, default=str)
    return '"hash"' not in text and not any(h in text for h in HASHES)


NEW_POOL = Pool(name="eu", base_model="m/base", endpoints=("http://eu:1",))
REPRICED = INTERNAL.model_copy(update={"price": Price(input_per_million=2.0)})
NEW_ADAPTER = Adapter(id="org/x", description="now described")
REOWNED = Adapter(id="org/b-only", owner="a")
Find = Callable[[Registry], Any]

EDITS = [
    # the edit, how to find the touched object (in the registry before, and after),
    # the sections of the registry that change
    pytest.param(
        lambda r: add_team(r, TeamIn(name="c", limits=Limits(rpm=5))),
        lambda r: _team(r, "c"),
        {"teams"},
        id="add-team",
    ),
    pytest.param(
        lambda r: patch_team(r, "a", TeamPatch(limits=Limits(tpm=50))),
        lambda r: _team(r, "a"),
        {"teams"},
        id="patch-team",
    ),
    pytest.param(
        lambda r: delete_team(r, "a"),
        lambda r: _team(r, "a"),
        {"teams", "mappings", "adapters"},
        id="delete-team",
    ),
    pytest.param(
        lambda r: revoke_key(r, "a", KEY_A2.id),
        lambda r: next((k for k in r.teams[0].keys if k.id == KEY_A2.id), None),
        {"teams"},
        id="revoke-key",
    ),
    pytest.param(
        lambda r: put_mapping(r, "b", "chat", MappingIn(adapter="org/b-only")),
        lambda r: _mapping(r, "b", "chat"),
        {"mappings"},
        id="put-new-team-mapping",
    ),
    pytest.param(
        lambda r: put_mapping(r, "a", "chat", MappingIn(adapter="org/x")),
        lambda r: _mapping(r, "a", "chat"),
        {"mappings"},
        id="replace-team-mapping",
    ),
    pytest.param(
        lambda r: put_mapping(
            r,
            None,
            "chat",
            MappingIn(targets=(Target(adapter="org/x", weight=3), Target(adapter="m/base"))),
        ),
        lambda r: _mapping(r, None, "chat"),
        {"mappings"},
        id="replace-org-default-with-targets",
    ),
    pytest.param(
        lambda r: delete_mapping(r, "a", "chat"),
        lambda r: _mapping(r, "a", "chat"),
        {"mappings"},
        id="delete-team-mapping",
    ),
    pytest.param(
        lambda r: delete_mapping(r, None, "chat"),
        lambda r: _mapping(r, None, "chat"),
        {"mappings"},
        id="delete-org-default",
    ),
    pytest.param(
        lambda r: put_record(r, "pools", NEW_POOL),
        lambda r: _pool(r, "eu"),
        {"pools"},
        id="add-pool",
    ),
    pytest.param(
        lambda r: put_record(r, "pools", REPRICED),
        lambda r: _pool(r, "internal"),
        {"pools"},
        id="replace-pool",
    ),
    pytest.param(
        lambda r: put_record(r, "adapters", NEW_ADAPTER),
        lambda r: _adapter(r, "org/x"),
        {"adapters"},
        id="add-adapter",
    ),
    pytest.param(
        lambda r: put_record(r, "adapters", REOWNED),
        lambda r: _adapter(r, "org/b-only"),
        {"adapters"},
        id="replace-adapter",
    ),
    pytest.param(
        lambda r: delete_record(r, "pools", "internal"),
        lambda r: _pool(r, "internal"),
        {"pools"},
        id="delete-pool",
    ),
    pytest.param(
        lambda r: delete_record(r, "adapters", "org/b-granted"),
        lambda r: _adapter(r, "org/b-granted"),
        {"adapters"},
        id="delete-adapter",
    ),
]


@pytest.mark.parametrize(("edit", "find", "sections"), EDITS)
def test_an_edit_changes_its_object_and_audits_it_before_and_after(
    edit: Callable[[Registry], Edit], find: Find, sections: set[str]
) -> None:
    registry, before, after = edit(REGISTRY)
    assert _changed(REGISTRY, registry) == sections  # the version is the store's business
    assert before == public(find(REGISTRY))
    assert after == public(find(registry))
    assert before != after
    assert _no_hash_in(before, after)


def test_patching_a_team_changes_only_the_fields_given() -> None:
    registry, before, after = patch_team(
        REGISTRY, "a", TeamPatch(on_limiter_failure="fail_closed", policy=None)
    )
    patched = _team(registry, "a")
    assert patched is not None
    assert patched.on_limiter_failure == "fail_closed"
    old = REGISTRY.teams[0]
    assert (patched.limits, patched.policy, patched.keys) == (old.limits, old.policy, old.keys)
    assert {k for k in after if after[k] != before[k]} == {"on_limiter_failure"}


def test_deleting_a_team_takes_its_keys_mappings_and_grants() -> None:
    registry, _before, _after = delete_team(REGISTRY, "a")
    assert [t.name for t in registry.teams] == ["b"]
    assert [(m.team, m.task) for m in registry.mappings] == [(None, "chat"), ("b", "private")]
    assert [(a.id, a.grants) for a in registry.adapters] == [
        ("org/b-only", ()),
        ("org/b-granted", ()),
    ]
    assert KEY_A.id not in Snapshot(validated(registry)).keys


def test_a_new_key_authenticates_and_its_hash_is_never_audited() -> None:
    body = KeyIn(name="batch", role="admin", limits=Limits(tpm=10))
    (registry, before, after), plaintext = add_key(REGISTRY, "b", body, PEPPER)
    principal = authenticate(f"Bearer {plaintext}", Snapshot(validated(registry)), PEPPER)
    assert (principal.team.name, principal.key_limits) == ("b", Limits(tpm=10))
    stored = find_key(registry, "b", principal.key_id)
    assert (stored.name, stored.role) == ("batch", "admin")
    assert before is None
    assert after == public(stored)
    assert "hash" not in after
    assert stored.hash not in json.dumps(after) and plaintext not in json.dumps(after)


# -- rotation --------------------------------------------------------------------------------


def test_a_rotated_key_keeps_working_until_the_grace_expiry() -> None:
    started = datetime.now(UTC)
    (registry, before, after), plaintext = rotate_key(REGISTRY, "a", KEY_A.id, 3600, PEPPER)
    ended = datetime.now(UTC)
    snapshot = Snapshot(validated(registry))
    old = authenticate(f"Bearer {KEY_A.plaintext}", snapshot, PEPPER)
    new = authenticate(f"Bearer {plaintext}", snapshot, PEPPER)
    assert old.key_id == KEY_A.id and new.key_id != KEY_A.id
    retiring = find_key(registry, "a", KEY_A.id)
    assert retiring.expires_at is not None
    grace = timedelta(seconds=3600)
    assert started + grace <= retiring.expires_at <= ended + grace
    assert retiring.hash == KEY_A.hash  # the same key, only retiring
    created = find_key(registry, "a", new.key_id)
    assert (created.name, created.role, created.limits) == ("app", "admin", LIMITS)
    assert before == public(find_key(REGISTRY, "a", KEY_A.id))
    assert after == {"retiring": public(retiring), "new": public(created)}
    assert _no_hash_in(before, after) and created.hash not in json.dumps(after)


def test_a_rotation_without_grace_ends_the_old_key_at_once() -> None:
    (registry, _before, _after), plaintext = rotate_key(REGISTRY, "a", KEY_A.id, 0, PEPPER)
    snapshot = Snapshot(validated(registry))
    with pytest.raises(AuthenticationFailed):
        authenticate(f"Bearer {KEY_A.plaintext}", snapshot, PEPPER)
    assert authenticate(f"Bearer {plaintext}", snapshot, PEPPER).team.name == "a"


def test_a_key_that_expires_sooner_than_the_grace_keeps_its_expiry() -> None:
    soon = datetime.now(UTC) + timedelta(minutes=5)
    team = REGISTRY.teams[0].model_copy(update={"keys": (_key(KEY_A, "app", expires_at=soon),)})
    registry = REGISTRY.model_copy(update={"teams": (team, REGISTRY.teams[1])})
    (rotated, _before, _after), _plaintext = rotate_key(registry, "a", KEY_A.id, 3600, PEPPER)
    assert find_key(rotated, "a", KEY_A.id).expires_at == soon


def test_rotating_an_expired_key_is_refused_rather_than_handing_out_a_dead_key() -> None:
    past = datetime.now(UTC) - timedelta(days=1)
    team = REGISTRY.teams[0].model_copy(update={"keys": (_key(KEY_A, "app", expires_at=past),)})
    registry = REGISTRY.model_copy(update={"teams": (team, REGISTRY.teams[1])})
    with pytest.raises(Conflict, match="expired"):
        rotate_key(registry, "a", KEY_A.id, 3600, PEPPER)


# -- not found and conflicts ----------------------------------------------------------------

REFUSALS = [
    pytest.param(lambda r: add_team(r, TeamIn(name="a")), Conflict, id="add-existing-team"),
    pytest.param(lambda r: patch_team(r, "zz", TeamPatch()), NotFound, id="patch-unknown-team"),
    pytest.param(lambda r: delete_team(r, "zz"), NotFound, id="delete-unknown-team"),
    pytest.param(lambda r: delete_team(r, "b"), Conflict, id="delete-team-owning-adapters"),
    pytest.param(
        lambda r: add_key(r, "zz", KeyIn(name="k"), PEPPER), NotFound, id="key-for-nobody"
    ),
    pytest.param(lambda r: revoke_key(r, "a", "a" * 12), NotFound, id="revoke-unknown-key"),
    pytest.param(lambda r: revoke_key(r, "a", KEY_B.id), NotFound, id="revoke-other-teams-key"),
    pytest.param(lambda r: revoke_key(r, "zz", KEY_A.id), NotFound, id="revoke-for-unknown-team"),
    pytest.param(
        lambda r: rotate_key(r, "b", KEY_A.id, 60, PEPPER), NotFound, id="rotate-other-teams-key"
    ),
    pytest.param(lambda r: find_key(r, "b", KEY_A.id), NotFound, id="find-other-teams-key"),
    pytest.param(
        lambda r: put_mapping(r, "zz", "chat", MappingIn(adapter="org/x")),
        NotFound,
        id="map-for-unknown-team",
    ),
    pytest.param(lambda r: delete_mapping(r, "b", "chat"), NotFound, id="delete-inherited-default"),
    pytest.param(lambda r: delete_mapping(r, None, "nope"), NotFound, id="delete-unknown-mapping"),
    pytest.param(lambda r: delete_record(r, "pools", "nope"), NotFound, id="delete-unknown-pool"),
    pytest.param(
        lambda r: delete_record(r, "adapters", "org/x"),
        NotFound,
        id="delete-adapter-without-record",
    ),
]


@pytest.mark.parametrize(("edit", "error"), REFUSALS)
def test_missing_objects_are_not_found_and_clashes_conflict(
    edit: Callable[[Registry], object], error: type[GatewayError]
) -> None:
    with pytest.raises(GatewayError) as raised:
        edit(REGISTRY)
    assert type(raised.value) is error


# -- what the audit log may hold -----------------------------------------------------------

PUBLIC = [
    pytest.param(None, None, id="nothing"),
    pytest.param(
        REGISTRY.teams[0].keys[0],
        {
            "id": KEY_A.id,
            "name": "app",
            "expires_at": None,
            "limits": {"rpm": 9, "tpm": None, "concurrency": None},
            "role": "admin",
        },
        id="key-without-hash",
    ),
    pytest.param(
        Mapping(team="a", task="t", adapter="org/x"),
        {"team": "a", "task": "t", "adapter": "org/x", "targets": None},
        id="mapping-as-json",
    ),
]


@pytest.mark.parametrize(("record", "audited"), PUBLIC)
def test_public_is_the_json_of_a_record_without_key_hashes(record: Any, audited: Any) -> None:
    assert public(record) == audited


def test_a_teams_public_form_lists_its_keys_without_hashes() -> None:
    audited = public(REGISTRY.teams[0])
    assert [k["id"] for k in audited["keys"]] == [KEY_A.id, KEY_A2.id]
    assert all("hash" not in k for k in audited["keys"])
    assert _no_hash_in(audited)
    assert REGISTRY.teams[0].keys[0].hash == KEY_A.hash  # the record itself is untouched


# -- validation of the edited registry -------------------------------------------------------


def _restricted_team_a(registry: Registry) -> Edit:
    return patch_team(registry, "a", TeamPatch(policy=Policy(data_class="restricted")))


def _team_a_in_eu(registry: Registry) -> Edit:
    return patch_team(registry, "a", TeamPatch(policy=Policy(pool_labels={"region": "eu"})))


INVALID = [
    # the edit, the one problem it causes
    pytest.param(
        lambda r: put_mapping(r, "a", "p", MappingIn(adapter="org/b-only")),
        "mappings.3.adapter: 'org/b-only' is private",
        id="another-teams-private-adapter",
    ),
    pytest.param(
        lambda r: put_mapping(r, None, "p", MappingIn(adapter="org/b-only")),
        "mappings.3.adapter: 'org/b-only' is private",
        id="org-default-to-a-private-adapter",
    ),
    pytest.param(
        lambda r: put_mapping(r, "a", "p", MappingIn(adapter="org/nowhere")),
        "mappings.3.adapter: no pool serves 'org/nowhere'",
        id="adapter-no-pool-serves",
    ),
    pytest.param(
        lambda r: put_mapping(
            r,
            "a",
            "p",
            MappingIn(targets=(Target(adapter="org/x"), Target(adapter="org/nowhere"))),
        ),
        "mappings.3.targets: no pool serves 'org/nowhere'",
        id="one-canary-target-no-pool-serves",
    ),
    pytest.param(
        _restricted_team_a,
        "mappings.1.adapter: no pool the team's policy allows serves 'org/b-granted'",
        id="only-pools-below-the-teams-data-class",
    ),
    pytest.param(
        _team_a_in_eu,
        "mappings.1.adapter: no pool the team's policy allows serves 'org/b-granted'",
        id="only-pools-without-the-teams-labels",
    ),
    pytest.param(
        lambda r: put_record(r, "adapters", Adapter(id="org/unmapped", owner="zz")),
        "adapters.2.owner: unknown team 'zz'",
        id="adapter-owned-by-unknown-team",
    ),
]


@pytest.mark.parametrize(("edit", "problem"), INVALID)
def test_validated_refuses_a_registry_the_data_plane_could_not_honour(
    edit: Callable[[Registry], Edit], problem: str
) -> None:
    registry, _before, _after = edit(REGISTRY)
    with pytest.raises(InvalidRegistry) as raised:
        validated(registry)
    assert raised.value.problems == [problem]
    assert str(raised.value) == problem
    location, _, message = problem.partition(": ")
    assert [(".".join(map(str, loc)), msg) for loc, msg in registry_problems(registry)] == [
        (location, message)
    ]


def test_deleting_the_only_pool_leaves_every_mapping_dangling() -> None:
    registry, _before, _after = delete_record(REGISTRY, "pools", "internal")
    problems = [
        (("mappings", 0, "adapter"), "no pool serves 'org/x'"),
        (("mappings", 1, "adapter"), "no pool serves 'org/b-granted'"),
        (("mappings", 2, "adapter"), "no pool serves 'org/b-only'"),
    ]
    assert registry_problems(registry) == problems
    with pytest.raises(InvalidRegistry) as raised:
        validated(registry)
    assert str(raised.value) == "; ".join(
        f"{'.'.join(map(str, loc))}: {msg}" for loc, msg in problems
    )


VALID = [
    pytest.param(lambda r: (r, None, None), id="unchanged"),
    pytest.param(
        lambda r: put_mapping(r, "a", "p", MappingIn(adapter="org/b-granted")), id="granted"
    ),
    pytest.param(lambda r: put_mapping(r, "b", "p", MappingIn(adapter="org/b-only")), id="own"),
    pytest.param(lambda r: put_mapping(r, "a", "p", MappingIn(adapter="m/base")), id="base-model"),
    pytest.param(
        lambda r: patch_team(r, "a", TeamPatch(policy=Policy(pool_labels={"region": "us"}))),
        id="labels-the-pool-has",
    ),
    pytest.param(lambda r: add_team(r, TeamIn(name="c")), id="new-team"),
]


@pytest.mark.parametrize("edit", VALID)
def test_validated_returns_a_registry_it_accepts_unchanged(
    edit: Callable[[Registry], Edit],
) -> None:
    registry, _before, _after = edit(REGISTRY)
    assert registry_problems(registry) == []
    assert validated(registry) == registry


@pytest.mark.parametrize(
    "body",
    [
        pytest.param({}, id="neither"),
        pytest.param({"adapter": "org/x", "targets": [{"adapter": "org/x"}]}, id="both"),
        pytest.param({"adapter": "not an id!"}, id="malformed-adapter-id"),
    ],
)
def test_a_mapping_body_that_is_no_mapping_is_refused_as_invalid(body: dict[str, Any]) -> None:
    with pytest.raises(Unprocessable):
        put_mapping(REGISTRY, "a", "chat", MappingIn.model_validate(body))


def test_a_task_name_that_is_no_name_is_refused_as_invalid() -> None:
    with pytest.raises(Unprocessable, match="task"):
        put_mapping(REGISTRY, "a", "BAD TASK", MappingIn(adapter="org/x"))


def test_no_key_is_minted_without_a_pepper() -> None:
    """A key hashed under an empty pepper would match on any gateway missing its pepper."""
    with pytest.raises(Conflict, match="LGW_KEY_PEPPER"):
        add_key(REGISTRY, "a", KeyIn(name="ci"), b"")
