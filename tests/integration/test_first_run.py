"""A newcomer's first run: a taken port, a wrong Redis URL or an unreachable Redis is one
line and status 2, nothing written; the demo listens on this machine only; its keys
file is never committed by accident."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

from tests.integration.harness import Demo, run_cli
from tests.redis_servers import free_port

ROOT = Path(__file__).resolve().parents[2]


def _one_line(result: subprocess.CompletedProcess[str], starts: str) -> None:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith(starts), result.stderr


def test_a_demo_on_a_taken_port_writes_nothing_and_says_why(tmp_path: Path) -> None:
    keys_file = tmp_path / "keys.json"
    keys_file.write_text('{"analytics": "the running demo\'s key"}')
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli(
            "demo", "--port", str(port), "--admin-port", str(free_port()),
            "--keys-file", str(keys_file),
        )  # fmt: skip
    _one_line(result, f"cannot start: port {port} on 127.0.0.1 is taken")
    assert keys_file.read_text() == '{"analytics": "the running demo\'s key"}'
    assert "lgw-" not in result.stdout + result.stderr  # no key printed either


def test_a_bad_redis_url_is_one_line(tmp_path: Path) -> None:
    result = run_cli("serve", LGW_REDIS_URL="http://user:hunter2@127.0.0.1:6379")
    _one_line(result, "cannot start: LGW_REDIS_URL is not a Redis URL")
    assert "hunter2" not in result.stderr


def test_an_unreachable_redis_is_one_line() -> None:
    port = free_port()  # nothing listens there
    env = {"LGW_REDIS_URL": f"redis://127.0.0.1:{port}", "LGW_PORT": str(free_port())}
    result = run_cli("serve", **env, LGW_ADMIN_PORT=str(free_port()))
    _one_line(result, "cannot start: Redis (LGW_REDIS_URL) failed")


def _listening_addresses(port: int) -> set[str]:
    """The local addresses listening on ``port`` (Linux's /proc/net/tcp, hex)."""
    found = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        address, hex_port = local.split(":")
        if int(hex_port, 16) == port and state == "0A":  # LISTEN
            found.add(socket.inet_ntoa(bytes.fromhex(address)[::-1]))
    return found


def test_the_demo_listens_on_this_machine_only(tmp_path: Path) -> None:
    demo = Demo(tmp_path / "keys.json")
    try:
        assert _listening_addresses(demo.port) == {"127.0.0.1"}
    finally:
        demo.kill()


def test_the_demo_keys_file_is_git_ignored() -> None:
    ignored = (ROOT / ".gitignore").read_text().splitlines()
    assert "keys.json" in ignored
