"""A client that keeps one session across sockets (protocol sections 1 and 6).

`ResumingClient` connects with `&session=` after a drop, acknowledges with
`received` what it holds without a gap, and keeps each socket's frames
apart, so that `check` can assert what a client may rely on: after dropping
duplicates by (channel, seq) it has exactly the stored messages; nothing at
or below a seq it had acknowledged (the server's `ok` seen) came again on a
later socket; within one socket a channel's seqs only grow; and what it got
is what was stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from websockets.asyncio.client import connect

from .client import WS_TIMEOUT, User, WsSession, ok_of
from .servers import Server

ACK_POLL = 0.05
PING_IDLE = 10.0  # well inside the 25 s heartbeat
SEND_RETRY = 0.05


@dataclass
class Socket:
    """One connection of the session, and the acknowledgements confirmed before it opened."""

    server: Server
    ws: WsSession
    floor: dict[str, int]

    @property
    def resumed(self) -> bool:
        return bool(self.ws.welcome["resumed"])


@dataclass
class CheckResult:
    """What `ResumingClient.check` counted."""

    messages: int
    duplicates: int
    sockets: int
    own_echoes: int  # its own messages that came back as events (resent, being unacknowledged)


@dataclass
class ResumingClient:
    """One user's session, across as many sockets as it takes."""

    user: User
    ack_every: int = 5
    session_id: str | None = None
    topics: list[str] = field(default_factory=list)
    sockets: list[Socket] = field(default_factory=list)
    acked: dict[str, int] = field(default_factory=dict)  # confirmed by the server's `ok`
    own: dict[tuple[str, int], dict[str, Any]] = field(default_factory=dict)  # sent, from the `ok`s
    _acker: asyncio.Task[None] | None = None
    _ack_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    _last_sent: float = 0.0

    @property
    def current(self) -> WsSession:
        return self.sockets[-1].ws

    @property
    def is_open(self) -> bool:
        return bool(self.sockets) and self.current.is_open

    async def connect(self, server: Server) -> WsSession:
        """Open a socket (resuming the session once there is one) and start acknowledging."""
        assert not self.is_open, "connect while a socket is open"
        ws = await WsSession.open(server.ws_url, self.user.token, session=self.session_id)
        assert ws.welcome["user"] == {"id": self.user.id, "username": self.user.username}, ws.welcome
        self.sockets.append(Socket(server, ws, dict(self.acked)))
        if self.session_id is None:
            self.session_id = ws.welcome["session"]
        self._last_sent = time.monotonic()
        self._acker = asyncio.create_task(self._ack_loop(ws))
        return ws

    async def resume(self, server: Server) -> WsSession:
        """Reconnect, asserting that the session and its subscriptions came back."""
        ws = await self.connect(server)
        welcome = ws.welcome
        assert welcome["resumed"] is True and welcome["session"] == self.session_id, (self.session_id, welcome)
        assert welcome["channels"] == sorted(self.topics), (self.topics, welcome)
        return ws

    async def false_start(self, server: Server) -> None:
        """Open a socket resuming the session and break it at once, before its welcome is read."""
        assert self.session_id is not None and not self.is_open
        ws = await asyncio.wait_for(
            connect(
                f"{server.ws_url}?token={self.user.token}&session={self.session_id}",
                ping_interval=None,
                open_timeout=WS_TIMEOUT,
            ),
            WS_TIMEOUT,
        )
        ws.transport.abort()
        await asyncio.wait_for(ws.wait_closed(), WS_TIMEOUT)

    async def subscribe(self, channel: str) -> dict[str, Any]:
        answer = await ok_of(self.current, {"type": "subscribe", "channel": channel})
        self.topics.append(channel)
        return answer

    async def drop(self, how: str, *, settle_acks: bool = True) -> int | None:
        """Lose the socket: "abort" (TCP gone, no close handshake) or "close" (a clean close).

        With `settle_acks`, an acknowledgement in flight is answered first, so
        that the server's resume point is exactly `acked`.
        """
        ws = self.current
        if settle_acks:
            async with self._ack_lock:
                await self._lose(ws, how)
        else:
            await self._lose(ws, how)
        code = await ws.wait_closed()
        await self.acker_done()
        return code

    @staticmethod
    async def _lose(ws: WsSession, how: str) -> None:
        if how == "abort":
            ws.ws.transport.abort()
        else:
            assert how == "close", how
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(ws.ws.close(), 5)

    async def acker_done(self) -> None:
        """Wait for the acknowledging loop of a closed socket to end, and surface its failure.

        Not cancelled: on Python 3.11 `wait_for` can swallow a cancellation
        whose answer arrives at the same moment, and the loop would go on.
        """
        if self._acker is not None:
            acker, self._acker = self._acker, None
            await asyncio.wait_for(acker, WS_TIMEOUT + 1)

    def seen_keys(self) -> set[tuple[str, int]]:
        keys = {(m["channel"], m["seq"]) for s in self.sockets for m in s.ws.messages()}
        return keys | set(self.own)

    def contiguous(self) -> dict[str, int]:
        """Per channel, the highest seq n such that 1..n all arrived."""
        by_channel: dict[str, set[int]] = {}
        for channel, seq in self.seen_keys():
            by_channel.setdefault(channel, set()).add(seq)
        upto: dict[str, int] = {}
        for channel, seqs in by_channel.items():
            n = 0
            while n + 1 in seqs:
                n += 1
            upto[channel] = n
        return upto

    async def _ack_loop(self, ws: WsSession) -> None:
        """Every ACK_POLL seconds, acknowledge channels that grew by `ack_every`; ping when idle."""
        while ws.is_open:
            await asyncio.sleep(ACK_POLL)
            async with self._ack_lock:
                for channel, upto in sorted(self.contiguous().items()):
                    if upto - self.acked.get(channel, 0) < self.ack_every or not ws.is_open:
                        continue
                    try:
                        answer = await ws.request({"type": "received", "channel": channel, "seq": upto})
                    except (ConnectionError, AssertionError):
                        await ws.wait_closed()  # the socket is going; its reader may not have seen it yet
                        return
                    assert answer["type"] == "ok" and answer["seq"] >= upto, answer
                    self.acked[channel] = max(self.acked.get(channel, 0), upto)
                    self._last_sent = time.monotonic()
                if ws.is_open and time.monotonic() - self._last_sent > PING_IDLE:
                    try:
                        await ws.request({"type": "ping"})
                    except (ConnectionError, AssertionError):
                        await ws.wait_closed()
                        return
                    self._last_sent = time.monotonic()

    async def send_until_stored(self, frame: dict[str, Any], within: float = 30.0) -> dict[str, Any]:
        """Send a `direct` or `publish` (with a `client_id`) until an `ok` comes back,
        over whichever socket is open; a retry after a drop must not store it twice."""
        assert frame.get("client_id"), "retries are only safe with a client_id"
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            if not self.is_open:
                await asyncio.sleep(SEND_RETRY)
                continue
            ws = self.current
            try:
                answer = await ws.request(frame, within=max(0.1, min(10.0, deadline - time.monotonic())))
            except (ConnectionError, AssertionError):
                await ws.wait_closed()  # dropped meanwhile: send again (same client_id) once resumed
                continue
            if answer["type"] == "error" and answer["code"] == "rate_limited":
                await asyncio.sleep(answer["retry_after"])
                continue
            assert answer["type"] == "ok", answer
            message = answer["message"]
            self.own[(message["channel"], message["seq"])] = message
            self._last_sent = time.monotonic()
            return message
        raise AssertionError(f"{frame} not stored within {within}s")

    async def wait_for(self, expected: set[tuple[str, int]], within: float) -> None:
        """Wait until every expected (channel, seq) arrived, over any socket."""
        deadline = time.monotonic() + within
        while not expected <= self.seen_keys():
            if time.monotonic() > deadline:
                missing = sorted(expected - self.seen_keys())
                raise AssertionError(
                    f"{self.user.username}: {len(missing)} messages missing after {within}s, e.g. {missing[:10]}; "
                    f"sockets: {[(s.server.name, s.ws.close_code) for s in self.sockets]}"
                )
            await asyncio.sleep(ACK_POLL)

    def check(self, stored: dict[tuple[str, int], dict[str, Any]], channels: set[str]) -> CheckResult:
        """Assert the delivery guarantees against what the server stored in `channels`."""
        name = self.user.username
        counts: Counter[tuple[str, int]] = Counter(self.own.keys())
        for n, sock in enumerate(self.sockets):
            last: dict[str, int] = {}
            for message in sock.ws.messages():
                key = (message["channel"], message["seq"])
                channel, seq = key
                assert channel in channels, f"{name} socket {n}: a message of a channel it does not receive: {key}"
                assert message == stored[key], f"{name} socket {n}: {message} differs from the stored {stored[key]}"
                assert seq > last.get(channel, 0), f"{name} socket {n}: {key} repeated or out of order"
                assert seq > sock.floor.get(channel, 0), (
                    f"{name} socket {n}: {key} sent again although acknowledged up to {sock.floor[channel]}"
                )
                last[channel] = seq
                counts[key] += 1
        for key, message in self.own.items():
            assert message == stored[key], f"{name}: its own {message} differs from the stored {stored[key]}"
        expected = {key for key in stored if key[0] in channels}
        assert set(counts) == expected, (
            f"{name}: missing {sorted(expected - set(counts))[:10]}, unexpected {sorted(set(counts) - expected)[:10]}"
        )
        echoes = sum(1 for s in self.sockets for m in s.ws.messages() if m["from"]["id"] == self.user.id)
        return CheckResult(
            messages=len(counts),
            duplicates=sum(c - 1 for c in counts.values()),
            sockets=len(self.sockets),
            own_echoes=echoes,
        )

    async def close(self) -> None:
        if self.is_open:
            with contextlib.suppress(Exception):
                await self.current.close()
        with contextlib.suppress(Exception):
            await self.acker_done()


def stored_messages(server: Server, token: str, channels: set[str]) -> dict[tuple[str, int], dict[str, Any]]:
    """Every stored message of the channels, by (channel, seq), from the HTTP history."""
    stored: dict[tuple[str, int], dict[str, Any]] = {}
    for channel in channels:
        messages = server.api.history_all(token, channel)
        assert [m["seq"] for m in messages] == list(range(1, len(messages) + 1)), f"{channel} has gaps"
        stored.update({(channel, m["seq"]): m for m in messages})
    return stored


def assert_no_tracebacks(*servers: Server) -> None:
    """Drops, takeovers and replays are routine: none may leave an exception in a server's log."""
    for server in servers:
        log = server.log()
        assert "Traceback" not in log, f"{server.name} logged an exception:\n{log[log.index('Traceback') :][:3000]}"


def users_on(servers: list[Server], count: int, *, prefix: str) -> list[User]:
    """Register users on all servers at once, one at a time on each: a server hashes
    passwords one after another, and a queue of them can outlast the HTTP timeout."""
    share = count // len(servers) + 1
    with ThreadPoolExecutor(max_workers=len(servers)) as pool:
        shares = pool.map(lambda server: [server.api.new_user(prefix) for _ in range(share)], servers)
        return [user for users in shares for user in users][:count]
