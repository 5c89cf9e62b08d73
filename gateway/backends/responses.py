"""Backend answers made clean OpenAI: shared by every dialect (TGI, vLLM).

``id`` becomes the gateway's, ``model`` the client's task; finish reasons become
OpenAI's; the stop sequence a backend leaves in the text is removed; tool calls get
``finish_reason: tool_calls``; usage is read for accounting and passed on only when the
client asked for it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from gateway.errors import UpstreamError
from gateway.jsonio import dumps, loads

# JSON allows whitespace around ':' (TGI writes none, a proxy or another engine may).
_MODEL_FIELD = re.compile(rb'"model"\s*:\s*"(?:[^"\\]|\\.)*"')
_ID_FIELD = re.compile(rb'"id"\s*:\s*"(?:[^"\\]|\\.)*"')
_FINAL_FIELD = re.compile(rb'"(?:finish_reason"\s*:\s*"|usage"\s*:\s*\{)')
"""A finish reason (a string: ``null`` is not final) or a usage object."""


@dataclass(frozen=True, slots=True)
class Usage:
    """Tokens one request consumed, as the backend counted them."""

    prompt_tokens: int
    completion_tokens: int

    @classmethod
    def from_json(cls, value: Any) -> Usage | None:
        """Read an OpenAI ``usage`` object; ``None`` when absent or malformed."""
        if not isinstance(value, dict):
            return None
        prompt, completion = value.get("prompt_tokens"), value.get("completion_tokens")
        if not isinstance(prompt, int) or not isinstance(completion, int):
            return None
        return cls(prompt, completion)


class ChunkRewriter:
    """Turns each TGI stream chunk into an OpenAI chunk, by byte edits where they suffice.

    Most chunks only need ``id`` and ``model`` replaced, which a byte-level substitution
    of the first ``"id":"..."`` and ``"model":"..."`` does without parsing JSON (quotes
    inside strings are escaped, so content cannot match). Only the final chunks (finish
    reason, usage) are parsed.
    """

    def __init__(
        self,
        response_id: str,
        task: str,
        wants_usage: bool,
        stop: list[str] | None,
        collect: bool = False,
    ) -> None:
        self._stop = stop
        self._collect: list[str] | None = [] if collect else None
        self._id = b'"id":' + dumps(response_id)
        self._model = b'"model":' + dumps(task)
        self._wants_usage = wants_usage
        self._tool_calls = False
        self.usage: Usage | None = None
        """The usage TGI reported, once its chunk went by."""

    def rewrite(self, payload: bytes) -> bytes | None:
        """The OpenAI chunk for one TGI chunk, or ``None`` to drop it."""
        out = _ID_FIELD.sub(self._id, payload, count=1)
        out = _MODEL_FIELD.sub(self._model, out, count=1)
        if b'"tool_calls"' in out:
            self._tool_calls = True
        if self._collect is not None:
            self._collect.append(text_of(out))
        if _FINAL_FIELD.search(out) is not None:
            return self._rewrite_final(out)
        return out

    def _rewrite_final(self, payload: bytes) -> bytes | None:
        chunk = loads(payload)
        for choice in chunk.get("choices") or ():
            clean_choice(choice, self._stop, streaming_tools=self._tool_calls)
        usage = Usage.from_json(chunk.get("usage"))
        if usage is not None:
            self.usage = usage
            if not self._wants_usage:
                if not chunk.get("choices"):
                    return None
                chunk.pop("usage")
        return dumps(chunk)

    @property
    def text(self) -> str | None:
        """The text streamed so far, when asked to ``collect`` it (for content logging)."""
        return "".join(self._collect) if self._collect is not None else None


def clean_response(
    raw: bytes, response_id: str, task: str, stop: list[str] | None
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


def text_of(body: bytes) -> str:
    """The generated text in an OpenAI response or chunk (chat or legacy completion)."""
    try:
        choices = loads(body).get("choices") or []
    except (ValueError, AttributeError):
        return ""
    parts = []
    for choice in choices:
        holder = choice.get("message") or choice.get("delta") or choice
        text = holder.get("content") if "content" in holder else holder.get("text")
        parts.append(text if isinstance(text, str) else "")
    return "".join(parts)


def clean_choice(
    choice: dict[str, Any], stop: list[str] | None, streaming_tools: bool = False
) -> None:
    """One choice made OpenAI's: finish reason, stop sequence, tool calls (see top)."""
    reason = choice.get("finish_reason")
    if reason == "":  # completions stream chunks before the last
        choice["finish_reason"] = None
    elif reason == "stop_sequence" and stop:
        _strip_stop(choice, stop)
    if reason in ("stop_sequence", "eos_token"):
        if reason == "eos_token" and "text" in choice:
            choice["text"] = ""  # the raw EOS token text of a completions stream
        choice["finish_reason"] = "stop"
    message = choice.get("message")
    tool_calls = message.get("tool_calls") if isinstance(message, dict) else None
    if tool_calls or (streaming_tools and reason is not None):
        choice["finish_reason"] = "tool_calls"
    if tool_calls and isinstance(message, dict):
        message.setdefault("content", None)
        for call in tool_calls:
            if isinstance(call, dict) and isinstance(call.get("function"), dict):
                call["function"].pop("description", None)


def _strip_stop(choice: dict[str, Any], stop: list[str]) -> None:
    """Remove the stop sequence TGI leaves at the end of the text (OpenAI omits it).

    In a stream only the final chunk can be edited: when a stop sequence spans several
    tokens, the earlier tokens have already reached the client.
    """
    holder = choice.get("message") or choice.get("delta") or choice
    key = "text" if "text" in holder else "content"
    text = holder.get(key)
    if not isinstance(text, str):
        return
    for sequence in stop:
        if sequence and text.endswith(sequence):
            holder[key] = text[: -len(sequence)]
            return
        if text and sequence.endswith(text):
            holder[key] = ""
            return
