"""One renderer for every error: the OpenAI envelope, the right status, no traceback."""

from __future__ import annotations

import logging
from typing import Any

from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException

from gateway.errors import (
    GatewayError,
    InvalidRequest,
    MethodNotAllowed,
    RequestTooLarge,
    UnknownURL,
    Unprocessable,
)

log = logging.getLogger("gateway")


def gateway_error(request: Request[Any, Any, Any], exc: GatewayError) -> Response[bytes]:
    """Any ``GatewayError`` as OpenAI's ``{"error": {...}}``."""
    return _render(request, exc.status, exc.to_json(), exc.headers)


def http_error(request: Request[Any, Any, Any], exc: HTTPException) -> Response[bytes]:
    """Litestar's own refusals (unknown path, wrong method, body too large) in OpenAI's shape."""
    if exc.status_code == 413:
        return gateway_error(request, RequestTooLarge("The request body is too large."))
    if exc.status_code == 404:
        path = request.url.path[:200]
        return gateway_error(request, UnknownURL(f"Unknown request URL: {request.method} {path}."))
    if exc.status_code == 405:
        return gateway_error(request, MethodNotAllowed(f"Method {request.method} is not allowed."))
    if exc.status_code < 500:
        return gateway_error(request, InvalidRequest("The request could not be understood."))
    return unexpected_error(request, exc)


def admin_http_error(request: Request[Any, Any, Any], exc: HTTPException) -> Response[bytes]:
    """As ``http_error``, but a body that fails its schema is 422 naming the fields."""
    if isinstance(exc, ValidationException):
        fields = [str(e.get("key", "")) for e in (exc.extra or []) if isinstance(e, dict)]
        problems = ", ".join(f for f in fields if f) or "the body"
        return gateway_error(request, Unprocessable(f"Invalid or unknown fields: {problems}."))
    return http_error(request, exc)


def unexpected_error(request: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    """A bug: logged with its traceback here, answered with nothing but an id."""
    log.exception("unhandled error", extra={"request_id": _request_id(request)})
    return gateway_error(request, GatewayError())


def _render(
    request: Request[Any, Any, Any], status: int, body: bytes, headers: dict[str, str]
) -> Response[bytes]:
    request_id = _request_id(request)
    all_headers = {**headers, "x-request-id": request_id} if request_id else headers
    return Response(body, status_code=status, media_type="application/json", headers=all_headers)


def _request_id(request: Request[Any, Any, Any]) -> str | None:
    return getattr(request.state, "request_id", None)
