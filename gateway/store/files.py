"""Policy YAML -> ``Registry``, with errors that name the file, the line and the field.

A policy path is one YAML file or a folder of them (``*.yaml``, ``*.yml``, read in name
order). Each file is a mapping with any of the sections ``teams``, ``adapters``,
``pools`` and ``mappings`` (lists); the sections of all files are concatenated. A file
may also say ``pepper_fingerprint`` (what ``lora-gateway keys new`` prints): the pepper
its keys were hashed with, which a replica started with another refuses.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from gateway.registry.models import Adapter, Mapping, Pool, Record, Registry, Team
from gateway.store.validation import registry_problems

SECTIONS = ("teams", "adapters", "pools", "mappings")
_FINGERPRINT = re.compile(r"^[0-9a-f]{16}$")
_MODELS: dict[str, type[Record]] = {
    "teams": Team,
    "adapters": Adapter,
    "pools": Pool,
    "mappings": Mapping,
}


class PolicyError(ValueError):
    """A policy file does not describe a valid registry."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class _Origin:
    path: Path
    node: yaml.Node


def load_policies(path: Path) -> Registry:
    """Read and validate a policy file or folder; raises ``PolicyError`` listing every problem."""
    items: dict[str, list[Any]] = {s: [] for s in SECTIONS}
    origins: dict[str, list[_Origin]] = {s: [] for s in SECTIONS}
    fingerprints: set[str] = set()
    for file in _policy_files(path):
        _read_file(file, items, origins, fingerprints)
    if len(fingerprints) > 1:
        raise PolicyError([f"{path}: files disagree on pepper_fingerprint"])
    records: dict[str, list[Record]] = {s: [] for s in SECTIONS}
    problems: list[str] = []
    for section, model in _MODELS.items():
        for item, origin in zip(items[section], origins[section], strict=True):
            try:
                records[section].append(model.model_validate(item))
            except ValidationError as exc:
                problems += [_describe(origin, tuple(e["loc"]), e["msg"]) for e in exc.errors()]
    if problems:
        raise PolicyError(problems)
    sections: dict[str, Any] = {s: tuple(r) for s, r in records.items()}
    registry = Registry.model_construct(
        **sections, pepper_fingerprint=next(iter(fingerprints), None)
    )
    problems = [
        _describe(origins[str(loc[0])][int(loc[1])], loc[2:], msg)
        for loc, msg in registry_problems(registry)
    ]
    if problems:
        raise PolicyError(problems)
    return Registry.model_validate(registry.model_dump())


def _policy_files(path: Path) -> list[Path]:
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix in (".yaml", ".yml"))
        if not files:
            raise PolicyError([f"{path}: no .yaml or .yml file in this folder"])
        return files
    if not path.is_file():
        raise PolicyError([f"{path}: no such file or folder"])
    return [path]


def _read_file(
    file: Path,
    sections: dict[str, list[Any]],
    origins: dict[str, list[_Origin]],
    fingerprints: set[str],
) -> None:
    text = file.read_text(encoding="utf-8")
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise PolicyError([f"{file}: not valid YAML: {exc}"]) from None
    if data is None:
        return
    if not isinstance(data, dict) or node is None:
        raise PolicyError([f"{file}:1: a policy file is a mapping of sections {SECTIONS}"])
    for key, value in data.items():
        line = next(k.start_mark.line + 1 for k, _ in node.value if k.value == key)
        if key == "pepper_fingerprint":
            if not isinstance(value, str) or not _FINGERPRINT.match(value):
                raise PolicyError([f"{file}:{line}: pepper_fingerprint: 16 hex digits"])
            fingerprints.add(value)
            continue
        if key not in SECTIONS:
            raise PolicyError(
                [f"{file}:{line}: unknown section {key!r} (expected one of {SECTIONS})"]
            )
        if not isinstance(value, list):
            raise PolicyError([f"{file}:{line}: section {key!r} must be a list"])
        sections[key].extend(value)
        section_node = _child(node, key)
        assert isinstance(section_node, yaml.SequenceNode)
        origins[key].extend(_Origin(file, item) for item in section_node.value)


def _describe(origin: _Origin, loc: tuple[Any, ...], msg: str) -> str:
    field = ".".join(str(part) for part in loc) or "(record)"
    return f"{origin.path}:{_line(origin.node, loc)}: {field}: {msg}"


def _child(node: yaml.Node, key: str | int) -> yaml.Node | None:
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            if key_node.value == key:
                return value_node  # type: ignore[no-any-return]
    if isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
        return node.value[key]  # type: ignore[no-any-return]
    return None


def _line(node: yaml.Node, path: tuple[Any, ...]) -> int:
    """1-based line of the deepest node along ``path`` that exists."""
    for part in path:
        child = _child(node, part)
        if child is None:
            break
        node = child
    return int(node.start_mark.line) + 1
