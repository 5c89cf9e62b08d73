"""The gateway speaks only to the endpoints the registry names: a backend cannot send
it, or a prompt, anywhere else."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
from aiohttp import web

from tests.integration.harness import ADMIN_TOKEN, LoopThread, running_stack
from tests.integration.hosts import Host

HELLO = {"model": "sql", "messages": [{"role": "user", "content": "a secret prompt"}]}


@contextmanager
def hosts(loop: LoopThread, redirect: set[str]) -> Iterator[tuple[Host, Host]]:
    """A trap, and a replica that redirects the requests named in ``redirect`` to it
    (and answers the others as a healthy TGI would)."""
    trap = Host()
    loop.run(trap.start())

    async def replica(request: web.Request) -> web.StreamResponse:
        if f"{request.method} {request.path}" in redirect:
            raise web.HTTPTemporaryRedirect(f"{trap.url}{request.path}")
        if request.path == "/info":
            return web.json_response({"max_concurrent_requests": 128})
        return web.Response(text="")

    redirector = Host(replica)
    loop.run(redirector.start())
    try:
        yield redirector, trap
    finally:
        loop.run(redirector.stop())
        loop.run(trap.stop())


def test_upstream_redirects_are_never_followed_on_the_data_plane(loop: LoopThread) -> None:
    posts = {"POST /v1/chat/completions"}
    with (
        hosts(loop, posts) as (replica, trap),
        running_stack(loop, endpoints=(replica.url,)) as stack,
    ):
        auth = {"Authorization": f"Bearer {stack.keys['analytics']}"}
        for body in (HELLO, {**HELLO, "stream": True}):
            answer = httpx.post(f"{stack.url}/v1/chat/completions", json=body, headers=auth)
            assert answer.status_code == 502
            assert answer.json()["error"]["code"] == "upstream_error"
        assert "POST /v1/chat/completions" in replica.seen
    assert trap.seen == []


def test_upstream_redirects_are_never_followed_by_probes(loop: LoopThread) -> None:
    probes = {"GET /health", "GET /metrics", "GET /info"}
    with (
        hosts(loop, probes) as (replica, trap),
        running_stack(loop, endpoints=(replica.url,), probe_interval=0.05),
    ):
        deadline = time.monotonic() + 20
        while replica.seen.count("GET /health") < 3:  # several probe rounds went by
            assert time.monotonic() < deadline, replica.seen
            time.sleep(0.02)  # polling a list the server appends to, bounded
    assert trap.seen == []


def test_a_denied_port_is_never_contacted_whatever_wrote_the_pool(loop: LoopThread) -> None:
    """The red team's case: with ``LGW_UPSTREAM_ALLOW=127.0.0.1`` a pool on Redis's port
    was accepted and probed. Here the trap plays a non-HTTP service on a denied port."""
    trap = Host()
    loop.run(trap.start())
    port = int(trap.url.rsplit(":", 1)[1])
    try:
        with running_stack(
            loop, upstream_allow="127.0.0.1", upstream_deny_ports=frozenset({6379, port})
        ) as stack:
            admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
            pool = {**stack.registry.pools[0].model_dump(mode="json"), "name": "trap"}
            pool["endpoints"] = [trap.url]
            created = httpx.post(f"{stack.admin_url}/admin/v1/pools", json=pool, headers=admin)
            assert created.status_code == 422, created.text
            assert "LGW_UPSTREAM_DENY_PORTS" in created.json()["error"]["message"]
            # Policy files are trusted for hosts, never for ports: the replica is not spoken to.
            trapped = stack.registry.pools[0].model_copy(update={"endpoints": (trap.url,)})
            stack.reset(loop, stack.registry.model_copy(update={"pools": (trapped,)}))
            answer = httpx.post(
                f"{stack.url}/v1/chat/completions",
                json=HELLO,
                headers={"Authorization": f"Bearer {stack.keys['analytics']}"},
            )
            assert answer.status_code == 503
            assert stack.services is not None
            loop.run(stack.services.upstream.prober.probe_all())  # one more round, for sure
    finally:
        loop.run(trap.stop())
    assert trap.seen == []


def test_a_request_from_a_gateway_is_refused_so_a_loop_cannot_form(loop: LoopThread) -> None:
    """Every upstream request carries x-lgw-hop; a pool pointed back at a gateway gets 508."""
    with running_stack(loop) as stack:
        answer = httpx.post(
            f"{stack.url}/v1/chat/completions",
            json=HELLO,
            headers={"Authorization": f"Bearer {stack.keys['analytics']}", "x-lgw-hop": "1"},
        )
        assert answer.status_code == 508
        assert answer.json()["error"]["code"] == "loop_detected"
        sent = httpx.post(
            f"{stack.url}/v1/chat/completions",
            json=HELLO,
            headers={"Authorization": f"Bearer {stack.keys['analytics']}"},
        )
        assert sent.status_code == 200
        assert stack.sim.seen[-1].headers["x-lgw-hop"] == "1"
