"""What a simulated replica is configured with and what it saw: requests, counters,
load (read by its routes, its jobs and the tests)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from gateway.registry.models import parse_lora_adapters
from gateway.sim.faults import Fault


@dataclass
class SimConfig:
    """How the simulated TGI replica behaves."""

    model_id: str = "google/gemma-2-2b-it"
    lora_adapters: str = ""
    """TGI's ``LORA_ADAPTERS`` value (comma-separated, ``id@rev`` and ``name=path`` allowed)."""
    max_concurrent_requests: int = 128
    max_input_tokens: int = 8191
    max_total_tokens: int = 8192
    max_stop_sequences: int = 4
    ttft: float = 0.0
    """Seconds before the first token."""
    itl: float = 0.0
    """Seconds between tokens."""
    stall_seconds: float = 300.0
    flavor: Literal["tgi", "vllm"] = "tgi"
    """``vllm``: speak vLLM's OpenAI server instead (adapters by name, real ids, ``data: ``
    framing, 404 for an unknown model, adapters listed in ``/v1/models``)."""
    faults: dict[str, Fault] = field(default_factory=dict)
    """Adapter id (or the base model id) -> the fault every request to it gets."""


@dataclass
class SeenRequest:
    """One request as the simulator received it, and how it ended."""

    path: str
    body: Any
    headers: dict[str, str]
    served_by: str = ""
    outcome: str = "open"  # open | ok | error | disconnected | reset
    connection: str = ""
    """The client's address and port: requests on one kept-alive connection share it."""


class SimState:
    """A replica's configuration, the requests it saw, its counters and its load."""

    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self.adapters = frozenset(parse_lora_adapters(self.config.lora_adapters))
        self.seen: list[SeenRequest] = []
        self._changed = threading.Condition()
        self.inflight = 0
        self.peak_inflight = 0
        """Most requests ever in flight at once (what concurrency tests check)."""
        self._counters: dict[str, int] = {}

    def wait_for(self, predicate: Callable[[list[SeenRequest]], bool], timeout: float = 30) -> bool:
        """Block until ``predicate(self.seen)`` holds (after any change), or the timeout."""
        with self._changed:
            return self._changed.wait_for(lambda: predicate(self.seen), timeout)

    def record(self, seen: SeenRequest, outcome: str | None = None) -> None:
        """A request arrived (no ``outcome``), or ended with ``outcome``."""
        with self._changed:
            if outcome is None:
                self.seen.append(seen)
            else:
                seen.outcome = outcome
            self._changed.notify_all()

    def count(self, name: str) -> None:
        """One more of a counter TGI exports (requests, and failures by kind)."""
        self._counters[name] = self._counters.get(name, 0) + 1
