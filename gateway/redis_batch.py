"""Lua script calls batched per event-loop turn.

Most of what redis-py costs per call is its own machinery (a pool checkout under a
lock, command packing, timeouts), not Redis. The calls that concurrent requests make in
the same turn of the event loop (admissions, settlements, lease renewals) therefore go
out together as one pipeline: one checkout and one round trip for all of them. A lone
call goes out alone, so a quiet gateway waits for nothing. Each caller still gets its
own reply or its own error; a script Redis lost (``SCRIPT FLUSH``, a failover) is
loaded again and the calls that needed it sent once more.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis, RedisCluster
from redis.exceptions import NoScriptError, ResponseError

RedisClient = Redis | RedisCluster


@dataclass(frozen=True, slots=True)
class Script:
    """A Lua script, by source and by SHA1 (what EVALSHA names)."""

    source: str
    sha: str


@dataclass(frozen=True, slots=True)
class _Call:
    script: Script
    keys: list[str]
    args: list[Any]
    reply: asyncio.Future[Any]


class ScriptCalls:
    """EVALSHA calls, coalesced per event-loop turn."""

    def __init__(self, redis: RedisClient) -> None:
        self._redis = redis
        self._pending: list[_Call] = []
        self._sending: set[asyncio.Task[None]] = set()

    def register(self, source: str) -> Script:
        return Script(source, self._redis.register_script(source).sha)

    async def load(self, script: Script) -> None:
        """Load ``script`` into Redis ahead of its first call."""
        await self._redis.script_load(script.source)

    def call(self, script: Script, keys: list[str], args: list[Any]) -> asyncio.Future[Any]:
        """The script's reply, sent with whatever else is called in this loop turn.

        The call goes out even if the caller stops waiting for it.
        """
        loop = asyncio.get_running_loop()
        reply = loop.create_future()
        self._pending.append(_Call(script, keys, args, reply))
        if len(self._pending) == 1:
            loop.call_soon(self._flush)
        return reply

    async def drain(self) -> None:
        """Wait for every call made so far to complete (bound it with a timeout)."""
        await asyncio.sleep(0)  # lets a flush scheduled this turn start
        if self._sending:
            await asyncio.wait(self._sending)

    def _flush(self) -> None:
        calls, self._pending = self._pending, []
        task = asyncio.get_running_loop().create_task(self._send(calls))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def _send(self, calls: list[_Call]) -> None:
        try:
            replies = await self._execute(calls)
            lost = [i for i, reply in enumerate(replies) if isinstance(reply, NoScriptError)]
            if lost:
                for script in {calls[i].script for i in lost}:
                    await self.load(script)
                again = await self._execute([calls[i] for i in lost])
                for i, reply in zip(lost, again, strict=True):
                    replies[i] = reply
        except Exception as exc:  # the connection or the pipeline failed: every call did
            for call in calls:
                if not call.reply.done():
                    call.reply.set_exception(exc)
            return
        for call, reply in zip(calls, replies, strict=True):
            if call.reply.done():  # its caller gave up waiting
                continue
            if isinstance(reply, Exception):
                call.reply.set_exception(reply)
            else:
                call.reply.set_result(reply)

    async def _execute(self, calls: list[_Call]) -> list[Any]:
        """Replies in call order; a script error is returned in its place, not raised."""
        if len(calls) == 1:
            call = calls[0]
            try:
                reply = self._redis.evalsha(call.script.sha, len(call.keys), *call.keys, *call.args)
                return [await reply]
            except ResponseError as exc:
                return [exc]
        pipe = self._redis.pipeline(transaction=False)
        for call in calls:  # not pipe.evalsha: a cluster pipeline refuses that name
            pipe.execute_command("EVALSHA", call.script.sha, len(call.keys), *call.keys, *call.args)
        return list(await pipe.execute(raise_on_error=False))
