"""Structured request logs: one JSON line per request, on every ending, holding exactly
what the team's logging policy allows.

- ``none``: no line at all (the request is still counted in metrics, without content);
- ``metadata`` (default): ids, sizes, timings, adapter, pool, outcome, tokens;
- ``redacted``: metadata plus prompt and completion with secrets and PII masked;
- ``full``: metadata plus prompt and completion as they were.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from typing import Any

log = logging.getLogger("gateway.requests")

_MASKS = (
    ("email", re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")),
    (
        "key",
        re.compile(
            r"\b(?:lgw-[a-z2-7]{12}-[A-Za-z0-9_-]{20,}|sk-[A-Za-z0-9_-]{16,}"
            r"|hf_[A-Za-z0-9]{20,}|AKIA[A-Z0-9]{16}|gh[pousr]_[A-Za-z0-9]{30,})"
        ),
    ),
    ("bearer", re.compile(r"(?i)\bbearer\s+[A-Za-z0-9._~+/=-]{12,}")),
    ("card", re.compile(r"\b(?:\d[ -]?){13,16}\b")),
    ("phone", re.compile(r"\+?\d[\d ().-]{8,}\d")),
    ("secret", re.compile(r"(?i)\b(password|passwd|secret|token|api[_-]?key)\b\s*[:=]\s*\S+")),
)


def to_stdout() -> None:
    """Write request lines to standard output as bare JSON lines (one per request), apart
    from the service's own diagnostics (standard error)."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(message)s"))
    log.handlers[:] = [handler]
    log.setLevel(logging.INFO)
    log.propagate = False


def redact(text: str) -> str:
    """``text`` with secrets and common PII replaced by ``[REDACTED:<kind>]``."""
    for kind, pattern in _MASKS:
        text = pattern.sub(f"[REDACTED:{kind}]", text)
    return text


def wants_content(policy: str) -> bool:
    """Whether the logging policy keeps prompts and completions."""
    return policy in ("redacted", "full")


def emit(policy: str, record: dict[str, Any], prompt: str | None, completion: str | None) -> None:
    """Write one request's line, as the team's policy allows."""
    if policy == "none" or not log.isEnabledFor(logging.INFO):
        return
    if wants_content(policy):
        clean = redact if policy == "redacted" else str
        record = {**record, "prompt": clean(prompt or ""), "completion": clean(completion or "")}
    log.info(json.dumps(record, separators=(",", ":"), ensure_ascii=False))
