"""The session actor: one per WebSocket connection (protocol sections 1 to 4, 6, 7).

It parses a frame (`frames.parse`), authorises through the services, calls
them, and answers. Live messages come in from the process's fan-out hub
(`messaging/fanout.py`) as `chat.message` events carrying pre-encoded text;
the actor forwards each once, in `seq` order per channel, filling gaps from
the database. The actor has no channel-layer channel of its own.

Events and client frames take turns (`self.turn`), as under channels'
dispatch: an event that arrives while a frame is handled, or that needs I/O
(a gap fill, a first baseline), waits in `pending` for a drain task; the
common case (the next `seq` of a channel with a baseline, an edit, a
receipt) is handled right in the hub's call, without a task switch.

Everything it sends goes through a bounded outbox drained by one writer
(run in the queuing call, a task only while the socket makes it wait), so
a client that stops reading costs at most `OUTBOUND_BUFFER` frames before
it is closed with 4409 (its session stays resumable).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

from channels.consumer import get_handler_name
from channels.db import database_sync_to_async
from channels.exceptions import StopConsumer
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings

from messaging import cursors, editing, fanout, selectors, services
from messaging.channels import BROADCAST, BROADCAST_GROUP, ChannelName, Kind, parse_channel, system_channel, user_group
from messaging.delivery import channel_event_publish, group_frames_publish, message_publish
from messaging.errors import BadJson, BadRequest, ChatError, Forbidden, NotFound, RateLimited, Unauthorized
from messaging.models import Message
from messaging.wire import history_result, message_frame
from presence.session import PresenceSession

from . import frames
from .auth import CLOSE_FORBIDDEN, CLOSE_UNAUTHORIZED, TokenCheck, token_check_async, token_users_check
from .batching import LoopBatcher
from .eager import run_eagerly
from .limits import TokenBucket
from .sessions import DeliveryTracker, session_id_new
from .store import session_store

log = logging.getLogger(__name__)

CLOSE_TAKEN_OVER = 4000
CLOSE_HEARTBEAT = 4408
CLOSE_TOO_SLOW = 4409
CLOSE_TOO_MANY = 4429
CLOSE_TOO_BIG = 1009
REPLAY_PAGE = 500


def db(func: Callable[..., Any]) -> Callable[..., Awaitable[Any]]:
    """The one sync/async boundary: ORM work runs in the thread pool.

    Not thread-sensitive: sessions' queries run in parallel on the pool's
    threads (each with its own connection) instead of queueing on one.
    """
    return database_sync_to_async(func, thread_sensitive=False)


def connect_reads_many(items: list[tuple[TokenCheck, list[str]]]) -> list[tuple[TokenCheck, dict[str, int]]]:
    """All the connects of a burst read from the database, in one thread hop
    and two queries: for each (decoded token, channel names), the token's
    user (4401 / 4403 when unknown or inactive) and the `last_seq` of the
    channels it receives without subscribing."""
    checks = token_users_check([check for check, _ in items])
    names = sorted({name for check, (_, wanted) in zip(checks, items, strict=True) if check.user for name in wanted})
    seqs = selectors.last_seqs_named(names=names) if names else {}
    return [
        (check, {name: seqs[name] for name in wanted} if check.user is not None else {})
        for check, (_, wanted) in zip(checks, items, strict=True)
    ]


# The connects of a moment share one call (`realtime.batching`).
connect_reads = LoopBatcher(connect_reads_many)
# Every send of the process made while the previous batch was being stored
# goes into the next one: one thread-pool call and one transaction per batch.
sends_store = LoopBatcher(services.messages_send)
channel_for_write = db(services.channel_for_write)
channel_readable = db(selectors.channel_readable)
channel_last_seq = db(selectors.channel_last_seq)
history_page = db(selectors.history_page)
messages_between = db(selectors.messages_between)
messages_between_named = db(selectors.messages_between_named)
backlog_for_resume = db(selectors.backlog_for_resume)
channel_seq_before = db(selectors.channel_seq_before)
backlog_since = db(selectors.backlog_for_resume)
cursor_join = db(cursors.cursor_join)
channels_sync = db(cursors.channels_sync)
message_edit = db(editing.message_edit)
message_delete = db(editing.message_delete)


async def receipts_publish(asks: list[cursors.CursorAsk], outcomes: Any) -> None:
    """The receipts of a batch of cursor moves, published together."""
    pairs = [pair for outcome in outcomes if not isinstance(outcome, BaseException) for pair in outcome[1]]
    if pairs:
        await group_frames_publish(pairs)


# The cursor moves this process's sessions ask for while the previous batch
# runs: one thread hop, one authorisation, one upsert, one receipt query.
cursor_batch = LoopBatcher(cursors.cursor_requests, after=receipts_publish)


@dataclass(slots=True)
class AckWindow:
    """`received` frames of one channel within one ACK_INTERVAL.

    The first moves the delivery cursor at once and opens the window; later
    ones only raise `pending`, written in one move when the window ends (or
    the session closes, or a `read` of the channel comes first)."""

    name: ChannelName
    until: float  # monotonic time the window ends
    delivered: int  # the user's delivered_seq as this session last saw it
    read: int
    last_seq: int  # the channel's, at that move
    pending: int | None = None
    timer: asyncio.TimerHandle | None = None


NOTHING: frozenset[Any] = frozenset()  # an empty set costs 216 bytes; idle sessions share this


class SessionConsumer(AsyncWebsocketConsumer):
    """One WebSocket session of one user."""

    # Slots, not the instance dict: with channels' own attributes the actor has
    # more than the 30 that CPython keeps in a compact, key-sharing dict.
    __slots__ = (
        "turn",
        "pending",
        "drainer",
        "closing",
        "hub",
        "watch_timer",
        "writer",
        "chores",
        "joined",
        "ack_windows",
        "session_id",
        "presence",
        "outbox_limit",
        "user",
        "token_expires_at",
        "topics",
        "acked",
        "ack_interval",
        "own_sent",
        "tracker",
        "bucket",
        "heartbeat",
        "resume_window",
        "last_activity",
        "store",
        "outbox",
        "room",
        "session_created",
        "next_touch",
        "closer",
    )

    clock: Callable[[], float] = staticmethod(time.monotonic)

    # Not a configured layer: channels then gives the actor no channel-layer
    # channel and no receive task; live events come from the fan-out hub.
    channel_layer_alias = "(sessions use messaging.fanout)"
    channel_name = ""

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        """Channels' `AsyncConsumer.__call__` without `await_many_dispatch`.

        With no channel layer the socket is the one source of messages:
        receive and dispatch in turn in the connection's own task, instead of
        a second task per session and an `asyncio.wait` per message."""
        self.scope = scope
        self.channel_layer = None
        self.base_send = send
        with contextlib.suppress(StopConsumer):
            while True:
                await self.dispatch(await receive())

    async def dispatch(self, message: dict[str, Any]) -> None:
        """Channels' dispatch without its `aclose_old_connections()` per event.

        Channels runs `close_old_connections` on its one thread-sensitive
        thread before every handler: a thread hop per delivered message that
        all sessions queue on (about 30 % of the server's time in a fan-out).
        This actor never touches the ORM on the event loop: every query goes
        through `db()`, whose worker-thread call already closes stale
        connections before and after it runs.
        """
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        if message["type"] == "websocket.connect":
            self.turn = asyncio.Lock()
            self.pending: deque[dict[str, Any]] | None = None  # made when needed
            self.drainer: asyncio.Task[None] | None = None
            self.closing = False
        elif message["type"] == "websocket.disconnect" and self.drainer is not None:
            # Pending events are moot now; a drain blocked on a full outbox
            # would otherwise hold the turn forever.
            self.closing = True
            self.drainer.cancel()
        async with self.turn:
            await handler(message)

    async def connect(self) -> None:
        self.channel_name = "session." + secrets.token_hex(12)
        self.hub = fanout.fanout_hub()
        self.watch_timer: asyncio.TimerHandle | None = None
        self.writer: asyncio.Task[None] | None = None
        self.chores: set[asyncio.Task[None]] | None = None  # made for the first chore
        self.joined: set[str] = set()
        self.ack_windows: dict[str, AckWindow] = {}
        self.session_id = ""
        self.presence: PresenceSession | None = None
        # Events of the groups joined below wait in `pending` until connect is done.
        self.outbox_limit: int = settings.CHAT["OUTBOUND_BUFFER"]
        await self.accept()
        check = self.scope["auth"]
        try:
            uid = int(check.user_id) if not check.close_code else 0
        except (TypeError, ValueError):
            check = TokenCheck(close_code=CLOSE_UNAUTHORIZED, reason="unknown user")
        if check.close_code:
            await self.close(code=check.close_code)
            return
        # Its own group first: a later resume elsewhere closes this actor
        # through it. The user's and broadcast groups before reading where
        # their channels start (as a subscribe does); all of it in memory.
        for group in (self.channel_name, user_group(uid), BROADCAST_GROUP):
            await self.group_join(group)
        auto = [str(BROADCAST), str(system_channel(uid))]
        check, auto_seqs = await connect_reads.submit((check, auto))
        if check.close_code:
            for group in list(self.joined):
                await self.group_leave(group)
            await self.close(code=check.close_code)
            return
        chat = settings.CHAT
        self.user = check.user
        self.token_expires_at: float = check.expires_at
        self.topics: set[str] = NOTHING  # type: ignore[assignment]  # a set from the first subscribe
        self.acked: dict[str, int] = {}
        self.ack_interval: float = chat["ACK_INTERVAL"]
        self.own_sent: set[tuple[str, int]] = NOTHING  # type: ignore[assignment]  # a set from the first send
        self.tracker = DeliveryTracker()
        self.bucket = TokenBucket(rate=chat["SEND_RATE"], burst=chat["SEND_BURST"])
        self.heartbeat: int = chat["HEARTBEAT"]
        self.resume_window: int = chat["RESUME_WINDOW"]
        self.last_activity = time.monotonic()
        self.store = session_store()
        # Frames waiting for the socket; none (not even an empty deque) while idle.
        self.outbox: deque[str] | None = None
        self.room: asyncio.Future[None] | None = None  # a replay waiting for room

        limit = chat["MAX_CONNECTIONS_PER_USER"]
        query = parse_qs(self.scope.get("query_string", b"").decode("latin1"))
        requested = (query.get("session") or [""])[0]
        if requested:
            admitted = await self.store.user_enter(self.user.pk, self.channel_name, limit=limit, ttl=self.live_ttl)
            state = await self.session_attach(requested) if admitted else None
        else:
            # The common case: a new session, admitted and stored in one round trip.
            admitted, state = await self.session_start(limit=limit), None
        if not admitted:
            await self.close(code=CLOSE_TOO_MANY)
            return
        backlog = await self.session_restore(state) if state is not None else []
        self.baselines_auto(auto_seqs, skip={m.channel.name for m in backlog})
        await self.push(
            {
                "type": "welcome",
                "session": self.session_id,
                "user": {"id": self.user.pk, "username": self.user.get_username()},
                "heartbeat": self.heartbeat,
                "resume_window": self.resume_window,
                "resumed": state is not None,
                "channels": sorted(self.topics),
            }
        )
        self.presence = PresenceSession(actor=self, user=self.user)
        await self.presence.enter()
        # Watch before sending the backlog: a client that stops reading then
        # still meets the heartbeat rule instead of stalling the actor forever.
        self.next_touch = time.monotonic() + self.heartbeat
        self.watch()
        for channel, seq in self.acked.items():
            self.tracker.mark(channel, seq)
        for message in backlog:
            # A channel never acknowledged (a DM that came while away) gets its
            # resume point before its first resent message; else the baseline
            # of its next live message would count this backlog as acknowledged.
            await self.baseline(message.channel.name, message.seq - 1)
            await self.push_message(message)

    def baselines_auto(self, seqs: dict[str, int], *, skip: set[str]) -> None:
        """Where `broadcast` and the user's `system:` channel start (`seqs`,
        read once after joining their groups, as a subscribe does), so that
        their first live message is no "first sight" (which would cost each
        session a query: ten thousand of them for one broadcast). Kept in
        memory only: what the session is sent again on resume is still
        counted from its creation for a channel it never acknowledged."""
        for name, seq in seqs.items():
            if name not in self.acked and name not in skip:
                self.acked[name] = seq
                self.tracker.mark(name, seq)

    async def session_restore(self, state: Any) -> list[Message]:
        """Rejoin a resumed session's topics and find what it must be sent again.

        Join before reading the backlog, as subscribe does: a message stored
        in between then arrives live (the tracker drops repeats).
        """
        for name in state.topics:
            await self.group_join(parse_channel(name).group)
        found = await backlog_for_resume(user=self.user, topics=state.topics, acked=state.acked, since=state.created)
        for name in set(state.topics) - set(found.topics):
            await self.group_leave(parse_channel(name).group)
        self.topics = set(found.topics) or NOTHING  # type: ignore[assignment]
        if found.topics != state.topics:
            await self.store.topics_set(self.session_id, found.topics)
        self.acked = dict(state.acked)
        return found.messages

    @property
    def live_ttl(self) -> float:
        """How long state of a live session is kept without a refresh."""
        return self.resume_window + 3 * self.heartbeat

    async def session_start(self, *, limit: int) -> bool:
        """A new session: admitted under the user's connection limit and
        stored, in one store call. False (nothing stored) when over the limit."""
        self.session_id = session_id_new()
        self.session_created: float = time.time()
        admitted = await self.store.enter_create(
            self.session_id, user_id=self.user.pk, owner=self.channel_name, limit=limit, ttl=self.live_ttl
        )
        if not admitted:
            self.session_id = ""  # nothing to release on disconnect
        return admitted

    async def session_attach(self, requested: str) -> Any:
        """Resume session `requested` if it is this user's and not expired,
        else start one (the user is admitted already).

        Returns the resumed state or None. An actor that still holds the
        resumed session elsewhere is told to close.
        """
        state = await self.store.load(requested)
        if state is not None and state.user_id == self.user.pk:
            self.session_id = requested
            self.session_created = state.created
            previous = await self.store.claim(requested, owner=self.channel_name, ttl=self.live_ttl)
            if previous and previous != self.channel_name:
                await fanout.publish(previous, {"type": "session.close", "code": CLOSE_TAKEN_OVER})
            return state
        self.session_id = session_id_new()
        self.session_created = time.time()
        await self.store.create(self.session_id, user_id=self.user.pk, owner=self.channel_name, ttl=self.live_ttl)
        return None

    async def disconnect(self, code: int) -> None:
        self.closing = True
        if self.watch_timer is not None:
            self.watch_timer.cancel()
        for task in (self.writer, self.drainer, *(self.chores or ())):
            if task is not None and task is not asyncio.current_task():
                task.cancel()
        for group in list(self.joined):
            self.hub.leave(group, self)
        self.joined.clear()
        if self.ack_windows:
            await self.acks_flush()
        if self.presence is not None:
            await self.presence.leave()
        if self.session_id:
            # The state stays for resume_window seconds: any process may resume it.
            await self.store.release(self.session_id, owner=self.channel_name, ttl=self.resume_window)
            await self.store.user_leave(self.user.pk, self.channel_name)

    # --- outbound ---------------------------------------------------------------

    async def write_loop(self) -> None:
        """Drain the outbox onto the socket; the server's `send` waits while the
        client's TCP window is full, so the outbox is where a slow client shows.

        It runs only while there is something to write (`kick`): an idle
        session holds no writer task."""
        out = self.outbox
        while out:
            text = out.popleft()
            if self.room is not None:
                room, self.room = self.room, None
                if not room.done():
                    room.set_result(None)
            try:
                await self.send(text_data=text)
            except OSError:  # the client is gone; its disconnect follows
                self.closing = True
                return
        if self.outbox is out:
            self.outbox = None

    def kick(self) -> None:
        """Start writing: right now, in this call, as long as the socket takes
        the frames (the common case); a task only if it has to wait."""
        if not self.closing and (self.writer is None or self.writer.done()):
            try:
                self.writer = run_eagerly(self.write_loop())
            except Exception:  # the server's send failed: no frame can follow
                log.exception("session %s: write failed", self.session_id)
                self.closing = True

    async def push(self, frame: dict[str, Any], *, wait: bool = False) -> None:
        await self.push_text(frames.encode(frame), wait=wait)

    async def push_text(self, text: str, *, wait: bool = False) -> None:
        """Queue a frame. Replays (which the actor paces itself) wait for room;
        anything else finding the outbox full means the client is too slow:
        it is closed with 4409."""
        if self.closing:
            return
        if wait:
            while self.outbox is not None and len(self.outbox) >= self.outbox_limit:
                if self.room is None:
                    self.room = asyncio.get_running_loop().create_future()
                await self.room
                if self.closing:
                    return
        self.offer(text)

    def offer(self, text: str) -> None:
        """Queue a live frame now; a full outbox means a client too slow (4409)."""
        out = self.outbox
        if out is None:
            out = self.outbox = deque()
        if len(out) >= self.outbox_limit:
            self.too_slow()
            return
        out.append(text)
        self.kick()

    async def push_message(self, message: Message) -> None:
        """A stored message from a replay, a resume or a gap fill."""
        await self.push(message_frame(message), wait=True)
        self.tracker.mark(message.channel.name, message.seq)

    def too_slow(self) -> None:
        """Drop what is queued and close 4409; the session stays resumable."""
        self.closing = True
        if self.outbox:
            self.outbox.clear()
        # The close frame itself waits for the client's TCP window: don't
        # block the actor on it.
        self.closer = asyncio.create_task(self.close(code=CLOSE_TOO_SLOW))

    async def close(self, code: int | bool | None = None, reason: str | None = None) -> None:
        """Stop writing, then close: nothing may be sent after the close frame."""
        self.closing = True
        for task in (self.writer, self.drainer):
            if task is not None and task is not asyncio.current_task():
                task.cancel()
        # The client may be gone already (a takeover of a dropped socket whose
        # disconnect is still on its way): then there is nothing to close.
        with contextlib.suppress(OSError):
            await super().close(code=code, reason=reason)

    async def group_join(self, group: str) -> None:
        await self.hub.join(group, self)
        self.joined.add(group)

    async def group_leave(self, group: str) -> None:
        self.joined.discard(group)
        self.hub.leave(group, self)

    def watch(self) -> None:
        """Close on heartbeat silence (4408) or token expiry (4401); keep state alive.

        A timer callback, not a task per session: it runs when the next of
        its deadlines is due and sets itself again."""
        self.watch_timer = None
        if self.closing:
            return
        now = time.monotonic()
        silent_until = self.last_activity + 2 * self.heartbeat
        expires_in = self.token_expires_at - time.time()
        if now >= silent_until:
            self.chore(self.close(code=CLOSE_HEARTBEAT))
            return
        if expires_in <= 0:
            self.chore(self.close(code=CLOSE_UNAUTHORIZED))
            return
        if now >= self.next_touch:
            self.chore(self.keep_alive(active=self.last_activity > now - self.heartbeat))
            self.next_touch = now + self.heartbeat
        delay = max(0.05, min(silent_until - now, expires_in, self.next_touch - now))
        self.watch_timer = asyncio.get_running_loop().call_later(delay, self.watch)

    def chore(self, work: Awaitable[None]) -> None:
        """Run work of the actor's own in a task it keeps until done."""
        task = asyncio.ensure_future(work)
        if self.chores is None:
            self.chores = set()
        self.chores.add(task)
        task.add_done_callback(self.chores.discard)

    async def keep_alive(self, *, active: bool) -> None:
        """Refresh presence, the session state and the per-user entry."""
        try:
            await self.presence.refresh()
            if active:
                await self.presence.activity()
            await self.store.touch(self.session_id, ttl=self.live_ttl)
            limit = settings.CHAT["MAX_CONNECTIONS_PER_USER"]
            await self.store.user_enter(self.user.pk, self.channel_name, limit=limit, ttl=self.live_ttl)
        except Exception:  # Redis hiccup: the next heartbeat tries again
            log.exception("session %s: keep-alive failed", self.session_id)

    # --- client frames ----------------------------------------------------------

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        self.last_activity = time.monotonic()
        limit = settings.CHAT["MAX_FRAME_BYTES"]
        if text_data is None:
            # The frame limit holds for binary frames too (protocol section 7).
            if len(bytes_data or b"") > limit:
                await self.close(code=CLOSE_TOO_BIG)
                return
            await self.push(frames.error(None, BadJson("frames are JSON text, not binary")))
            return
        if len(text_data) > limit or (len(text_data) * 4 > limit and len(text_data.encode()) > limit):
            await self.close(code=CLOSE_TOO_BIG)
            return
        try:
            frame = frames.parse(text_data)
        except ChatError as exc:
            await self.push(frames.error(getattr(exc, "ref", None), exc))
            return
        handler = getattr(self, "on_" + type(frame).__name__.lower())
        try:
            await handler(frame)
        except ChatError as exc:
            await self.push(frames.error(frame.ref, exc))
        except Exception:
            log.exception("frame %s failed", type(frame).__name__)
            await self.push(frames.error(frame.ref, ChatError("internal error")))

    def own_drop(self, key: tuple[str, int]) -> None:
        """Forget a message of this session's own (`own_sent` may be the shared empty set)."""
        if key in self.own_sent:
            self.own_sent.discard(key)

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
                if not self.own_sent:
                    self.own_sent = set()
                self.own_sent.add((name, message.seq))
            await message_publish(message, origin=self.channel_name)
        await self.push(frames.ok(frame.ref, message=message_frame(message)))

    async def on_ping(self, frame: frames.Ping) -> None:
        pong: dict[str, Any] = {"type": "pong", "t": int(time.time() * 1000)}
        if frame.ref is not None:
            pong["ref"] = frame.ref
        await self.push(pong)

    async def on_auth(self, frame: frames.Auth) -> None:
        check = await token_check_async(frame.token)
        if check.close_code == CLOSE_FORBIDDEN:
            raise Forbidden("the user is inactive")
        if check.close_code:
            raise Unauthorized(f"token refused: {check.reason}")
        if check.user.pk != self.user.pk:
            raise Forbidden("the token belongs to another user")
        self.token_expires_at = check.expires_at
        await self.push(frames.ok(frame.ref, expires_at=int(check.expires_at)))

    async def on_direct(self, frame: frames.Direct) -> None:
        await self.send_stored(frame, services.SendRequest(self.user, frame.body, frame.client_id, to=frame.to))

    async def on_publish(self, frame: frames.Publish) -> None:
        name = frames.channel_of(frame)
        await self.send_stored(frame, services.SendRequest(self.user, frame.body, frame.client_id, name=name))

    async def on_broadcast(self, frame: frames.Broadcast) -> None:
        name = ChannelName(Kind.BROADCAST)
        await self.send_stored(frame, services.SendRequest(self.user, frame.body, frame.client_id, name=name))

    async def send_stored(self, frame: frames.Frame, request: services.SendRequest) -> None:
        self.rate_check()
        message, created = await sends_store.submit(request)
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
            await cursor_join(user=self.user, channel=channel)
            await self.group_join(name.group)
            if key not in self.topics:
                if not self.topics:
                    self.topics = set()
                self.topics.add(key)
                await self.store.topics_set(self.session_id, sorted(self.topics))
        else:
            channel = await channel_readable(user=self.user, name=name)
        last_seq = await channel_last_seq(channel_id=channel.pk) if channel else 0
        await self.baseline(key, last_seq if frame.since is None else min(frame.since, last_seq))
        if frame.since is not None and channel is not None:
            await self.replay(channel, after=frame.since, upto=last_seq)
        self.tracker.mark(key, last_seq)
        # After a replay the answer waits for room as the replay did: the
        # outbox may still be full of it.
        await self.push(frames.ok(frame.ref, channel=key, last_seq=last_seq), wait=frame.since is not None)

    async def baseline(self, channel: str, seq: int) -> None:
        """The resume point of a channel this session starts to receive.

        Everything after it that the client does not acknowledge is sent
        again on resume.
        """
        if channel not in self.acked:
            self.acked[channel] = seq
            await self.store.ack(self.session_id, channel, seq)

    async def replay(self, channel: Any, *, after: int, upto: int) -> None:
        while after < upto:
            rows = await messages_between(channel=channel, after=after, upto=upto, limit=REPLAY_PAGE)
            if not rows:
                return
            for message in rows:
                await self.push_message(message)
            after = rows[-1].seq

    async def on_unsubscribe(self, frame: frames.Unsubscribe) -> None:
        name = frames.channel_of(frame)
        key = str(name)
        if name.auto:
            raise BadRequest(f"{key} is received without subscribing and cannot be unsubscribed")
        if key in self.topics:
            await self.topic_drop(key)
        else:
            with contextlib.suppress(NotFound):
                await channel_readable(user=self.user, name=name)
        await self.push(frames.ok(frame.ref, channel=key))

    async def topic_drop(self, key: str) -> None:
        self.topics.discard(key)
        self.tracker.forget(key)
        self.acked.pop(key, None)
        await self.group_leave(parse_channel(key).group)
        await self.store.topics_set(self.session_id, sorted(self.topics))
        await self.store.ack_forget(self.session_id, key)

    async def on_received(self, frame: frames.Received) -> None:
        """Everything up to `seq` arrived: move this session's resume point at
        once, and the user's delivery cursor at once or, within ACK_INTERVAL
        of the previous move of this channel, when the interval ends."""
        name = frames.channel_of(frame)
        key = str(name)
        window = self.ack_windows.get(key)
        now = self.clock()
        if window is not None and now < window.until:
            # Authorised by the move that opened the window; the cursor as
            # this session knows it, raised to the frame's seq (never past the
            # channel's last_seq as far as the session knows it).
            window.pending = max(window.pending or 0, frame.seq)
            last = max(window.last_seq, self.tracker.last_sent.get(key, 0))
            delivered = max(window.delivered, min(frame.seq, last))
            read = window.read
            if window.timer is None:
                window.timer = asyncio.get_running_loop().call_later(window.until - now, self.ack_due, key)
        else:
            move = await self.move_cursor(name, delivered=frame.seq)
            delivered, read = move.delivered, move.read
            if self.ack_interval > 0:
                self.ack_windows[key] = AckWindow(name, now + self.ack_interval, delivered, read, move.last_seq)
        if frame.seq > self.acked.get(key, -1):
            self.acked[key] = frame.seq
            await self.store.ack(self.session_id, key, frame.seq)
        await self.push(frames.ok(frame.ref, channel=key, seq=self.acked[key], delivered_seq=delivered, read_seq=read))

    def ack_due(self, key: str) -> None:
        """A window with coalesced `received` frames ended: move the cursor."""
        window = self.ack_windows.get(key)
        if window is not None:
            window.timer = None
            if not self.closing:
                self.chore(self.ack_flush_turn(key))

    async def ack_flush_turn(self, key: str) -> None:
        async with self.turn:
            await self.acks_flush(key)

    async def acks_flush(self, key: str | None = None) -> None:
        """Move the delivery cursor of `key` (else of every channel) to its
        coalesced `received`, sending receipts; the window ends (a channel with
        a move then opens the next one: one move per interval)."""
        for channel in [key] if key is not None else list(self.ack_windows):
            window = self.ack_windows.pop(channel, None)
            if window is None:
                continue
            if window.timer is not None:
                window.timer.cancel()
            if window.pending is None:
                continue
            try:
                move = await self.move_cursor(window.name, delivered=window.pending)
            except ChatError:  # access lost since the window opened
                continue
            except Exception:
                log.exception("session %s: coalesced ack of %s failed", self.session_id, channel)
                continue
            if key is not None and not self.closing:
                self.ack_windows[channel] = AckWindow(
                    window.name, self.clock() + self.ack_interval, move.delivered, move.read, move.last_seq
                )

    async def on_read(self, frame: frames.Read) -> None:
        """Immediate; it carries a coalesced `received` of the channel along."""
        name = frames.channel_of(frame)
        window = self.ack_windows.get(str(name))
        pending = window.pending if window is not None else None
        move = await self.move_cursor(name, read=frame.seq, delivered=pending)
        if window is not None:
            window.pending = None
            window.delivered, window.read, window.last_seq = move.delivered, move.read, move.last_seq
        await self.push(frames.ok(frame.ref, channel=str(name), delivered_seq=move.delivered, read_seq=move.read))

    async def move_cursor(self, name: ChannelName, **seqs: int | None) -> Any:
        """Authorise and move a cursor (forbidden / not_found), receipts sent,
        in the process's next batch of cursor moves."""
        move, _ = await cursor_batch.submit(cursors.CursorAsk(self.user, name, **seqs))
        return move

    async def on_sync(self, frame: frames.Sync) -> None:
        await self.push(frames.ok(frame.ref, channels=await channels_sync(user=self.user)))

    async def on_edit(self, frame: frames.Edit) -> None:
        self.rate_check()
        await self.answer_changed(frame, await message_edit(user=self.user, message_id=frame.id, body=frame.body))

    async def on_delete(self, frame: frames.Delete) -> None:
        self.rate_check()
        await self.answer_changed(frame, await message_delete(user=self.user, message_id=frame.id))

    async def answer_changed(self, frame: frames.Frame, change: Any) -> None:
        """Tell every member's sessions (committed by now), then answer."""
        if change.event is not None:
            await channel_event_publish(change.message.channel.name, change.event, origin=self.channel_name)
        await self.push(frames.ok(frame.ref, message=message_frame(change.message)))

    async def on_history(self, frame: frames.History) -> None:
        channel = await channel_readable(user=self.user, name=frames.channel_of(frame))
        page = await history_page(channel=channel, before=frame.before, after=frame.after, limit=frame.limit)
        await self.push(frames.ok(frame.ref, **history_result(page)))

    async def on_typing(self, frame: frames.Typing) -> None:
        name = frames.channel_of(frame)
        await self.presence.typing(name, frame.state, subscribed=str(name) in self.topics)
        await self.push(frames.ok(frame.ref))

    async def on_presencesubscribe(self, frame: frames.PresenceSubscribe) -> None:
        states, denied = await self.presence.subscribe(frame.users, topics=sorted(self.topics))
        await self.push(frames.ok(frame.ref, presence=states, denied=denied))

    async def on_presenceunsubscribe(self, frame: frames.PresenceUnsubscribe) -> None:
        self.presence.unsubscribe(frame.users)
        await self.push(frames.ok(frame.ref))

    async def on_presenceset(self, frame: frames.PresenceSet) -> None:
        status = await self.presence.set(frame.status)
        await self.push(frames.ok(frame.ref, status=status))

    # --- live events from the fan-out hub ---------------------------------------------

    def hub_event(self, event: dict[str, Any]) -> None:
        """Called by the hub for each event of a group this actor joined."""
        if self.closing:
            return
        if self.pending or self.turn.locked() or not self.handled_now(event):
            self.later(event)

    def hub_resync(self) -> None:
        """The hub's subscription was down for a while: read what may be lost."""
        self.later({"type": "catch.up"})

    def handled_now(self, event: dict[str, Any]) -> bool:
        """Handle an event without I/O if it allows that (as `chat_message` /
        `chat_event` would); False: it needs the drain task."""
        kind = event["type"]
        if kind == "chat.event":
            if event.get("origin") != self.channel_name and event.get("skip_user") != self.user.pk:
                self.offer(event["text"])
            return True
        if kind != "chat.message":
            return False
        channel, seq = event["channel"], event["seq"]
        if channel.startswith("topic:") and channel not in self.topics:
            return True
        if channel not in self.acked:
            return False  # no baseline yet: it takes a store write, maybe a fill
        action, _ = self.tracker.classify(channel, seq)
        if action == "fill":
            return False
        if action == "send":
            self.tracker.mark(channel, seq)
            if event["origin"] == self.channel_name:
                self.own_drop((channel, seq))
            else:
                self.offer(event["text"])
        return True

    def later(self, event: dict[str, Any]) -> None:
        if self.pending is None:
            self.pending = deque()
        elif len(self.pending) >= self.outbox_limit:
            # Stuck behind a client that does not read: keep what is not in
            # the database (revokes, closes) and read the rest from there.
            kept = [e for e in self.pending if e["type"] in ("chat.revoke", "session.close")]
            self.pending.clear()
            self.pending.extend(kept)
            self.pending.append({"type": "catch.up"})
        self.pending.append(event)
        if self.drainer is None or self.drainer.done():
            self.drainer = asyncio.create_task(self.drain())

    async def drain(self) -> None:
        """Handle waiting events in order, taking turns with client frames."""
        async with self.turn:
            while self.pending:
                event = self.pending.popleft()
                if self.closing:
                    continue
                try:
                    await getattr(self, get_handler_name(event))(event)
                except Exception:
                    log.exception("event %s failed", event.get("type"))
            self.pending = None

    async def catch_up(self, event: dict[str, Any]) -> None:
        """Send what was stored while live events may have been lost: per
        channel after what this session sent, and for a channel it has not
        seen, what was stored since the session began."""
        done = dict(self.acked)
        for channel, seq in self.tracker.last_sent.items():
            done[channel] = max(seq, done.get(channel, seq))
        found = await backlog_since(user=self.user, topics=sorted(self.topics), acked=done, since=self.session_created)
        for message in found.messages:
            channel = message.channel.name
            if message.seq <= self.tracker.last_sent.get(channel, -1):
                continue
            await self.baseline(channel, message.seq - 1)
            if (channel, message.seq) in self.own_sent:
                self.own_drop((channel, message.seq))
                self.tracker.mark(channel, message.seq)
            else:
                await self.push_message(message)

    async def chat_message(self, event: dict[str, Any]) -> None:
        """A live message: forward once, in seq order, filling gaps first."""
        channel, seq = event["channel"], event["seq"]
        if self.closing or (channel.startswith("topic:") and channel not in self.topics):
            return  # closing, or unsubscribed while the event was in flight
        action, after = self.tracker.classify(channel, seq)
        if action == "drop":
            return
        if action == "send" and seq > 1 and channel not in self.acked and channel not in self.tracker.last_sent:
            # First sight of a DM or notice channel: the events of two senders
            # can cross, so an earlier message may still be on its way and would
            # then be dropped as a repeat. Start where the session started.
            after = await channel_seq_before(name=channel, since=self.session_created)
            action = "fill" if after < seq - 1 else "send"
        await self.baseline(channel, after if action == "fill" else seq - 1)
        # A gap can be longer than one page of the query: page until it is closed.
        while action == "fill" and after < seq - 1:
            rows = await messages_between_named(name=channel, after=after, upto=seq - 1)
            if not rows:
                break
            for message in rows:
                if (channel, message.seq) in self.own_sent:
                    self.own_drop((channel, message.seq))  # it was in our `ok`
                    self.tracker.mark(channel, message.seq)
                else:
                    await self.push_message(message)
            after = rows[-1].seq
        self.tracker.mark(channel, seq)
        if event["origin"] == self.channel_name:
            self.own_drop((channel, seq))
        else:
            self.offer(event["text"])

    async def chat_event(self, event: dict[str, Any]) -> None:
        """An edit, a deletion or a receipt: forwarded as it is."""
        if self.closing or event.get("origin") == self.channel_name:
            return
        if event.get("skip_user") != self.user.pk:
            await self.push_text(event["text"])

    async def chat_revoke(self, event: dict[str, Any]) -> None:
        """The user lost access to a private topic: stop receiving it."""
        if event["channel"] in self.topics:
            await self.topic_drop(event["channel"])

    async def session_close(self, event: dict[str, Any]) -> None:
        await self.close(code=event["code"])
