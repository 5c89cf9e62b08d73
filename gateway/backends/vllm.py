"""The vLLM dialect: vLLM's OpenAI server with LoRA (``--enable-lora --lora-modules``).

vLLM already speaks OpenAI, so this dialect differs from TGI's in little:
- ``model`` is the LoRA module name, or the served base model name (not ``"tgi"``);
- ``top_p: 1.0``, ``presence_penalty`` and OpenAI's ``response_format`` are native, so
  they pass as they are;
- an unknown model is a real 404, never a silent fallback; ``/v1/models`` lists the
  loaded LoRA modules, which the prober compares with the pool's declared adapters;
- errors are OpenAI-shaped JSON (``{"object": "error", "message", ...}``).
The response side is shared: ``id`` and ``model`` are set to the gateway's own, usage is
asked for always and passed on only if the client asked.
"""

from __future__ import annotations

from typing import Any

from gateway.backends.tgi import TGIDialect
from gateway.routing import Route
from gateway.schemas import ChatRequest, CompletionRequest

_NATIVE = ("temperature", "top_p", "seed", "frequency_penalty", "presence_penalty")


class VLLMDialect(TGIDialect):
    """Request translation for vLLM >= 0.6 serving LoRA modules."""

    def model_name(self, route: Route) -> str:
        return route.adapter  # the base model's served name, or a LoRA module's name

    def sampling(self, body: dict[str, Any], request: ChatRequest | CompletionRequest) -> None:
        body["stream"] = request.stream
        if request.stream:
            body["stream_options"] = {"include_usage": True}
        for name in _NATIVE:
            value = getattr(request, name)
            if value is not None:
                body[name] = value
        if request.stop_list:
            body["stop"] = request.stop_list

    def response_format(self, value: dict[str, Any] | None) -> dict[str, Any] | None:
        return value  # OpenAI's own shape


DIALECTS: dict[str, TGIDialect] = {"tgi": TGIDialect(), "vllm": VLLMDialect()}
"""Every dialect by the name pools give in ``dialect``."""
