"""The load generator: many WebSocket sessions in this one process (asyncio on uvloop).

Two dialects, one interface, so every scenario runs unchanged against both:

- `ours`: the real protocol (docs/protocol.md): `?token=JWT`, the `welcome`
  frame, `ping` heartbeats, `subscribe`/`direct`/`publish`/`broadcast` with a
  `ref`, `message` events, `received` acknowledgements (coalesced, see
  `Acker`);
- `tutorial`: the Channels tutorial chat in benchmarks/baseline/: the room
  is the URL (`/ws/chat/ROOM/`), a client sends `{"message": ...}` and every
  member of the room, the sender included, gets `{"message": ...}`.

Every body a scenario sends is JSON `{"t": SEND_TIME, "k": KEY, "s": SENDER}`:
the send time on this process's monotonic clock (receipt is timed on the same
clock, so latency needs no clock sync), a key unique to the message, and the
sender's session number (the tutorial echoes to the sender; that copy is not
a delivery). A `Recorder` counts deliveries per key and session, so losses
and duplicates are exact.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, WebSocketException

from benchmarks.common import HOST, percentile

_decode = msgspec.json.Decoder().decode
_encode = msgspec.json.Encoder().encode

OURS = "ours"
TUTORIAL = "tutorial"


@dataclass
class Recorder:
    """Deliveries of one phase: latency of each, and who got which message."""

    latencies: list[float] = field(default_factory=list)
    seen: set[tuple[int, str]] = field(default_factory=set)
    duplicates: int = 0
    first_send: float = 0.0
    last_delivery: float = 0.0
    sent: int = 0
    stored: int = 0  # `ok` answers to sends (ours only)
    ok_latencies: list[float] = field(default_factory=list)  # send to its `ok` (ours: stored)
    errors: int = 0
    first_error: str = ""
    target: int = 0
    reached: asyncio.Event = field(default_factory=asyncio.Event)

    def record(self, session: int, key: str, sent_at: float, now: float) -> None:
        mark = (session, key)
        if mark in self.seen:
            self.duplicates += 1
            return
        self.seen.add(mark)
        self.latencies.append(now - sent_at)
        self.last_delivery = now
        if self.target and len(self.latencies) >= self.target:
            self.reached.set()

    def error(self, what: str) -> None:
        self.errors += 1
        if not self.first_error:
            self.first_error = what[:300]

    def expect(self, target: int) -> None:
        self.target = target
        if len(self.latencies) >= target:
            self.reached.set()

    async def drain(self, idle: float, limit: float) -> None:
        """Until `target` deliveries arrived, or none came for `idle` s, or `limit` s passed."""
        deadline = time.monotonic() + limit
        while not self.reached.is_set() and time.monotonic() < deadline:
            seen = len(self.latencies)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.reached.wait(), min(idle, max(0.01, deadline - time.monotonic())))
            if len(self.latencies) == seen:
                return

    def summary(self, expected: int) -> dict[str, Any]:
        lat = sorted(self.latencies)
        oks = sorted(self.ok_latencies)
        span = max(self.last_delivery - self.first_send, 1e-9) if lat else 0.0
        return {
            "sent": self.sent,
            "stored": self.stored,
            "send_errors": self.errors,
            "first_error": self.first_error,
            "expected": expected,
            "delivered": len(lat),
            "lost": expected - len(lat),
            "duplicates": self.duplicates,
            "p50_ms": _ms(percentile(lat, 0.50)),
            "p90_ms": _ms(percentile(lat, 0.90)),
            "p99_ms": _ms(percentile(lat, 0.99)),
            "max_ms": _ms(lat[-1] if lat else float("nan")),
            "deliveries_per_s": round(len(lat) / span, 1) if lat else 0.0,
            "ok_p50_ms": _ms(percentile(oks, 0.50)),
            "ok_p99_ms": _ms(percentile(oks, 0.99)),
        }


def _ms(seconds: float) -> float | None:
    return None if seconds != seconds else round(seconds * 1000, 2)  # NaN -> None (JSON null)


def body(sender: int, key: str) -> str:
    return _encode({"t": time.monotonic(), "k": key, "s": sender}).decode()


@dataclass(eq=False)
class Session:
    """One client connection. `recorder` is swapped by each phase."""

    number: int
    dialect: str
    ws: ClientConnection
    recorder: Recorder
    waiting: dict[str, asyncio.Future[dict[str, Any]]] = field(default_factory=dict)
    pending_acks: dict[str, int] = field(default_factory=dict)
    # ref of a send -> its send time and the recorder it was sent under: an
    # answer that comes after the recorder changed (a warm-up send's `ok`
    # overtaken by its deliveries) counts for the phase that sent it.
    sent_at: dict[str, tuple[float, Recorder]] = field(default_factory=dict)
    reader: asyncio.Task[None] | None = None
    refs: int = 0
    closed_by_server: int | None = None
    closing: bool = False

    def start(self) -> None:
        self.reader = asyncio.create_task(self.read())

    async def read(self) -> None:
        try:
            async for raw in self.ws:
                now = time.monotonic()
                frame = _decode(raw)
                if self.dialect == TUTORIAL:
                    self.delivered(frame["message"], now)
                    continue
                kind = frame.get("type")
                if kind == "message":
                    channel, seq = frame["channel"], frame["seq"]
                    if seq > self.pending_acks.get(channel, 0):
                        self.pending_acks[channel] = seq
                    self.delivered(frame["body"], now)
                elif kind == "ok" or kind == "error":
                    ref = frame.get("ref") or ""
                    waiter = self.waiting.pop(ref, None)
                    if waiter is not None:
                        if not waiter.done():
                            waiter.set_result(frame)
                    elif ref.startswith("s"):  # a send's answer
                        sent_at, recorder = self.sent_at.pop(ref, (None, self.recorder))
                        if kind == "ok":
                            recorder.stored += 1
                            if sent_at is not None:
                                recorder.ok_latencies.append(now - sent_at)
                        else:
                            recorder.error(f"{frame.get('code')}: {frame.get('message')}")
        except (ConnectionClosed, WebSocketException):
            pass
        finally:
            if not self.closing:
                self.closed_by_server = self.ws.close_code or -1
            for waiter in self.waiting.values():
                if not waiter.done():
                    waiter.set_exception(ConnectionError(f"closed: {self.ws.close_code}"))

    def delivered(self, raw_body: str, now: float) -> None:
        data = _decode(raw_body)
        if data.get("s") == self.number:  # the tutorial's echo to its sender
            return
        self.recorder.record(self.number, data["k"], data["t"], now)

    async def ask(self, frame: dict[str, Any], within: float = 60.0) -> dict[str, Any]:
        """Send a frame with a fresh `ref` and wait for its answer (ours only)."""
        self.refs += 1
        ref = f"a{self.refs}"
        waiter: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.waiting[ref] = waiter
        await self.ws.send(_encode({**frame, "ref": ref}).decode())
        return await asyncio.wait_for(waiter, within)

    async def send_message(self, what: str, target: str, key: str) -> None:
        """Send one timed message; its answer (ours) is counted by the reader.

        what: "direct" (target: the receiver's username), "publish" (target:
        the channel), "broadcast"; the tutorial ignores both: its room is
        fixed at connect.
        """
        text = body(self.number, key)
        self.recorder.sent += 1
        if self.dialect == TUTORIAL:
            frame: dict[str, Any] = {"message": text}
        else:
            self.refs += 1
            frame = {"type": what, "body": text, "ref": f"s{self.refs}"}
            self.sent_at[frame["ref"]] = (time.monotonic(), self.recorder)
            if what == "direct":
                frame["to"] = target
            elif what == "publish":
                frame["channel"] = target
        try:
            await self.ws.send(_encode(frame).decode())
        except ConnectionClosed:
            # Counted, not raised: the run goes on and reports it.
            self.recorder.error(f"send on a closed connection (close code {self.ws.close_code})")

    async def ping(self) -> None:
        if self.dialect == TUTORIAL:  # no app heartbeat there: daphne pings, websockets answers
            return
        with contextlib.suppress(ConnectionClosed):
            await self.ws.send('{"type":"ping"}')

    async def ack(self) -> int:
        """Acknowledge the highest seq seen per channel since the last ack; frames sent."""
        if not self.pending_acks:
            return 0
        pending, self.pending_acks = self.pending_acks, {}
        with contextlib.suppress(ConnectionClosed):
            for channel, seq in pending.items():
                await self.ws.send(_encode({"type": "received", "channel": channel, "seq": seq}).decode())
        return len(pending)

    async def close(self) -> None:
        self.closing = True
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.ws.close(), 10)
        if self.reader is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.reader, 5)


@dataclass
class Target:
    """Where and how to connect: the server's ports and its dialect."""

    dialect: str
    ports: list[int]
    tokens: Sequence[str] = ()

    def url(self, number: int, room: str) -> str:
        port = self.ports[number % len(self.ports)]
        if self.dialect == TUTORIAL:
            return f"ws://{HOST}:{port}/ws/chat/{room}/"
        return f"ws://{HOST}:{port}/ws/?token={self.tokens[number]}"

    async def open(self, number: int, room: str, recorder: Recorder) -> Session:
        """Open session `number` (user number `number` for ours); the tutorial joins `room`."""
        ws = await connect(
            self.url(number, room),
            compression=None,
            ping_interval=None,  # ours: the protocol's heartbeat; daphne pings and websockets answers
            open_timeout=60,
            close_timeout=5,
            max_size=2**20,
            max_queue=64,
        )
        if self.dialect == OURS:
            try:
                welcome = _decode(await asyncio.wait_for(ws.recv(), 30))
            except BaseException:
                await ws.close()
                raise
            if welcome.get("type") != "welcome":
                await ws.close()
                raise ConnectionError(f"first frame was {welcome!r:.200}, not welcome")
        session = Session(number, self.dialect, ws, recorder)
        session.start()
        return session

    async def join(self, session: Session, channel: str) -> None:
        """Ours: subscribe to the topic (the tutorial joined its room at connect)."""
        if self.dialect == OURS:
            answer = await session.ask({"type": "subscribe", "channel": channel})
            if answer.get("type") != "ok":
                raise ConnectionError(f"subscribe refused: {answer!r:.200}")


async def gather_bounded_list(factories: Sequence[Any], concurrency: int) -> list[Any]:
    gate = asyncio.Semaphore(concurrency)

    async def one(factory: Any) -> Any:
        async with gate:
            return await factory()

    return await asyncio.gather(*(one(f) for f in factories), return_exceptions=True)


class Upkeep:
    """Heartbeats and acknowledgements for a set of sessions, spread evenly in time.

    Pings: each session once per `ping_every` s (the server closes one silent
    for 2 x heartbeat). Acks: each session's highest seq per channel once per
    `ack_every` s at most, and only when something new arrived: a client
    acknowledges ranges, never message by message (the server writes one
    cursor per `received`). `ack_every=0` turns acks off.
    """

    def __init__(self, sessions: list[Session], ping_every: float, ack_every: float) -> None:
        self.sessions = sessions
        self.ping_every = ping_every
        self.ack_every = ack_every
        self.acks_sent = 0
        self.pings_sent = 0
        self.longest_cycle: dict[str, float] = {}  # per loop: the longest round over all sessions, s
        self.stop = asyncio.Event()
        self.tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        if self.ping_every > 0:
            self.tasks.append(asyncio.create_task(self._loop(self.ping_every, self._ping)))
        if self.ack_every > 0:
            self.tasks.append(asyncio.create_task(self._loop(self.ack_every, self._ack)))

    async def _ping(self, session: Session) -> None:
        await session.ping()
        self.pings_sent += 1

    async def _ack(self, session: Session) -> None:
        self.acks_sent += await session.ack()

    async def _loop(self, every: float, action: Any) -> None:
        while not self.stop.is_set():
            started = time.monotonic()
            batch = [s for s in self.sessions if s.closed_by_server is None and not s.closing]
            # In slices of 50, so that the loop wakes a bounded number of times.
            step = 50
            gap = every * step / max(len(batch), 1)
            for i in range(0, len(batch), step):
                if self.stop.is_set():
                    return
                for session in batch[i : i + step]:
                    await action(session)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stop.wait(), gap)
            took = time.monotonic() - started
            name = getattr(action, "__name__", "loop")
            self.longest_cycle[name] = round(max(self.longest_cycle.get(name, 0.0), took), 2)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), max(0.0, every - took))

    async def close(self) -> None:
        self.stop.set()
        for task in self.tasks:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(task, 10)
