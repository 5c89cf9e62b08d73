"""Health probes: whatever one replica answers is that replica's failure alone; probing
of every other replica goes on, and the failure is counted."""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx
from aiohttp import web

from tests.integration.harness import ADMIN_TOKEN, LoopThread, running_stack
from tests.integration.hosts import Host


def _tgi(broken: Callable[[], bool]) -> Host:
    """A replica that answers TGI's probe routes; once ``broken()``, with a malformed
    number in its metrics."""

    async def answer(request: web.Request) -> web.StreamResponse:
        if request.path == "/info":
            return web.json_response({"max_concurrent_requests": 64})
        if request.path == "/metrics":
            return web.Response(text=f"tgi_queue_size {'1.2.3' if broken() else '0'}\n")
        return web.Response(text="")

    return Host(answer)


def _wait(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 30
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.02)  # polling what a local server recorded, bounded


def test_one_malformed_replica_never_stops_probing_of_the_others(loop: LoopThread) -> None:
    state = {"broken": False}
    good, bad = _tgi(lambda: False), _tgi(lambda: state["broken"])
    loop.run(good.start())
    loop.run(bad.start())
    try:
        with running_stack(loop, endpoints=(good.url, bad.url), probe_interval=0.05) as stack:
            state["broken"] = True
            broken_at = good.seen.count("GET /health")
            _wait(lambda: good.seen.count("GET /health") >= broken_at + 5, "probing stopped")
            scrape = httpx.get(
                f"{stack.admin_url}/metrics", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
            ).text
            failures = [
                line
                for line in scrape.splitlines()
                if line.startswith("lgw_probe_failures_total{") and 'reason="malformed"' in line
            ]
            assert failures and float(failures[0].rsplit(" ", 1)[1]) >= 1
    finally:
        loop.run(good.stop())
        loop.run(bad.stop())
