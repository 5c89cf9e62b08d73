"""Gateway overhead against talking to the upstream directly, on this machine.

    python bench/run.py [--seconds 5] [--out bench/results/latest.json]

Starts Redis, a zero-delay TGI simulator and ``lora-gateway serve`` with its production
settings (Redis registry and limiter, every limit of the team on; pinned to CPU 0 where
``taskset`` exists; the simulator and this load generator share CPU 1, so "direct" is
bounded by that one core too), then runs each
scenario twice, direct and through the gateway: requests/s, latency p50/p99, time to
first byte for streams, the gateway's CPU ms per request and its peak RSS. Loopback
only; every scenario is bounded in time and in request count.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from gateway import keys
from tests.integration.harness import free_port, wait_ready
from tests.redis_servers import RedisProcess

ADAPTER = "google-cloud-partnership/gemma-2-2b-it-lora-sql"
MAX_REQUESTS = 200_000
PROMPT = "one two three four five six seven eight nine ten eleven twelve thirteen fourteen"


@dataclass
class Result:
    scenario: str
    target: str
    concurrency: int
    requests: int
    errors: int
    rps: float
    p50_ms: float
    p99_ms: float
    ttfb_p50_ms: float | None
    cpu_ms_per_request: float | None = None
    rss_mb: float | None = None


def _pinned(cpu: int, command: list[str]) -> list[str]:
    return ["taskset", "-c", str(cpu), *command] if shutil.which("taskset") else command


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def _load(
    url: str, headers: dict[str, str], body: dict[str, object], concurrency: int, seconds: float
) -> tuple[list[float], list[float], int]:
    latencies: list[float] = []
    first_bytes: list[float] = []
    errors = 0
    deadline = time.monotonic() + seconds
    payload = json.dumps(body).encode()
    headers = {**headers, "Content-Type": "application/json"}
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker() -> None:
            nonlocal errors
            while time.monotonic() < deadline and len(latencies) + errors < MAX_REQUESTS:
                start = time.perf_counter()
                async with session.post(url, data=payload, headers=headers) as response:
                    first = None
                    async for _ in response.content.iter_any():
                        first = first or time.perf_counter()
                    if response.status != 200:
                        errors += 1
                        continue
                latencies.append(time.perf_counter() - start)
                first_bytes.append((first or time.perf_counter()) - start)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies, first_bytes, errors


def _result(
    scenario: str,
    target: str,
    concurrency: int,
    seconds: float,
    run: tuple[list[float], list[float], int],
    stream: bool,
) -> Result:
    latencies, first_bytes, errors = run
    ms = sorted(x * 1000 for x in latencies) or [0.0]
    return Result(
        scenario,
        target,
        concurrency,
        len(latencies),
        errors,
        round(len(latencies) / seconds, 1),
        round(statistics.median(ms), 3),
        round(ms[min(len(ms) - 1, int(len(ms) * 0.99))], 3),
        round(statistics.median(first_bytes) * 1000, 3) if stream and first_bytes else None,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--out", type=Path, default=Path("bench/results/latest.json"))
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(0, {1})  # the load generator stays off the gateway's CPU
    sim_port, gw_port = free_port(), free_port()
    pepper = "bench-pepper"
    key = keys.mint(pepper.encode())
    workdir = Path(tempfile.mkdtemp(prefix="lgw-bench-"))
    (workdir / "policies.yaml").write_text(f"""
pools:
  - {{name: gemma, base_model: google/gemma-2-2b-it, adapters: [{ADAPTER}],
      endpoints: ["http://127.0.0.1:{sim_port}"], system_role: fold}}
teams:
  - name: bench
    limits: {{rpm: 100000000, tpm: 100000000000, concurrency: 100000}}
    keys: [{{id: {key.id}, name: bench, hash: {key.hash}}}]
mappings:
  - {{team: bench, task: sql, adapter: {ADAPTER}}}
""")
    redis_server = RedisProcess()
    cli = [sys.executable, "-m", "gateway.cli"]
    sim = subprocess.Popen(
        _pinned(
            1,
            [
                *cli,
                "sim",
                "--port",
                str(sim_port),
                "--lora-adapters",
                ADAPTER,
                "--max-concurrent-requests",
                "100000",
            ],
        ),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    env = {
        **os.environ,
        "LGW_POLICIES": str(workdir),
        "LGW_KEY_PEPPER": pepper,
        "LGW_PORT": str(gw_port),
        "LGW_ADMIN_PORT": str(free_port()),
        "LGW_HOST": "127.0.0.1",
        "LGW_REDIS_URL": redis_server.url,  # production settings: the Redis limiter on
    }
    log = (workdir / "gateway.log").open("w")  # drained: a full pipe would stall logging
    gateway = subprocess.Popen(
        _pinned(0, [*cli, "serve"]), env=env, stdout=log, stderr=subprocess.STDOUT, text=True
    )
    results: list[Result] = []
    try:
        wait_ready(f"http://127.0.0.1:{sim_port}/health", sim)
        wait_ready(f"http://127.0.0.1:{gw_port}/readyz", gateway)
        results = asyncio.run(
            _scenarios(sim_port, gw_port, key.plaintext, gateway.pid, args.seconds)
        )
    finally:
        for process in (gateway, sim):
            process.terminate()
            process.wait(timeout=30)
        redis_server.stop()
        log.close()
    _report(results, args.out)
    return 0


async def _scenarios(
    sim_port: int, gw_port: int, key: str, gateway_pid: int, seconds: float
) -> list[Result]:
    results = []
    messages = [{"role": "user", "content": PROMPT}]
    for stream in (False, True):
        for concurrency in (1, 16, 64):
            name = f"{'stream' if stream else 'json'} 16 tokens"
            direct = {"model": ADAPTER, "messages": messages, "max_tokens": 16, "stream": stream}
            run = await _load(
                f"http://127.0.0.1:{sim_port}/v1/chat/completions", {}, direct, concurrency, seconds
            )
            results.append(_result(name, "direct", concurrency, seconds, run, stream))
            cpu_before = _cpu_seconds(gateway_pid)
            via = {**direct, "model": "sql"}
            run = await _load(
                f"http://127.0.0.1:{gw_port}/v1/chat/completions",
                {"Authorization": f"Bearer {key}"},
                via,
                concurrency,
                seconds,
            )
            result = _result(name, "gateway", concurrency, seconds, run, stream)
            cpu = _cpu_seconds(gateway_pid) - cpu_before
            result.cpu_ms_per_request = round(cpu * 1000 / max(1, result.requests), 3)
            result.rss_mb = round(_rss_mb(gateway_pid), 1)
            results.append(result)
    return results


def _report(results: list[Result], out: Path) -> None:
    machine = f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        f"{when}; {machine}",
        "",
        "| scenario | c | target | req/s | p50 ms | p99 ms | TTFB p50 ms | "
        "added p50 ms | gw CPU ms/req | gw peak RSS MB |",
        "|---" * 10 + "|",
    ]
    direct = {(r.scenario, r.concurrency): r for r in results if r.target == "direct"}
    for r in results:
        base = direct[(r.scenario, r.concurrency)]
        added = "" if r.target == "direct" else f"{r.p50_ms - base.p50_ms:+.3f}"
        lines.append(
            f"| {r.scenario} | {r.concurrency} | {r.target} | {r.rps} | {r.p50_ms} | "
            f"{r.p99_ms} | {r.ttfb_p50_ms or ''} | {added} | "
            f"{r.cpu_ms_per_request or ''} | {r.rss_mb or ''} |"
        )
    print("\n".join(lines))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {"when": when, "machine": machine, "results": [asdict(r) for r in results]}, indent=2
        )
    )


if __name__ == "__main__":
    sys.exit(main())
