"""``create_app(settings)``: wiring only (routes, error handlers, lifespan)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from litestar import Litestar, get
from litestar.datastructures import State
from litestar.exceptions import HTTPException
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import JsonRenderPlugin
from prometheus_client import generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from gateway import __version__
from gateway.admin.audit import audit_log_for
from gateway.admin.dependencies import DEPENDENCIES
from gateway.admin.editor import Editor
from gateway.admin.routes import ROUTES
from gateway.api import errors, health, openai
from gateway.errors import GatewayError
from gateway.services import Services
from gateway.settings import Settings

__all__ = ["create_admin_app", "create_app"]

# Litestar adds "; charset=utf-8" to every text type itself: naming it here too sent it
# twice, and Prometheus 3 refuses a Content-Type with a repeated parameter.
_PROMETHEUS_TEXT = CONTENT_TYPE_LATEST.replace("; charset=utf-8", "")
_ERROR_HANDLERS = {
    GatewayError: errors.gateway_error,
    HTTPException: errors.http_error,
    Exception: errors.unexpected_error,
}


def create_app(settings: Settings, services: Services) -> Litestar:
    """The data-plane application (``LGW_PORT``)."""

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        await services.start()
        try:
            yield
        finally:
            await services.stop()

    return Litestar(
        route_handlers=[
            openai.chat_completions,
            openai.completions,
            openai.list_models,
            health.healthz,
            health.readyz,
        ],
        exception_handlers=_ERROR_HANDLERS,  # type: ignore[arg-type]
        lifespan=[lifespan],
        state=State({"services": services}),
        request_max_body_size=settings.max_body_bytes,
        openapi_config=None,
        logging_config=None,  # the process's logging is set up once, by the CLI
    )


def create_admin_app(settings: Settings, services: Services) -> Litestar:
    """The admin-plane application (``LGW_ADMIN_PORT``): kept off the public Service."""

    editor = Editor(services.registry, audit_log_for(services.redis), services.pepper)

    @get("/metrics", include_in_schema=False, media_type=_PROMETHEUS_TEXT)
    async def metrics() -> bytes:
        return generate_latest(services.metrics.registry)

    return Litestar(
        route_handlers=[*ROUTES, metrics, health.healthz, health.readyz],
        exception_handlers={
            **_ERROR_HANDLERS,  # type: ignore[dict-item]
            HTTPException: errors.admin_http_error,
        },
        state=State({"services": services, "editor": editor}),
        dependencies=DEPENDENCIES,
        logging_config=None,
        openapi_config=OpenAPIConfig(
            title="lora-gateway admin API",
            version=__version__,
            path="/admin/schema",
            render_plugins=[JsonRenderPlugin()],
        ),
    )
