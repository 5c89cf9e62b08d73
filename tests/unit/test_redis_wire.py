"""The batcher's own RESP packer writes exactly what redis-py's would."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from redis.asyncio.connection import Connection

from gateway.ratelimit.batch import resp

args = st.lists(st.one_of(st.text(), st.integers(), st.binary()), max_size=20)


@given(st.lists(args, min_size=1, max_size=5))
def test_the_same_bytes_as_redis_py(commands: list[list[str | int | bytes]]) -> None:
    packer = Connection()
    tuples = [("EVALSHA", *command) for command in commands]
    assert resp(tuples) == b"".join(packer.pack_commands(tuples))
