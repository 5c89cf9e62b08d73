"""The TGI dialect: clean OpenAI in, TGI out; TGI in, clean OpenAI out.

What TGI does differently (reference/tgi-protocol.md) and what this module does about it:
- ``model`` selects the adapter; ``"tgi"`` is the base model; an unknown id silently
  gets the base model (§1). -> ``model`` always comes from the registry (routing.py).
- Chat ``id`` is always ``""`` (§3c). -> filled with the gateway's request id.
- ``model`` echoes the adapter id, or the base model on v2.3 (§1, §9). -> the task name.
- ``finish_reason`` can be ``stop_sequence`` (chat) or ``eos_token`` (completions
  streams) (§3c, §3e); completions chunks say ``""`` instead of null. -> ``stop``/null.
- Completions streams put the raw EOS token in the final chunk's ``text`` (§3e). -> "".
- Tool calls come with ``finish_reason: "stop"`` and an extra ``description`` (§3d).
  -> ``tool_calls``, and the extra field is dropped.
- ``top_p`` must be in (0, 1); OpenAI clients send 1.0 (§7). -> 1.0 is dropped (it
  means "no nucleus cut"), 0 becomes greedy decoding.
- ``presence_penalty`` is turned into ``repetition_penalty = p + 2`` (§7). -> dropped.
- ``response_format`` is TGI's own tagged shape; OpenAI's fails with 422 (§8). ->
  ``json_schema`` translated, ``text`` dropped, bare ``json_object`` refused with 400.
- Gemma 2's template refuses ``system`` (§1). -> folded into the first user turn on
  pools flagged ``system_role: fold``; ``developer`` is OpenAI's new name for it.
- ``max_tokens`` absent means "the rest of the context" (§7). -> always sent explicitly.
- Stream errors arrive as HTTP 200 events, ``{"error": {"message", "http_status_code":
  422}}`` (v2.4.1+) or ``{"error": str, "error_type": str}`` (older) (§4). -> classified
  by message prefix into the gateway's error tree.
- Usage: streams ask ``include_usage`` always, so accounting is exact; the usage chunk
  reaches the client only if it asked (§3c).
The response-side fixes live in ``responses.py``, shared with the vLLM dialect.
"""

from __future__ import annotations

from typing import Any

from gateway.backends.responses import ChunkRewriter, Usage, clean_choice
from gateway.errors import (
    GatewayError,
    InvalidRequest,
    RequestTooLarge,
    UpstreamError,
    UpstreamOverloaded,
    UpstreamUnavailable,
)
from gateway.jsonio import dumps, loads
from gateway.routing import Route
from gateway.schemas import ChatRequest, CompletionRequest, Message, content_text

_RETRY_SOON = {"Retry-After": "1"}
_CLIENT_ERROR_PREFIXES = (
    "Input validation error",
    "Template error",
    "Tool error",
    "Missing template",
    "Failed to deserialize",
    "Suffix is not supported",
    "Number of prompts",
)


class TGIDialect:
    """Request and response translation for Hugging Face TGI >= 2.3 (tested against 3.3)."""

    def translate(
        self, request: ChatRequest | CompletionRequest, route: Route, max_tokens: int
    ) -> tuple[str, bytes]:
        """The upstream path and body for an OpenAI request."""
        if isinstance(request, ChatRequest):
            return "/v1/chat/completions", self.chat_body(request, route, max_tokens)
        return "/v1/completions", self.completion_body(request, route, max_tokens)

    # -- requests ----------------------------------------------------------------------
    def model_name(self, route: Route) -> str:
        """What to send as ``model``: the adapter id, or TGI's name for the base model."""
        return route.upstream_model

    def sampling(self, body: dict[str, Any], request: ChatRequest | CompletionRequest) -> None:
        """The sampling fields, made acceptable to TGI."""
        _sampling(body, request)

    def response_format(self, value: dict[str, Any] | None) -> dict[str, Any] | None:
        """OpenAI's ``response_format`` in TGI's grammar shape."""
        return _response_format(value)

    def chat_body(self, request: ChatRequest, route: Route, max_tokens: int) -> bytes:
        """The body to POST to ``/v1/chat/completions``."""
        body: dict[str, Any] = {
            "model": self.model_name(route),
            "messages": _messages(request.messages, fold=route.pool.system_role == "fold"),
            "max_tokens": max_tokens,
        }
        self.sampling(body, request)
        if request.logprobs is not None:
            body["logprobs"] = request.logprobs
        if request.top_logprobs is not None:
            body["top_logprobs"] = request.top_logprobs
        if request.tools is not None:
            body["tools"] = request.tools
        if request.tool_choice is not None:
            body["tool_choice"] = request.tool_choice
        response_format = self.response_format(request.response_format)
        if response_format is not None:
            body["response_format"] = response_format
        return dumps(body)

    def completion_body(self, request: CompletionRequest, route: Route, max_tokens: int) -> bytes:
        """The body to POST to ``/v1/completions``."""
        if request.suffix:
            raise InvalidRequest("'suffix' is not supported by this model.", param="suffix")
        if request.echo:
            raise InvalidRequest("'echo' is not supported by this model.", param="echo")
        body: dict[str, Any] = {
            "model": self.model_name(route),
            "prompt": request.prompt,
            "max_tokens": max_tokens,
        }
        self.sampling(body, request)
        return dumps(body)

    # -- responses ---------------------------------------------------------------------
    def response(
        self, raw: bytes, response_id: str, task: str, stop: list[str] | None
    ) -> tuple[bytes, Usage | None]:
        """A non-streamed chat or completion body made clean OpenAI, and its usage."""
        try:
            body = loads(raw)
            choices = body["choices"]
        except (ValueError, KeyError, TypeError):
            raise UpstreamError("The model backend returned a malformed response.") from None
        body["id"] = response_id
        body["model"] = task
        for choice in choices:
            clean_choice(choice, stop)
        return dumps(body), Usage.from_json(body.get("usage"))

    def rewriter(
        self,
        response_id: str,
        task: str,
        wants_usage: bool,
        stop: list[str] | None,
        collect: list[str] | None = None,
    ) -> ChunkRewriter:
        """A per-stream rewriter of TGI chunks into OpenAI chunks; with ``collect``, the
        streamed text is also appended there (for content logging)."""
        return ChunkRewriter(response_id, task, wants_usage, stop, collect)

    # -- errors ------------------------------------------------------------------------
    def http_error(self, status: int, raw: bytes) -> GatewayError:
        """The gateway error for a non-200 answer (§4)."""
        message = _message_of(raw)
        if status in (400, 422):
            return InvalidRequest(f"The model rejected the request: {message}")
        if status == 413:
            return RequestTooLarge("The request is too large for the model.")
        if status == 429:
            return UpstreamOverloaded(
                "The model is overloaded; retry shortly.", headers=_RETRY_SOON
            )
        if status == 503:
            return UpstreamUnavailable(
                "The model is unavailable; retry shortly.", headers=_RETRY_SOON
            )
        if status == 424:
            return UpstreamError("The model failed during generation.")
        return UpstreamError("The model backend returned an unexpected error.")

    def event_error(self, payload: bytes) -> GatewayError:
        """The gateway error for an in-stream error event (§4, both shapes)."""
        try:
            error = loads(payload)["error"]
        except (ValueError, KeyError, TypeError):
            return UpstreamError("The model backend sent a malformed error.")
        message = error.get("message") if isinstance(error, dict) else error
        message = message if isinstance(message, str) else ""
        if message.startswith("Model is overloaded"):
            return UpstreamOverloaded(
                "The model is overloaded; retry shortly.", headers=_RETRY_SOON
            )
        if message.startswith(_CLIENT_ERROR_PREFIXES):
            return InvalidRequest(f"The model rejected the request: {_clip(message)}")
        return UpstreamError("The model failed during generation.")


def _sampling(body: dict[str, Any], request: ChatRequest | CompletionRequest) -> None:
    """The sampling fields both routes share; ``presence_penalty`` never goes (see top)."""
    body["stream"] = request.stream
    if request.stream:
        body["stream_options"] = {"include_usage": True}
    if request.temperature is not None:
        body["temperature"] = request.temperature
    if request.top_p is not None and request.top_p <= 0:
        body["temperature"] = 0.0  # OpenAI's top_p=0 keeps only the top token: greedy
    elif request.top_p is not None and request.top_p < 1:
        body["top_p"] = request.top_p
    stop = request.stop_list
    if stop:
        body["stop"] = stop
    if request.seed is not None:
        body["seed"] = request.seed
    if request.frequency_penalty is not None:
        body["frequency_penalty"] = request.frequency_penalty


def _messages(messages: list[Message], fold: bool) -> list[dict[str, Any]]:
    out = [m.model_dump(exclude_none=True) for m in messages]
    for message in out:
        if message["role"] == "developer":
            message["role"] = "system"
    if not fold:
        return out
    system = "\n\n".join(content_text(m.get("content")) for m in out if m["role"] == "system")
    rest = [m for m in out if m["role"] != "system"]
    if not system:
        return rest
    first_user = next((m for m in rest if m["role"] == "user"), None)
    if first_user is None:
        return [{"role": "user", "content": system}, *rest]
    content = first_user.get("content")
    if isinstance(content, list):
        first_user["content"] = [{"type": "text", "text": system + "\n\n"}, *content]
    else:
        first_user["content"] = f"{system}\n\n{content or ''}"
    return rest


def _response_format(value: dict[str, Any] | None) -> dict[str, Any] | None:
    if value is None or value.get("type") == "text":
        return None
    kind = value.get("type")
    if kind == "json_schema":
        spec = value.get("json_schema")
        if not isinstance(spec, dict) or not isinstance(spec.get("schema"), dict):
            raise InvalidRequest(
                "response_format.json_schema.schema is required.", param="response_format"
            )
        return {
            "type": "json_schema",
            "value": {"name": spec.get("name", "response"), "schema": spec["schema"]},
        }
    if kind == "json_object" and "value" not in value:
        raise InvalidRequest(
            "response_format 'json_object' without a schema is not supported by "
            "this model; use 'json_schema' with a schema.",
            param="response_format",
        )
    if kind in ("json", "json_object", "regex") and "value" in value:
        return value  # already TGI's own grammar shape
    raise InvalidRequest("Unsupported response_format type.", param="response_format")


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
