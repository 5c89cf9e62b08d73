"""Policy files: the examples load; each bad file fails with its exact located error."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.registry import Snapshot
from gateway.store.files import PolicyError, load_policies

ROOT = Path(__file__).resolve().parents[2]
BAD = ROOT / "tests" / "policies" / "bad"


def test_the_example_deployment_loads() -> None:
    snapshot = Snapshot(load_policies(ROOT / "policies" / "examples"))
    assert sorted(snapshot.teams) == ["analytics", "devtools", "localization"]
    assert snapshot.tasks("devtools") == ["chat", "code"]
    mapping = snapshot.mapping("localization", "translate-ja")
    assert mapping is not None
    assert mapping.adapter == "google-cloud-partnership/gemma-2-2b-it-lora-jap-en"


@pytest.mark.parametrize("path", sorted(BAD.glob("*.yaml")), ids=lambda p: p.stem)
def test_a_bad_file_fails_with_file_line_field_and_reason(path: Path) -> None:
    expected = path.with_suffix(".expected").read_text().strip().splitlines()
    with pytest.raises(PolicyError) as caught:
        load_policies(path)
    assert [p.replace(str(BAD) + "/", "") for p in caught.value.problems] == expected


def test_a_folder_is_read_file_by_file(tmp_path: Path) -> None:
    (tmp_path / "a-pools.yaml").write_text(
        "pools:\n  - name: p\n    base_model: m/base\n    endpoints: [http://h:1]\n"
    )
    (tmp_path / "b-teams.yaml").write_text(
        "teams:\n  - name: t\nmappings:\n  - {team: t, task: chat, adapter: m/bas}\n"
    )
    with pytest.raises(PolicyError) as caught:
        load_policies(tmp_path)
    assert caught.value.problems == [f"{tmp_path}/b-teams.yaml:4: adapter: no pool serves 'm/bas'"]


def test_a_missing_path_is_a_policy_error(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="no such file"):
        load_policies(tmp_path / "absent.yaml")
