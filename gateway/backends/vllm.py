"""The vLLM dialect: vLLM's OpenAI server with LoRA (``--enable-lora --lora-modules``).

vLLM already speaks OpenAI, so this dialect differs from TGI's in little:
- ``model`` is the LoRA module name, or the served base model name (not ``"tgi"``);
- ``top_p: 1.0``, ``presence_penalty`` and OpenAI's ``response_format`` are native, so
  they pass as they are;
- an unknown model is a real 404, never a silent fallback; ``/v1/models`` lists the
  loaded LoRA modules, which the prober compares with the pool's declared adapters;
- errors are OpenAI-shaped JSON (``{"object": "error", "message", ...}``).
The answer side is TGI's (``responses.py``, ``failures.py``): ``id`` and ``model`` set to
the gateway's own, usage asked for always and passed on only if the client asked.
"""

from __future__ import annotations

from typing import Any

from gateway.backends import responses
from gateway.backends.bodies import chat_body, completion_body, streaming
from gateway.backends.failures import event_error, http_error
from gateway.routing import Route
from gateway.schemas import ChatRequest, OpenAIRequest

_NATIVE = ("temperature", "top_p", "seed", "frequency_penalty", "presence_penalty")
# The content parts vLLM's OpenAI server accepts (for models that take them).
VLLM_PARTS = frozenset({"text", "image_url", "input_audio", "video_url"})


class VLLMDialect:
    """vLLM >= 0.6 serving LoRA modules."""

    name = "vllm"
    lists_adapters = True
    response = staticmethod(responses.clean_response)
    rewriter = responses.ChunkRewriter
    http_error = staticmethod(http_error)
    event_error = staticmethod(event_error)

    def translate(self, request: OpenAIRequest, route: Route, max_tokens: int) -> tuple[str, bytes]:
        """The upstream path and body: ``model`` is the base model's served name or a LoRA
        module's name, the route's adapter either way."""
        sampling = _sampling(request)
        if isinstance(request, ChatRequest):
            fold = route.pool.system_role == "fold"
            body = chat_body(
                request,
                route.adapter,
                max_tokens,
                sampling,
                request.response_format,
                fold,
                VLLM_PARTS,
            )
            return "/v1/chat/completions", body
        return "/v1/completions", completion_body(request, route.adapter, max_tokens, sampling)


def _sampling(request: OpenAIRequest) -> dict[str, Any]:
    body = streaming(request)
    for name in _NATIVE:
        value = getattr(request, name)
        if value is not None:
            body[name] = value
    if request.stop_list:
        body["stop"] = request.stop_list
    return body
