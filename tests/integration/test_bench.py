"""``bench/run.py`` keeps working: a tiny run end to end (figures are not checked here;
timing belongs to the benchmark, not to tests)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_benchmark_runs_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "latest.json"
    command = [sys.executable, "bench/run.py", "--seconds", "0.3", "--delays", "0"]
    command += ["--concurrency", "2", "--litellm", "", "--out", str(out)]
    command += ["--baseline", str(ROOT)]  # this checkout beside itself: the option works
    finished = subprocess.run(
        command, cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )
    assert finished.returncode == 0, finished.stdout + finished.stderr
    results = json.loads(out.read_text())["results"]
    rows = {(r["scenario"], r["target"]): r for r in results}
    targets = ("direct", "gateway", "baseline")
    assert set(rows) == {(k, t) for k in ("json", "stream") for t in targets}
    for row in rows.values():
        assert row["requests"] > 0 and row["errors"] == 0, row
    assert rows["stream", "gateway"]["added_ttft_ms"] is not None
    assert "| json | 0 | 2 | gateway |" in finished.stdout  # the markdown table
    assert "| json | 0 | 2 | baseline |" in finished.stdout
    assert "baseline CPU ms/req" in finished.stdout  # the before/after table
