"""``lora-gateway``: serve, demo, sim, policies, keys."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from pydantic import ValidationError
from redis.exceptions import RedisError

from gateway.accounting import requestlog
from gateway.errors import StartRefused
from gateway.registry import Registry
from gateway.settings import Settings
from gateway.store.base import VersionConflict
from gateway.store.files import PolicyError, load_policies


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``lora-gateway`` console script."""
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    requestlog.to_stdout()
    try:
        return int(args.run(args) or 0)
    except PolicyError as exc:
        print("invalid policies:\n" + "\n".join(f"  {p}" for p in exc.problems), file=sys.stderr)
        return 2
    except ValidationError as exc:
        print(f"invalid settings: {exc}", file=sys.stderr)
        return 2
    except StartRefused as exc:
        print(f"cannot start: {exc}", file=sys.stderr)
        return 2
    except RedisError as exc:  # a one-line reason, never a page of traceback
        print(f"cannot start: Redis (LGW_REDIS_URL) failed: {exc}", file=sys.stderr)
        return 2
    except VersionConflict:
        print("another replica seeded the registry first; start again", file=sys.stderr)
        return 2


def _settings(args: argparse.Namespace) -> Settings:
    overrides = {
        k: v for k, v in (("port", args.port), ("admin_port", args.admin_port)) if v is not None
    }
    return Settings(**overrides)


def _serve(args: argparse.Namespace) -> int:
    from gateway.server import run

    settings = _settings(args)
    registry = load_policies(settings.policies) if settings.policies else None
    if registry is None and not settings.redis_url:
        _fail(
            "set LGW_POLICIES to a policy file or folder (see policies/examples), "
            "or LGW_REDIS_URL to a Redis holding the registry"
        )
        return 2
    if registry and any(t.keys for t in registry.teams) and settings.key_pepper is None:
        _fail("the policies hold API keys: set LGW_KEY_PEPPER, the secret they were hashed with")
        return 2
    run(_serve_main(settings, registry))
    return 0


async def _serve_main(settings: Settings, registry: Registry | None) -> None:
    from gateway.server import check_ports_free, plane_servers, run_until_signalled
    from gateway.services import build_services
    from gateway.store.base import InMemoryStore

    log = logging.getLogger("gateway")
    check_ports_free(settings.host, (settings.port, settings.admin_port))
    if settings.redis_url:
        services = build_services(settings)
        if registry is not None and await services.registry.store.version() == 0:
            fingerprint = registry.pepper_fingerprint or _fingerprint(settings)
            registry = registry.model_copy(update={"pepper_fingerprint": fingerprint})
            await services.registry.store.save(registry, expected_version=0)
            log.info("seeded the empty Redis registry from %s", settings.policies)
    else:
        assert registry is not None
        log.warning(
            "single-node mode: in-memory registry and limits (no LGW_REDIS_URL); "
            "run ONE replica only"
        )
        services = build_services(settings, InMemoryStore(registry))
    await services.preflight()  # a wrong or missing pepper stops here, in one line
    await run_until_signalled(plane_servers(settings, services))


def _fingerprint(settings: Settings) -> str | None:
    """The fingerprint of the pepper the seeded keys are hashed with."""
    from gateway import keys

    pepper = settings.key_pepper
    return keys.fingerprint(pepper.get_secret_value().encode()) if pepper else None


def _fail(message: str) -> None:
    print(message, file=sys.stderr)


def _demo(args: argparse.Namespace) -> int:
    from gateway.demo import demo
    from gateway.server import run

    settings = _settings(args).model_copy(update={"host": args.host})
    run(demo(settings, args.policies, args.keys_file, args.ttft, args.itl))
    return 0


def _sim(args: argparse.Namespace) -> int:
    from gateway.sim.faults import Fault
    from gateway.sim.server import serve_forever
    from gateway.sim.state import SimConfig

    faults = {}
    for spec in args.fault:
        adapter, _, mode = spec.rpartition("=")
        faults[adapter] = Fault(mode)
    config = SimConfig(
        model_id=args.model_id,
        lora_adapters=args.lora_adapters,
        max_concurrent_requests=args.max_concurrent_requests,
        ttft=args.ttft,
        itl=args.itl,
        faults=faults,
        flavor=args.flavor,
    )
    serve_forever(config, args.hostname, args.port)
    return 0


def _policies_sync(args: argparse.Namespace) -> int:
    from gateway.server import run

    settings = Settings()
    if not settings.redis_url:
        _fail("set LGW_REDIS_URL: diff and apply compare with the live registry in Redis")
        return 2
    files = load_policies(args.path)
    outcome: list[int] = []
    run(_sync(settings, files, apply=args.action == "apply", outcome=outcome))
    return outcome[0] if outcome else 1


async def _sync(settings: Settings, files: Registry, apply: bool, outcome: list[int]) -> None:
    from gateway.admin import sync
    from gateway.admin.audit import RedisAudit
    from gateway.redis_client import connect
    from gateway.store.redis_store import RedisStore

    store = RedisStore(connect(settings, 5.0))
    try:
        if apply:
            changes = await sync.apply(
                store, RedisAudit(store.redis), files, _fingerprint(settings)
            )
        else:
            changes = (await sync.plan(store, files, _fingerprint(settings)))[2]
    finally:
        await store.close()
    for change in changes:
        print(change)
    verb = "applied" if apply else "would change"
    print(f"{len(changes)} records {verb}" if changes else "no change")
    outcome.append(0)


def _policies(args: argparse.Namespace) -> int:
    registry = load_policies(args.path)
    print(
        f"{args.path}: valid ({len(registry.teams)} teams, {len(registry.pools)} pools, "
        f"{len(registry.adapters)} adapters, {len(registry.mappings)} mappings)"
    )
    return 0


def _new_key(args: argparse.Namespace) -> int:
    from gateway import keys

    pepper = Settings().key_pepper
    if pepper is None:
        print("set LGW_KEY_PEPPER first: keys are stored as HMACs under it", file=sys.stderr)
        return 2
    secret = pepper.get_secret_value().encode()
    new = keys.mint(secret)
    print(f"key (shown once): {new.plaintext}", file=sys.stderr)
    print(
        f"# under teams[name={args.team}].keys:\n- {{id: {new.id}, name: {args.name}, "
        f"hash: {new.hash}}}\n# once, at the top level of a policy file (a replica started "
        f"with another pepper refuses to start):\npepper_fingerprint: {keys.fingerprint(secret)}"
    )
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lora-gateway", description=__doc__)
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the gateway (registry from LGW_POLICIES)")
    demo = commands.add_parser("demo", help="simulated TGI pool + gateway + one key per team")
    for command in (serve, demo):
        command.add_argument("--port", type=int, help="data-plane port (LGW_PORT, default 8080)")
        command.add_argument(
            "--admin-port", type=int, help="admin-plane port (LGW_ADMIN_PORT, default 8081)"
        )
    serve.set_defaults(run=_serve)
    demo.add_argument(
        "--policies",
        type=Path,
        default=_examples(),
        help="policy file or folder (default: policies/examples)",
    )
    demo.add_argument("--keys-file", type=Path, help='write {"team": "key"} JSON here')
    demo.add_argument(
        "--host",
        default="127.0.0.1",
        help="address both planes listen on (default: this machine only; 0.0.0.0 for all)",
    )
    demo.add_argument("--ttft", type=float, default=0.05, help="simulated time to first token, s")
    demo.add_argument("--itl", type=float, default=0.02, help="simulated inter-token latency, s")
    demo.set_defaults(run=_demo)

    sim = commands.add_parser("sim", help="a simulated TGI replica (flags as TGI's launcher)")
    env = os.environ.get  # like TGI's launcher, every flag also reads its env variable
    sim.add_argument("--port", type=int, default=int(env("PORT", "3000")))
    sim.add_argument("--hostname", default=env("HOSTNAME_BIND", "127.0.0.1"))
    sim.add_argument("--model-id", default=env("MODEL_ID", "google/gemma-2-2b-it"))
    sim.add_argument("--lora-adapters", default=env("LORA_ADAPTERS", ""))
    sim.add_argument(
        "--max-concurrent-requests", type=int, default=int(env("MAX_CONCURRENT_REQUESTS", "128"))
    )
    sim.add_argument("--ttft", type=float, default=0.0, help="seconds to the first token")
    sim.add_argument("--itl", type=float, default=0.0, help="seconds between tokens")
    sim.add_argument(
        "--flavor",
        choices=["tgi", "vllm"],
        default="tgi",
        help="speak TGI (default) or vLLM's OpenAI server",
    )
    sim.add_argument(
        "--fault",
        action="append",
        default=[],
        metavar="ADAPTER=MODE",
        help="give every request to ADAPTER this fault (overload, stall, ...)",
    )
    sim.set_defaults(run=_sim)

    policies = commands.add_parser("policies", help="check policy files")
    policy_commands = policies.add_subparsers(required=True, metavar="ACTION")
    validate = policy_commands.add_parser("validate", help="validate a policy file or folder")
    validate.add_argument("path", type=Path)
    validate.set_defaults(run=_policies)
    for action, text in (
        ("diff", "what applying PATH would change in the live registry"),
        ("apply", "make the live registry what PATH says (idempotent)"),
    ):
        command = policy_commands.add_parser(action, help=text)
        command.add_argument("path", type=Path)
        command.set_defaults(run=_policies_sync, action=action)

    key_commands = commands.add_parser("keys", help="API keys").add_subparsers(
        required=True, metavar="ACTION"
    )
    new = key_commands.add_parser("new", help="mint a key and print its policy entry")
    new.add_argument("--team", required=True)
    new.add_argument("--name", default="default")
    new.set_defaults(run=_new_key)
    return parser


def _examples() -> Path:
    from gateway.demo import EXAMPLES

    return EXAMPLES if EXAMPLES.is_dir() else Path("policies/examples")


if __name__ == "__main__":
    sys.exit(main())
