"""EventStream's idle timeout bounds the wait for the backend, not the relay's time
spent elsewhere (a slow client), and keep-alive comments do not reset it."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import cast

import aiohttp
import pytest

from gateway.errors import UpstreamTimeout
from gateway.upstream.client import EventStream

EVENT = b'data:{"x":1}\n\n'


class Backend:
    """A response whose body arrives as the test feeds it."""

    def __init__(self) -> None:
        self.chunks: asyncio.Queue[bytes] = asyncio.Queue()
        self.content = self
        self.closed = False
        self._closing = asyncio.Event()

    async def readany(self) -> bytes:
        if self.closed:
            return b""
        if not self.chunks.empty():  # buffered already: no pause, as aiohttp's reader
            return self.chunks.get_nowait()
        reading = asyncio.ensure_future(self.chunks.get())
        closing = asyncio.ensure_future(self._closing.wait())
        done, _ = await asyncio.wait((reading, closing), return_when=asyncio.FIRST_COMPLETED)
        for waiter in (reading, closing):
            waiter.cancel()
        return reading.result() if reading in done else b""

    def close(self) -> None:
        self.closed = True
        self._closing.set()

    def release(self) -> None:
        pass


def _stream(backend: Backend, idle: float) -> EventStream:
    return EventStream(cast(aiohttp.ClientResponse, backend), idle)


def test_time_away_from_the_backend_is_not_its_silence() -> None:
    async def scenario() -> bytes | None:
        backend = Backend()
        stream = _stream(backend, idle=0.3)  # far above any stall of a busy test machine
        backend.chunks.put_nowait(EVENT)
        await stream.next()
        await asyncio.sleep(1.0)  # the relay is busy with a slow client meanwhile
        backend.chunks.put_nowait(EVENT)
        payload = await stream.next()
        assert not backend.closed
        stream.close(finished=True)
        return payload

    assert asyncio.run(scenario()) == b'{"x":1}'


def test_keep_alive_comments_do_not_reset_the_idle_timeout() -> None:
    async def scenario() -> None:
        backend = Backend()
        stream = _stream(backend, idle=0.1)
        backend.chunks.put_nowait(EVENT)
        await stream.next()

        async def keep_alive() -> None:
            while not backend.closed:
                backend.chunks.put_nowait(b":\n\n")
                await asyncio.sleep(0.02)

        feeder = asyncio.ensure_future(keep_alive())
        with pytest.raises(UpstreamTimeout):
            await stream.next()
        feeder.cancel()
        assert backend.closed

    asyncio.run(asyncio.wait_for(scenario(), timeout=10))


async def _turns_of_others(work: Awaitable[None]) -> int:
    """How many turns another task got while ``work`` ran."""
    turns = 0

    async def other() -> None:
        nonlocal turns
        while True:
            turns += 1
            await asyncio.sleep(0)

    bystander = asyncio.get_running_loop().create_task(other())
    await asyncio.sleep(0)  # it starts
    started = turns
    await work
    bystander.cancel()
    return turns - started


def test_a_backend_sending_only_comments_never_holds_the_event_loop() -> None:
    """Comments already buffered are read without a pause; the stream still lets other
    tasks run while it looks through them for an event."""

    async def scenario() -> int:
        backend = Backend()
        stream = _stream(backend, idle=30)
        for _ in range(1000):
            backend.chunks.put_nowait(b":\n\n")
        backend.chunks.put_nowait(EVENT)

        async def read() -> None:
            assert await stream.next() == b'{"x":1}'

        turns = await _turns_of_others(read())
        stream.close(finished=True)
        return turns

    assert asyncio.run(scenario()) > 0


def test_events_already_at_hand_never_hold_the_event_loop() -> None:
    """A fast backend's events, buffered in one read, are handed out without a pause (a
    client that left makes the relay's writes free); other tasks still get turns."""

    async def scenario() -> int:
        backend = Backend()
        stream = _stream(backend, idle=30)
        backend.chunks.put_nowait(EVENT * 1000)
        assert await stream.next() == b'{"x":1}'  # the one read: all 1000 are at hand now

        async def read_the_rest() -> None:
            for _ in range(999):
                assert await stream.next() == b'{"x":1}'

        turns = await _turns_of_others(read_the_rest())
        stream.close(finished=True)
        return turns

    assert asyncio.run(scenario()) > 0
