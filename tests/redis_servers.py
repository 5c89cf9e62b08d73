"""Real Redis servers for tests: ``REDIS_URL``, else testcontainers when a Docker engine
answers, else a ``redis-server`` binary on a free port; plus servers the chaos tests may
kill, pause and restart, a three-node Redis Cluster, and a log of the commands a server
executed (what a test reads instead of keys that may have expired)."""

from __future__ import annotations

import os
import random
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, cast

import redis

PATIENCE = 30.0
"""How long a test waits for something that takes milliseconds on an idle machine: a bound
that only a hang reaches (never what a test measures)."""


def free_port() -> int:
    """A loopback port that was free a moment ago (for servers started as processes)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisProcess:
    """A ``redis-server`` this test session started, and may break on purpose."""

    def __init__(self, port: int | None = None, *extra: str) -> None:
        self.port = port or free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="lgw-redis-"))
        self._extra = extra
        self.process: subprocess.Popen[bytes] | None = None
        self.start()

    @property
    def url(self) -> str:
        """The server's URL."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start (or restart) the server on its port and wait until it answers."""
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed (.ci/run installs it)")
        self.process = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.dir),
                *self._extra,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_redis(self.url)

    def kill(self) -> None:
        """SIGKILL: the server vanishes, connections are refused."""
        assert self.process is not None
        self.process.kill()
        self.process.wait(10)

    def pause(self) -> None:
        """SIGSTOP: the server hangs, connections stay open and silent."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT after ``pause``."""
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        """Stop for good (resuming first if paused)."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
            self.process.terminate()
            self.process.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)


def wait_for_redis(url: str, timeout: float = 10) -> None:
    """Block until ``PING`` answers."""
    deadline = time.monotonic() + timeout
    client = redis.Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5)
    try:
        while time.monotonic() < deadline:
            try:
                if client.ping():
                    return
            except redis.RedisError:
                time.sleep(0.02)  # polling a starting server, bounded by the deadline
        raise RuntimeError(f"redis at {url} did not start")
    finally:
        client.close()


def _docker_answers() -> bool:
    if not os.environ.get("DOCKER_HOST") and not Path("/var/run/docker.sock").exists():
        return False
    try:
        import docker  # type: ignore[import-untyped]

        client = docker.from_env(timeout=2)
    except Exception:
        return False
    try:
        return bool(client.ping())
    except Exception:
        return False
    finally:
        client.close()


@contextmanager
def shared_redis() -> Iterator[str]:
    """A Redis for tests that only use it (in the fixture order of the handbook)."""
    if url := os.environ.get("REDIS_URL"):
        yield url
        return
    if _docker_answers():
        from testcontainers.community.redis import RedisContainer

        with RedisContainer() as container:
            host = container.get_container_host_ip()
            yield f"redis://{host}:{container.get_exposed_port(6379)}/0"
        return
    server = RedisProcess()
    try:
        yield server.url
    finally:
        server.stop()


@contextmanager
def redis_cluster(nodes: int = 3) -> Iterator[list[str]]:
    """A local Redis Cluster of ``nodes`` masters; yields their URLs."""
    servers = [
        RedisProcess(
            _cluster_port(),
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            "nodes.conf",
            "--cluster-node-timeout",
            "2000",
        )
        for _ in range(nodes)
    ]
    try:
        addresses = [f"127.0.0.1:{s.port}" for s in servers]
        subprocess.run(
            [
                "redis-cli",
                "--cluster",
                "create",
                *addresses,
                "--cluster-replicas",
                "0",
                "--cluster-yes",
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )
        for server in servers:
            _wait_cluster_ok(server.url)
        yield [s.url for s in servers]
    finally:
        for server in servers:
            server.stop()


def _cluster_port() -> int:
    """A free port whose cluster-bus port (+10000) is free and valid too."""
    for _ in range(100):
        port = random.randint(20000, 50000)
        if all(_bindable(p) for p in (port, port + 10000)):
            return port
    raise RuntimeError("no free port pair for a cluster node")


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _wait_cluster_ok(url: str, timeout: float = 20) -> None:
    client = redis.Redis.from_url(url, decode_responses=True)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if "cluster_state:ok" in str(cast(Any, client).execute_command("CLUSTER", "INFO")):
                return
            time.sleep(0.05)  # polling cluster convergence, bounded by the deadline
        raise RuntimeError("the cluster did not converge")
    finally:
        client.close()


@dataclass(frozen=True)
class Command:
    """One command a Redis server executed, as ``MONITOR`` reported it."""

    time: float
    """The server's clock when it ran the command (seconds since the epoch)."""
    source: str
    """``lua`` for a command a script ran, else the client's address."""
    args: tuple[str, ...]


_MONITOR_LINE = re.compile(r"(\d+\.\d+) \[\d+ ([^\]]*)\] (.*)", re.DOTALL)
_QUOTED = re.compile(r'"((?:[^"\\]|\\.)*)"', re.DOTALL)
_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", "a": "\a", "b": "\b"}


def _unquote(text: str) -> str:
    """One argument as ``MONITOR`` quotes it (``sdscatrepr``), back to its bytes as text."""
    out, i = [], 0
    while i < len(text):
        char = text[i]
        if char != "\\":
            out.append(char)
            i += 1
        elif text[i + 1] == "x":
            out.append(chr(int(text[i + 2 : i + 4], 16)))
            i += 4
        else:
            out.append(_ESCAPES.get(text[i + 1], text[i + 1]))
            i += 2
    return "".join(out)


def parse_monitor_line(line: str) -> Command:
    """``1700000000.123456 [0 lua] "HINCRBYFLOAT" "key" "u" "12"`` as a ``Command``."""
    matched = _MONITOR_LINE.fullmatch(line)
    if matched is None:
        raise ValueError(f"not a MONITOR line: {line!r}")
    stamp, source, rest = matched.groups()
    return Command(float(stamp), source, tuple(_unquote(a) for a in _QUOTED.findall(rest)))


class CommandLog:
    """Every command the given servers execute while the log is open, the commands that
    Lua scripts run included (``MONITOR`` shows them): a durable record of every write,
    where the keys written may expire before a test could read them.

    ``sync()`` returns the log up to now without sleeping: it sends each server a unique
    ``ECHO`` and reads that server's monitor until the echo appears, so everything the
    server ran before it is in the log. Use as a context manager (it closes the
    connections)."""

    def __init__(self, *urls: str, patience: float = PATIENCE) -> None:
        self.commands: list[Command] = []
        self.synced_at = 0.0
        """The server clock (seconds) when the last ``sync()`` reached its sentinel."""
        self._patience = patience
        self._clients = [
            redis.Redis.from_url(url, socket_timeout=patience, socket_connect_timeout=patience)
            for url in urls
        ]
        self._monitors: list[Any] = []
        try:
            for client in self._clients:
                monitor = cast(Any, client).monitor()
                monitor.__enter__()  # sends MONITOR and reads its OK: from now on, all is seen
                self._monitors.append(monitor)
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> CommandLog:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def sync(self) -> list[Command]:
        """Everything the servers executed before this call, in each server's order (a
        copy: later calls return more)."""
        deadline = time.monotonic() + self._patience
        for client, monitor in zip(self._clients, self._monitors, strict=True):
            sentinel = f"lgw-test-command-log-{uuid.uuid4().hex}"
            client.echo(sentinel)
            while True:
                assert time.monotonic() < deadline, "the monitor never showed the sentinel"
                reply = monitor.connection.read_response()
                line = reply.decode("utf-8", "replace") if isinstance(reply, bytes) else reply
                command = parse_monitor_line(str(line))
                if command.args and command.args[0].upper() == "ECHO":
                    if command.args[1:] == (sentinel,):
                        self.synced_at = command.time
                        break
                    continue  # another log's sentinel
                self.commands.append(command)
        return list(self.commands)

    def close(self) -> None:
        """Close the monitors and the clients (a server that died already is fine)."""
        for monitor in self._monitors:
            with suppress(redis.RedisError, OSError):
                monitor.__exit__(None, None, None)
        self._monitors = []
        for client in self._clients:
            client.close()
