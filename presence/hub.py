"""The per-process presence hub: local watchers, one event stream, the sweeper.

A presence change is published once to Redis (`PUBLISH`), so it costs one
message per server process whatever the number of watchers; each process
hands it to its own sessions that watch that user. The hub holds only
references to this process's live actors, never shared state: the state is
in the presence store.

The sweeper runs in every process: it takes over sessions whose refresh
stopped (a process killed with SIGKILL), offline checks after the grace
period, and typing starts that were not renewed.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

from channels.db import database_sync_to_async
from django.conf import settings

from messaging import fanout
from messaging.delivery import frame_event, groups_for
from messaging.wire import user_ref
from realtime.batching import Batcher

from . import services
from .store import presence_store

log = logging.getLogger(__name__)

SWEEP_EVERY = 1.0

presence_frame = database_sync_to_async(services.presence_frame, thread_sensitive=False)


@database_sync_to_async
def _user(uid: int) -> Any:
    from django.contrib.auth import get_user_model

    return get_user_model().objects.filter(pk=uid).first()


class PresenceHub:
    def __init__(self) -> None:
        self.store = presence_store()
        self.watchers: dict[int, set[Any]] = {}
        self.topic = f"{settings.CHAT['STORE_PREFIX']}:p:events"
        self.tasks: list[asyncio.Task[None]] = []
        self.publishing = Batcher(self.publish_many, in_thread=False)

    def start(self) -> None:
        self.tasks.append(asyncio.create_task(self.sweep_loop()))
        if settings.REDIS_URL:
            self.tasks.append(asyncio.create_task(self.listen_loop()))

    # --- watchers of this process ---------------------------------------------------

    def watch(self, actor: Any, uids: list[int]) -> None:
        for uid in uids:
            self.watchers.setdefault(uid, set()).add(actor)

    def unwatch(self, actor: Any, uids: list[int]) -> None:
        for uid in uids:
            actors = self.watchers.get(uid)
            if actors is not None:
                actors.discard(actor)
                if not actors:
                    del self.watchers[uid]

    def detach(self, actor: Any) -> None:
        self.unwatch(actor, list(self.watchers))

    async def deliver(self, uid: int, text: str) -> None:
        for actor in list(self.watchers.get(uid, ())):
            await actor.push_text(text)

    # --- changes -----------------------------------------------------------------

    async def changed(self, uid: int) -> None:
        """Recompute a user's status and announce it if it really changed."""
        status = await self.store.status(uid, now=time.time())
        if not await self.store.announce(uid, status):
            return
        await self.announce(uid, await presence_frame(user_id=uid, status=status))

    async def announce(self, uid: int, frame: dict[str, Any] | None) -> None:
        """Send a user's `presence` event to its watchers on every process."""
        if frame is None:
            return
        text = json.dumps(frame, separators=(",", ":"))
        if settings.REDIS_URL:
            await self.publishing.submit(json.dumps({"u": uid, "t": text}))
        else:
            await self.deliver(uid, text)

    async def publish_many(self, events: list[str]) -> list[Any]:
        """The announces of a moment (a connect burst) in one pipeline."""
        async with self.store.redis.pipeline(transaction=False) as pipe:
            for event in events:
                pipe.publish(self.topic, event)
            return await pipe.execute(raise_on_error=False)

    async def typing_send(self, *, user: Any, channel: str, state: str) -> None:
        """A typing frame to the channel's members, never to the typist."""
        frame = {"type": "typing", "channel": channel, "user": user_ref(user), "state": state}
        event = {**frame_event(frame), "skip_user": user.pk}
        for group in groups_for(channel):
            await fanout.publish(group, event)

    # --- loops -------------------------------------------------------------------------

    async def sweep_loop(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_EVERY)
            try:
                await self.sweep_once(now=time.time())
            except Exception:  # the sweeper must outlive a Redis or database hiccup
                log.exception("presence sweep failed; retrying")

    async def sweep_once(self, *, now: float) -> None:
        for uid in await self.store.sweep(now=now):
            await self.changed(uid)
        for uid, channel in await self.store.typing_due(now=now):
            user = await _user(uid)
            if user is not None:
                await self.typing_send(user=user, channel=channel, state="stop")

    async def listen_loop(self) -> None:
        import redis.asyncio as aioredis

        client = aioredis.Redis.from_url(settings.REDIS_URL)
        pubsub = client.pubsub(ignore_subscribe_messages=True)
        await pubsub.subscribe(self.topic)
        try:
            while True:
                message = await pubsub.get_message(timeout=5.0)
                if message is None:
                    continue
                try:
                    event = json.loads(message["data"])
                    await self.deliver(int(event["u"]), event["t"])
                except (ValueError, KeyError, TypeError):
                    log.warning("bad presence event %r", message)
        finally:
            await pubsub.aclose()
            await client.aclose()


_hubs: dict[asyncio.AbstractEventLoop, PresenceHub] = {}


def presence_hub() -> PresenceHub:
    """This event loop's hub, started on first use."""
    loop = asyncio.get_running_loop()
    hub = _hubs.get(loop)
    if hub is None:
        for old in [lp for lp in _hubs if lp.is_closed()]:
            del _hubs[old]
        hub = _hubs[loop] = PresenceHub()
        hub.start()
    return hub
