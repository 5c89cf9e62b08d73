"""The Grafana dashboard queries only metrics that really exist: the gateway's own, from
its live ``/metrics``, and TGI's, from the simulator (TGI's names, exactly)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx

from tests.integration.harness import Stack

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "lora-gateway.json"
_METRIC = re.compile(r"\b((?:lgw|tgi)_[a-z_]+)\b")
_SUFFIXES = ("_bucket", "_count", "_sum")


def _queried() -> set[str]:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return {
        name
        for panel in panels
        for target in panel["targets"]
        for name in _METRIC.findall(target["expr"])
    }


def _exported(text: str) -> set[str]:
    names = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            name, kind = line.split()[2:4]
            names.add(
                name + "_total" if kind == "counter" and not name.endswith("_total") else name
            )
            if kind == "histogram":
                names.update(name + suffix for suffix in _SUFFIXES)
    return names


def test_every_dashboard_query_names_a_real_metric(stack: Stack) -> None:
    httpx.post(
        f"{stack.url}/v1/chat/completions",
        timeout=10,
        json={"model": "sql", "messages": [{"role": "user", "content": "hi"}]},
        headers={"Authorization": f"Bearer {stack.keys['analytics']}"},
    )
    gateway = _exported(httpx.get(f"{stack.admin_url}/metrics", timeout=10).text)
    tgi = {
        line.split()[0].split("{")[0]
        for line in httpx.get(f"{stack.sim.url}/metrics", timeout=10).text.splitlines()
        if line and not line.startswith("#")
    }
    queried = _queried()
    assert {"lgw_requests_total", "lgw_cost_total", "tgi_queue_size"} <= queried
    missing = {
        name for name in queried if name not in (gateway if name.startswith("lgw_") else tgi)
    }
    assert not missing, f"the dashboard queries metrics nobody exports: {missing}"
