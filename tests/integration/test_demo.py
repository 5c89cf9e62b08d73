"""``lora-gateway demo`` as a user runs it: a real process, real ports, SIGTERM to stop."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

SQL = "google-cloud-partnership/gemma-2-2b-it-lora-sql"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_ready(url: str, process: subprocess.Popen[str], deadline: float) -> None:
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"demo exited early: {process.communicate()}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)  # polling a readiness probe, bounded by the deadline
    raise AssertionError("demo did not become ready")


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[tuple[str, dict[str, str], subprocess.Popen[str]]]:
    port, admin_port = _free_port(), _free_port()
    keys_file = tmp_path / "keys.json"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gateway.cli",
            "demo",
            "--port",
            str(port),
            "--admin-port",
            str(admin_port),
            "--keys-file",
            str(keys_file),
            "--ttft",
            "0",
            "--itl",
            "0",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        _wait_ready(f"http://127.0.0.1:{port}/readyz", process, time.monotonic() + 30)
        yield f"http://127.0.0.1:{port}", json.loads(keys_file.read_text()), process
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()


def test_demo_serves_every_team_and_stops_cleanly_on_sigterm(
    demo: tuple[str, dict[str, str], subprocess.Popen[str]],
) -> None:
    url, keys, process = demo
    assert sorted(keys) == ["analytics", "devtools", "localization"]
    with openai.OpenAI(base_url=f"{url}/v1", api_key=keys["analytics"], max_retries=0) as client:
        answer = client.chat.completions.create(
            model="sql", messages=[{"role": "user", "content": "count orders"}]
        )
        assert answer.choices[0].message.content == f"[{SQL}] count orders"
        streamed = list(
            client.chat.completions.create(
                model="sql",
                messages=[{"role": "user", "content": "count orders"}],
                stream=True,
                stream_options={"include_usage": True},
            )
        )
        assert streamed[-1].usage is not None and streamed[-1].usage.total_tokens > 0
        with pytest.raises(openai.NotFoundError):
            client.chat.completions.create(
                model="code", messages=[{"role": "user", "content": "x"}]
            )
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=30)
    assert process.returncode == 0, output
    simulator = next(line for line in output.splitlines() if "simulated TGI pool" in line)
    sim_port = int(simulator.split("http://127.0.0.1:")[1].split(" ")[0])
    with pytest.raises(httpx.ConnectError):  # the simulator stopped with the gateway
        httpx.get(f"http://127.0.0.1:{sim_port}/health", timeout=2)
