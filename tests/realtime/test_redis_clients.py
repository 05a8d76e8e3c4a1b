"""Pools that wait for a free connection instead of failing (real Redis)."""

from __future__ import annotations

import asyncio

import pytest
import redis
from django.conf import settings

from realtime.redis_clients import LoopRedis

pytestmark = pytest.mark.skipif(not settings.REDIS_URL, reason="needs REDIS_URL (make test sets it)")


async def test_a_burst_larger_than_the_pool_waits_and_completes() -> None:
    client = LoopRedis(settings.REDIS_URL, max_connections=3).client()
    try:
        # Each call holds its connection for 50 ms: 30 of them need the pool 10 times over.
        results = await asyncio.gather(*(client.blpop([f"test:pool:empty:{n}"], timeout=0.05) for n in range(30)))
        assert results == [None] * 30
        pool = client.connection_pool
        assert len(pool._available_connections) + len(pool._in_use_connections) <= 3
    finally:
        await client.aclose()


async def test_a_wait_past_its_limit_is_a_clear_error() -> None:
    client = LoopRedis(settings.REDIS_URL, max_connections=1, wait=0.1).client()
    try:
        holder = asyncio.create_task(client.blpop(["test:pool:empty"], timeout=1))
        await asyncio.sleep(0.05)
        with pytest.raises(redis.ConnectionError, match="No connection available"):
            await client.get("test:pool:key")
        assert await holder is None
    finally:
        await client.aclose()


async def test_one_client_per_event_loop() -> None:
    pools = LoopRedis(settings.REDIS_URL, max_connections=2)
    first = pools.client()
    assert pools.client() is first

    def other_loop() -> object:
        async def make() -> object:
            client = pools.client()
            await client.aclose()
            return client

        return asyncio.run(make())

    assert await asyncio.to_thread(other_loop) is not first
    await first.aclose()
