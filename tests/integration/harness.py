"""Real servers for integration tests: simulator and gateway on loopback sockets.

Both run in one background event loop (uvloop), so a test talks to them over real HTTP
exactly as an app would, while still able to look at what the simulator received.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import uvloop
from pydantic import SecretStr

from gateway.accounting.tracing import Telemetry
from gateway.app import create_admin_app, create_app
from gateway.demo import with_keys
from gateway.registry import Registry
from gateway.server import GranianServer, PlaneServer, plane_server
from gateway.services import Services, build_services
from gateway.settings import Settings
from gateway.sim import SimConfig, Simulator
from gateway.store.base import InMemoryStore
from gateway.store.files import load_policies
from tests.redis_servers import PATIENCE, free_port

T = TypeVar("T")
EXAMPLES = Path(__file__).resolve().parents[2] / "policies" / "examples"
PEPPER = "test-pepper-not-secret"


class LoopThread:
    """An event loop running in a daemon thread; coroutines are submitted to it."""

    def __init__(self) -> None:
        self.loop = uvloop.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 15) -> T:
        """Run ``coro`` on the loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        """Stop the loop and join its thread."""
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)


@dataclass
class Stack:
    """A running simulator + gateway, and the key of each example team."""

    sim: Simulator
    url: str
    keys: dict[str, str]
    registry: Registry
    admin_url: str = ""
    store: InMemoryStore | None = None
    services: Services | None = None

    def reset(self, loop: LoopThread, registry: Registry) -> None:
        """Put ``registry`` in the store and in the gateway's cache."""
        assert self.store is not None and self.services is not None
        loop.run(self.store.save(registry))
        loop.run(self.services.registry.refresh())

    @property
    def base_url(self) -> str:
        """The OpenAI ``base_url`` of the gateway."""
        return f"{self.url}/v1"


ADMIN_TOKEN = "test-admin-token-not-secret"


async def _serve(server: PlaneServer | GranianServer) -> PlaneServer | GranianServer:
    task = asyncio.get_running_loop().create_task(server.serve())
    for _ in range(1000):  # bounded: startup takes milliseconds
        if server.started or task.done():
            break
        await asyncio.sleep(0.01)
    if not server.started:
        raise RuntimeError("the server did not start")
    server._lgw_task = task  # type: ignore[union-attr]
    return server


async def _start_gateway(
    settings: Settings, store: InMemoryStore, telemetry: Telemetry | None
) -> tuple[list[PlaneServer | GranianServer], Services]:
    services = build_services(settings, store, telemetry)
    kind = settings.server  # LGW_SERVER=granian runs the suite on Granian
    data = await _serve(plane_server(create_app(settings, services), "127.0.0.1", 0, 1, kind))
    admin = plane_server(create_admin_app(settings, services), "127.0.0.1", 0, 1, kind)
    return [data, await _serve(admin)], services


async def _stop_gateway(servers: list[PlaneServer | GranianServer]) -> None:
    for server in reversed(servers):  # the data plane's lifespan closes the shared services
        server.should_exit = True
        await server._lgw_task  # type: ignore[union-attr]


@contextmanager
def running_stack(
    loop: LoopThread,
    sim_config: SimConfig | None = None,
    endpoints: tuple[str, ...] | None = None,
    telemetry: Telemetry | None = None,
    **settings_overrides: Any,
) -> Iterator[Stack]:
    """The example deployment on a simulator, served by a gateway on free ports (data and
    admin planes, in-memory registry)."""
    registry = load_policies(EXAMPLES)
    pool = registry.pools[0]
    config = sim_config or SimConfig()
    config.model_id = pool.base_model
    config.lora_adapters = ",".join(pool.adapters)
    sim = Simulator(config)
    sim_url = loop.run(sim.start())
    registry = registry.model_copy(
        update={"pools": (pool.model_copy(update={"endpoints": endpoints or (sim_url,)}),)}
    )
    registry, keys = with_keys(registry, PEPPER.encode())
    settings_overrides.setdefault("admin_token", SecretStr(ADMIN_TOKEN))
    settings_overrides.setdefault("upstream_allow", "127.0.0.1/32,tgi.internal")
    settings = Settings(key_pepper=SecretStr(PEPPER), **settings_overrides)
    store = InMemoryStore(registry)
    servers, services = loop.run(_start_gateway(settings, store, telemetry))
    try:
        yield Stack(
            sim=sim,
            url=f"http://127.0.0.1:{servers[0].port}",
            keys=keys,
            registry=registry,
            admin_url=f"http://127.0.0.1:{servers[1].port}",
            store=store,
            services=services,
        )
    finally:
        loop.run(_stop_gateway(servers))
        loop.run(sim.stop())


def eventually(check: Callable[[], bool], what: str, timeout: float = PATIENCE) -> None:
    """Poll ``check()`` until it holds; fail (saying ``what`` did not happen) only when it
    still does not after ``timeout``, a bound for hangs, not a measure of speed."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"{what} did not happen within {timeout} s"
        time.sleep(0.02)  # polling a condition, bounded by the deadline


def run_cli(*args: str, **settings: str) -> subprocess.CompletedProcess[str]:
    """``lora-gateway ARGS`` as a newcomer runs it: no ``LGW_*`` from this environment
    but ``settings``, loopback on free ports unless ``settings`` say otherwise."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LGW_")}
    env |= {"LGW_HOST": "127.0.0.1", "LGW_PORT": str(free_port())}
    env |= {"LGW_ADMIN_PORT": str(free_port()), **settings}
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=Path(__file__).resolve().parents[2],
        check=False,
    )


def wait_ready(url: str, process: subprocess.Popen[str], timeout: float = PATIENCE) -> None:
    """Poll a readiness probe until it answers 200; fail if the process exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"exited early: {process.communicate()}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)  # polling a probe, bounded by the deadline
    raise AssertionError(f"{url} did not become ready")


class Replica:
    """One ``lora-gateway serve`` process (a gateway replica), stopped with the test."""

    def __init__(self, redis_url: str, pepper: str, **settings: str) -> None:
        self.port, self.admin_port = free_port(), free_port()
        env = {
            **os.environ,
            "LGW_REDIS_URL": redis_url,
            "LGW_KEY_PEPPER": pepper,
            "LGW_PORT": str(self.port),
            "LGW_ADMIN_PORT": str(self.admin_port),
            "LGW_HOST": "127.0.0.1",
            **{f"LGW_{k.upper()}": v for k, v in settings.items()},
        }
        env.pop("LGW_POLICIES", None)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", "serve"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        wait_ready(f"{self.url}/readyz", self.process)

    @property
    def url(self) -> str:
        """The replica's base URL."""
        return f"http://127.0.0.1:{self.port}"

    def metrics(self) -> str:
        """The replica's Prometheus exposition (admin port)."""
        return httpx.get(f"http://127.0.0.1:{self.admin_port}/metrics", timeout=10).text

    def stop(self) -> str:
        """SIGTERM, wait, and return what it logged."""
        if self.process.poll() is None:
            self.process.terminate()
        output, _ = self.process.communicate(timeout=30)
        return output


class Demo:
    """``lora-gateway demo`` as a user starts it: its own ports, keys written to a file."""

    def __init__(self, keys_file: Path, policies: Path | None = None, **env: str) -> None:
        self.port = free_port()
        extra = ["--policies", str(policies)] if policies else []
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gateway.cli",
                "demo",
                "--port",
                str(self.port),
                "--admin-port",
                str(free_port()),
                "--keys-file",
                str(keys_file),
                "--ttft",
                "0",
                "--itl",
                "0",
                *extra,
            ],
            env={**os.environ, **env},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            wait_ready(f"{self.url}/readyz", self.process)
        except AssertionError:
            self.kill()
            raise
        self.keys: dict[str, str] = json.loads(keys_file.read_text())

    @property
    def url(self) -> str:
        """The demo gateway's base URL."""
        return f"http://127.0.0.1:{self.port}"

    def kill(self) -> None:
        """Make sure the process is gone (after a failed test)."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.communicate()
