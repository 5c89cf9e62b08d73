"""Structured request logs: one JSON line per request, on every ending, holding exactly
what the team's logging policy allows.

- ``none``: no line at all (the request is still counted in metrics, without content);
- ``metadata`` (default): ids, sizes, timings, adapter, pool, outcome, tokens;
- ``redacted``: metadata plus prompt and completion with secrets and PII masked;
- ``full``: metadata plus prompt and completion as they were.
"""

from __future__ import annotations

import atexit
import logging
import re
import sys
import threading
from collections import deque
from collections.abc import Callable
from typing import Any, TextIO

from gateway.jsonio import dumps

log = logging.getLogger("gateway.requests")
QUEUE_LINES = 50_000
"""Lines waiting for the writer thread; beyond that they are dropped, never waited for."""
FLUSH_SECONDS = 0.05

# Every repetition is bounded and possessive, and a match starts only where a word does:
# redaction runs on the event loop over prompts of up to LGW_MAX_BODY_BYTES, so each
# pattern must stay linear in the text's length (an unbounded e-mail pattern took
# minutes over a megabyte of letters).
# The fullwidth and small @ (U+FF20, U+FE6B) and dots (U+FF0E, U+3002) count too.
_AT = r"\s{0,3}+(?:@|\uff20|\ufe6b|\(at\)|\[at\])\s{0,3}+"
_DOT = r"\s{0,3}+(?:\.|\uff0e|\u3002|\(dot\)|\[dot\])\s{0,3}+"
_LOCAL = r"[A-Za-z0-9_%+-]{1,256}+"
_LABEL = r"[A-Za-z0-9-]{1,63}+"
_MASKS = (
    # Also spelled out with spaces or (at)/(dot): "john . doe @ example . com".
    (
        "email",
        re.compile(
            rf"(?<![A-Za-z0-9_%+.-]){_LOCAL}(?:{_DOT}{_LOCAL}){{0,8}}+{_AT}"
            rf"{_LABEL}(?:{_DOT}{_LABEL}){{1,8}}+"
        ),
    ),
    (
        "key",
        re.compile(
            r"\b(?:lgw\s{0,3}+-\s{0,3}+[a-z2-7]{12}\s{0,3}+-\s{0,3}+[A-Za-z0-9_-]{20,}+"
            r"|sk\s{0,3}+-\s{0,3}+[A-Za-z0-9_-]{16,}+"
            r"|hf_[A-Za-z0-9]{20,}|AKIA[A-Z0-9]{16}|gh[pousr]_[A-Za-z0-9]{30,})"
        ),
    ),
    ("bearer", re.compile(r"(?i)\bbearer\s+[A-Za-z0-9._~+/=-]{12,}")),
    ("card", re.compile(r"\b(?:\d[ -]?){13,16}\b")),
    ("phone", re.compile(r"\+?\d[\d ().-]{8,}\d")),
    ("secret", re.compile(r"(?i)\b(password|passwd|secret|token|api[_-]?key)\b\s*[:=]\s*\S+")),
)


class _LineWriter(logging.Handler):
    """Keeps lines for a writer thread that writes them out every ``FLUSH_SECONDS``, so
    a request costs the event loop an append: no lock to wake a thread, no write. When
    the thread lags (stdout stalled), lines beyond ``capacity`` are dropped, and said so
    on stderr, rather than block the event loop or grow without bound."""

    def __init__(self, stream: TextIO, capacity: int) -> None:
        super().__init__()
        self.dropped = 0
        self._stream, self._capacity = stream, capacity
        self._lines: deque[str] = deque()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._write, name="request-log", daemon=True)
        self._thread.start()

    def emit(self, record: logging.LogRecord) -> None:
        if len(self._lines) < self._capacity:
            self._lines.append(record.getMessage())
            return
        self.dropped += 1
        if self.dropped % 1000 == 1:
            print(f"request log: stdout lags, {self.dropped} lines dropped", file=sys.stderr)

    def _write(self) -> None:
        while not self._stopping.wait(FLUSH_SECONDS):
            self._write_queued()
        self._write_queued()

    def _write_queued(self) -> None:
        lines = [self._lines.popleft() for _ in range(len(self._lines))]
        if lines:
            self._stream.write("\n".join(lines) + "\n")
            self._stream.flush()

    def stop(self) -> None:
        """Write what is queued, then stop the thread. Not ``close()``, on purpose: a
        server reconfiguring logging (``dictConfig`` closes every handler there is) must
        not silence the request log."""
        if self._thread.is_alive():
            self._stopping.set()
            self._thread.join()


def to_stdout(stream: TextIO | None = None, capacity: int = QUEUE_LINES) -> Callable[[], None]:
    """Write request lines to standard output (or ``stream``) as bare JSON lines, one
    per request, apart from the service's own diagnostics (standard error). A thread of
    their own writes them: the event loop never waits for a pipe. Returns ``stop``, which
    writes what is still queued (also run at exit)."""
    handler = _LineWriter(stream or sys.stdout, capacity)
    atexit.register(handler.stop)
    log.handlers[:] = [handler]
    log.setLevel(logging.INFO)
    log.propagate = False
    return handler.stop


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
    log.info(dumps(record).decode())
