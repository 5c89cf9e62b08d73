"""``lora-gateway demo``: a simulated TGI pool, the gateway on it, and a key per team."""

from __future__ import annotations

import json
import logging
import secrets
from pathlib import Path

from pydantic import SecretStr

from gateway import keys
from gateway.registry import ApiKey, Pool, Registry
from gateway.server import check_ports_free, plane_servers, run_until_signalled
from gateway.services import build_services
from gateway.settings import Settings
from gateway.sim import SimConfig, Simulator
from gateway.store.base import InMemoryStore
from gateway.store.files import load_policies

log = logging.getLogger("gateway")
EXAMPLES = Path(__file__).resolve().parent.parent / "policies" / "examples"


def with_keys(registry: Registry, pepper: bytes) -> tuple[Registry, dict[str, str]]:
    """The registry with one new key per team, and those keys in plaintext (shown once)."""
    plaintexts: dict[str, str] = {}
    teams = []
    for team in registry.teams:
        new = keys.mint(pepper)
        plaintexts[team.name] = new.plaintext
        key = ApiKey(id=new.id, name="demo", hash=new.hash)
        teams.append(team.model_copy(update={"keys": (*team.keys, key)}))
    return registry.model_copy(update={"teams": tuple(teams)}), plaintexts


async def demo(
    settings: Settings, policies: Path, keys_file: Path | None, ttft: float, itl: float
) -> None:
    """Run the demo until SIGINT or SIGTERM; the simulators stop with the gateway.
    Taken ports stop it before it prints or writes anything."""
    check_ports_free(settings.host, (settings.port, settings.admin_port))
    pepper = (
        settings.key_pepper.get_secret_value() if settings.key_pepper else secrets.token_urlsafe(32)
    )
    admin_token = (
        settings.admin_token.get_secret_value()
        if settings.admin_token
        else secrets.token_urlsafe(24)
    )  # a demo's own, printed once below
    settings = settings.model_copy(
        update={"key_pepper": SecretStr(pepper), "admin_token": SecretStr(admin_token)}
    )
    registry = load_policies(policies)
    simulators, pools = [], []
    for pool in registry.pools:
        sim = Simulator(
            SimConfig(
                model_id=pool.base_model, lora_adapters=",".join(pool.adapters), ttft=ttft, itl=itl
            )
        )
        url = await sim.start("127.0.0.1", 0)
        simulators.append(sim)
        pools.append(pool.model_copy(update={"endpoints": (url,)}))
    registry = registry.model_copy(update={"pools": tuple(pools)})
    registry, plaintexts = with_keys(registry, pepper.encode())
    registry = registry.model_copy(update={"pepper_fingerprint": keys.fingerprint(pepper.encode())})
    if settings.redis_url:
        services = build_services(settings)
        await services.registry.store.save(registry)  # other `serve` replicas join from here
    else:
        services = build_services(settings, InMemoryStore(registry))
    servers = plane_servers(settings, services)
    _announce(settings, pools, plaintexts, keys_file)
    try:
        await run_until_signalled(servers)
    finally:
        for sim in simulators:
            await sim.stop()


def _announce(
    settings: Settings, pools: list[Pool], plaintexts: dict[str, str], keys_file: Path | None
) -> None:
    if settings.redis_url:
        log.info("demo registry saved to Redis: `lora-gateway serve` replicas may join")
    else:
        log.warning("demo mode: in-memory registry and limits, ONE replica (no LGW_REDIS_URL)")
    for pool in pools:
        print(
            f"simulated TGI pool {pool.name}: {pool.endpoints[0]} ({pool.base_model}, "
            f"{len(pool.adapters)} adapters)",
            flush=True,
        )
    print(f"gateway: http://127.0.0.1:{settings.port}/v1  (admin: :{settings.admin_port})")
    if settings.admin_token is not None:
        print(f"  admin token    {settings.admin_token.get_secret_value()}")
    for team, key in plaintexts.items():
        print(f"  {team:14} {key}")
    if keys_file is not None:
        keys_file.write_text(json.dumps(plaintexts, indent=2) + "\n")
        keys_file.chmod(0o600)
        print(f"keys written to {keys_file}")
    print("", flush=True)
