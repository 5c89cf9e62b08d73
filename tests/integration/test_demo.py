"""``lora-gateway demo`` as a user runs it: a real process, real ports, SIGTERM to stop."""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from tests.integration.harness import Demo

SQL = "google-cloud-partnership/gemma-2-2b-it-lora-sql"


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[Demo]:
    running = Demo(tmp_path / "keys.json")
    yield running
    running.kill()


def test_demo_serves_every_team_and_stops_cleanly_on_sigterm(demo: Demo) -> None:
    url, keys, process = demo.url, demo.keys, demo.process
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
    logged = [json.loads(line) for line in output.splitlines() if line.startswith('{"request_id"')]
    assert [(r["task"], r["stream"], r["outcome"]) for r in logged] == [
        ("sql", False, "ok"),
        ("sql", True, "ok"),
        ("other", False, "model_not_found"),  # an unmapped name is never echoed
    ]  # one line per request, all written out before the process ended
    simulator = next(line for line in output.splitlines() if "simulated TGI pool" in line)
    sim_port = int(simulator.split("http://127.0.0.1:")[1].split(" ")[0])
    with pytest.raises(httpx.ConnectError):  # the simulator stopped with the gateway
        httpx.get(f"http://127.0.0.1:{sim_port}/health", timeout=2)
