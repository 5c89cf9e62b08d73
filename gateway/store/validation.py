"""Whether a registry may be saved: every record, every reference between records, and
every mapping's access (the policy's own decision). Every writer checks here first:
policy files, the admin API, ``lora-gateway policies``."""

from __future__ import annotations

from pydantic import ValidationError

from gateway.policy import mapping_problems
from gateway.registry import Registry
from gateway.registry.models import Problem, reference_problems


class InvalidRegistry(ValueError):
    """A registry that must not be saved; ``problems`` says why, one line each."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


def registry_problems(registry: Registry) -> list[Problem]:
    """Cross-record and access problems, each with its location."""
    return reference_problems(registry) + mapping_problems(registry)


def validated(registry: Registry) -> Registry:
    """``registry`` validated whole, or ``InvalidRegistry``."""
    try:
        checked = Registry.model_validate(registry.model_dump())
    except ValidationError as exc:
        messages = [str(e["msg"]).removeprefix("Value error, ") for e in exc.errors()]
        raise InvalidRegistry(messages) from None
    problems = mapping_problems(checked)
    if problems:
        raise InvalidRegistry([f"{'.'.join(map(str, loc))}: {msg}" for loc, msg in problems])
    return checked
