"""lora-gateway beside talking to the upstream directly and beside LiteLLM's proxy.

    python bench/run.py [--seconds 4] [--litellm PATH] [--kinds json,stream]
                        [--delays 0,5] [--concurrency 1,16,64] [--out FILE]
                        [--baseline DIR]

Starts Redis, two TGI simulators (0 and 5 ms between tokens, 20-token answers) and
``lora-gateway serve`` with its production settings (Redis registry and limiter with
every limit of the team on, metrics on, tracing off), and LiteLLM's proxy (defaults, one
worker) when its executable is found (``--litellm``, beside this Python, or on PATH). The
servers under test are pinned to CPU 0 where ``taskset`` exists; the simulators and
this load generator share CPU 1. Each scenario (kind x upstream delay x concurrency)
runs against every target in turn: requests/s, latency p50/p99, time to first token,
what each adds to direct, the server's CPU ms per request and peak RSS. ``--baseline``
runs a second gateway from another checkout (``git worktree add /tmp/before <commit>``)
beside this one, on the same CPU and Redis, so a change is measured before and after in
one run, scenario by scenario. Loopback only;
every run is bounded in time and in request count. Prints a markdown table, writes JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import redis

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.load import Process, Result, compare, load, result
from bench.report import report
from gateway import keys
from tests.integration.harness import wait_ready
from tests.redis_servers import RedisProcess, free_port

TOKENS = 20
PROMPT = " ".join(f"word{i}" for i in range(40))  # echoed back: longer than the answer
# One pool per upstream delay, each serving its own adapter under its own task name.
TASKS = {
    0: ("sql", "google-cloud-partnership/gemma-2-2b-it-lora-sql"),
    5: ("code", "google-cloud-partnership/gemma-2-2b-it-lora-magicoder"),
}
CLI = [sys.executable, "-m", "gateway.cli"]


def _pinned(cpu: int, command: list[str]) -> list[str]:
    return ["taskset", "-c", str(cpu), *command] if shutil.which("taskset") else command


@contextmanager
def _server(
    command: list[str], ready_url: str, log: Path, env: dict[str, str], cwd: Path | None = None
) -> Iterator[int]:
    """A server process until the block ends; its output drained to ``log`` (a full pipe
    would stall it)."""
    with log.open("w") as out:
        process = subprocess.Popen(
            command, env=env, stdout=out, stderr=subprocess.STDOUT, text=True, cwd=cwd
        )
        try:
            wait_ready(ready_url, process, timeout=120)  # LiteLLM imports for a while
            yield process.pid
        finally:
            process.terminate()
            process.wait(timeout=30)


def _simulator(port: int, adapter: str, delay_ms: int) -> list[str]:
    command = [*CLI, "sim", "--port", str(port), "--lora-adapters", adapter]
    command += ["--max-concurrent-requests", "100000", "--itl", str(delay_ms / 1000)]
    return _pinned(1, command)


def _policies(workdir: Path, sims: dict[int, int], key: keys.NewKey) -> Path:
    pools = "\n".join(
        f"  - {{name: paced-{delay}, base_model: google/gemma-2-2b-it, adapters: [{adapter}],"
        f' endpoints: ["http://127.0.0.1:{sims[delay]}"], system_role: fold}}'
        for delay, (_, adapter) in TASKS.items()
    )
    mappings = "\n".join(
        f"  - {{team: bench, task: {task}, adapter: {adapter}}}" for task, adapter in TASKS.values()
    )
    path = workdir / "policies.yaml"
    path.write_text(f"""
pools:
{pools}
teams:
  - name: bench
    limits: {{rpm: 100000000, tpm: 100000000000, concurrency: 100000}}
    keys: [{{id: {key.id}, name: bench, hash: {key.hash}}}]
mappings:
{mappings}
""")
    return workdir


def _litellm_config(workdir: Path, sims: dict[int, int]) -> Path:
    """LiteLLM's proxy on the same simulators, through their OpenAI-compatible route."""
    models = "\n".join(
        f"  - model_name: {task}\n    litellm_params:\n      model: openai/{adapter}\n"
        f"      api_base: http://127.0.0.1:{sims[delay]}/v1\n      api_key: none"
        for delay, (task, adapter) in TASKS.items()
    )
    path = workdir / "litellm.yaml"
    path.write_text(f"model_list:\n{models}\n")
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=4.0, help="per target and scenario")
    parser.add_argument("--litellm", default=_find_litellm(), help="its executable")
    parser.add_argument("--kinds", default="json,stream")
    parser.add_argument("--delays", default="0,5", help="ms between tokens upstream")
    parser.add_argument("--concurrency", default="1,16,64")
    parser.add_argument("--out", type=Path, default=Path("bench/results/latest.json"))
    parser.add_argument("--py-spy", help="py-spy executable: profile the gateway per scenario")
    parser.add_argument(
        "--baseline", type=Path, help="another checkout of lora-gateway to run beside this one"
    )
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(0, {1})  # the load generator stays off the servers' CPU
    scenarios = [
        (kind, int(delay), int(c))
        for kind in args.kinds.split(",")
        for delay in args.delays.split(",")
        for c in args.concurrency.split(",")
    ]
    workdir = Path(tempfile.mkdtemp(prefix="lgw-bench-"))
    pepper = "bench-pepper"
    key = keys.mint(pepper.encode())
    sims = {delay: free_port() for delay in TASKS}
    gw_port, litellm_port = free_port(), free_port()
    redis_server = RedisProcess()
    with ExitStack() as stack:
        stack.callback(redis_server.stop)
        for delay, port in sims.items():
            command = _simulator(port, TASKS[delay][1], delay)
            ready, log = f"http://127.0.0.1:{port}/health", workdir / f"sim-{delay}.log"
            stack.enter_context(_server(command, ready, log, {**os.environ}))
        env = {
            **os.environ,
            "LGW_POLICIES": str(_policies(workdir, sims, key)),
            "LGW_KEY_PEPPER": pepper,
            "LGW_PORT": str(gw_port),
            "LGW_ADMIN_PORT": str(free_port()),
            "LGW_HOST": "127.0.0.1",
            "LGW_REDIS_URL": redis_server.url,  # production settings: the Redis limiter on
        }
        gateway = stack.enter_context(
            _server(
                _pinned(0, [*CLI, "serve"]),
                f"http://127.0.0.1:{gw_port}/readyz",
                workdir / "gateway.log",
                env,
            )
        )
        auth = {"Authorization": f"Bearer {key.plaintext}"}
        targets = {"gateway": (gw_port, auth, gateway)}
        if args.baseline:
            targets["baseline"] = stack.enter_context(_baseline(args.baseline, env, workdir, auth))
        if args.litellm:
            master = f"sk-{os.urandom(16).hex()}"  # it refuses to start without one
            litellm = stack.enter_context(
                _litellm(args.litellm, workdir, sims, litellm_port, master)
            )
            targets["litellm"] = (litellm_port, {"Authorization": f"Bearer {master}"}, litellm)
        idle = {name: _idle_cpu_ms_per_s(pid) for name, (_, _, pid) in targets.items()}
        profiler = (args.py_spy, args.out.parent / "profiles") if args.py_spy else None
        redis_cpu = _redis_cpu_seconds(redis_server.url)
        results = asyncio.run(
            _scenarios(scenarios, sims, targets, args.seconds, profiler, redis_cpu)
        )
    report(results, args.out, args.seconds, idle, TOKENS)
    return 0


@contextmanager
def _baseline(
    tree: Path, env: dict[str, str], workdir: Path, auth: dict[str, str]
) -> Iterator[tuple[int, dict[str, str], int]]:
    """The gateway of another checkout, with the same settings on its own ports; ``-m``
    with that checkout as the working directory imports its ``gateway`` package."""
    port = free_port()
    tree = tree.resolve()
    env = {
        **env,
        "LGW_PORT": str(port),
        "LGW_ADMIN_PORT": str(free_port()),
        "PYTHONPATH": str(tree),
        # Its own Redis database: two versions' registries need not read each other's.
        "LGW_REDIS_URL": env["LGW_REDIS_URL"].rsplit("/", 1)[0] + "/1",
    }
    with _server(
        _pinned(0, [*CLI, "serve"]),
        f"http://127.0.0.1:{port}/readyz",
        workdir / "baseline.log",
        env,
        cwd=tree,
    ) as pid:
        yield port, auth, pid


def _find_litellm() -> str | None:
    """LiteLLM's proxy command: beside this Python (``pip install -e '.[litellm]'``), or
    on PATH."""
    beside = Path(sys.executable).parent / "litellm"
    return str(beside) if beside.exists() else shutil.which("litellm")


@contextmanager
def _litellm(
    executable: str, workdir: Path, sims: dict[int, int], port: int, master_key: str
) -> Iterator[int]:
    env = {
        **os.environ,
        "LITELLM_MASTER_KEY": master_key,
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",  # loopback only: no cost map download
        "LITELLM_TELEMETRY": "False",
    }
    command = [executable, "--config", str(_litellm_config(workdir, sims))]
    command += ["--host", "127.0.0.1", "--port", str(port), "--num_workers", "1"]
    with _server(
        _pinned(0, command),
        f"http://127.0.0.1:{port}/health/liveliness",
        workdir / "litellm.log",
        env,
    ) as pid:
        yield pid


async def _scenarios(
    scenarios: list[tuple[str, int, int]],
    sims: dict[int, int],
    targets: dict[str, tuple[int, dict[str, str], int]],
    seconds: float,
    profiler: tuple[str, Path] | None,
    redis_cpu: Callable[[], float],
) -> list[Result]:
    results = []
    messages = [{"role": "user", "content": PROMPT}]
    for number, key in enumerate(scenarios):
        kind, delay, concurrency = key
        task, adapter = TASKS[delay]
        body = {"messages": messages, "max_tokens": TOKENS, "stream": kind == "stream"}
        url = f"http://127.0.0.1:{sims[delay]}/v1/chat/completions"
        run = await load(url, {}, {**body, "model": adapter}, concurrency, seconds)
        direct = result(key, "direct", run)
        results.append(direct)
        # Who goes first alternates: the first target after direct measures ~2% more CPU
        # per request (measured with one checkout against itself).
        order = list(targets) if number % 2 == 0 else list(reversed(targets))
        measured: dict[str, Result] = {}
        for target in order:
            port, headers, pid = targets[target]
            with _profiled(profiler, pid, f"{target}-{kind}-{delay}ms-c{concurrency}"):
                measured[target] = await _measure(
                    key,
                    target,
                    (port, headers, pid),
                    {**body, "model": task},
                    concurrency,
                    seconds,
                    redis_cpu,
                    direct,
                )
        results.extend(measured[target] for target in targets)
    return results


async def _measure(
    key: tuple[str, int, int],
    target: str,
    server_at: tuple[int, dict[str, str], int],
    body: dict[str, object],
    concurrency: int,
    seconds: float,
    redis_cpu: Callable[[], float],
    direct: Result,
) -> Result:
    """One target under one scenario: its figures, what it adds to direct, its CPU."""
    port, headers, pid = server_at
    server = Process(pid)
    cpu_before, redis_before = server.cpu_seconds(), redis_cpu()
    url = f"http://127.0.0.1:{port}/v1/chat/completions"
    run = await load(url, headers, body, concurrency, seconds)
    measured = result(key, target, run)
    compare(measured, direct)
    cpu_ms = (server.cpu_seconds() - cpu_before) * 1000
    measured.cpu_ms_per_request = round(cpu_ms / max(1, measured.requests), 3)
    measured.rss_mb = round(server.peak_rss_mb(), 1)
    if target in ("gateway", "baseline"):
        redis_ms = (redis_cpu() - redis_before) * 1000
        measured.redis_cpu_ms_per_1k = round(redis_ms * 1000 / max(1, measured.requests), 1)
    return measured


def _redis_cpu_seconds(url: str) -> Callable[[], float]:
    """Reads the Redis server's own CPU time (``INFO cpu``)."""
    client = redis.Redis.from_url(url)

    def seconds() -> float:
        info = client.info("cpu")
        return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])

    return seconds


def _idle_cpu_ms_per_s(pid: int, seconds: float = 2.0) -> float:
    """What a server burns doing nothing (probes, polls, flushes): CPU ms per second."""
    server = Process(pid)
    before = server.cpu_seconds()
    time.sleep(seconds)
    return round((server.cpu_seconds() - before) * 1000 / seconds, 1)


@contextmanager
def _profiled(profiler: tuple[str, Path] | None, pid: int, name: str) -> Iterator[None]:
    """py-spy samples ``pid`` meanwhile, into collapsed stacks (``bench/profile.py``)."""
    if profiler is None:
        yield
        return
    py_spy, into = profiler
    into.mkdir(parents=True, exist_ok=True)
    command = [py_spy, "record", "--pid", str(pid), "--format", "raw", "--nonblocking"]
    command += ["--rate", "1000"]
    sampler = subprocess.Popen(
        [*command, "--output", str(into / f"{name}.txt")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield
    finally:
        sampler.send_signal(signal.SIGINT)  # it writes its output on SIGINT
        sampler.wait(timeout=30)


if __name__ == "__main__":
    sys.exit(main())
