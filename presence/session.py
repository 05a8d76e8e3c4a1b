"""The presence side of one session actor: its status, watches and typing."""

from __future__ import annotations

import time
from typing import Any

from channels.db import database_sync_to_async
from django.conf import settings

from messaging.channels import ChannelName, Kind
from messaging.errors import BadRequest, Forbidden
from messaging.selectors import channel_readable
from realtime.batching import LoopBatcher

from . import rules, services
from .hub import presence_hub

presence_visible = database_sync_to_async(services.presence_visible, thread_sensitive=False)
presence_states = database_sync_to_async(services.presence_states, thread_sensitive=False)
# Sessions ending and the once-a-minute activity marks of the moment: one upsert.
last_seen_touches = LoopBatcher(services.last_seen_touch_many)
# The connects of a burst share one thread hop and one upsert (`realtime.batching`).
presence_enters = LoopBatcher(services.presence_enter_many)
channel_check = database_sync_to_async(channel_readable, thread_sensitive=False)


class PresenceSession:
    def __init__(self, *, actor: Any, user: Any) -> None:
        self.actor = actor
        self.user = user
        self.hub = presence_hub()
        self.store = self.hub.store
        self.status = rules.ONLINE
        self.watching: dict[int | str, int] = {}  # as requested -> user id
        self.ttl: float = settings.CHAT["PRESENCE_TTL"]

    async def enter(self) -> None:
        """Live in the store (one round trip, then the announce check), then one
        database call at most, shared with the other connects of the moment:
        last_seen (once a minute) first, so that the `online` announced next
        carries it."""
        uid = self.user.pk
        touch, status = await self.store.enter(uid, self.actor.channel_name, self.status, ttl=self.ttl, now=time.time())
        changed = await self.store.announce(uid, status)
        if touch or changed:
            frame = await presence_enters.submit((self.user, touch, status if changed else None))
            await self.hub.announce(uid, frame)

    async def refresh(self) -> None:
        await self.store.session_set(self.user.pk, self.actor.channel_name, self.status, ttl=self.ttl)

    async def leave(self) -> None:
        self.hub.detach(self.actor)
        grace = settings.CHAT["PRESENCE_GRACE"]
        await self.store.session_drop(self.user.pk, self.actor.channel_name, grace=grace)
        await last_seen_touches.submit(self.user.pk)

    async def activity(self) -> None:
        """Any frame: last_seen moves, at most once a minute per user."""
        if await self.store.last_seen_due(self.user.pk):
            await last_seen_touches.submit(self.user.pk)

    async def set(self, status: str) -> str:
        """online/away are this session's; dnd is the user's until `online`."""
        if status == rules.DND:
            await self.store.dnd_set(self.user.pk, True)
        else:
            if status == rules.ONLINE:
                await self.store.dnd_set(self.user.pk, False)
            self.status = status
            await self.refresh()
        await self.hub.changed(self.user.pk)
        return await self.store.status(self.user.pk, now=time.time())

    async def subscribe(self, refs: list[int | str], *, topics: list[str]) -> tuple[list[dict[str, Any]], list[Any]]:
        limit = settings.CHAT["MAX_PRESENCE_WATCH"]
        # `watching` keys each user by id and by name: count users, not keys.
        new = {r for r in refs if r not in self.watching}
        if len(set(self.watching.values())) + len(new) > limit:
            raise BadRequest(f"a session may watch at most {limit} users")
        users, denied = await presence_visible(viewer=self.user, refs=refs, topics=topics)
        for user in users:
            self.watching[user.pk] = user.pk
            self.watching[user.get_username()] = user.pk
        self.hub.watch(self.actor, [u.pk for u in users])
        statuses = await self.store.statuses([u.pk for u in users], now=time.time())
        return await presence_states(users=users, statuses=statuses), denied

    def unsubscribe(self, refs: list[int | str]) -> None:
        uids = {self.watching[r] for r in refs if r in self.watching}
        self.hub.unwatch(self.actor, list(uids))
        for key in [k for k, uid in self.watching.items() if uid in uids]:
            del self.watching[key]

    async def typing(self, name: ChannelName, state: str, *, subscribed: bool) -> None:
        """Forward within the throttle; the hub sends the automatic `stop`."""
        if name.kind in (Kind.BROADCAST, Kind.SYSTEM):
            raise Forbidden("typing is shown in topics and direct conversations only")
        if not (subscribed or (name.kind is not Kind.TOPIC and self.user.pk in name.members())):
            await channel_check(user=self.user, name=name)  # forbidden / not_found
        decision = await self.store.typing(self.user.pk, str(name), state, now=time.time())
        if decision.forward:
            await self.hub.typing_send(user=self.user, channel=str(name), state=state)
