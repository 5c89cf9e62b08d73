"""Upstream request bodies, for every dialect: what a chat or completion request becomes
once a dialect has chosen its model name, sampling fields and ``response_format``."""

from __future__ import annotations

from typing import Any

from gateway.errors import InvalidRequest
from gateway.jsonio import dumps
from gateway.schemas import ChatRequest, CompletionRequest, Message, content_text


def chat_body(
    request: ChatRequest,
    model: str,
    max_tokens: int,
    sampling: dict[str, Any],
    response_format: dict[str, Any] | None,
    fold_system: bool,
    part_types: frozenset[str],
) -> bytes:
    """The body to POST to ``/v1/chat/completions``; content parts of a type outside
    ``part_types`` (what the engine deserializes) are a 400 naming the part."""
    check_parts(request.messages, part_types)
    body: dict[str, Any] = {
        "model": model,
        "messages": messages(request.messages, fold_system),
        "max_tokens": max_tokens,
        **sampling,
    }
    if request.logprobs is not None:
        body["logprobs"] = request.logprobs
    if request.top_logprobs is not None:
        body["top_logprobs"] = request.top_logprobs
    if request.tools is not None:
        body["tools"] = request.tools
    if request.tool_choice is not None:
        body["tool_choice"] = request.tool_choice
    if response_format is not None:
        body["response_format"] = response_format
    return dumps(body)


def completion_body(
    request: CompletionRequest, model: str, max_tokens: int, sampling: dict[str, Any]
) -> bytes:
    """The body to POST to ``/v1/completions``."""
    if request.suffix:
        raise InvalidRequest("'suffix' is not supported by this model.", param="suffix")
    if request.echo:
        raise InvalidRequest("'echo' is not supported by this model.", param="echo")
    return dumps({"model": model, "prompt": request.prompt, "max_tokens": max_tokens, **sampling})


def streaming(request: ChatRequest | CompletionRequest) -> dict[str, Any]:
    """``stream``, and ``include_usage`` always on a stream, so accounting is exact (the
    usage chunk reaches the client only if it asked)."""
    if request.stream:
        return {"stream": True, "stream_options": {"include_usage": True}}
    return {"stream": False}


def check_parts(turns: list[Message], part_types: frozenset[str]) -> None:
    """``InvalidRequest`` for the first content part the engine would not accept."""
    for i, turn in enumerate(turns):
        for j, part in enumerate(turn.content if isinstance(turn.content, list) else ()):
            kind = part.get("type")
            if not isinstance(kind, str) or kind not in part_types:
                raise InvalidRequest(
                    f"Content parts of type {str(kind)[:40]!r} are not supported by this model.",
                    param=f"messages.{i}.content.{j}.type",
                )


def messages(turns: list[Message], fold_system: bool) -> list[dict[str, Any]]:
    """The turns to send: ``developer`` (OpenAI's new name) as ``system``; with
    ``fold_system`` (a template that refuses ``system``, Gemma 2's) the system text goes
    into the first user turn."""
    out = [m.model_dump(exclude_none=True) for m in turns]
    for message in out:
        if message["role"] == "developer":
            message["role"] = "system"
    if not fold_system:
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
