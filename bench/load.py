"""The load generator of ``bench/run.py``: closed-loop clients over aiohttp, and the
figures each run yields. Bounded by time and by request count."""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp

MAX_REQUESTS = 200_000


@dataclass
class Run:
    """What one target did under one scenario."""

    latencies: list[float]
    first_bytes: list[float]
    errors: int
    seconds: float


@dataclass
class Result:
    scenario: str
    delay_ms: int
    concurrency: int
    target: str
    requests: int
    errors: int
    rps: float
    p50_ms: float
    p99_ms: float
    ttft_p50_ms: float | None
    added_p50_ms: float | None = None
    added_p99_ms: float | None = None
    added_ttft_ms: float | None = None
    cpu_ms_per_request: float | None = None
    rss_mb: float | None = None
    redis_cpu_ms_per_1k: float | None = None
    """Redis CPU per 1,000 requests (the gateway's admissions and settlements)."""

    @property
    def key(self) -> tuple[str, int, int]:
        return self.scenario, self.delay_ms, self.concurrency


async def load(
    url: str, headers: dict[str, str], body: dict[str, object], concurrency: int, seconds: float
) -> Run:
    """``concurrency`` clients, each sending ``body`` again as soon as its answer ends."""
    latencies: list[float] = []
    first_bytes: list[float] = []
    errors = 0
    payload = json.dumps(body).encode()
    headers = {**headers, "Content-Type": "application/json"}
    connector = aiohttp.TCPConnector(limit=concurrency)
    started = time.monotonic()
    deadline = started + seconds
    async with aiohttp.ClientSession(connector=connector) as session:

        async def client() -> None:
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

        await asyncio.gather(*(client() for _ in range(concurrency)))
    return Run(latencies, first_bytes, errors, time.monotonic() - started)


def result(key: tuple[str, int, int], target: str, run: Run) -> Result:
    scenario, delay_ms, concurrency = key
    ms = sorted(x * 1000 for x in run.latencies) or [0.0]
    ttft = statistics.median(run.first_bytes) * 1000 if run.first_bytes else None
    return Result(
        scenario,
        delay_ms,
        concurrency,
        target,
        len(run.latencies),
        run.errors,
        round(len(run.latencies) / run.seconds, 1),
        round(statistics.median(ms), 3),
        round(ms[min(len(ms) - 1, int(len(ms) * 0.99))], 3),
        round(ttft, 3) if scenario == "stream" and ttft is not None else None,
    )


def compare(measured: Result, direct: Result) -> None:
    """Fill in what ``measured`` adds to talking to the upstream directly."""
    measured.added_p50_ms = round(measured.p50_ms - direct.p50_ms, 3)
    measured.added_p99_ms = round(measured.p99_ms - direct.p99_ms, 3)
    if measured.ttft_p50_ms is not None and direct.ttft_p50_ms is not None:
        measured.added_ttft_ms = round(measured.ttft_p50_ms - direct.ttft_p50_ms, 3)


class Process:
    """CPU time and peak RSS of a server process and its children, from /proc."""

    def __init__(self, pid: int) -> None:
        self.pid = pid

    def cpu_seconds(self) -> float:
        return sum(_stat_cpu(pid) for pid in self._tree())

    def peak_rss_mb(self) -> float:
        return sum(_status_kb(pid, "VmHWM:") for pid in self._tree()) / 1024

    def _tree(self) -> list[int]:
        tree, parents = [self.pid], {self.pid}
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit() and _ppid(int(entry.name)) in parents:
                tree.append(int(entry.name))
        return tree


def _stat_fields(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:  # gone meanwhile
        return []


def _ppid(pid: int) -> int:
    fields = _stat_fields(pid)
    return int(fields[1]) if fields else -1


def _stat_cpu(pid: int) -> float:
    fields = _stat_fields(pid)
    ticks = int(fields[11]) + int(fields[12]) if fields else 0
    return ticks / os.sysconf("SC_CLK_TCK")


def _status_kb(pid: int, field: str) -> int:
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return 0
    return next((int(x.split()[1]) for x in lines if x.startswith(field)), 0)
