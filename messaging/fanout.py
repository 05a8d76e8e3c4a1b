"""Live events to sessions: one Redis PUBLISH per group send, fanned out in each process.

Every server process keeps the membership of its own sessions in memory
(group -> local session actors) and holds one subscription to a single
Redis pub/sub channel, `<STORE_PREFIX>:fanout`. A group send is one
`PUBLISH` of `group`, a newline and the event (msgspec JSON, its frame text
already encoded once by the publisher); each process that has local members
of the group decodes it once and hands it to each of them with a plain
method call (`hub_event`): no per-session channel-layer message, decode or
task hop. A process without members of the group drops it after reading the
group name. Without `REDIS_URL` (the embedded default) the hub of the
process delivers directly.

Pub/sub is at-most-once: what is published while the subscription is down
is lost for this process. So whenever the subscription is established again
(redis-py reconnecting on its own, or this loop after an error), every local
session is told to catch up from the database (`hub_resync`): the database
holds every message, and the sessions' trackers drop repeats.

Publishing from sync code (the `notify` command, a Celery task, an admin
request) goes through `publish_sync`: a plain `PUBLISH` with a sync client,
or, without Redis, the hub of the event loop it runs under.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
from typing import Any
from urllib.parse import urlsplit

import msgspec
import redis
from django.conf import settings

from realtime.batching import Batcher

log = logging.getLogger(__name__)

RESUBSCRIBE_AFTER = 0.5
JOIN_WAIT = 10.0  # longest a join waits for the subscription (Redis down: the connect fails)

_hub_numbers = itertools.count(1)
_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder().decode


def fanout_channel() -> str:
    """The pub/sub channel. Redis pub/sub ignores the database number, so the
    channel carries it: deployments (or test runs) on other databases of one
    Redis server stay apart, as their keys do."""
    db = urlsplit(settings.REDIS_URL).path.strip("/") or "0"
    return f"{settings.CHAT['STORE_PREFIX']}:fanout:{db}"


def pack(group: str, event: dict[str, Any]) -> bytes:
    return group.encode() + b"\n" + _encode(event)


class FanoutHub:
    """This event loop's local group membership and its one subscription."""

    def __init__(self) -> None:
        self.groups: dict[str, set[Any]] = {}
        self.ready = asyncio.Event()
        self.subscribed = 0  # confirmations seen; each after the first is a re-subscription
        self.channel = fanout_channel()
        self.redis_url: str = settings.REDIS_URL
        self.publisher: Any = None
        self.task: asyncio.Task[None] | None = None
        # Publishes made while the previous pipeline was sent (the answers of
        # one stored batch, all released in one turn) go out together: one
        # round trip and one connection instead of one each, in order.
        self.outbound: Batcher[bytes, None] = Batcher(self._publish_pipeline, in_thread=False)
        # The subscribing connection's CLIENT SETNAME, to find it in CLIENT LIST.
        self.client_name = f"{self.channel}:{os.getpid()}:{next(_hub_numbers)}"

    def start(self) -> None:
        """Subscribe (with Redis), or deliver in this process only."""
        if self.redis_url:
            import redis.asyncio as aioredis

            self.publisher = aioredis.Redis.from_url(self.redis_url, socket_timeout=30, socket_connect_timeout=5)
            self.task = asyncio.create_task(self.listen_loop())
        else:
            self.ready.set()

    # --- membership of this process's sessions ------------------------------------------

    async def join(self, group: str, actor: Any) -> None:
        """Add a local member; returns once the subscription is live, so whatever
        the caller reads from the database next is covered by live events."""
        if not self.ready.is_set():
            async with asyncio.timeout(JOIN_WAIT):
                await self.ready.wait()
        self.groups.setdefault(group, set()).add(actor)

    def leave(self, group: str, actor: Any) -> None:
        members = self.groups.get(group)
        if members is not None:
            members.discard(actor)
            if not members:
                del self.groups[group]

    # --- sending -----------------------------------------------------------------

    @property
    def pipelines(self) -> int:
        """Pipelines of PUBLISHes sent, for tests and the benchmarks."""
        return self.outbound.batches

    async def publish(self, group: str, event: dict[str, Any]) -> None:
        if self.publisher is None:
            self.deliver(group, event)
            return
        await self.outbound.submit(pack(group, event))

    async def _publish_pipeline(self, packed: list[bytes]) -> list[None]:
        async with self.publisher.pipeline(transaction=False) as pipe:
            for data in packed:
                pipe.publish(self.channel, data)
            await pipe.execute()
        return [None] * len(packed)

    async def publish_many(self, sends: list[tuple[str, dict[str, Any]]]) -> None:
        """Several group sends, in order, in one round trip (they share a pipeline)."""
        await asyncio.gather(*(self.publish(group, event) for group, event in sends))

    def deliver(self, group: str, event: dict[str, Any]) -> None:
        members = self.groups.get(group)
        if not members:
            return
        for actor in list(members):
            try:
                actor.hub_event(event)
            except Exception:  # one broken session must not starve the others
                log.exception("delivery of %s to a session failed", event.get("type"))

    def received(self, data: bytes) -> None:
        group, sep, body = data.partition(b"\n")
        if not sep:
            log.warning("bad fan-out message %r", data[:100])
            return
        members = self.groups.get(group.decode())
        if not members:
            return
        try:
            event = _decode(body)
        except msgspec.DecodeError:
            log.warning("bad fan-out event %r", body[:100])
            return
        self.deliver(group.decode(), event)

    def resync(self) -> None:
        """The subscription came back: every local session reads what it missed."""
        actors: set[Any] = set()
        for members in self.groups.values():
            actors |= members
        log.warning("fan-out subscription re-established: %d sessions catch up", len(actors))
        for actor in actors:
            try:
                actor.hub_resync()
            except Exception:
                log.exception("resync of a session failed")

    # --- the subscription --------------------------------------------------------------

    async def listen_loop(self) -> None:
        import redis.asyncio as aioredis

        while True:
            client = aioredis.Redis.from_url(self.redis_url, socket_connect_timeout=5, client_name=self.client_name)
            pubsub = client.pubsub()
            try:
                await pubsub.subscribe(self.channel)
                while True:
                    message = await pubsub.get_message(timeout=5.0)
                    if message is None:
                        continue
                    kind = message["type"]
                    if kind == "message":
                        self.received(message["data"])
                    elif kind == "subscribe":
                        self.subscribed += 1
                        self.ready.set()
                        if self.subscribed > 1:
                            self.resync()
            except asyncio.CancelledError:
                raise
            except Exception:  # Redis went away: subscribe again, then catch up
                log.warning("fan-out subscription lost; subscribing again", exc_info=True)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
                with contextlib.suppress(Exception):
                    await client.aclose()
            await asyncio.sleep(RESUBSCRIBE_AFTER)

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
        if self.publisher is not None:
            await self.publisher.aclose()


_hubs: dict[asyncio.AbstractEventLoop, FanoutHub] = {}


def fanout_hub() -> FanoutHub:
    """This event loop's hub, started on first use."""
    loop = asyncio.get_running_loop()
    hub = _hubs.get(loop)
    if hub is None:
        for old in [lp for lp in _hubs if lp.is_closed()]:
            del _hubs[old]
        hub = _hubs[loop] = FanoutHub()
        hub.start()
    return hub


async def publish(group: str, event: dict[str, Any]) -> None:
    """Send an event to every session in the group, in every process."""
    await fanout_hub().publish(group, event)


async def publish_many(sends: list[tuple[str, dict[str, Any]]]) -> None:
    """`publish` of several (group, event) pairs, in one round trip to Redis."""
    await fanout_hub().publish_many(sends)


_sync_client: dict[str, redis.Redis] = {}


def publish_sync(group: str, event: dict[str, Any]) -> None:
    """`publish` for sync code (it may run outside any server process)."""
    url = settings.REDIS_URL
    if url:
        client = _sync_client.get(url)
        if client is None:
            client = _sync_client[url] = redis.Redis.from_url(url, socket_timeout=30, socket_connect_timeout=5)
        client.publish(fanout_channel(), pack(group, event))
        return
    from asgiref.sync import async_to_sync

    async_to_sync(publish)(group, event)
