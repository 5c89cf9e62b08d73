"""The admission round trip on this machine: one ``admit.lua`` call per request.

    python bench/admission.py [--redis-url URL] [--requests 20000] [--concurrency 64]

Without ``--redis-url`` it starts its own ``redis-server`` on a free loopback port.
Reports the round trip's median and p99 in microseconds (one caller) and the
admissions per second of the script with ``--concurrency`` callers, each admission
settled afterwards as the gateway does (team and key: requests/min, tokens/min,
concurrency). Bounded by the request count and by 60 s.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from gateway.auth import Principal
from gateway.ratelimit.redis_limiter import Breaker, RedisLimiter
from gateway.redis_client import connect
from gateway.registry import Limits, Team
from gateway.settings import Settings

BIG = Limits(rpm=10**9, tpm=10**12, concurrency=10**6)
DEADLINE_SECONDS = 60


async def run(url: str, requests: int, concurrency: int) -> None:
    settings = Settings(redis_url=url, redis_timeout=1.0)
    limiter = RedisLimiter(connect(settings, 1.0), lease_seconds=30, breaker=Breaker(3, 1.0))
    await limiter.start()
    principals = [
        Principal(Team(name=f"team-{i}", limits=BIG), "aaaaaaaaaaaa", BIG)
        for i in range(concurrency)
    ]
    latencies = []
    deadline = time.monotonic() + DEADLINE_SECONDS
    for _ in range(min(requests, 5000)):
        started = time.perf_counter()
        grant = await limiter.admit(principals[0], 100)
        latencies.append(time.perf_counter() - started)
        await limiter.settle(grant, 80)
        if time.monotonic() > deadline:
            break
    micros = sorted(x * 1e6 for x in latencies)
    print(
        f"admit round trip, 1 caller: median {statistics.median(micros):.0f} us, "
        f"p99 {micros[int(len(micros) * 0.99)]:.0f} us ({len(micros)} calls)"
    )

    done = 0

    async def caller(principal: Principal) -> None:
        nonlocal done
        while done < requests and time.monotonic() < deadline:
            grant = await limiter.admit(principal, 100)
            await limiter.settle(grant, 80)
            done += 1

    started = time.perf_counter()
    await asyncio.gather(*(caller(p) for p in principals))
    elapsed = time.perf_counter() - started
    print(
        f"admit + settle, {concurrency} callers: {done / elapsed:.0f} requests/s "
        f"({done} in {elapsed:.1f} s)"
    )
    await limiter.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--redis-url")
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--concurrency", type=int, default=64)
    args = parser.parse_args()
    if args.redis_url:
        asyncio.run(run(args.redis_url, args.requests, args.concurrency))
        return 0
    from tests.redis_servers import RedisProcess

    server = RedisProcess()
    try:
        asyncio.run(run(server.url, args.requests, args.concurrency))
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
