"""Backend failures in the gateway's error tree: a non-200 answer, or an error event in
a stream (TGI sends both shapes of docs/reference/tgi-protocol.md §4; vLLM's OpenAI-shaped
errors read the same way)."""

from __future__ import annotations

from gateway.errors import (
    GatewayError,
    InvalidRequest,
    RequestTooLarge,
    UpstreamError,
    UpstreamOverloaded,
    UpstreamUnavailable,
)
from gateway.jsonio import loads

_RETRY_SOON = {"Retry-After": "1"}
# TGI's messages for what the client asked wrong (§4): a 400, never retried elsewhere.
_CLIENT_ERROR_PREFIXES = (
    "Input validation error",
    "Template error",
    "Tool error",
    "Missing template",
    "Failed to deserialize",
    "Suffix is not supported",
    "Number of prompts",
)


def http_error(status: int, raw: bytes) -> GatewayError:
    """The gateway error for a non-200 answer."""
    message = _message_of(raw)
    if status in (400, 422):
        return InvalidRequest(f"The model rejected the request: {message}")
    if status == 413:
        return RequestTooLarge("The request is too large for the model.")
    if status == 429:
        return UpstreamOverloaded("The model is overloaded; retry shortly.", headers=_RETRY_SOON)
    if status == 503:
        return UpstreamUnavailable("The model is unavailable; retry shortly.", headers=_RETRY_SOON)
    if status == 424:
        return UpstreamError("The model failed during generation.")
    return UpstreamError("The model backend returned an unexpected error.")


def event_error(payload: bytes) -> GatewayError:
    """The gateway error for an in-stream error event (``{"error": {...}}`` or
    ``{"error": str, "error_type": str}``), classified by its message."""
    try:
        error = loads(payload)["error"]
    except (ValueError, KeyError, TypeError):
        return UpstreamError("The model backend sent a malformed error.")
    message = error.get("message") if isinstance(error, dict) else error
    message = message if isinstance(message, str) else ""
    if message.startswith("Model is overloaded"):
        return UpstreamOverloaded("The model is overloaded; retry shortly.", headers=_RETRY_SOON)
    if message.startswith(_CLIENT_ERROR_PREFIXES):
        return InvalidRequest(f"The model rejected the request: {_clip(message)}")
    return UpstreamError("The model failed during generation.")


def _message_of(raw: bytes) -> str:
    try:
        body = loads(raw)
        message = (body.get("error") or body.get("message")) if isinstance(body, dict) else None
    except ValueError:
        message = raw.decode("utf-8", "replace")
    if isinstance(message, dict):
        message = message.get("message")
    return _clip(message) if isinstance(message, str) else "no detail given"


def _clip(message: str) -> str:
    """An upstream message made safe to show: printable, one line, bounded."""
    cleaned = "".join(c if c.isprintable() else " " for c in message)
    return cleaned[:300]
