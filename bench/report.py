"""The output of ``bench/run.py``: a markdown table on stdout (what bench/README.md shows)
and the same figures as JSON."""

from __future__ import annotations

import json
import os
import platform
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

from bench.load import Result


def _cell(value: float | None, signed: bool = False) -> str:
    if value is None:
        return ""
    return f"{value:+.2f}" if signed else f"{value:g}"


def report(
    results: list[Result], out: Path, seconds: float, idle: dict[str, float], tokens: int
) -> None:
    """Print the markdown table and write the JSON document."""
    machine = f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        f"{when}; {machine}; {seconds:g} s per row; {tokens}-token answers",
        "",
        "Idle CPU ms/s: " + ", ".join(f"{name} {ms:g}" for name, ms in idle.items()),
        "",
        "| kind | delay ms | c | target | req/s | p50 ms | p99 ms | TTFT p50 ms | "
        "added p50 | added p99 | added TTFT | CPU ms/req | peak RSS MB | "
        "Redis CPU ms/1k req | errors |",
        "|---" * 15 + "|",
    ]
    for r in results:
        lines.append(
            f"| {r.scenario} | {r.delay_ms} | {r.concurrency} | {r.target} | {r.rps:g} | "
            f"{r.p50_ms:g} | {r.p99_ms:g} | {_cell(r.ttft_p50_ms)} | "
            f"{_cell(r.added_p50_ms, True)} | {_cell(r.added_p99_ms, True)} | "
            f"{_cell(r.added_ttft_ms, True)} | {_cell(r.cpu_ms_per_request)} | "
            f"{_cell(r.rss_mb)} | {_cell(r.redis_cpu_ms_per_1k)} | {r.errors or ''} |"
        )
    lines += _against_baseline(results)
    print("\n".join(lines))
    out.parent.mkdir(parents=True, exist_ok=True)
    document = {"when": when, "machine": machine, "seconds": seconds, "idle_cpu_ms_per_s": idle}
    out.write_text(json.dumps({**document, "results": [asdict(r) for r in results]}, indent=2))


def _against_baseline(results: list[Result]) -> list[str]:
    """With ``--baseline``: the gateway's CPU per request against the baseline's, per row."""
    cpu = {(r.scenario, r.delay_ms, r.concurrency, r.target): r.cpu_ms_per_request for r in results}
    rows = []
    for (kind, delay, concurrency, target), base in cpu.items():
        now = cpu.get((kind, delay, concurrency, "gateway"))
        if target != "baseline" or not base or now is None:
            continue
        change = (now - base) / base * 100
        rows.append(f"| {kind} | {delay} | {concurrency} | {base:g} | {now:g} | {change:+.1f}% |")
    if not rows:
        return []
    header = "| kind | delay ms | c | baseline CPU ms/req | gateway CPU ms/req | change |"
    return ["", header, "|---" * 6 + "|", *rows]
