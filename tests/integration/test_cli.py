"""The ``lora-gateway`` commands as an operator runs them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import openai
import pytest

from gateway import keys
from gateway.sim import SimConfig, Simulator
from tests.integration.harness import LoopThread, wait_ready
from tests.redis_servers import free_port

ROOT = Path(__file__).resolve().parents[2]
PEPPER = "cli-test-pepper"


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
        check=False,
    )


def test_policies_validate_accepts_the_examples() -> None:
    result = _cli("policies", "validate", str(ROOT / "policies" / "examples"))
    assert result.returncode == 0
    assert "valid (3 teams, 1 pools, 3 adapters, 4 mappings)" in result.stdout


def test_policies_validate_names_file_line_and_field() -> None:
    bad = ROOT / "tests" / "policies" / "bad" / "unserved_adapter.yaml"
    result = _cli("policies", "validate", str(bad))
    assert result.returncode == 2
    assert f"{bad}:11: adapter: no pool serves 'org/sqll'" in result.stderr
    assert "Traceback" not in result.stderr


def test_keys_new_needs_a_pepper_and_prints_a_hashed_entry() -> None:
    env = {k: v for k, v in os.environ.items() if k != "LGW_KEY_PEPPER"}
    refused = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "keys", "new", "--team", "a"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert refused.returncode == 2
    minted = _cli("keys", "new", "--team", "analytics", env={"LGW_KEY_PEPPER": PEPPER})
    plaintext = minted.stderr.split("key (shown once): ")[1].strip()
    key_id, secret = keys.split(plaintext) or ("", "")
    assert f"id: {key_id}" in minted.stdout
    assert f"hash: {keys.hash_secret(PEPPER.encode(), secret)}" in minted.stdout
    assert secret not in minted.stdout


SQL = "google-cloud-partnership/gemma-2-2b-it-lora-sql"


@contextmanager
def served(tmp_path: Path, sim_url: str) -> Iterator[tuple[subprocess.Popen[str], int, str]]:
    """``lora-gateway serve`` on a policy file with one team, one key, one mapping to the
    simulator at ``sim_url``; yields the process, its port and the key."""
    key = keys.mint(PEPPER.encode())
    (tmp_path / "deployment.yaml").write_text(f"""
pools:
  - {{name: gemma, base_model: google/gemma-2-2b-it, adapters: [{SQL}],
      endpoints: ["{sim_url}"], system_role: fold}}
teams:
  - {{name: analytics, keys: [{{id: {key.id}, name: app, hash: {key.hash}}}]}}
mappings:
  - {{team: analytics, task: sql, adapter: {SQL}}}
""")
    port = free_port()
    env = {
        **os.environ,
        "LGW_POLICIES": str(tmp_path),
        "LGW_KEY_PEPPER": PEPPER,
        "LGW_PORT": str(port),
        "LGW_ADMIN_PORT": str(free_port()),
        "LGW_HOST": "127.0.0.1",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "serve"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_ready(f"http://127.0.0.1:{port}/readyz", process)
        yield process, port, key.plaintext
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()


@pytest.fixture
def sim(loop: LoopThread) -> Iterator[Simulator]:
    # sim-fault=stall: the first token, then 3 s of silence, then the rest at once
    simulator = Simulator(SimConfig(stall_seconds=3, lora_adapters=SQL))
    loop.run(simulator.start())
    yield simulator
    loop.run(simulator.stop())


def test_serve_routes_with_keys_from_policy_files(tmp_path: Path, sim: Simulator) -> None:
    with (
        served(tmp_path, sim.url) as (process, port, key),
        openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=key, max_retries=0) as client,
    ):
        answer = client.chat.completions.create(
            model="sql", messages=[{"role": "user", "content": "hi"}]
        )
        assert answer.choices[0].message.content == f"[{SQL}] hi"
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=30)
    assert process.returncode == 0, output
    assert "single-node mode" in output


def test_serve_refuses_policies_with_keys_but_no_pepper(tmp_path: Path) -> None:
    key = keys.mint(b"x")
    (tmp_path / "p.yaml").write_text(
        f"teams:\n  - name: t\n    keys:\n      - {{id: {key.id}, name: k, hash: {key.hash}}}\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "LGW_KEY_PEPPER"}
    env["LGW_POLICIES"] = str(tmp_path)
    result = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "serve"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert result.returncode == 2
    assert "LGW_KEY_PEPPER" in result.stderr


def test_sigterm_lets_a_running_stream_finish(tmp_path: Path, sim: Simulator) -> None:
    body = {
        "model": "sql",
        "stream": True,
        "messages": [{"role": "user", "content": "sim-fault=stall one two three four five"}],
    }
    with (
        served(tmp_path, sim.url) as (process, port, key),
        httpx.Client(timeout=30) as client,
        client.stream(
            "POST",
            f"http://127.0.0.1:{port}/v1/chat/completions",
            json=body,
            headers={"Authorization": f"Bearer {key}"},
        ) as stream,
    ):
        events = (line for line in stream.iter_lines() if line)
        first = next(events)
        process.send_signal(signal.SIGTERM)  # mid-stream: the rest comes in 3 s
        assert sim.seen[-1].outcome == "open"  # really mid-stream
        rest = list(events)
        output, _ = process.communicate(timeout=30)
    assert first.startswith("data: {")
    assert rest[-1] == "data: [DONE]"  # the stream ran to its end
    assert not any('"error"' in line for line in rest)  # not cut short with an error event
    assert process.returncode == 0, output
