"""Fault modes of the simulator, chosen per request or per adapter.

Per request: the header ``x-sim-fault: <mode>`` (direct calls) or the marker
``sim-fault=<mode>`` anywhere in the prompt (it survives a gateway in between).
Per adapter: ``--fault ADAPTER=MODE`` on the command line.
"""

from __future__ import annotations

import re
from enum import StrEnum


class Fault(StrEnum):
    """What goes wrong, and when."""

    OVERLOAD = "overload"
    """Act as if ``max_concurrent_requests`` were reached: "Model is overloaded"."""
    ERROR_BEFORE_CONTENT = "error-before-content"
    """A generation error before the first token (an in-stream event for streams)."""
    ERROR_MID_STREAM = "error-mid-stream"
    """A generation error after two tokens."""
    STALL = "stall"
    """Stop sending after the first token (for ``stall_seconds``)."""
    KEEPALIVE = "keepalive"
    """After the first token, only ``:`` keep-alive comments (every 0.1 s)."""
    RESET = "reset"
    """Reset the TCP connection after two tokens (before the answer when not streaming)."""
    LATE_END = "late-end"
    """End a stream's body 0.1 s after ``[DONE]``: the chunked terminator then comes in a
    segment of its own, as it often does under load."""


_MARKER = re.compile(r"sim-fault=([a-z-]+)")


def fault_for(header: str | None, prompt: str, adapter_fault: Fault | None) -> Fault | None:
    """The fault that applies to one request, if any (request beats adapter)."""
    if header:
        return Fault(header)
    match = _MARKER.search(prompt)
    if match:
        return Fault(match.group(1))
    return adapter_fault
