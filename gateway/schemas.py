"""The OpenAI requests the data plane accepts, validated strictly from the raw body.

Only fields listed here ever reach a backend (unknown fields are ignored, never
forwarded), and wrong types are a 400 that names the field, as OpenAI answers.
"""

from __future__ import annotations

from functools import cached_property
from typing import Any, ClassVar, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from gateway.errors import InvalidRequest
from gateway.jsonio import dumps


class _Request(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True, strict=True)


R = TypeVar("R", bound=_Request)


class StreamOptions(_Request):
    include_usage: bool = False


class Message(_Request):
    """One chat turn; ``content`` is text, content parts, or null (assistant tool calls)."""

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = None


class _Sampling(_Request):
    model: str = Field(min_length=1, max_length=256)
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, ge=0, le=1)
    n: int | None = Field(None, ge=1, le=1)
    stop: str | list[str] | None = None
    seed: int | None = None
    frequency_penalty: float | None = Field(None, ge=-2, le=2)
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    user: str | None = None

    @property
    def stop_list(self) -> list[str] | None:
        """``stop`` as TGI wants it: a list."""
        return [self.stop] if isinstance(self.stop, str) else self.stop

    @property
    def stop_chars(self) -> int:
        """The stop sequences' characters (they reach the backend too)."""
        return sum(len(s) for s in self.stop_list or ())

    @property
    def wants_usage(self) -> bool:
        """Whether the client asked for the usage chunk of a stream."""
        return self.stream_options is not None and self.stream_options.include_usage


class ChatRequest(_Sampling):
    """``POST /v1/chat/completions``."""

    id_prefix: ClassVar[str] = "chatcmpl"
    operation: ClassVar[str] = "chat"
    messages: list[Message] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: bool | None = None
    top_logprobs: int | None = Field(None, ge=0, le=20)
    response_format: dict[str, Any] | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None

    @property
    def requested_max_tokens(self) -> int | None:
        """``max_completion_tokens`` (the newer name) or ``max_tokens``."""
        return self.max_completion_tokens or self.max_tokens

    @property
    def prompt_text(self) -> str:
        """The conversation's text, one turn per line (for content logging only)."""
        return "\n".join(f"{m.role}: {content_text(m.content)}" for m in self.messages)

    @cached_property  # read by the policy, the admission and the accounting
    def prompt_chars(self) -> int:
        """Characters of the prompt as the backend gets it: the turns' text, every other
        content part, field and tool call whole, and the tool definitions, grammar and
        stop sequences it is given (a cap on text alone would let a megabyte through in
        an ``image_url``, a tool's description or a schema)."""
        extras = (self.tools, self.tool_choice, self.response_format)
        size = sum(len(dumps(value)) for value in extras if value is not None)
        return size + sum(message_chars(m) for m in self.messages) + self.stop_chars

    @property
    def uses_tools(self) -> bool:
        """Whether any tool-related field is set: tools, a tool choice, tool calls or
        tool results in the conversation."""
        return (
            bool(self.tools)
            or self.tool_choice is not None
            or any(
                m.tool_calls or m.role == "tool" or m.tool_call_id is not None
                for m in self.messages
            )
        )

    @cached_property
    def prompt_tokens_estimate(self) -> int:
        """Prompt tokens, estimated before tokenizing (settlement corrects it)."""
        return estimate_tokens(self.prompt_chars) + 4 * len(self.messages)


class CompletionRequest(_Sampling):
    """``POST /v1/completions`` (legacy)."""

    id_prefix: ClassVar[str] = "cmpl"
    operation: ClassVar[str] = "text_completion"
    prompt: str | list[str] = Field(min_length=1)
    echo: bool | None = None
    suffix: str | None = None

    @property
    def requested_max_tokens(self) -> int | None:
        """The client's ``max_tokens``."""
        return self.max_tokens

    @property
    def prompt_text(self) -> str:
        """The prompts' text (for content logging only)."""
        return self.prompt if isinstance(self.prompt, str) else "\n".join(self.prompt)

    @cached_property
    def prompt_tokens_estimate(self) -> int:
        """Prompt tokens, estimated before tokenizing (settlement corrects it)."""
        prompts = [self.prompt] if isinstance(self.prompt, str) else self.prompt
        return sum(estimate_tokens(len(p)) for p in prompts)


def estimate_tokens(chars: int) -> int:
    """About four characters a token for English with Gemma's tokenizer, rounded up."""
    return (chars + 3) // 4 + 1


def message_chars(message: Message) -> int:
    """A turn's size in characters: its text, and everything else it carries (other
    parts, a text part's other fields, tool calls, names) as the JSON that carries it."""
    size = len(message.name or "") + len(message.tool_call_id or "")
    if isinstance(message.content, list):
        size += sum(_part_chars(part) for part in message.content)
    else:
        size += len(message.content or "")
    if message.tool_calls:
        size += len(dumps(message.tool_calls))
    return size


def _part_chars(part: dict[str, Any]) -> int:
    text = part.get("text")
    if part.get("type") != "text" or not isinstance(text, str):
        return len(dumps(part))
    rest = {k: v for k, v in part.items() if k not in ("type", "text")}
    return len(text) + (len(dumps(rest)) if rest else 0)


def content_text(content: Any) -> str:
    """The text of a message's ``content``: a string, or the text of its content parts."""
    if isinstance(content, list):
        return "".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return content if isinstance(content, str) else ""


def parse(model: type[R], body: bytes) -> R:
    """The validated request, or ``InvalidRequest`` naming the first bad field."""
    if not body.strip():
        raise InvalidRequest("The request body is empty; send a JSON object.")
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        error = exc.errors(include_url=False, include_input=False)[0]
        if error["type"] in ("json_invalid", "json_type"):
            raise InvalidRequest("The request body is not valid JSON.") from None
        loc = ".".join(str(part) for part in error["loc"])
        if not loc:
            raise InvalidRequest("The request body must be a JSON object.") from None
        raise InvalidRequest(f"Invalid value for '{loc}': {error['msg']}.", param=loc) from None


OpenAIRequest = ChatRequest | CompletionRequest
"""Either request the data plane serves."""
