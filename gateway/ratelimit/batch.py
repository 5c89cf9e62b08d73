"""Lua script calls, batched: one batch in flight at a time.

Most of what redis-py costs per call is its own machinery (a pool checkout under a
lock with a health check, command packing, timeouts), not Redis. So the limiter's calls
(admissions, settlements, lease renewals) go out in batches, one at a time: a call
made while a batch is in flight waits for it and leaves with the next one, so under
load one round trip carries many calls, and a lone call goes at once (after the current
loop turn). Outside cluster mode the batches use one connection of their own, written
and read directly (no pool); a cluster gets a pipeline per batch, which routes each call
to its slot's node. Each caller gets its own reply or error; a script Redis lost
(``SCRIPT FLUSH``, a failover) is loaded again and the calls that needed it sent once
more; a failed connection is dropped and opened again by the next batch.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis, RedisCluster
from redis.asyncio.connection import AbstractConnection as Connection
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
    """EVALSHA calls, sent in batches, one batch in flight at a time."""

    def __init__(self, redis: RedisClient) -> None:
        self._redis = redis
        self._pending: list[_Call] = []
        self._sender: asyncio.Task[None] | None = None
        self._connection: Connection | None = None

    def register(self, source: str) -> Script:
        return Script(source, self._redis.register_script(source).sha)

    async def load(self, script: Script) -> None:
        """Load ``script`` into Redis ahead of its first call."""
        await self._redis.script_load(script.source)

    def call(self, script: Script, keys: list[str], args: list[Any]) -> asyncio.Future[Any]:
        """The script's reply; the call leaves with the next batch.

        The call goes out even if the caller stops waiting for it.
        """
        loop = asyncio.get_running_loop()
        reply = loop.create_future()
        self._pending.append(_Call(script, keys, args, reply))
        if self._sender is None:
            self._sender = loop.create_task(self._send_pending())
        return reply

    async def drain(self) -> None:
        """Wait for every call made so far to complete (bound it with a timeout)."""
        if self._sender is not None:
            await asyncio.shield(self._sender)

    async def close(self) -> None:
        """Close this batcher's own connection (the client's pool is the caller's)."""
        if self._connection is not None:
            await self._connection.disconnect()

    async def _send_pending(self) -> None:
        try:
            while self._pending:
                calls, self._pending = self._pending, []
                await self._send(calls)
        finally:
            self._sender = None

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
        except Exception as exc:  # the connection failed: every call of the batch did
            replies = [exc] * len(calls)
        except BaseException:  # cancelled (shutdown): so are the calls
            for call in calls:
                call.reply.cancel()
            raise
        for call, reply in zip(calls, replies, strict=True):
            if call.reply.done():  # its caller gave up waiting
                continue
            if isinstance(reply, Exception):
                call.reply.set_exception(reply)
            else:
                call.reply.set_result(reply)

    async def _execute(self, calls: list[_Call]) -> list[Any]:
        """Replies in call order; a script error is returned in its place, not raised."""
        commands = [
            ("EVALSHA", call.script.sha, len(call.keys), *call.keys, *call.args) for call in calls
        ]
        if isinstance(self._redis, RedisCluster):
            pipe = self._redis.pipeline()
            for command in commands:  # not pipe.evalsha: a cluster pipeline refuses that name
                pipe.execute_command(*command)
            return list(await pipe.execute(raise_on_error=False))
        if self._connection is None:
            pool = self._redis.connection_pool  # its settings; the connection stays ours
            self._connection = pool.make_connection()  # type: ignore[no-untyped-call]
        connection = self._connection
        try:
            await connection.connect()  # at once when connected already
            await connection.send_packed_command(resp(commands), check_health=False)
            return [await _reply(connection) for _ in commands]
        except BaseException:
            await connection.disconnect()  # half read: unusable; the next batch reconnects
            raise


def resp(commands: list[tuple[Any, ...]]) -> bytes:
    """Commands in Redis's wire format (RESP arrays of bulk strings), the same bytes as
    redis-py's packer for the strings and integers scripts take, at about a third of its
    cost (it checks and converts more kinds of argument)."""
    parts = []
    for command in commands:
        parts.append(b"*%d\r\n" % len(command))
        for arg in command:
            data = arg if isinstance(arg, bytes) else str(arg).encode()
            parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


async def _reply(connection: Connection) -> Any:
    try:
        return await connection.read_response()
    except ResponseError as exc:  # a script's error: the calls after it are unaffected
        return exc
