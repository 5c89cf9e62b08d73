"""What a backend dialect does, and which dialect each pool speaks.

A dialect turns a clean OpenAI request into what its engine accepts (model names,
sampling fields, grammar), and the engine's answers and failures back into clean
OpenAI and the gateway's error tree. TGI and vLLM implement it side by side.
"""

from __future__ import annotations

from typing import Protocol

from gateway.backends.responses import ChunkRewriter, Usage
from gateway.backends.tgi import TGIDialect
from gateway.backends.vllm import VLLMDialect
from gateway.errors import GatewayError
from gateway.routing import Route
from gateway.schemas import OpenAIRequest


class Dialect(Protocol):
    """How the gateway speaks to one kind of multi-LoRA server."""

    name: str
    lists_adapters: bool
    """Whether the engine's ``/v1/models`` lists the adapters it loaded (vLLM); the
    prober then compares them with the pool's declared adapters."""

    def translate(self, request: OpenAIRequest, route: Route, max_tokens: int) -> tuple[str, bytes]:
        """The upstream path and body for an OpenAI request."""
        ...

    def response(
        self, raw: bytes, response_id: str, task: str, stop: list[str] | None
    ) -> tuple[bytes, Usage | None]:
        """A non-streamed answer made clean OpenAI, and its usage."""
        ...

    def rewriter(
        self, response_id: str, task: str, wants_usage: bool, stop: list[str] | None, collect: bool
    ) -> ChunkRewriter:
        """A per-stream rewriter of the engine's chunks into OpenAI chunks."""
        ...

    def http_error(self, status: int, raw: bytes) -> GatewayError:
        """The gateway error for a non-200 answer."""
        ...

    def event_error(self, payload: bytes) -> GatewayError:
        """The gateway error for an in-stream error event."""
        ...


DIALECTS: dict[str, Dialect] = {d.name: d for d in (TGIDialect(), VLLMDialect())}
"""Every dialect by the name pools give in ``dialect``."""
