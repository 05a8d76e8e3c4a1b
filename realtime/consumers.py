"""The session actor: one per WebSocket connection (protocol sections 1 to 4).

It parses a frame (`frames.parse`), authorises through the services, calls
them, and answers. Live messages come in from the channel layer as
`chat.message` events carrying pre-encoded text; the actor forwards each
once, in `seq` order per channel, filling gaps from the database.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings

from messaging import selectors, services
from messaging.channels import BROADCAST_GROUP, ChannelName, Kind, user_group
from messaging.delivery import message_publish
from messaging.errors import BadJson, BadRequest, ChatError, Forbidden, NotFound, RateLimited, Unauthorized
from messaging.models import Message
from messaging.wire import message_frame

from . import frames
from .auth import CLOSE_UNAUTHORIZED, token_check_async
from .limits import TokenBucket
from .sessions import DeliveryTracker, session_id_new

log = logging.getLogger(__name__)

CLOSE_HEARTBEAT = 4408
CLOSE_TOO_BIG = 1009
REPLAY_PAGE = 500


def db(func: Callable[..., Any]) -> Callable[..., Awaitable[Any]]:
    """The one sync/async boundary: ORM work runs in the thread pool.

    Not thread-sensitive: sessions' queries run in parallel on the pool's
    threads (each with its own connection) instead of queueing on one.
    """
    return database_sync_to_async(func, thread_sensitive=False)


direct_send = db(services.direct_send)
message_send = db(services.message_send)
channel_for_write = db(services.channel_for_write)
channel_readable = db(selectors.channel_readable)
channel_last_seq = db(selectors.channel_last_seq)
history_page = db(selectors.history_page)
messages_between = db(selectors.messages_between)
messages_between_named = db(selectors.messages_between_named)


class SessionConsumer(AsyncWebsocketConsumer):
    """One WebSocket session of one user."""

    async def connect(self) -> None:
        self.watchdog: asyncio.Task[None] | None = None
        self.joined: set[str] = set()
        await self.accept()
        check = self.scope["auth"]
        if check.close_code:
            await self.close(code=check.close_code)
            return
        chat = settings.CHAT
        self.user = check.user
        self.token_expires_at: float = check.expires_at
        self.session_id = session_id_new()
        self.topics: set[str] = set()
        self.tracker = DeliveryTracker()
        # (channel, seq) this session sent whose own live event has not come back.
        self.sent_here: set[tuple[str, int]] = set()
        self.bucket = TokenBucket(rate=chat["SEND_RATE"], burst=chat["SEND_BURST"])
        self.heartbeat: int = chat["HEARTBEAT"]
        self.last_activity = time.monotonic()
        for group in (user_group(self.user.pk), BROADCAST_GROUP):
            await self.group_join(group)
        await self.send_frame(
            {
                "type": "welcome",
                "session": self.session_id,
                "user": {"id": self.user.pk, "username": self.user.get_username()},
                "heartbeat": self.heartbeat,
                "resume_window": chat["RESUME_WINDOW"],
                "resumed": False,
                "channels": [],
            }
        )
        self.watchdog = asyncio.create_task(self.watch())

    async def disconnect(self, code: int) -> None:
        if self.watchdog is not None:
            self.watchdog.cancel()
        for group in list(self.joined):
            await self.channel_layer.group_discard(group, self.channel_name)
        self.joined.clear()

    # --- plumbing -------------------------------------------------------------

    async def send_frame(self, frame: dict[str, Any]) -> None:
        await self.send(text_data=frames.encode(frame))

    async def group_join(self, group: str) -> None:
        await self.channel_layer.group_add(group, self.channel_name)
        self.joined.add(group)

    async def group_leave(self, group: str) -> None:
        self.joined.discard(group)
        await self.channel_layer.group_discard(group, self.channel_name)

    async def watch(self) -> None:
        """Close on heartbeat silence (4408) or token expiry (4401); refresh groups.

        Group membership in channels-redis expires after `group_expiry`; a
        session that lives longer re-adds itself well before that.
        """
        refresh_every = max(settings.GROUP_EXPIRY / 3, 1.0)
        next_refresh = time.monotonic() + refresh_every
        while True:
            now = time.monotonic()
            silent_until = self.last_activity + 2 * self.heartbeat
            expires_in = self.token_expires_at - time.time()
            if now >= silent_until:
                await self.close(code=CLOSE_HEARTBEAT)
                return
            if expires_in <= 0:
                await self.close(code=CLOSE_UNAUTHORIZED)
                return
            if now >= next_refresh:
                for group in list(self.joined):
                    await self.channel_layer.group_add(group, self.channel_name)
                next_refresh = now + refresh_every
            await asyncio.sleep(max(0.05, min(silent_until - now, expires_in, next_refresh - now)))

    # --- client frames ----------------------------------------------------------

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        self.last_activity = time.monotonic()
        limit = settings.CHAT["MAX_FRAME_BYTES"]
        if text_data is None:
            # The frame limit holds for binary frames too (protocol section 7).
            if len(bytes_data or b"") > limit:
                await self.close(code=CLOSE_TOO_BIG)
                return
            await self.send_frame(frames.error(None, BadJson("frames are JSON text, not binary")))
            return
        if len(text_data) > limit or (len(text_data) * 4 > limit and len(text_data.encode()) > limit):
            await self.close(code=CLOSE_TOO_BIG)
            return
        try:
            frame = frames.parse(text_data)
        except ChatError as exc:
            await self.send_frame(frames.error(getattr(exc, "ref", None), exc))
            return
        handler = getattr(self, "on_" + type(frame).__name__.lower())
        try:
            await handler(frame)
        except ChatError as exc:
            await self.send_frame(frames.error(frame.ref, exc))
        except Exception:
            log.exception("frame %s failed", type(frame).__name__)
            await self.send_frame(frames.error(frame.ref, ChatError("internal error")))

    def rate_check(self) -> None:
        retry_after = self.bucket.take(time.monotonic())
        if retry_after:
            raise RateLimited("sending too fast", retry_after=round(retry_after, 3))

    async def answer_sent(self, frame: frames.Frame, message: Message, created: bool) -> None:
        """Publish a fresh message (committed by now) and answer with it."""
        if created:
            name = message.channel.name
            if not name.startswith("topic:") or name in self.topics:
                # A gap fill may reach it before its own event: it must not
                # come back to this session, which has it in the `ok`.
                self.sent_here.add((name, message.seq))
            await message_publish(message, origin=self.channel_name)
        await self.send_frame(frames.ok(frame.ref, message=message_frame(message)))

    async def on_ping(self, frame: frames.Ping) -> None:
        pong: dict[str, Any] = {"type": "pong", "t": int(time.time() * 1000)}
        if frame.ref is not None:
            pong["ref"] = frame.ref
        await self.send_frame(pong)

    async def on_auth(self, frame: frames.Auth) -> None:
        check = await token_check_async(frame.token)
        if check.close_code:
            raise Unauthorized(f"token refused: {check.reason}")
        if check.user.pk != self.user.pk:
            raise Forbidden("the token belongs to another user")
        self.token_expires_at = check.expires_at
        await self.send_frame(frames.ok(frame.ref, expires_at=int(check.expires_at)))

    async def on_direct(self, frame: frames.Direct) -> None:
        self.rate_check()
        message, created = await direct_send(sender=self.user, to=frame.to, body=frame.body, client_id=frame.client_id)
        await self.answer_sent(frame, message, created)

    async def on_publish(self, frame: frames.Publish) -> None:
        self.rate_check()
        message, created = await message_send(
            sender=self.user, name=frames.channel_of(frame), body=frame.body, client_id=frame.client_id
        )
        await self.answer_sent(frame, message, created)

    async def on_broadcast(self, frame: frames.Broadcast) -> None:
        self.rate_check()
        message, created = await message_send(
            sender=self.user, name=ChannelName(Kind.BROADCAST), body=frame.body, client_id=frame.client_id
        )
        await self.answer_sent(frame, message, created)

    async def on_subscribe(self, frame: frames.Subscribe) -> None:
        """Join the topic's group first, then read last_seq, then replay.

        Live messages that arrive meanwhile wait in the actor's queue; the
        tracker drops those the replay already sent and fills any gap.
        """
        name = frames.channel_of(frame)
        key = str(name)
        if name.kind is Kind.TOPIC:
            if key not in self.topics and len(self.topics) >= settings.CHAT["MAX_SUBSCRIPTIONS"]:
                raise BadRequest(f"at most {settings.CHAT['MAX_SUBSCRIPTIONS']} subscriptions per session")
            channel = await channel_for_write(user=self.user, name=name)
            await self.group_join(name.group)
            self.topics.add(key)
        else:
            channel = await channel_readable(user=self.user, name=name)
        last_seq = await channel_last_seq(channel_id=channel.pk) if channel else 0
        if frame.since is not None and channel is not None:
            await self.replay(channel, after=frame.since, upto=last_seq)
        self.tracker.mark(key, last_seq)
        await self.send_frame(frames.ok(frame.ref, channel=key, last_seq=last_seq))

    async def replay(self, channel: Any, *, after: int, upto: int) -> None:
        while after < upto:
            rows = await messages_between(channel=channel, after=after, upto=upto, limit=REPLAY_PAGE)
            if not rows:
                return
            for message in rows:
                await self.send_frame(message_frame(message))
            after = rows[-1].seq

    async def on_unsubscribe(self, frame: frames.Unsubscribe) -> None:
        name = frames.channel_of(frame)
        key = str(name)
        if name.auto:
            raise BadRequest(f"{key} is received without subscribing and cannot be unsubscribed")
        if key in self.topics:
            self.topics.discard(key)
            self.tracker.forget(key)
            await self.group_leave(name.group)
        else:
            try:
                await channel_readable(user=self.user, name=name)
            except NotFound:
                pass
        await self.send_frame(frames.ok(frame.ref, channel=key))

    async def on_history(self, frame: frames.History) -> None:
        channel = await channel_readable(user=self.user, name=frames.channel_of(frame))
        page = await history_page(channel=channel, before=frame.before, after=frame.after, limit=frame.limit)
        await self.send_frame(
            frames.ok(frame.ref, messages=[message_frame(m) for m in page.messages], has_more=page.has_more)
        )

    async def not_served(self, frame: frames.Frame) -> None:
        kind = type(frame).__struct_config__.tag
        raise NotServed(f"{kind!r} is part of the protocol but not served by this version yet")

    on_received = on_read = on_edit = on_delete = on_typing = not_served
    on_presencesubscribe = on_presenceunsubscribe = on_presenceset = on_sync = not_served

    # --- channel-layer events ---------------------------------------------------

    async def chat_message(self, event: dict[str, Any]) -> None:
        """A live message: forward once, in seq order, filling gaps first."""
        channel, seq = event["channel"], event["seq"]
        if event["origin"] == self.channel_name:
            self.sent_here.discard((channel, seq))
        if channel.startswith("topic:") and channel not in self.topics:
            return  # unsubscribed while the event was in flight
        action, after = self.tracker.classify(channel, seq)
        if action == "drop":
            return
        # A gap can be longer than one page of the query: page until it is closed.
        while action == "fill" and after < seq - 1:
            rows = await messages_between_named(name=channel, after=after, upto=seq - 1)
            if not rows:
                break
            for message in rows:
                if (channel, message.seq) not in self.sent_here:
                    await self.send_frame(message_frame(message))
                self.tracker.mark(channel, message.seq)
            after = rows[-1].seq
        self.tracker.mark(channel, seq)
        if event["origin"] != self.channel_name:
            await self.send(text_data=event["text"])

    async def chat_revoke(self, event: dict[str, Any]) -> None:
        """The user lost access to a private topic: stop receiving it."""
        channel = event["channel"]
        if channel in self.topics:
            self.topics.discard(channel)
            self.tracker.forget(channel)
            await self.group_leave(ChannelName(Kind.TOPIC, topic=channel.removeprefix("topic:")).group)

    async def session_close(self, event: dict[str, Any]) -> None:
        await self.close(code=event["code"])


class NotServed(ChatError):
    code = "unknown_type"
