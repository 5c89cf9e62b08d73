"""Stage 5, forward: an admitted request to a replica of its pool, the answer back.

``Upstream.forward`` is the stage's one entry: translate for the pool's dialect, try the
pool's replicas while nothing reached the client (``retries.py``), then answer whole or
relay the stream (``relay.py``). How the request ended is reported once to its
``Listener`` (the request's record, stage 6): on success here, at a stream's last byte
or cut; when ``forward`` raises instead, the caller records the error.
"""

from __future__ import annotations

import random
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from contextlib import aclosing
from dataclasses import dataclass
from typing import Protocol, TypeVar

from gateway.backends import DIALECTS, Dialect, Usage
from gateway.backends.responses import text_of
from gateway.metrics import Metrics
from gateway.routing import Route
from gateway.schemas import OpenAIRequest
from gateway.settings import Settings
from gateway.store.cache import RegistryCache
from gateway.upstream.allowlist import speakable
from gateway.upstream.attempt import Outbound, call, open_stream
from gateway.upstream.balancer import Balancer, RetryBudget
from gateway.upstream.client import Client
from gateway.upstream.probes import Prober
from gateway.upstream.relay import relay
from gateway.upstream.retries import Slot, with_retries

T = TypeVar("T")
Answer = bytes | AsyncIterator[bytes]
"""A whole OpenAI body, or a stream's SSE bytes (its first chunk already read)."""


@dataclass(frozen=True, slots=True)
class Exchange:
    """An admitted request, ready to forward."""

    route: Route
    request: OpenAIRequest
    max_tokens: int
    """Always explicit, already capped (stage 3)."""
    request_id: str
    keep_text: bool = False
    """Collect the answer's text (the team's logs keep content)."""

    @property
    def response_id(self) -> str:
        """The answer's ``id``: ``chatcmpl-<request id>`` or ``cmpl-<request id>``."""
        return f"{self.request.id_prefix}-{self.request_id}"


@dataclass(frozen=True, slots=True)
class Ending:
    """How a forwarded request ended."""

    outcome: str
    """``ok``, an error code, or ``client_disconnect``."""
    usage: Usage | None = None
    """As the backend reported it; ``None`` when it did not (a stream cut short)."""
    relayed: int = 0
    """Chunks relayed to the client."""
    first_token_at: float | None = None
    """``time.perf_counter()`` when a stream's first event was in hand, ready to leave."""
    text: str | None = None
    """The answer's text, when the exchange asked to keep it."""


class Listener(Protocol):
    """Who hears about the call to the backend: the request's record."""

    def upstream_started(self, path: str) -> dict[str, str] | None:
        """The call to the backend starts; the headers that carry its trace, if any."""
        ...

    def ended(self, ending: Ending) -> None:
        """The request is over."""
        ...


class Upstream:
    """The backends as the data plane sees them: one HTTP client, the balancer that
    picks replicas, the prober that keeps its view fresh, the retry budget."""

    def __init__(
        self, settings: Settings, registry: RegistryCache, rng: random.Random, metrics: Metrics
    ) -> None:
        self.client = Client(settings)
        self.balancer = Balancer(
            eject_after=settings.eject_after_failures,
            base_ejection=settings.ejection_seconds,
            rng=rng,
            speakable=lambda url: speakable(url, settings),
        )
        self.retry_budget = RetryBudget()
        self.prober = Prober(self.balancer, registry, settings.probe_interval, metrics)
        self._deadline = settings.upstream_deadline

    async def start(self) -> None:
        """Open the connection pool and probe every replica once."""
        await self.client.start()
        await self.prober.start()

    async def close(self) -> None:
        """Stop probing and close every connection."""
        await self.prober.stop()
        await self.client.close()

    async def forward(self, exchange: Exchange, listener: Listener) -> Answer:
        """Send ``exchange`` to a replica of its route's pool; its answer."""
        dialect = DIALECTS[exchange.route.pool.dialect]
        path, body = dialect.translate(exchange.request, exchange.route, exchange.max_tokens)
        out = Outbound(exchange.route, path, body, listener.upstream_started(path))
        if exchange.request.stream:
            return await self._stream(dialect, out, exchange, listener)
        return await self._whole(dialect, out, exchange, listener)

    def _tries(
        self, out: Outbound, stream: bool, attempt: Callable[[Outbound], Awaitable[T]]
    ) -> Awaitable[tuple[T, Slot]]:
        """``attempt`` on the pool's replicas, retried while nothing reached the client."""
        return with_retries(self.balancer, self.retry_budget, out, stream, self._deadline, attempt)

    async def _whole(
        self, dialect: Dialect, out: Outbound, exchange: Exchange, listener: Listener
    ) -> bytes:
        stop = exchange.request.stop_list
        (content, usage), slot = await self._tries(
            out, False, lambda o: call(self.client, dialect, o, exchange.response_id, stop)
        )
        slot.release(True)
        text = text_of(content) if exchange.keep_text else None
        listener.ended(Ending("ok", usage, text=text))
        return content

    async def _stream(
        self, dialect: Dialect, out: Outbound, exchange: Exchange, listener: Listener
    ) -> AsyncIterator[bytes]:
        (events, first), slot = await self._tries(
            out, True, lambda o: open_stream(self.client, dialect, o)
        )
        asked = exchange.request
        rewriter = dialect.rewriter(
            exchange.response_id,
            out.route.task,
            asked.wants_usage,
            asked.stop_list,
            exchange.keep_text,
        )
        first_token_at = time.perf_counter()

        def ended(outcome: str, relayed: int) -> None:
            slot.release(_health(outcome))
            usage, text = rewriter.usage, rewriter.text
            listener.ended(Ending(outcome, usage, relayed, first_token_at, text))

        frames = relay(events, first, rewriter, dialect, ended)
        # Started here, so its cleanup (release, record, close upstream) is armed even if
        # the client leaves before the response task takes the first chunk.
        head = await anext(frames)
        return _after(head, frames)


def _health(outcome: str) -> bool | None:
    """What a stream's ending says about its replica (a client leaving says nothing)."""
    return True if outcome == "ok" else None if outcome == "client_disconnect" else False


async def _after(head: bytes, rest: AsyncGenerator[bytes, None]) -> AsyncIterator[bytes]:
    """``head``, then ``rest``; closing this closes ``rest`` at once, so the relay's ending
    (release, record, upstream closed) never waits for the garbage collector."""
    async with aclosing(rest):
        yield head
        async for chunk in rest:
            yield chunk
