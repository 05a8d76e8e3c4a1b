"""The fan-out hub: local membership, one PUBLISH per group send, catch-up after a lost subscription."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis
from asgiref.sync import sync_to_async
from django.conf import settings

from messaging import fanout
from messaging.fanout import FanoutHub, pack

needs_redis = pytest.mark.skipif(not settings.REDIS_URL, reason="the Redis path of the hub")


class Recorder:
    """A local member: what a session actor offers the hub."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.resyncs = 0
        self.arrived = asyncio.Event()
        self.resynced = asyncio.Event()

    def hub_event(self, event: dict[str, Any]) -> None:
        self.events.append(event)
        self.arrived.set()

    def hub_resync(self) -> None:
        self.resyncs += 1
        self.resynced.set()


class Broken(Recorder):
    def hub_event(self, event: dict[str, Any]) -> None:
        raise RuntimeError("boom")

    def hub_resync(self) -> None:
        raise RuntimeError("boom")


async def next_event(member: Recorder) -> dict[str, Any]:
    async with asyncio.timeout(5):
        while not member.events:
            member.arrived.clear()
            await member.arrived.wait()
    return member.events.pop(0)


@pytest.fixture
def in_process(settings: Any) -> None:
    settings.REDIS_URL = ""


async def test_in_process_hub_delivers_to_local_members_of_the_group(in_process):
    hub = FanoutHub()
    hub.start()
    a, b, other = Recorder(), Recorder(), Recorder()
    await hub.join("topic.x", a)
    await hub.join("topic.x", b)
    await hub.join("topic.y", other)
    await hub.publish("topic.x", {"type": "chat.event", "text": "t1"})
    assert a.events == b.events == [{"type": "chat.event", "text": "t1"}]
    assert other.events == []
    hub.leave("topic.x", a)
    await hub.publish("topic.x", {"type": "chat.event", "text": "t2"})
    assert [e["text"] for e in a.events] == ["t1"] and [e["text"] for e in b.events] == ["t1", "t2"]
    hub.leave("topic.x", b)
    assert "topic.x" not in hub.groups
    hub.leave("topic.x", b)  # leaving twice is harmless
    await hub.publish("topic.none", {"type": "chat.event", "text": "t3"})  # no member: nothing happens
    await hub.stop()


async def test_a_failing_member_does_not_starve_the_others(in_process):
    hub = FanoutHub()
    hub.start()
    good = Recorder()
    await hub.join("g", Broken())
    await hub.join("g", good)
    await hub.publish("g", {"type": "chat.event", "text": "t"})
    assert good.events == [{"type": "chat.event", "text": "t"}]
    hub.resync()
    assert good.resyncs == 1


async def test_publish_without_redis_uses_this_loops_hub(in_process):
    member = Recorder()
    await fanout.fanout_hub().join("g", member)
    await fanout.publish("g", {"type": "chat.event", "text": "t"})
    assert member.events == [{"type": "chat.event", "text": "t"}]
    # From sync code running under this loop (as an admin request would).
    await sync_to_async(fanout.publish_sync)("g", {"type": "chat.event", "text": "u"})
    assert [e["text"] for e in member.events] == ["t", "u"]


async def test_received_ignores_malformed_messages_and_other_groups(in_process):
    hub = FanoutHub()
    member = Recorder()
    hub.ready.set()  # not started: no subscription to wait for
    await hub.join("g", member)
    hub.received(b"no newline at all")
    hub.received(b"g\n{not json")
    hub.received(pack("elsewhere", {"type": "chat.event", "text": "x"}))
    assert member.events == []
    hub.received(pack("g", {"type": "chat.event", "text": "ok"}))
    assert member.events == [{"type": "chat.event", "text": "ok"}]


@needs_redis
async def test_one_publish_reaches_the_members_in_every_process():
    """Two hubs stand for two server processes: one PUBLISH, each delivers to its own members."""
    one, two = FanoutHub(), FanoutHub()
    one.start()
    two.start()
    a, b = Recorder(), Recorder()
    try:
        await one.join("topic.multi", a)
        await two.join("topic.multi", b)
        await one.publish("topic.multi", {"type": "chat.message", "channel": "topic:multi", "seq": 1, "text": "m"})
        for member in (a, b):
            event = await next_event(member)
            assert event == {"type": "chat.message", "channel": "topic:multi", "seq": 1, "text": "m"}
    finally:
        await one.stop()
        await two.stop()


async def kill_subscription(hub: FanoutHub) -> None:
    """CLIENT KILL the hub's subscribing connection, as a Redis restart or a network cut would."""
    client = aioredis.Redis.from_url(settings.REDIS_URL)
    try:
        mine = [c for c in await client.client_list() if c.get("name") == hub.client_name]
        assert len(mine) == 1, mine
        await client.client_kill_filter(_id=mine[0]["id"])
    finally:
        await client.aclose()


@needs_redis
async def test_a_lost_subscription_is_taken_again_and_members_catch_up():
    hub = FanoutHub()
    hub.start()
    member = Recorder()
    try:
        await hub.join("g", member)
        assert hub.subscribed == 1 and member.resyncs == 0
        await kill_subscription(hub)
        async with asyncio.timeout(15):
            await member.resynced.wait()
        assert member.resyncs == 1 and hub.subscribed == 2
        await hub.publish("g", {"type": "chat.event", "text": "after"})
        assert (await next_event(member))["text"] == "after"
    finally:
        await hub.stop()


@needs_redis
async def test_a_join_waits_for_the_subscription_and_gives_up_without_redis(settings, monkeypatch):
    settings.REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens there
    monkeypatch.setattr(fanout, "JOIN_WAIT", 0.3)
    monkeypatch.setattr(fanout, "RESUBSCRIBE_AFTER", 0.05)
    hub = FanoutHub()
    hub.start()
    try:
        with pytest.raises(TimeoutError):
            await hub.join("g", Recorder())
        assert "g" not in hub.groups
    finally:
        await hub.stop()


@needs_redis
async def test_publishes_made_together_go_in_one_pipeline_in_order():
    hub = FanoutHub()
    hub.start()
    a, b = Recorder(), Recorder()
    try:
        await hub.join("g1", a)
        await hub.join("g2", b)
        before = hub.pipelines
        await asyncio.gather(
            *(hub.publish("g1" if i % 2 else "g2", {"type": "chat.event", "text": f"t{i}"}) for i in range(10))
        )
        assert hub.pipelines == before + 1
        got_a = [(await next_event(a))["text"] for _ in range(5)]
        got_b = [(await next_event(b))["text"] for _ in range(5)]
        assert got_a == ["t1", "t3", "t5", "t7", "t9"] and got_b == ["t0", "t2", "t4", "t6", "t8"]
    finally:
        await hub.stop()


@needs_redis
async def test_a_failed_pipeline_fails_its_publishers_and_the_next_one_is_sent():
    hub = FanoutHub()
    hub.start()
    member = Recorder()
    try:
        await hub.join("g", member)
        working = hub.publisher
        hub.publisher = aioredis.Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=1)
        results = await asyncio.gather(
            *(hub.publish("g", {"type": "chat.event", "text": str(i)}) for i in range(3)), return_exceptions=True
        )
        assert all(isinstance(r, redis.exceptions.ConnectionError) for r in results), results
        await hub.publisher.aclose()
        hub.publisher = working
        await hub.publish("g", {"type": "chat.event", "text": "after"})
        assert (await next_event(member))["text"] == "after"
        assert hub.outbound.pending == [] and hub.outbound.running == 0
    finally:
        await hub.stop()


@needs_redis
async def test_a_cancelled_pipeline_cancels_its_publishers():
    """The loop shutting down while a pipeline is on its way: nobody waits forever."""

    async def silent(reader, writer):  # a Redis that takes the commands and never answers
        await reader.read(1 << 16)

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    hub = FanoutHub()
    hub.start()
    working = hub.publisher
    try:
        await hub.join("g", Recorder())
        hub.publisher = aioredis.Redis.from_url(f"redis://127.0.0.1:{port}/0")
        publishes = [asyncio.ensure_future(hub.publish("g", {"type": "chat.event", "text": str(i)})) for i in range(3)]
        for _ in range(50):  # until the pipeline is on its way to the silent server
            await asyncio.sleep(0.01)
            if hub.outbound.tasks:
                break
        (sender,) = hub.outbound.tasks
        sender.cancel()
        results = await asyncio.gather(*publishes, return_exceptions=True)
        assert all(isinstance(r, asyncio.CancelledError) for r in results), results
        assert hub.outbound.running == 0 and hub.outbound.pending == []
        await hub.publisher.aclose(close_connection_pool=True)
        hub.publisher = working
    finally:
        await hub.stop()
        server.close()
