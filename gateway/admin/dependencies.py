"""What admin handlers are given (Litestar ``Provide``): the services, the registry
snapshot the request reads, the authenticated caller, and the editor of changes."""

from __future__ import annotations

from typing import Any

from litestar import Request
from litestar.datastructures import State
from litestar.di import NamedDependency, Provide
from litestar.params import SkipValidation

from gateway.admin.callers import Caller, identify
from gateway.admin.editor import Editor
from gateway.registry import Snapshot
from gateway.services import Services

# What a handler names to be given each one. Not validated: they are our own objects,
# and a signature model cannot describe them.
ServicesParam = NamedDependency[SkipValidation[Services]]
SnapshotParam = NamedDependency[SkipValidation[Snapshot]]
CallerParam = NamedDependency[SkipValidation[Caller]]
EditorParam = NamedDependency[SkipValidation[Editor]]


def _services(state: State) -> Services:
    services: Services = state.services
    return services


def _snapshot(services: ServicesParam) -> Snapshot:
    return services.registry.current()


def _caller(
    request: Request[Any, Any, Any],
    services: ServicesParam,
    snapshot: SnapshotParam,
) -> Caller:
    authorization = request.headers.get("authorization")
    return identify(authorization, services.settings, snapshot, services.pepper)


def _editor(state: State) -> Editor:
    editor: Editor = state.editor
    return editor


DEPENDENCIES = {
    "services": Provide(_services, sync_to_thread=False),
    "snapshot": Provide(_snapshot, sync_to_thread=False),
    "caller": Provide(_caller, sync_to_thread=False),
    "editor": Provide(_editor, sync_to_thread=False),
}
"""By parameter name; a handler asks for what it uses."""
