"""Deterministic text for the simulator: what it writes proves which adapter answered.

Every answer starts with the token ``[<served model>]`` (the adapter id, or the base
model id when TGI would fall back to it), then echoes the words of the last user turn.
Given the same request, the same tokens come out, so tests can assert routing, stop
sequences and token counts exactly.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

EOS_TOKEN = "<end_of_turn>"  # noqa: S105 - a token, not a password;  # Gemma's end-of-turn token, streamed with special=true
_WORD = re.compile(r"\w+|[^\w\s]")
DEFAULT_LENGTH = 16


@dataclass(frozen=True, slots=True)
class Generation:
    """The tokens of one answer and why it stopped (TGI's raw finish reason)."""

    tokens: tuple[str, ...]
    finish_reason: str  # "eos_token" | "length" | "stop_sequence"
    prompt_tokens: int

    @property
    def text(self) -> str:
        """The generated text with special tokens skipped (TGI's ``generated_text``)."""
        return "".join(t for t in self.tokens if t != EOS_TOKEN)

    @property
    def completion_tokens(self) -> int:
        """Generated tokens, the EOS token included, as TGI counts them."""
        return len(self.tokens)


def count_tokens(text: str) -> int:
    """A stand-in tokenizer: words and punctuation marks."""
    return len(_WORD.findall(text))


def generate(served_by: str, prompt: str, max_new_tokens: int, stop: list[str]) -> Generation:
    """The answer of ``served_by`` to ``prompt`` (the already templated input)."""
    echo = _WORD.findall(_last_turn(prompt))[: DEFAULT_LENGTH - 1] or ["ok"]
    candidates = [f"[{served_by}]", *(f" {w}" for w in echo)]
    tokens: list[str] = []
    text = ""
    for token in candidates:
        if len(tokens) == max_new_tokens:
            return Generation(tuple(tokens), "length", count_tokens(prompt))
        tokens.append(token)
        text += token
        if any(s and s in text for s in stop):  # TGI keeps the stop sequence in the text
            return Generation(tuple(tokens), "stop_sequence", count_tokens(prompt))
    if len(tokens) == max_new_tokens:
        return Generation(tuple(tokens), "length", count_tokens(prompt))
    return Generation((*tokens, EOS_TOKEN), "eos_token", count_tokens(prompt))


def _last_turn(prompt: str) -> str:
    turns = prompt.split("<start_of_turn>user\n")
    return turns[-1].split("<end_of_turn>")[0]


class TemplateError(ValueError):
    """The chat template refused the conversation (TGI: 422 ``template_error``)."""


def apply_gemma_template(messages: list[dict[str, Any]]) -> str:
    """Gemma 2's chat template: no system role, strict user/assistant alternation."""
    out = "<bos>"
    for i, message in enumerate(messages):
        role = message.get("role")
        if role == "system":
            raise TemplateError(
                "Template error: syntax error: System role not supported (in <string>:1)"
            )
        if (role == "user") != (i % 2 == 0):
            raise TemplateError(
                "Template error: syntax error: Conversation roles must "
                "alternate user/assistant/user/assistant/... (in <string>:1)"
            )
        turn = "model" if role == "assistant" else role
        out += f"<start_of_turn>{turn}\n{_text(message.get('content'))}<end_of_turn>\n"
    return out + "<start_of_turn>model\n"


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""
