"""Clients that connect and dawdle (slowloris) cannot starve real requests: headers must
arrive in time, connections are bounded per plane, and memory comes back after a flood.
The gateway runs as ``lora-gateway serve``, a process of its own, as in production."""

from __future__ import annotations

import asyncio
import json
import os
import resource
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
from aiohttp import web

from gateway import keys
from tests.integration.harness import LoopThread, wait_ready
from tests.integration.hosts import Host
from tests.redis_servers import free_port

ROOT = Path(__file__).resolve().parents[2]
POLICY = """pools:
  - {name: gemma, base_model: google/gemma-2-2b-it, endpoints: ["http://127.0.0.1:9"]}
"""
PARTIAL = b"POST /v1/chat/completions HTTP/1.1\r\nHost: gateway\r\n"


@contextmanager
def gateway(
    tmp_path: Path, policy: str = POLICY, files: int | None = None, **settings: str
) -> Iterator[tuple[int, int]]:
    """``serve`` on ``policy`` with ``settings`` (``LGW_*`` without the prefix); yields its
    pid and port. ``files`` caps its file descriptors, as a busy host's limit would."""
    (tmp_path / "p.yaml").write_text(policy)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("LGW_")}
    env |= {"LGW_POLICIES": str(tmp_path / "p.yaml"), "LGW_HOST": "127.0.0.1"}
    env |= {"LGW_PORT": str(port), "LGW_ADMIN_PORT": str(free_port())}
    env |= {f"LGW_{name.upper()}": value for name, value in settings.items()}

    def limit_files() -> None:
        if files is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (files, files))

    log = (tmp_path / "gateway.log").open("w")  # a file: a full pipe would stall it
    process = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "serve"],
        env=env,
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=limit_files,  # only setrlimit, before exec
    )
    try:
        wait_ready(f"http://127.0.0.1:{port}/readyz", process)
        yield process.pid, port
    finally:
        process.kill()
        process.wait()
        log.close()


def _rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    line = next(line for line in status.splitlines() if line.startswith("VmRSS:"))
    return int(line.split()[1]) / 1024


async def _half_open(port: int, count: int) -> list[asyncio.StreamWriter]:
    """``count`` connections that each sent part of a request line and headers."""
    gate = asyncio.Semaphore(200)  # the listen backlog is finite: connect in waves

    async def one() -> asyncio.StreamWriter:
        async with gate:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(PARTIAL)
            await writer.drain()
            return writer

    return list(await asyncio.gather(*(one() for _ in range(count))))


async def _served(port: int, count: int) -> list[int]:
    async with httpx.AsyncClient(timeout=30) as client:
        answers = [await client.get(f"http://127.0.0.1:{port}/healthz") for _ in range(count)]
    return [a.status_code for a in answers]


def test_a_slowloris_connection_gets_a_408_and_is_closed(tmp_path: Path) -> None:
    with gateway(tmp_path, header_timeout_seconds="1") as (_, port):
        with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
            for byte in PARTIAL[:5]:  # a byte at a time, never the end of the headers
                sock.sendall(bytes([byte]))
            answer = b""
            while chunk := sock.recv(4096):  # bounded by the socket timeout
                answer += chunk
        assert answer.startswith(b"HTTP/1.1 408 ")
        assert b'"code":"request_timeout"' in answer
        assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=10).status_code == 200


def test_legitimate_requests_are_served_while_5000_half_open_connections_are_held(
    tmp_path: Path,
) -> None:
    async def flood_and_serve(port: int) -> list[int]:
        held = await _half_open(port, 5000)
        try:
            return await _served(port, 100)
        finally:
            for writer in held:
                writer.close()

    with gateway(tmp_path, header_timeout_seconds="120") as (pid, port):
        asyncio.run(_served(port, 50))  # warm: what a served request allocates, allocated
        baseline = _rss_mb(pid)
        assert asyncio.run(flood_and_serve(port)) == [200] * 100
        deadline = time.monotonic() + 30  # a safety bound: memory comes back in a second
        while _rss_mb(pid) - baseline > 20:
            assert time.monotonic() < deadline, f"RSS {_rss_mb(pid):.0f} MB, {baseline:.0f} before"
            time.sleep(0.1)  # polling the process's memory, bounded


def test_past_the_connection_limit_the_oldest_half_open_connection_makes_room(
    tmp_path: Path,
) -> None:
    """The red team's case, small: more half-open connections than file descriptors."""

    async def flood_and_serve(port: int) -> list[int]:
        held = await _half_open(port, 300)
        try:
            return await _served(port, 20)
        finally:
            for writer in held:
                writer.close()

    with gateway(tmp_path, files=256, max_connections="100") as (_, port):
        assert asyncio.run(flood_and_serve(port)) == [200] * 20


def test_idle_kept_alive_connections_make_room_for_new_ones(tmp_path: Path) -> None:
    """Connections that each made one request and then sit idle, kept alive, fill the plane:
    a newcomer closes the oldest of them instead of getting a 503."""

    async def hold_and_serve(port: int) -> list[int]:
        held = []
        for _ in range(60):  # past the limit: each one served, then kept alive, idle
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: g\r\n\r\n")
            await reader.readuntil(b'{"status":"ok"}')
            held.append(writer)
        try:
            return await _served(port, 20)  # on a connection of its own
        finally:
            for writer in held:
                writer.close()

    with gateway(tmp_path, max_connections="40", keepalive_seconds="600") as (_, port):
        assert asyncio.run(hold_and_serve(port)) == [200] * 20


SQL = "google-cloud-partnership/gemma-2-2b-it-lora-sql"
CHUNK = (
    b'data:{"object":"chat.completion.chunk","id":"","created":1,"model":"m","choices":'
    b'[{"index":0,"delta":{"content":"' + b"x" * 4000 + b'"},"finish_reason":null}]}\n\n'
)


def _endless_tgi() -> Host:
    """A replica whose answer streams for as long as anyone reads it (up to 100 MB)."""

    async def answer(request: web.Request) -> web.StreamResponse:
        if request.path == "/info":
            return web.json_response({"max_concurrent_requests": 8})
        if request.path != "/v1/chat/completions":
            return web.Response(text="")
        stream = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await stream.prepare(request)
        for _ in range(25_000):  # bounded: 100 MB, far past any socket buffer
            await stream.write(CHUNK)  # fails once the gateway drops the connection
        return stream

    return Host(answer)


def test_a_stream_client_that_never_reads_releases_its_slot(
    tmp_path: Path, loop: LoopThread
) -> None:
    """Its socket full, the gateway cannot write: after the write timeout the connection
    is cut, so the team's one concurrency slot (and the upstream connection) come back."""
    replica = _endless_tgi()
    loop.run(replica.start())
    key = keys.mint(b"pepper")
    policy = f"""pools:
  - {{name: gemma, base_model: google/gemma-2-2b-it, adapters: [{SQL}],
      endpoints: ["{replica.url}"]}}
teams:
  - name: analytics
    limits: {{concurrency: 1}}
    keys: [{{id: {key.id}, name: app, hash: {key.hash}}}]
mappings:
  - {{team: analytics, task: sql, adapter: {SQL}}}
"""
    body = json.dumps(
        {"model": "sql", "stream": True, "messages": [{"role": "user", "content": "go"}]}
    )
    request = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: g\r\n"
        f"Authorization: Bearer {key.plaintext}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n{body}"
    ).encode()
    auth = {"Authorization": f"Bearer {key.plaintext}"}
    try:
        with (
            gateway(tmp_path, policy, key_pepper="pepper", client_write_timeout_seconds="1") as (
                _,
                port,
            ),
            socket.socket() as stalled,
        ):
            stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            stalled.connect(("127.0.0.1", port))
            stalled.sendall(request)  # and never read a byte
            url = f"http://127.0.0.1:{port}/v1/models"
            models = httpx.get(url, headers=auth, timeout=10)
            assert models.status_code == 200  # the gateway itself is fine meanwhile
            chat = f"http://127.0.0.1:{port}/v1/chat/completions"
            hello = {
                "model": "sql",
                "stream": True,
                "max_tokens": 1,
                "messages": [{"role": "user", "content": "hi"}],
            }
            deadline = time.monotonic() + 30  # a safety bound: the cut comes after ~1 s
            while True:
                with httpx.stream("POST", chat, json=hello, headers=auth, timeout=10) as answer:
                    if answer.status_code != 429:
                        break
                assert time.monotonic() < deadline, "the stalled stream kept the team's slot"
                time.sleep(0.1)  # polling the gateway, bounded
            assert answer.status_code == 200
    finally:
        loop.run(replica.stop())


def test_a_slow_body_after_quick_headers_gets_a_408_and_is_closed(tmp_path: Path) -> None:
    """Headers in time, then a body that never ends: the request cannot hold its slot."""
    key = keys.mint(b"pepper")
    policy = (
        POLICY + f"teams:\n  - {{name: t, keys: [{{id: {key.id}, name: k, hash: {key.hash}}}]}}\n"
    )
    with gateway(tmp_path, policy, key_pepper="pepper", body_timeout_seconds="1") as (_, port):
        with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
            sock.sendall(
                b"POST /v1/chat/completions HTTP/1.1\r\nHost: g\r\n"
                b"Authorization: Bearer " + key.plaintext.encode() + b"\r\n"
                b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"
            )  # and not another byte of the promised thousand
            answer = b""
            while chunk := sock.recv(4096):  # bounded by the socket timeout
                answer += chunk
        assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]
        assert b"body did not arrive" in answer


def test_an_early_answer_is_the_only_answer_when_the_body_comes_after_it(tmp_path: Path) -> None:
    """A 401 needs no body; the body that follows it in its own packet is the end of that
    request, not the start of a late next one: no stray 408 ever follows the 401."""
    with gateway(tmp_path, header_timeout_seconds="1", keepalive_seconds="2") as (_, port):
        with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
            sock.sendall(
                b"POST /v1/chat/completions HTTP/1.1\r\nHost: g\r\n"
                b"Content-Type: application/json\r\nContent-Length: 20\r\n\r\n"
            )
            answer = sock.recv(4096)
            assert answer.startswith(b"HTTP/1.1 401 ")
            sock.sendall(b'{"model": "x"}      ')  # the 20 promised bytes, after the answer
            while chunk := sock.recv(4096):  # until the gateway closes (keep-alive)
                answer += chunk
        assert answer.count(b"HTTP/1.1 ") == 1, answer
