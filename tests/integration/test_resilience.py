"""A pool of three simulated replicas: one dies, stalls, resets or slows down, and the
gateway routes around it without ever sending the client a duplicate or a fake ending."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import httpx
import pytest

from gateway.sim import SimConfig, Simulator
from tests.integration.harness import LoopThread, Stack, eventually, running_stack
from tests.integration.sse import chunks, open_raw_request, post_stream
from tests.redis_servers import PATIENCE

ADAPTERS = (
    "google-cloud-partnership/gemma-2-2b-it-lora-magicoder,"
    "google-cloud-partnership/gemma-2-2b-it-lora-sql,"
    "google-cloud-partnership/gemma-2-2b-it-lora-jap-en"
)
HELLO = {"model": "sql", "messages": [{"role": "user", "content": "hello there friend"}]}


@contextmanager
def pool_of(
    loop: LoopThread, configs: list[SimConfig], **settings: Any
) -> Iterator[tuple[Stack, list[Simulator]]]:
    sims = []
    for config in configs:
        config.lora_adapters = ADAPTERS
        sims.append(Simulator(config))
    urls = tuple(loop.run(sim.start()) for sim in sims)
    try:
        with running_stack(loop, endpoints=urls, **settings) as stack:
            yield stack, sims
    finally:
        for sim in sims:
            loop.run(sim.stop())


def _post(stack: Stack, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(
        f"{stack.url}/v1/chat/completions",
        json=body,
        timeout=30,
        headers={"Authorization": f"Bearer {stack.keys['analytics']}"},
    )


def _burst(stack: Stack, body: dict[str, Any], count: int, concurrency: int) -> list[int]:
    async def run() -> list[int]:
        limits = httpx.Limits(max_connections=concurrency)
        async with httpx.AsyncClient(timeout=30, limits=limits) as client:
            gate = asyncio.Semaphore(concurrency)

            async def one() -> int:
                async with gate:
                    response = await client.post(
                        f"{stack.url}/v1/chat/completions",
                        json=body,
                        headers={"Authorization": f"Bearer {stack.keys['analytics']}"},
                    )
                    return response.status_code

            return list(await asyncio.gather(*(one() for _ in range(count))))

    return asyncio.run(run())


def _inflight(stack: Stack) -> float:
    text = httpx.get(f"{stack.admin_url}/metrics", timeout=10).text
    line = next(x for x in text.splitlines() if x.startswith("lgw_inflight_requests{"))
    return float(line.split()[-1])


def test_killing_a_replica_fails_no_plain_request_and_it_gets_traffic_back(
    loop: LoopThread,
) -> None:
    configs = [SimConfig(ttft=0.02, itl=0.01) for _ in range(3)]
    with pool_of(loop, configs, ejection_seconds=0.5) as (stack, sims):
        victim = sims[1]
        port = int(victim.url.rsplit(":", 1)[1])
        with ThreadPoolExecutor(1) as pool:
            load = pool.submit(_burst, stack, HELLO, 120, 6)  # steady load meanwhile
            assert victim.wait_for(lambda seen: len(seen) >= 5, timeout=20)
            loop.run(victim.kill())  # its in-flight and new connections fail
            statuses = load.result(timeout=120)
        assert set(statuses) == {200}  # retried on the others
        served_before = len(victim.seen)
        loop.run(victim.start("127.0.0.1", port))  # it comes back
        eventually(  # once its ejection ends, traffic returns
            lambda: _post(stack, HELLO).status_code == 200 and len(victim.seen) > served_before,
            "traffic returning to the restarted replica",
        )
        assert _inflight(stack) == 0


def test_a_stream_on_a_dying_replica_ends_with_one_error_event(loop: LoopThread) -> None:
    configs = [SimConfig(ttft=0.02) for _ in range(3)]
    # The first token, then nothing until the replica dies: the stream cannot end first.
    stalled = {"model": "sql", "messages": [{"role": "user", "content": "sim-fault=stall go"}]}
    with (
        pool_of(loop, configs) as (stack, sims),
        httpx.Client(timeout=PATIENCE) as client,
        client.stream(
            "POST",
            f"{stack.url}/v1/chat/completions",
            json={**stalled, "stream": True},
            headers={"Authorization": f"Bearer {stack.keys['analytics']}"},
        ) as s,
    ):
        lines = (line for line in s.iter_lines() if line)
        assert next(lines).startswith("data: {")
        serving = next(sim for sim in sims if sim.seen)
        loop.run(serving.kill())
        rest = list(lines)
    assert json.loads(rest[-2].removeprefix("data: "))["error"]["code"] == "upstream_error"
    assert rest[-1] == "data: [DONE]"  # the error, then the end of the stream
    assert sum(len(sim.seen) for sim in sims) == 1  # never retried after content


def test_a_stall_before_the_first_event_is_retried_elsewhere(loop: LoopThread) -> None:
    configs = [SimConfig(ttft=30), SimConfig(), SimConfig()]
    # A healthy replica answers in milliseconds; 2 s is for a busy machine, not a measure.
    with pool_of(loop, configs, upstream_first_event_timeout=2) as (stack, sims):
        stalled = sims[0]
        outcomes = []
        for _ in range(100):  # bounded: random picks reach the stalled one in a few tries
            outcomes.append(
                post_stream(stack.url, stack.keys["analytics"], {**HELLO, "stream": True})
            )
            if stalled.seen:
                break
        assert stalled.seen, "the random picks never tried the stalled replica"
        assert all(
            response.status_code == 200 and payloads[-1] == "[DONE]"
            for response, payloads in outcomes
        )
        assert stalled.wait_for(
            lambda seen: all(s.outcome == "disconnected" for s in seen), PATIENCE
        )


def test_a_slow_but_healthy_stream_is_never_cut(loop: LoopThread) -> None:
    """The per-try timeout bounds the wait for the first event, not the stream: five
    tokens 0.6 s apart outlast it (which is 2 s, so that the first event, due at once,
    never misses it on a busy machine)."""
    with pool_of(loop, [SimConfig(itl=0.6)], upstream_first_event_timeout=2) as (stack, _):
        _, payloads = post_stream(stack.url, stack.keys["analytics"], {**HELLO, "stream": True})
        assert payloads[-1] == "[DONE]"
        assert len(chunks(payloads)) == 5  # every token, past the per-try timeout


def test_a_reset_after_two_chunks_is_one_attempt(loop: LoopThread) -> None:
    with pool_of(loop, [SimConfig() for _ in range(3)]) as (stack, sims):
        _, payloads = post_stream(
            stack.url,
            stack.keys["analytics"],
            {
                "model": "sql",
                "stream": True,
                "messages": [{"role": "user", "content": "sim-fault=reset and more words"}],
            },
        )
        assert len(chunks(payloads[:-2])) == 2
        assert json.loads(payloads[-2])["error"]["code"] == "upstream_error"
        assert sum(len(sim.seen) for sim in sims) == 1


def test_a_replica_ten_times_slower_gets_far_fewer_requests(loop: LoopThread) -> None:
    # Slow enough that the gap dwarfs what a busy machine adds to every request alike.
    configs = [SimConfig(itl=0.2), SimConfig(itl=0.02), SimConfig(itl=0.02)]
    with pool_of(loop, configs) as (stack, sims):
        assert set(_burst(stack, HELLO, 150, 12)) == {200}
        split = [len(sim.seen) for sim in sims]
    print(f"requests per replica (slow, fast, fast): {split}")
    assert split[0] * 2 < min(split[1:])


def test_every_replica_overloaded_is_a_fast_503(loop: LoopThread) -> None:
    overloaded = "sim-fault=overload"
    with pool_of(loop, [SimConfig() for _ in range(3)]) as (stack, sims):
        response = _post(
            stack, {"model": "sql", "messages": [{"role": "user", "content": overloaded}]}
        )
        assert response.status_code == 503
        assert response.headers["retry-after"] == "1"
        assert response.json()["error"]["code"] == "upstream_overloaded"
        assert sum(len(sim.seen) for sim in sims) == 3  # one try per replica, no storm
        assert _inflight(stack) == 0


def test_the_deadline_covers_every_try(loop: LoopThread) -> None:
    configs = [SimConfig(ttft=30) for _ in range(3)]
    with pool_of(loop, configs, upstream_first_event_timeout=0.4, upstream_deadline=0.9) as (
        stack,
        sims,
    ):
        response = _post(stack, {**HELLO, "stream": True})
        assert response.status_code == 504
        assert response.json()["error"]["code"] == "upstream_timeout"
        assert sum(len(sim.seen) for sim in sims) <= 3
        for sim in sims:
            assert sim.wait_for(lambda seen: all(s.outcome != "open" for s in seen), PATIENCE)
        assert _inflight(stack) == 0


def test_probes_take_a_dead_replica_out_and_bring_it_back(loop: LoopThread) -> None:
    with pool_of(loop, [SimConfig(), SimConfig()], probe_interval=0.1) as (stack, sims):
        assert stack.services is not None
        balancer = stack.services.upstream.balancer
        victim = sims[0]
        replica = next(r for _, r in balancer.all_replicas() if r.url == victim.url)
        assert replica.probe_ok and replica.capacity == 128  # read from TGI's /info
        port = int(victim.url.rsplit(":", 1)[1])
        loop.run(victim.kill())
        eventually(lambda: not replica.probe_ok, "a probe failing")  # no request needed
        assert all(_post(stack, HELLO).status_code == 200 for _ in range(5))
        assert victim.seen == []
        loop.run(victim.start("127.0.0.1", port))
        eventually(lambda: replica.probe_ok, "a probe passing again")


def test_a_saturated_pool_is_a_fast_503_without_an_upstream_call(loop: LoopThread) -> None:
    configs = [SimConfig(max_concurrent_requests=1, ttft=30)]  # held until we hang up
    with pool_of(loop, configs) as (stack, sims):
        held = open_raw_request(stack.url, stack.keys["analytics"], HELLO)
        try:
            assert sims[0].wait_for(lambda seen: len(seen) == 1, PATIENCE)
            response = _post(stack, HELLO)
            assert response.status_code == 503
            assert response.headers["retry-after"] == "1"
            assert len(sims[0].seen) == 1  # refused here, not queued upstream
        finally:
            held.close()


def test_a_dns_pool_routes_to_every_address_its_name_resolves_to(loop: LoopThread) -> None:
    with pool_of(loop, [SimConfig()], probe_interval=0.1) as (stack, sims):
        assert stack.services is not None
        port = sims[0].url.rsplit(":", 1)[1]
        pool = stack.registry.pools[0].model_copy(
            update={"endpoints": (f"http://localhost:{port}",), "discovery": "dns"}
        )
        stack.reset(loop, stack.registry.model_copy(update={"pools": (pool,)}))
        balancer = stack.services.upstream.balancer
        eventually(
            lambda: f"http://127.0.0.1:{port}" in balancer.resolved.get(pool.name, ()),
            "the name resolving",
        )
        assert all(_post(stack, HELLO).status_code == 200 for _ in range(6))
        assert {r.url for r in balancer.replicas(pool)} >= {f"http://127.0.0.1:{port}"}


def test_replicas_added_to_a_pool_take_traffic_without_a_restart(loop: LoopThread) -> None:
    with pool_of(loop, [SimConfig()]) as (stack, sims):
        newcomer = Simulator(SimConfig(lora_adapters=ADAPTERS))
        url = loop.run(newcomer.start())
        try:
            pool = stack.registry.pools[0]
            grown = pool.model_copy(update={"endpoints": (*pool.endpoints, url)})
            stack.reset(loop, stack.registry.model_copy(update={"pools": (grown,)}))
            assert set(_burst(stack, HELLO, 30, 4)) == {200}
            assert newcomer.seen and sims[0].seen
        finally:
            loop.run(newcomer.stop())


@pytest.fixture
def mixed(loop: LoopThread) -> Iterator[tuple[Stack, Simulator, Simulator]]:
    """A TGI pool with the sql and code adapters, a vLLM pool with jap-en (and one more
    it claims but has not loaded)."""
    tgi = Simulator(SimConfig(lora_adapters=ADAPTERS.rsplit(",", 1)[0]))
    vllm = Simulator(SimConfig(flavor="vllm", lora_adapters=ADAPTERS.rsplit(",", 1)[1]))
    urls = [loop.run(sim.start()) for sim in (tgi, vllm)]
    try:
        with running_stack(loop, probe_interval=0.1) as stack:
            base = stack.registry.pools[0]
            tgi_pool = base.model_copy(
                update={"adapters": base.adapters[:2], "endpoints": (urls[0],)}
            )
            vllm_pool = base.model_copy(
                update={
                    "name": "gemma-vllm",
                    "dialect": "vllm",
                    "endpoints": (urls[1],),
                    "adapters": (base.adapters[2], "org/not-loaded"),
                }
            )
            mappings = (
                *stack.registry.mappings,
                *[
                    m.model_copy(update={"task": "ghost", "adapter": "org/not-loaded"})
                    for m in stack.registry.mappings
                    if m.task == "translate-ja"
                ],
            )
            stack.reset(
                loop,
                stack.registry.model_copy(
                    update={"pools": (tgi_pool, vllm_pool), "mappings": mappings}
                ),
            )
            yield stack, tgi, vllm
    finally:
        for sim in (tgi, vllm):
            loop.run(sim.stop())


def test_a_mixed_registry_routes_each_adapter_to_the_pool_that_loaded_it(
    mixed: tuple[Stack, Simulator, Simulator],
) -> None:
    stack, tgi, vllm = mixed
    teams = {"sql": "analytics", "code": "devtools", "translate-ja": "localization"}
    for task, team in teams.items():
        for stream in (False, True):
            body = {
                "model": task,
                "stream": stream,
                "messages": [
                    {"role": "system", "content": "be brief"},
                    {"role": "user", "content": "hi"},
                ],
            }
            response = httpx.post(
                f"{stack.url}/v1/chat/completions",
                json=body,
                timeout=20,
                headers={"Authorization": f"Bearer {stack.keys[team]}"},
            )
            assert response.status_code == 200, response.text
            expected_pool = "gemma-vllm" if task == "translate-ja" else "gemma-2-2b-it"
            assert response.headers["x-lgw-pool"] == expected_pool
    assert {s.served_by for s in vllm.seen} == {
        "google-cloud-partnership/gemma-2-2b-it-lora-jap-en"
    }
    assert all(s.body["model"] == s.served_by for s in vllm.seen)  # a module name, not "tgi"
    assert len(tgi.seen) == 4  # sql and code, streamed and not
    streamed = post_stream(
        stack.url,
        stack.keys["localization"],
        {
            "model": "translate-ja",
            "stream": True,
            "stream_options": {"include_usage": True},
            "messages": [{"role": "user", "content": "hello"}],
        },
    )[1]
    first = json.loads(streamed[0])
    assert first["id"].startswith("chatcmpl-") and first["model"] == "translate-ja"
    assert json.loads(streamed[-2])["usage"]["total_tokens"] > 0


def test_a_declared_adapter_that_vllm_has_not_loaded_is_refused(
    mixed: tuple[Stack, Simulator, Simulator],
) -> None:
    stack, _, vllm = mixed
    assert stack.services is not None
    services = stack.services
    eventually(
        lambda: "org/not-loaded" in services.upstream.balancer.missing.get("gemma-vllm", ()),
        "a probe finding the adapter missing",
    )
    before = len(vllm.seen)
    response = httpx.post(
        f"{stack.url}/v1/chat/completions",
        timeout=10,
        json={"model": "ghost", "messages": [{"role": "user", "content": "hi"}]},
        headers={"Authorization": f"Bearer {stack.keys['localization']}"},
    )
    assert response.status_code == 503
    assert len(vllm.seen) == before  # refused here: never a silent substitute upstream
