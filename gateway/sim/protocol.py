"""TGI's bodies, events and headers, byte for byte (docs/reference/tgi-protocol.md §3-§5)."""

from __future__ import annotations

import json
import secrets
import time
from typing import Any, Protocol

from aiohttp import web

from gateway.sim.generation import EOS_TOKEN, Generation

GENERATION_ERROR = "Request failed during generation: Server error: simulated CUDA error"


def dumps(value: Any) -> str:
    """serde_json's compact form."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


async def read_json(request: web.Request) -> tuple[Any, web.Response | None]:
    """The JSON body, or axum's plain-text rejection (415, 400, 422)."""
    if request.content_type != "application/json":
        return None, web.Response(
            status=415,
            text="Expected request with `Content-Type: application/json`",
            content_type="text/plain",
        )
    try:
        body = json.loads(await request.read())
    except ValueError as exc:
        return None, web.Response(
            status=400,
            content_type="text/plain",
            text=f"Failed to parse the request body as JSON: {exc}",
        )
    if not isinstance(body, dict):
        return None, deserialize_error("invalid type: expected struct")
    return body, None


def deserialize_error(detail: str) -> web.Response:
    """axum's 422 for a body that is JSON but not the expected shape (text/plain, not JSON)."""
    return web.Response(
        status=422,
        content_type="text/plain",
        text=f"Failed to deserialize the JSON body into the target type: {detail}",
    )


def json_error(status: int, message: str, error_type: str) -> web.Response:
    """TGI's ``ErrorResponse``: ``{"error": str, "error_type": str}``."""
    return web.json_response(
        {"error": message, "error_type": error_type}, status=status, dumps=dumps
    )


def vllm_not_found(model: str) -> web.Response:
    """vLLM's answer for a model (adapter) it did not load: a real 404."""
    return web.json_response(
        {
            "object": "error",
            "message": f"The model `{model}` does not exist.",
            "type": "NotFoundError",
            "param": None,
            "code": 404,
        },
        status=404,
        dumps=dumps,
    )


def tgi_response_format_ok(value: Any) -> bool:
    """TGI's ``GrammarType``: adjacently tagged ``{"type", "value"}``; OpenAI's shape fails."""
    if value is None:
        return True
    return (
        isinstance(value, dict)
        and "value" in value
        and value.get("type") in ("json", "json_object", "regex", "json_schema")
    )


def validate(p: dict[str, Any], config: Any) -> str | None:
    """TGI's per-request checks, in TGI's order (router/src/validation.rs); the message or None."""
    prefix = "Input validation error: "
    top_p = p.get("top_p")
    if p.get("temperature") is not None and p["temperature"] <= 0:
        return prefix + "`temperature` must be strictly positive"
    if p.get("repetition_penalty") is not None and p["repetition_penalty"] <= 0:
        return prefix + "`repetition_penalty` must be strictly positive"
    freq = p.get("frequency_penalty")
    if freq is not None and not -2 <= freq <= 2:
        return prefix + "`frequency_penalty` must be >= -2.0 and <= 2.0"
    if top_p is not None and not 0 < top_p < 1:
        return prefix + "`top_p` must be > 0.0 and < 1.0"
    if p.get("max_new_tokens") == 0:
        return prefix + "`max_new_tokens` must be strictly positive"
    stop = p.get("stop") or []
    if isinstance(stop, list) and len(stop) > config.max_stop_sequences:
        return (
            prefix + f"`stop` supports up to {config.max_stop_sequences} stop sequences. "
            f"Given: {len(stop)}"
        )
    return None


def timing_headers(prompt: str, generation: Generation, seconds: float) -> dict[str, str]:
    """The ``x-*`` headers TGI puts on a non-streamed answer."""
    ms = int(seconds * 1000)
    return {
        "x-compute-type": "gpu+optimized",
        "x-compute-time": f"{seconds:.6f}",
        "x-compute-characters": str(len(prompt)),
        "x-total-time": str(ms),
        "x-validation-time": "0",
        "x-queue-time": "0",
        "x-inference-time": str(ms),
        "x-time-per-token": str(ms // max(1, generation.completion_tokens)),
        "x-prompt-tokens": str(generation.prompt_tokens),
        "x-generated-tokens": str(generation.completion_tokens),
    }


def stream_headers(prompt: str) -> dict[str, str]:
    """The headers of a TGI stream (axum's ``Sse`` adds the content type)."""
    return {
        "Cache-Control": "no-cache",
        "x-compute-type": "gpu+optimized",
        "x-compute-characters": str(len(prompt)),
        "X-Accel-Buffering": "no",
    }


def _usage(g: Generation) -> dict[str, int]:
    return {
        "prompt_tokens": g.prompt_tokens,
        "completion_tokens": g.completion_tokens,
        "total_tokens": g.prompt_tokens + g.completion_tokens,
    }


def _openai_finish(reason: str, vllm: bool = False) -> str:
    """``FinishReason::format(true)``: EOS becomes "stop"; stop_sequence stays raw (TGI).
    vLLM says "stop" for both."""
    return "stop" if reason == "eos_token" or (vllm and reason == "stop_sequence") else reason


def chat_completion(
    model: str, fingerprint: str, g: Generation, vllm: bool = False
) -> dict[str, Any]:
    """The non-streamed chat body (§3d; vLLM: a real id, OpenAI finish reasons)."""
    message = {"message": {"role": "assistant", "content": g.text}}
    body = _final("chat.completion", model, fingerprint, g, message)
    if vllm:
        body["id"] = f"chatcmpl-{secrets.token_hex(8)}"
        body["choices"][0]["finish_reason"] = _openai_finish(g.finish_reason, vllm=True)
    return body


def completion(model: str, fingerprint: str, g: Generation) -> dict[str, Any]:
    """The non-streamed legacy completion body (§3e)."""
    return _final("text_completion", model, fingerprint, g, {"text": g.text})


def _final(
    kind: str, model: str, fingerprint: str, g: Generation, output: dict[str, Any]
) -> dict[str, Any]:
    choice = {
        "index": 0,
        **output,
        "logprobs": None,
        "finish_reason": _openai_finish(g.finish_reason),
    }
    return {
        "object": kind,
        "id": "",
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": fingerprint,
        "choices": [choice],
        "usage": _usage(g),
    }


def generate_response(g: Generation, details: bool) -> dict[str, Any]:
    """The ``/generate`` body (§3b): ``details`` only when asked for."""
    body: dict[str, Any] = {"generated_text": g.text}
    if details:
        body["details"] = {
            "finish_reason": g.finish_reason,
            "generated_tokens": g.completion_tokens,
            "seed": None,
            "prefill": [],
            "tokens": [_token(g, i) for i in range(len(g.tokens))],
        }
    return body


def _token(g: Generation, index: int) -> dict[str, Any]:
    text = g.tokens[index]
    return {"id": 1000 + index, "text": text, "logprob": -0.1, "special": text == EOS_TOKEN}


async def _event(response: web.StreamResponse, payload: Any, prefix: str = "data:") -> None:
    data = payload if isinstance(payload, str) else dumps(payload)
    await response.write(f"{prefix}{data}\n\n".encode())  # TGI: no space after "data:"


class Framing(Protocol):
    """How one streaming route frames tokens, its ending and errors."""

    async def token(self, response: web.StreamResponse, g: Generation, index: int) -> None: ...
    async def finish(self, response: web.StreamResponse, g: Generation) -> None: ...
    async def error(self, response: web.StreamResponse, message: str, error_type: str) -> None: ...


class ChatStream:
    """``/v1/chat/completions`` with ``stream: true`` (§3c)."""

    def __init__(
        self, model: str, fingerprint: str, include_usage: bool, vllm: bool = False
    ) -> None:
        self.model = model
        self.fingerprint = fingerprint
        self.include_usage = include_usage
        self.created = int(time.time())
        # vLLM: real ids, "data: " with a space, OpenAI finish reasons.
        self.vllm = vllm
        self.id = f"chatcmpl-{secrets.token_hex(8)}" if vllm else ""

    async def _emit(self, response: web.StreamResponse, payload: Any) -> None:
        await _event(response, payload, "data: " if self.vllm else "data:")

    def _chunk(self, choices: list[Any], usage: Any) -> dict[str, Any]:
        return {
            "object": "chat.completion.chunk",
            "id": self.id,
            "created": self.created,
            "model": self.model,
            "system_fingerprint": self.fingerprint,
            "choices": choices,
            "usage": usage,
        }

    async def token(self, response: web.StreamResponse, g: Generation, index: int) -> None:
        text = g.tokens[index]
        last = index == len(g.tokens) - 1
        finish = _openai_finish(g.finish_reason, self.vllm) if last else None
        content = "" if text == EOS_TOKEN else text  # special tokens become empty content
        delta = {"role": "assistant", "content": content}
        await _event(
            response,
            self._chunk(
                [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}], None
            ),
        )

    async def finish(self, response: web.StreamResponse, g: Generation) -> None:
        if self.include_usage:
            await self._emit(response, self._chunk([], _usage(g)))
        await self._emit(response, "[DONE]")

    async def error(self, response: web.StreamResponse, message: str, error_type: str) -> None:
        # InferError::into_openai_event: the status is hard-coded to 422, and [DONE] follows.
        await self._emit(response, {"error": {"message": message, "http_status_code": 422}})
        await self._emit(response, "[DONE]")


class CompletionStream(ChatStream):
    """``/v1/completions`` with ``stream: true`` (§3e): ``finish_reason: ""`` until the end."""

    def __init__(self, model: str, fingerprint: str) -> None:
        super().__init__(model, fingerprint, include_usage=False)

    async def token(self, response: web.StreamResponse, g: Generation, index: int) -> None:
        text = g.tokens[index]
        if index < len(g.tokens) - 1:
            await _event(
                response,
                {
                    "object": "text_completion",
                    "id": "",
                    "created": self.created,
                    "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": ""}],
                    "model": self.model,
                    "system_fingerprint": self.fingerprint,
                },
            )
            return
        await _event(
            response,
            {  # the final chunk: raw finish reason, raw last token, usage
                "object": "text_completion",
                "id": "",
                "created": self.created,
                "model": self.model,
                "system_fingerprint": self.fingerprint,
                "choices": [
                    {"index": 0, "text": text, "logprobs": None, "finish_reason": g.finish_reason}
                ],
                "usage": _usage(g),
            },
        )

    async def finish(self, response: web.StreamResponse, g: Generation) -> None:
        await _event(response, "[DONE]")


class GenerateStream:
    """``/generate_stream`` (§3a): one event per token, no ``[DONE]``."""

    def __init__(self, details: bool) -> None:
        self.details = details

    async def token(self, response: web.StreamResponse, g: Generation, index: int) -> None:
        last = index == len(g.tokens) - 1
        details = None
        if last and self.details:
            details = {
                "finish_reason": g.finish_reason,
                "generated_tokens": g.completion_tokens,
                "seed": None,
                "input_length": g.prompt_tokens,
            }
        await _event(
            response,
            {
                "index": index + 1,
                "token": _token(g, index),
                "generated_text": g.text if last else None,
                "details": details,
            },
        )

    async def finish(self, response: web.StreamResponse, g: Generation) -> None:
        return None

    async def error(self, response: web.StreamResponse, message: str, error_type: str) -> None:
        await _event(response, {"error": message, "error_type": error_type})
