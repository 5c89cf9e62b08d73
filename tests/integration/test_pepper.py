"""Keys and the pepper: a replica never starts with a pepper that cannot match the keys
it would serve (none, or another than the one that hashed them), and says so."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import httpx

from gateway import keys
from gateway.redis_client import connect
from gateway.registry import ApiKey, Registry, Team
from gateway.settings import Settings
from gateway.store.redis_store import RedisStore
from tests.integration.harness import ADMIN_TOKEN, PEPPER, Stack, run_cli

ROOT = Path(__file__).resolve().parents[2]


def _seed(redis_url: str, pepper: bytes) -> None:
    """A registry in Redis with one key, hashed and stamped under ``pepper``."""
    key = keys.mint(pepper)
    team = Team(name="analytics", keys=(ApiKey(id=key.id, name="app", hash=key.hash),))
    registry = Registry(teams=(team,), pepper_fingerprint=keys.fingerprint(pepper))

    async def save() -> None:
        store = RedisStore(connect(Settings(redis_url=redis_url), 5.0))
        try:
            await store.save(registry)
        finally:
            await store.close()

    asyncio.run(save())


def _serve(redis_url: str, pepper: str | None) -> subprocess.CompletedProcess[str]:
    peppered = {"LGW_KEY_PEPPER": pepper} if pepper is not None else {}
    return run_cli("serve", LGW_REDIS_URL=redis_url, **peppered)


def test_serve_refuses_a_store_whose_keys_another_pepper_hashed(redis_url: str) -> None:
    _seed(redis_url, b"the deployment's pepper")
    result = _serve(redis_url, "another pepper")
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()[-1:]
    assert line.startswith("cannot start: LGW_KEY_PEPPER is not the pepper")
    assert "Traceback" not in result.stderr


def test_serve_refuses_a_store_with_keys_and_no_pepper(redis_url: str) -> None:
    _seed(redis_url, b"the deployment's pepper")
    result = _serve(redis_url, None)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        "cannot start: the registry holds API keys: set LGW_KEY_PEPPER to the secret they "
        "were hashed with"
    )


def test_keys_created_through_the_admin_api_record_their_pepper(stack: Stack) -> None:
    created = httpx.post(
        f"{stack.admin_url}/admin/v1/teams/analytics/keys",
        json={"name": "ci"},
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        timeout=10,
    )
    assert created.status_code == 201
    assert stack.services is not None
    stored = stack.services.registry.current().registry
    assert stored.pepper_fingerprint == keys.fingerprint(PEPPER.encode())


def _files(tmp_path: Path, pepper: bytes) -> Path:
    """A policy file with one key hashed under ``pepper``, and its fingerprint."""
    key = keys.mint(pepper)
    (tmp_path / "p.yaml").write_text(
        f"pepper_fingerprint: {keys.fingerprint(pepper)}\n"
        f"teams:\n  - name: analytics\n    keys: [{{id: {key.id}, name: app, hash: {key.hash}}}]\n"
    )
    return tmp_path


def test_serve_refuses_policy_files_whose_keys_another_pepper_hashed(tmp_path: Path) -> None:
    files = str(_files(tmp_path, b"the files' pepper"))
    result = run_cli("serve", LGW_POLICIES=files, LGW_KEY_PEPPER="another pepper")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("cannot start: LGW_KEY_PEPPER")


def test_policies_apply_records_the_pepper_and_refuses_another(
    tmp_path: Path, redis_url: str
) -> None:
    files = _files(tmp_path, b"the deployment's pepper")

    def apply(pepper: str) -> subprocess.CompletedProcess[str]:
        return run_cli(
            "policies", "apply", str(files), LGW_REDIS_URL=redis_url, LGW_KEY_PEPPER=pepper
        )

    assert apply("the deployment's pepper").returncode == 0
    refused = apply("another pepper")
    assert refused.returncode == 2
    assert "disagree" in refused.stderr

    async def stored() -> str | None:
        store = RedisStore(connect(Settings(redis_url=redis_url), 5.0))
        try:
            return (await store.load()).pepper_fingerprint
        finally:
            await store.close()

    assert asyncio.run(stored()) == keys.fingerprint(b"the deployment's pepper")
