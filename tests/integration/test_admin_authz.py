"""The admin plane's authorization matrix: every route x every kind of caller x an object
of the caller's own team or of another team. Exactly the allowed cells succeed."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from gateway import keys
from gateway.registry import Adapter, ApiKey, Pool, Registry
from tests.integration.harness import ADMIN_TOKEN, PEPPER, LoopThread, Stack, running_stack

A, B = "analytics", "devtools"
SQL = "google-cloud-partnership/gemma-2-2b-it-lora-sql"
CODE = "google-cloud-partnership/gemma-2-2b-it-lora-magicoder"
TASK = {A: "sql", B: "code"}
USABLE = {A: SQL, B: CODE}


@dataclass(frozen=True)
class Route:
    """One admin route; ``scope``: org (org admin only), team (the team's admins too),
    any (every admin, filtered to what it may see), usable (adapters a team may use)."""

    method: str
    path: str
    scope: str
    body: Callable[[str], Any] | None = None


NEW_POOL = {
    "name": "extra",
    "base_model": "google/gemma-2-2b-it",
    "endpoints": ["http://tgi.internal:8080"],
}
ROUTES = [
    Route("GET", "/teams", "any"),
    Route("POST", "/teams", "org", lambda t: {"name": f"new-{t}"}),
    Route("GET", "/teams/{team}", "team"),
    Route("PATCH", "/teams/{team}", "org", lambda t: {"limits": {"rpm": 5}}),
    Route("DELETE", "/teams/{team}", "org"),
    Route("GET", "/teams/{team}/keys", "team"),
    Route("POST", "/teams/{team}/keys", "team", lambda t: {"name": "ci"}),
    Route("GET", "/teams/{team}/keys/{key}", "team"),
    Route("DELETE", "/teams/{team}/keys/{key}", "team"),
    Route("POST", "/teams/{team}/keys/{key}/rotate", "team", lambda t: {"grace_seconds": 60}),
    Route("GET", "/teams/{team}/mappings", "team"),
    Route("GET", "/teams/{team}/mappings/{task}", "team"),
    Route(
        "PUT",
        "/teams/{team}/mappings/{task}",
        "team",
        lambda t: {"adapter": "google/gemma-2-2b-it"},
    ),
    Route("DELETE", "/teams/{team}/mappings/{task}", "team"),
    Route("GET", "/pools", "org"),
    Route("POST", "/pools", "org", lambda t: NEW_POOL),
    Route("GET", "/pools/gemma-2-2b-it", "org"),
    Route("DELETE", "/pools/spare", "org"),
    Route("GET", "/adapters", "any"),
    Route("POST", "/adapters", "org", lambda t: {"id": "org/new-adapter", "owner": t}),
    Route("GET", "/adapters/{adapter}", "usable"),
    Route("DELETE", "/adapters/{adapter}", "org"),
    Route("GET", "/audit", "any"),
]
CALLERS = ["org", "admin-a", "admin-b", "member-a", "none", "wrong"]


@pytest.fixture(scope="module")
def module_loop() -> Iterator[LoopThread]:
    thread = LoopThread()
    yield thread
    thread.close()


@dataclass
class World:
    stack: Stack
    initial: Registry
    tokens: dict[str, str | None]
    key_of: dict[str, str]


@pytest.fixture(scope="module")
def world(module_loop: LoopThread) -> Iterator[World]:
    with running_stack(module_loop) as stack:
        registry = stack.registry
        # Neither A nor B owns an adapter (so either may be deleted); each is granted one.
        adapters = (
            Adapter(id=SQL, owner="localization", grants=(A,)),
            Adapter(id=CODE, owner="localization", grants=(B,)),
        )
        admins = {team: keys.mint(PEPPER.encode()) for team in (A, B)}
        teams = tuple(
            t.model_copy(
                update={
                    "keys": (
                        *t.keys,
                        ApiKey(
                            id=admins[t.name].id,
                            name="admin",
                            hash=admins[t.name].hash,
                            role="admin",
                        ),
                    )
                }
            )
            if t.name in admins
            else t
            for t in registry.teams
        )
        spare = Pool(
            name="spare", base_model="google/gemma-2-2b-it", endpoints=("http://tgi.internal:8080",)
        )
        initial = registry.model_copy(
            update={"teams": teams, "adapters": adapters, "pools": (*registry.pools, spare)}
        )
        key_of = {t.name: t.keys[0].id for t in initial.teams}
        tokens: dict[str, str | None] = {
            "org": ADMIN_TOKEN,
            "admin-a": admins[A].plaintext,
            "admin-b": admins[B].plaintext,
            "member-a": stack.keys[A],
            "none": None,
            "wrong": "not-the-admin-token",
        }
        yield World(stack, initial, tokens, key_of)


def expected(route: Route, caller: str, team: str) -> int | str:
    """The status class this caller must get: "2xx", or an exact error status."""
    if caller in ("none", "wrong"):
        return 401
    if caller == "member-a":
        return 403
    if caller == "org" or route.scope == "any":
        return "2xx"
    own = {"admin-a": A, "admin-b": B}[caller] == team
    if route.scope == "org":
        return 403
    return "2xx" if own else 404


CELLS = [(r, c, t) for r in ROUTES for c in CALLERS for t in (A, B)]


@pytest.mark.parametrize(
    ("route", "caller", "team"), CELLS, ids=[f"{r.method} {r.path} {c} {t}" for r, c, t in CELLS]
)
def test_authorization_matrix(
    world: World, module_loop: LoopThread, route: Route, caller: str, team: str
) -> None:
    world.stack.reset(module_loop, world.initial)
    path = route.path.format(
        team=team, key=world.key_of[team], task=TASK[team], adapter=USABLE[team]
    )
    token = world.tokens[caller]
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    response = httpx.request(
        route.method,
        f"{world.stack.admin_url}/admin/v1{path}",
        json=route.body(team) if route.body else None,
        headers=headers,
        timeout=10,
    )
    want = expected(route, caller, team)
    if want == "2xx":
        assert 200 <= response.status_code < 300, response.text
    else:
        assert response.status_code == want, response.text
        assert set(response.json()) == {"error"}


def test_team_admins_see_only_their_own_team_in_lists(
    world: World, module_loop: LoopThread
) -> None:
    world.stack.reset(module_loop, world.initial)
    admin_a = {"Authorization": f"Bearer {world.tokens['admin-a']}"}
    base = f"{world.stack.admin_url}/admin/v1"
    teams = httpx.get(f"{base}/teams", headers=admin_a).json()["data"]
    assert [t["name"] for t in teams] == [A]
    adapters = httpx.get(f"{base}/adapters", headers=admin_a).json()["data"]
    assert [a["id"] for a in adapters] == [SQL]
    org = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    httpx.put(
        f"{base}/teams/{B}/mappings/x", json={"adapter": "google/gemma-2-2b-it"}, headers=org
    ).raise_for_status()
    httpx.put(
        f"{base}/teams/{A}/mappings/y", json={"adapter": "google/gemma-2-2b-it"}, headers=org
    ).raise_for_status()
    for query in ({}, {"team": B}, {"actor": "org-admin"}):
        entries = httpx.get(f"{base}/audit", params=query, headers=admin_a).json()
        assert {e["team"] for e in entries} <= {A}
    assert len(httpx.get(f"{base}/audit", headers=org).json()) >= 2


def test_a_team_admin_cannot_grant_itself_a_foreign_adapter(
    world: World, module_loop: LoopThread
) -> None:
    world.stack.reset(module_loop, world.initial)
    response = httpx.put(
        f"{world.stack.admin_url}/admin/v1/teams/{A}/mappings/steal",
        json={"adapter": CODE},
        headers={"Authorization": f"Bearer {world.tokens['admin-a']}"},
    )
    assert response.status_code == 422
    assert "private" in response.json()["error"]["message"]


@pytest.mark.parametrize(
    "body",
    [
        {"name": "k", "hash": "0" * 64},
        {"name": "k", "id": "aaaaaaaaaaaa"},
        {"name": "k", "x": 1},
        {"name": "k", "role": "owner"},
    ],
)
def test_unknown_or_privileged_key_fields_are_422(
    world: World, module_loop: LoopThread, body: dict[str, Any]
) -> None:
    world.stack.reset(module_loop, world.initial)
    response = httpx.post(
        f"{world.stack.admin_url}/admin/v1/teams/{A}/keys",
        json=body,
        headers={"Authorization": f"Bearer {world.tokens['admin-a']}"},
    )
    assert response.status_code == 422


def test_the_admin_plane_is_not_on_the_data_port(world: World) -> None:
    response = httpx.get(
        f"{world.stack.url}/admin/v1/teams", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
    )
    assert response.status_code == 404
