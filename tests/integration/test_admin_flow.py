"""The admin API as the platform team uses it, on two replicas sharing Redis: changes
reach the data plane of both as they happen (announced, not found by polling); secrets
never leak; policies as code."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from gateway.sim import SimConfig
from tests.integration.harness import LoopThread, Replica, eventually
from tests.integration.test_distributed import PEPPER, Fleet, seeded

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "flow-admin-token-0123456789"
SQL = "google-cloud-partnership/gemma-2-2b-it-lora-sql"
CODE = "google-cloud-partnership/gemma-2-2b-it-lora-magicoder"


@pytest.fixture
def fleet(loop: LoopThread, redis_url: str) -> Iterator[Fleet]:
    yield from seeded(loop, redis_url, SimConfig())


@pytest.fixture
def replicas(fleet: Fleet) -> Iterator[list[Replica]]:
    started = [
        Replica(
            fleet.redis_url,
            PEPPER,
            admin_token=TOKEN,
            upstream_allow="127.0.0.1/32",
            registry_poll_seconds="3600",  # no polling within a test: changes are announced
        )
        for _ in range(2)
    ]
    yield started
    for replica in started:
        replica.stop()


def _admin(
    replica: Replica, method: str, path: str, body: Any = None, token: str = TOKEN
) -> httpx.Response:
    return httpx.request(
        method,
        f"http://127.0.0.1:{replica.admin_port}/admin/v1{path}",
        json=body,
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )


def _answer(replica: Replica, key: str) -> httpx.Response:
    return httpx.post(
        f"{replica.url}/v1/chat/completions",
        timeout=10,
        headers={"Authorization": f"Bearer {key}"},
        json={"model": "sql", "messages": [{"role": "user", "content": "hi"}]},
    )


def _answers_with(replica: Replica, key: str, status: int) -> bool:
    return _answer(replica, key).status_code == status


def _announced(check: Callable[[], bool]) -> None:
    """Poll ``check()`` until true. The replicas do not poll the registry during a test,
    so only the change's announcement can make it true (a bounded wait: that takes
    milliseconds)."""
    eventually(check, "the change reaching the replica")


def test_a_team_key_and_mapping_created_by_api_serve_on_both_replicas(
    replicas: list[Replica],
) -> None:
    one, two = replicas
    assert (
        _admin(one, "POST", "/teams", {"name": "growth", "limits": {"rpm": 100}}).status_code == 201
    )
    for adapter in (SQL, CODE):  # the examples own these adapters: grant them to growth
        owner = "analytics" if adapter == SQL else "devtools"
        assert (
            _admin(
                one, "POST", "/adapters", {"id": adapter, "owner": owner, "grants": ["growth"]}
            ).status_code
            == 201
        )
    created = _admin(one, "POST", "/teams/growth/keys", {"name": "app"})
    assert created.status_code == 201
    key = created.json()["key"]
    assert _admin(one, "PUT", "/teams/growth/mappings/sql", {"adapter": SQL}).status_code == 200
    for replica in (one, two):
        _announced(partial(_answers_with, replica, key, 200))
        assert _answer(replica, key).headers["x-lgw-adapter"] == SQL
    assert _admin(one, "PUT", "/teams/growth/mappings/sql", {"adapter": CODE}).status_code == 200
    assert _answer(one, key).headers["x-lgw-adapter"] == CODE  # the very next request
    _announced(lambda: _answer(two, key).headers.get("x-lgw-adapter") == CODE)
    team_admin = _admin(one, "POST", "/teams/growth/keys", {"name": "lead", "role": "admin"})
    spend = _admin(two, "GET", "/usage", token=team_admin.json()["key"]).json()
    assert {row["team"] for row in spend} == {"growth"}  # its own team only, any replica
    assert {row["adapter"] for row in spend} == {SQL, CODE}
    assert all(row["input_tokens"] > 0 for row in spend)
    everyone = _admin(two, "GET", "/usage").json()
    assert {row["team"] for row in everyone} == {"growth"}  # the only team with traffic
    key_id = created.json()["id"]
    assert _admin(two, "DELETE", f"/teams/growth/keys/{key_id}").status_code == 204
    for replica in (one, two):
        _announced(partial(_answers_with, replica, key, 401))


def test_a_rotated_key_works_beside_the_new_one_until_the_grace_ends(
    replicas: list[Replica], fleet: Fleet
) -> None:
    one, _ = replicas
    old = fleet.keys["analytics"]
    key_id = old.split("-")[1]
    rotated = _admin(one, "POST", f"/teams/analytics/keys/{key_id}/rotate", {"grace_seconds": 0})
    assert rotated.status_code == 201
    new = rotated.json()["key"]
    assert _answer(one, new).status_code == 200
    assert _answer(one, old).status_code == 401  # no grace: the old key died at once
    kept = _admin(
        one, "POST", f"/teams/analytics/keys/{rotated.json()['id']}/rotate", {"grace_seconds": 3600}
    )
    assert _answer(one, new).status_code == 200  # within the grace period both work
    assert _answer(one, kept.json()["key"]).status_code == 200


def test_no_secret_appears_in_responses_logs_or_audit(
    replicas: list[Replica], fleet: Fleet
) -> None:
    one, two = replicas
    bodies = []
    created = _admin(one, "POST", "/teams/analytics/keys", {"name": "canary", "role": "admin"})
    secret_key = created.json()["key"]
    calls: list[tuple[str, str, Any]] = [
        ("GET", "/teams/analytics/keys", None),
        ("GET", f"/teams/analytics/keys/{created.json()['id']}", None),
        ("GET", "/teams", None),
        ("GET", "/audit", None),
        ("GET", "/teams/nope/keys", None),
        ("POST", "/teams/analytics/keys", {"name": "x", "hash": "0" * 64}),
    ]
    for method, path, body in calls:
        for token in (TOKEN, secret_key, fleet.keys["devtools"], "wrong"):
            bodies.append(_admin(one, method, path, body, token=token).text)
    bodies.append(_answer(one, "lgw-aaaaaaaaaaaa-" + "x" * 43).text)
    bodies.append(httpx.get(f"http://127.0.0.1:{one.admin_port}/metrics").text)
    client = redis.Redis.from_url(fleet.redis_url, decode_responses=True)
    audit = str(client.xrange("lgw:audit"))
    stored_hashes = [
        k["hash"]
        for t in __import__("json").loads(client.hget("lgw:registry", "doc"))["teams"]
        for k in t["keys"]
    ]
    client.close()
    logs = one.stop() + two.stop()
    secrets = [TOKEN, secret_key, *fleet.keys.values(), *stored_hashes]
    for secret in secrets:
        for sink, text in (("responses", "\n".join(bodies)), ("audit", audit), ("logs", logs)):
            assert secret not in text, f"a secret leaked into {sink}"


def test_policies_apply_then_diff_reports_no_change(redis_url: str) -> None:
    env = {**os.environ, "LGW_REDIS_URL": redis_url}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "gateway.cli", "policies", *args],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
            check=True,
        )

    examples = str(ROOT / "policies" / "examples")
    assert "11 records applied" in cli("apply", examples).stdout
    assert cli("diff", examples).stdout.strip() == "no change"
    client = redis.Redis.from_url(redis_url)
    audited = client.xlen("lgw:audit")
    assert cli("apply", examples).stdout.strip() == "no change"
    assert client.xlen("lgw:audit") == audited  # nothing applied, nothing audited
    client.close()
