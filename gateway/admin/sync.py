"""Policies as code: what a folder of policy YAML would change in the live registry, and
applying exactly that (idempotent: a second apply finds nothing to do and audits nothing).

Precedence: the files are the truth for every team, adapter, pool and mapping they
declare, and whatever they do not declare is removed; API keys are the exception,
since they are created at run time: a team keeps its live keys, and a key the files
declare (by id) replaces the live one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from gateway.admin.audit import AuditLog
from gateway.admin.changes import public
from gateway.errors import StartRefused
from gateway.registry.models import Registry, Team
from gateway.store.base import RegistryStore

ACTOR = "policies-apply"


@dataclass(frozen=True, slots=True)
class Difference:
    """One record that differs between the live registry and the files."""

    section: str
    ident: str
    change: Literal["add", "remove", "change"]
    before: Any
    after: Any

    def __str__(self) -> str:
        sign = {"add": "+", "remove": "-", "change": "~"}[self.change]
        return f"{sign} {self.section} {self.ident}"


def _ident(section: str, record: Any) -> str:
    if section == "mappings":
        return f"{record.team or '*'}/{record.task}"
    return str(record.id if section == "adapters" else record.name)


def with_live_keys(desired: Registry, live: Registry) -> Registry:
    """``desired`` with each team's live keys kept (declared keys win by id)."""
    live_teams = {t.name: t for t in live.teams}
    teams: list[Team] = []
    for team in desired.teams:
        declared = {k.id for k in team.keys}
        kept = tuple(
            k for k in live_teams.get(team.name, Team(name=team.name)).keys if k.id not in declared
        )
        teams.append(team.model_copy(update={"keys": (*kept, *team.keys)}))
    return desired.model_copy(update={"teams": tuple(teams)})


def differences(live: Registry, desired: Registry) -> list[Difference]:
    """Every record added, removed or changed by going from ``live`` to ``desired``."""
    found: list[Difference] = []
    for section in ("teams", "adapters", "pools", "mappings"):
        before = {_ident(section, r): r for r in getattr(live, section)}
        after = {_ident(section, r): r for r in getattr(desired, section)}
        for ident in sorted(before.keys() | after.keys()):
            old, new = before.get(ident), after.get(ident)
            if old == new:
                continue
            change: Literal["add", "remove", "change"] = (
                "add" if old is None else "remove" if new is None else "change"
            )
            found.append(Difference(section, ident, change, public(old), public(new)))
    return found


async def plan(
    store: RegistryStore, files: Registry, fingerprint: str | None = None
) -> tuple[Registry, Registry, list[Difference]]:
    """The live registry, the one the files describe (live keys kept), and the changes.
    ``fingerprint``: of the pepper of whoever applies (``StartRefused`` when it, the
    files' and the live registry's disagree: keys hashed under two peppers never mix)."""
    live = await store.load()
    desired = Registry.model_validate(with_live_keys(files, live).model_dump())
    known = {f for f in (live.pepper_fingerprint, files.pepper_fingerprint, fingerprint) if f}
    if len(known) > 1:
        raise StartRefused(
            "LGW_KEY_PEPPER, the policy files' pepper_fingerprint and the live registry's "
            "disagree: their keys were hashed under different peppers"
        )
    desired = desired.model_copy(update={"pepper_fingerprint": next(iter(known), None)})
    return live, desired, differences(live, desired)


async def apply(
    store: RegistryStore, audit: AuditLog, files: Registry, fingerprint: str | None = None
) -> list[Difference]:
    """Make the live registry what the files say; audit each change; nothing if equal
    (a newly recorded pepper fingerprint is saved, and is no change of a record)."""
    live, desired, changes = await plan(store, files, fingerprint)
    if changes or desired.pepper_fingerprint != live.pepper_fingerprint:
        await store.save(desired, expected_version=live.version)
        for change in changes:
            team = (
                change.ident.split("/")[0]
                if change.section == "mappings"
                else (change.ident if change.section == "teams" else None)
            )
            await audit.append(
                ACTOR,
                f"{change.section}.{change.change}",
                team,
                change.ident,
                change.before,
                change.after,
            )
    return changes
