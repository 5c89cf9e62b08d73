"""The tree is the architecture: the import contracts of pyproject.toml hold (stages
import only the stages before them; no import circles anywhere in the package), and
unit tests stay apart from the applications."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
APPLICATION = (
    "gateway.app",
    "gateway.server",
    "gateway.services",
    "gateway.api",
    "gateway.cli",
    "gateway.demo",
    "gateway.connections",
)


def test_the_import_contracts_hold() -> None:
    lint_imports = Path(sys.executable).with_name("lint-imports")  # import-linter's command
    run = subprocess.run(
        [str(lint_imports), "--no-cache"], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "0 broken" in run.stdout


def test_collecting_the_unit_tests_imports_no_application() -> None:
    probe = (
        "import sys, pytest\n"
        "pytest.main(['-q', '--co', '-p', 'no:cacheprovider', 'tests/unit'])\n"
        f"print(sorted(m for m in sys.modules if m in {APPLICATION!r}))\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert run.stdout.strip().splitlines()[-1] == "[]"
