"""Stage 2, resolve: a task -> the mapping (the team's, else the org default) -> the
adapter from the registry -> the pools that loaded it -> one pool with its price."""

from __future__ import annotations

import random

import pytest

from gateway.auth import Principal
from gateway.errors import ModelNotFound, UpstreamUnavailable
from gateway.registry import (
    Adapter,
    Mapping,
    Pool,
    Price,
    Registry,
    Snapshot,
    Target,
    Team,
)
from gateway.routing import Candidate, choose, pick_target, resolve
from gateway.routing import candidate as candidate_of

POOL_PRICE = Price(input_per_million=1.0, output_per_million=2.0)
ADAPTER_PRICE = Price(input_per_million=10.0, output_per_million=20.0)

BIG = Pool(
    name="big",
    base_model="m/base",
    adapters=("org/x", "org/y@rev1", "org/priced=/models/priced"),
    endpoints=("http://big:1",),
    price=POOL_PRICE,
)
SMALL = Pool(
    name="small",
    base_model="m/base",
    adapters=("org/x",),
    endpoints=("http://small:1",),
    price=Price(input_per_million=3.0),
)
CANARY = Pool(
    name="canary", base_model="m/other", adapters=("org/z",), endpoints=("http://canary:1",)
)

REGISTRY = Registry(
    teams=(Team(name="a"), Team(name="b")),
    adapters=(
        Adapter(id="org/priced", price=ADAPTER_PRICE),
        Adapter(id="org/y", description="no price of its own"),
    ),
    pools=(BIG, SMALL, CANARY),
    mappings=(
        Mapping(task="chat", adapter="org/x"),
        Mapping(team="a", task="chat", adapter="org/y"),
        Mapping(team="b", task="priced", adapter="org/priced"),
        Mapping(
            task="split",
            targets=(Target(adapter="org/x", weight=9), Target(adapter="org/z", weight=1)),
        ),
        Mapping(team="a", task="base", adapter="m/base"),
    ),
)
SNAPSHOT = Snapshot(REGISTRY)


def _caller(team: str) -> Principal:
    return Principal(team=SNAPSHOT.teams[team], key_id="aaaaaaaaaaaa")


def _resolve(team: str, task: str, seed: int = 1) -> Candidate:
    return resolve(_caller(team), task, SNAPSHOT, random.Random(seed))


# -- the mapping and the adapter ----------------------------------------------------------

MAPPINGS = [
    # team, task, adapter, pools that loaded it
    pytest.param("a", "chat", "org/y", ("big",), id="team-mapping-beats-org-default"),
    pytest.param("b", "chat", "org/x", ("big", "small"), id="org-default-without-own"),
    pytest.param("b", "priced", "org/priced", ("big",), id="team-only-task"),
    pytest.param("a", "base", "m/base", ("big", "small"), id="base-model-of-two-pools"),
]


@pytest.mark.parametrize(("team", "task", "adapter", "pools"), MAPPINGS)
def test_a_task_resolves_to_its_registry_adapter_and_the_pools_that_loaded_it(
    team: str, task: str, adapter: str, pools: tuple[str, ...]
) -> None:
    found = _resolve(team, task)
    assert (found.task, found.adapter) == (task, adapter)
    assert tuple(p.name for p in found.pools) == pools
    assert found.record == SNAPSHOT.adapters.get(adapter)


UNKNOWN = [
    # team, task the client sends
    pytest.param("a", "nope", id="no-such-task"),
    pytest.param("a", "priced", id="another-teams-task"),
    pytest.param("b", "base", id="another-teams-base-mapping"),
    pytest.param("a", "org/x", id="an-adapter-id-is-not-a-task"),
    pytest.param("a", "m/base", id="a-base-model-is-not-a-task"),
    pytest.param("a", "CHAT", id="tasks-are-case-sensitive"),
]


@pytest.mark.parametrize(("team", "task"), UNKNOWN)
def test_a_task_the_team_cannot_name_is_model_not_found(team: str, task: str) -> None:
    with pytest.raises(ModelNotFound) as raised:
        _resolve(team, task)
    assert raised.value.param == "model"
    assert raised.value.message == (
        f"The model '{task}' does not exist or you do not have access to it."
    )


ECHOES = [
    # the client's model string, what the message echoes of it
    pytest.param("m" * 300, "m" * 64, id="300-chars-trimmed-to-64"),
    pytest.param("é" * 70, "?" * 64, id="non-ascii-replaced-then-trimmed"),
    pytest.param("modèle-日本", "mod?le-??", id="non-ascii-replaced"),
    pytest.param("x" * 63 + "€tail", "x" * 63 + "?", id="trim-counts-characters"),
]


@pytest.mark.parametrize(("model", "echoed"), ECHOES)
def test_the_message_echoes_a_trimmed_ascii_model_string(model: str, echoed: str) -> None:
    with pytest.raises(ModelNotFound) as raised:
        _resolve("a", model)
    assert f"'{echoed}'" in raised.value.message
    assert raised.value.message.isascii()


@pytest.mark.parametrize(
    "model",
    [
        pytest.param("a\nb", id="newline"),
        pytest.param("\x1b[31mred", id="terminal-escape"),
        pytest.param("nul\x00", id="nul"),
    ],
)
def test_the_message_echoes_only_printable_characters(model: str) -> None:
    with pytest.raises(ModelNotFound) as raised:
        _resolve("a", model)
    assert raised.value.message.isprintable()


# -- candidates -----------------------------------------------------------------------------

CANDIDATES = [
    # adapter, pools that loaded it, has a record
    pytest.param("org/x", ("big", "small"), False, id="two-pools"),
    pytest.param("org/y", ("big",), True, id="revision-dropped"),
    pytest.param("org/priced", ("big",), True, id="local-path-entry"),
    pytest.param("org/z", ("canary",), False, id="one-pool"),
    pytest.param("m/other", ("canary",), False, id="base-model"),
    pytest.param("org/unloaded", (), False, id="no-pool-loaded-it"),
]


@pytest.mark.parametrize(("adapter", "pools", "has_record"), CANDIDATES)
def test_only_pools_that_loaded_the_adapter_are_candidates(
    adapter: str, pools: tuple[str, ...], has_record: bool
) -> None:
    found = candidate_of(SNAPSHOT, "t", adapter)
    assert (found.task, found.adapter) == ("t", adapter)
    assert tuple(p.name for p in found.pools) == pools
    assert (found.record is not None) is has_record


# -- choosing a pool and its price ----------------------------------------------------------


def test_choosing_among_no_pools_is_unavailable() -> None:
    found = candidate_of(SNAPSHOT, "t", "org/unloaded")
    with pytest.raises(UpstreamUnavailable):
        choose(found, found.pools, random.Random(1))


PRICES = [
    # adapter, the pools policy allows, price of the route
    pytest.param("org/priced", (BIG,), ADAPTER_PRICE, id="adapter-price-wins"),
    pytest.param("org/y", (BIG,), POOL_PRICE, id="record-without-price-uses-pool"),
    pytest.param("org/x", (BIG,), POOL_PRICE, id="no-record-uses-pool"),
    pytest.param("org/x", (SMALL,), SMALL.price, id="the-chosen-pools-price"),
    pytest.param("org/z", (CANARY,), Price(), id="free-pool"),
]


@pytest.mark.parametrize(("adapter", "pools", "price"), PRICES)
def test_the_route_carries_the_adapters_price_else_the_pools(
    adapter: str, pools: tuple[Pool, ...], price: Price
) -> None:
    route = choose(candidate_of(SNAPSHOT, "t", adapter), pools, random.Random(1))
    assert (route.task, route.adapter, route.pool, route.endpoint) == ("t", adapter, pools[0], "")
    assert route.price == price


def test_choose_picks_only_among_the_pools_it_is_given() -> None:
    found = candidate_of(SNAPSHOT, "t", "org/x")
    rng = random.Random(3)
    assert {choose(found, (SMALL,), rng).pool.name for _ in range(50)} == {"small"}
    assert {choose(found, found.pools, rng).pool.name for _ in range(200)} == {"big", "small"}


# -- weighted targets -----------------------------------------------------------------------

PICKS = 2000
SPLITS = [
    # weights of heavy and light, bounds of the heavy target's share
    pytest.param(9.0, 1.0, 0.80, 0.97, id="90-10"),
    pytest.param(1.0, 1.0, 0.40, 0.60, id="50-50"),
    pytest.param(0.99, 0.01, 0.97, 1.0, id="99-1"),
]


@pytest.mark.parametrize(("heavy", "light", "low", "high"), SPLITS)
def test_weighted_targets_split_traffic_by_weight(
    heavy: float, light: float, low: float, high: float
) -> None:
    targets = (Target(adapter="org/heavy", weight=heavy), Target(adapter="org/light", weight=light))
    rng = random.Random(2024)
    picks = [pick_target(targets, rng).adapter for _ in range(PICKS)]
    assert set(picks) <= {"org/heavy", "org/light"}
    assert low <= picks.count("org/heavy") / PICKS <= high


def test_a_single_target_is_always_picked_and_draws_no_randomness() -> None:
    only = (Target(adapter="org/only", weight=0.5),)
    rng = random.Random(5)
    state = rng.getstate()
    assert pick_target(only, rng) == only[0]
    assert rng.getstate() == state


def test_a_canary_mapping_resolves_by_its_weights() -> None:
    rng = random.Random(11)
    found = [resolve(_caller("b"), "split", SNAPSHOT, rng) for _ in range(PICKS)]
    adapters = [f.adapter for f in found]
    assert 0.80 <= adapters.count("org/x") / PICKS <= 0.97
    pools = {f.adapter: tuple(p.name for p in f.pools) for f in found}
    assert pools == {"org/x": ("big", "small"), "org/z": ("canary",)}
