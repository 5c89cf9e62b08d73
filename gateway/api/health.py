"""Probes: liveness says the process runs; readiness says it can route requests."""

from __future__ import annotations

from typing import Any

from litestar import Request, Response, get


@get("/healthz", include_in_schema=False)
async def healthz() -> dict[str, str]:
    """Liveness: the event loop answers."""
    return {"status": "ok"}


@get("/readyz", include_in_schema=False)
async def readyz(request: Request[Any, Any, Any]) -> Response[dict[str, Any]]:
    """Readiness: the registry is loaded and the upstream pool is open."""
    services = request.app.state.services
    if not services.ready.is_set():
        return Response({"status": "starting"}, status_code=503)
    return Response({"status": "ready", "registry_version": services.registry.current().version})
