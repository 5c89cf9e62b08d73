"""The TGI dialect: clean OpenAI in, TGI out; TGI in, clean OpenAI out.

What TGI does differently (docs/reference/tgi-protocol.md) and what this module does about it:
- ``model`` selects the adapter; ``"tgi"`` is the base model; an unknown id silently
  gets the base model (§1). -> ``model`` always comes from the registry
  (``gateway/routing.py``); the base model is asked for as ``"tgi"`` (``TGI_BASE_MODEL``).
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
The response-side fixes live in ``responses.py`` and ``failures.py``, the body shapes in
``bodies.py``: both shared with the vLLM dialect.
"""

from __future__ import annotations

from typing import Any

from gateway.backends import responses
from gateway.backends.bodies import chat_body, completion_body, streaming
from gateway.backends.failures import event_error, http_error
from gateway.errors import InvalidRequest
from gateway.routing import Route
from gateway.schemas import ChatRequest, OpenAIRequest

# TGI's OpenAI routes treat `model` as the adapter id, and "tgi" as the base model
# (router/src/lib.rs: `model.filter(|m| *m != "tgi")`; docs/reference/tgi-protocol.md §1).
TGI_BASE_MODEL = "tgi"
# The content parts TGI's chat route deserializes (router/src/lib.rs `MessageChunk`);
# any other type fails there with a 422.
TGI_PARTS = frozenset({"text", "image_url"})


class TGIDialect:
    """Hugging Face TGI >= 2.3 (tested against 3.3)."""

    name = "tgi"
    lists_adapters = False  # its /v1/models names the base model only
    response = staticmethod(responses.clean_response)
    rewriter = responses.ChunkRewriter
    http_error = staticmethod(http_error)
    event_error = staticmethod(event_error)

    def translate(self, request: OpenAIRequest, route: Route, max_tokens: int) -> tuple[str, bytes]:
        """The upstream path and body for an OpenAI request."""
        model = model_name(route)
        sampling = _sampling(request)
        if isinstance(request, ChatRequest):
            response_format = _response_format(request.response_format)
            fold = route.pool.system_role == "fold"
            body = chat_body(request, model, max_tokens, sampling, response_format, fold, TGI_PARTS)
            return "/v1/chat/completions", body
        return "/v1/completions", completion_body(request, model, max_tokens, sampling)


def model_name(route: Route) -> str:
    """What to send as ``model``: the adapter id, or TGI's name for the base model."""
    return TGI_BASE_MODEL if route.adapter == route.pool.base_model else route.adapter


def _sampling(request: OpenAIRequest) -> dict[str, Any]:
    """The sampling fields, made acceptable to TGI; ``presence_penalty`` never goes (top)."""
    body = streaming(request)
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
    return body


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
