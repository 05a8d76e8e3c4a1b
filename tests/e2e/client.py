"""Clients for the end-to-end tests: the HTTP API (urllib) and a WebSocket session.

Both talk to a real server over loopback and know nothing of the server's
code: they speak the wire protocol (/work/shared/PROTOCOL.md) only.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import secrets
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

HTTP_TIMEOUT = 10.0
WS_TIMEOUT = 10.0
HISTORY_PAGE = 200


@dataclass(frozen=True)
class User:
    id: int
    username: str
    password: str
    token: str


class Api:
    """JSON over HTTP to one server."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url

    def call(self, method: str, path: str, *, body: Any = None, token: str | None = None) -> tuple[int, Any]:
        """(status, decoded JSON body or None); HTTP errors are returned, not raised."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.base_url + path, data=data, method=method)
        if data is not None:
            request.add_header("Content-Type", "application/json")
        if token:
            request.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT) as response:
                status, raw = response.status, response.read()
        except urllib.error.HTTPError as exc:
            status, raw = exc.code, exc.read()
        return status, json.loads(raw) if raw else None

    def register(self, username: str, password: str) -> dict[str, Any]:
        status, body = self.call("POST", "/api/auth/register/", body={"username": username, "password": password})
        assert status == 201, (status, body)
        return body

    def access_token(self, username: str, password: str) -> str:
        status, body = self.call("POST", "/api/auth/token/", body={"username": username, "password": password})
        assert status == 200, (status, body)
        return body["access"]

    def new_user(self, prefix: str = "u") -> User:
        """Register a user with a unique name and log it in."""
        username = f"{prefix}{secrets.token_hex(4)}"
        password = "Pw-" + secrets.token_urlsafe(12)
        created = self.register(username, password)
        assert created["username"] == username and isinstance(created["id"], int), created
        return User(created["id"], username, password, self.access_token(username, password))

    def new_users(self, count: int, prefix: str = "u") -> list[User]:
        """Several users at once (password hashing makes each take a while)."""
        with ThreadPoolExecutor(max_workers=min(count, 8)) as pool:
            return list(pool.map(lambda _: self.new_user(prefix), range(count)))

    def history(self, token: str, channel: str, **params: int) -> dict[str, Any]:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        status, body = self.call("GET", f"/api/channels/{channel}/messages/{query}", token=token)
        assert status == 200, (status, body)
        return body

    def history_all(self, token: str, channel: str) -> list[dict[str, Any]]:
        """Every stored message of a channel, oldest first, paging with `after=`."""
        messages: list[dict[str, Any]] = []
        after = 0
        while True:
            page = self.history(token, channel, after=after, limit=HISTORY_PAGE)
            messages.extend(page["messages"])
            if not page["has_more"]:
                return messages
            assert page["messages"], page  # has_more with an empty page would never end
            after = page["messages"][-1]["seq"]


class WsSession:
    """A WebSocket session: requests with refs, and every event kept in order."""

    def __init__(self, ws: ClientConnection, welcome: dict[str, Any]) -> None:
        self.ws = ws
        self.welcome = welcome
        self.events: list[dict[str, Any]] = []
        self._refs = itertools.count(1)
        self._pending: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._changed = asyncio.Condition()
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def open(
        cls, url: str, token: str, *, origin: str | None = None, session: str | None = None, max_queue: int = 16
    ) -> WsSession:
        """Connect with `?token=` (and `&session=` to resume) and read the welcome, which must come first.

        `max_queue` is the websockets client's receive buffer in frames: at 1
        it stops reading the socket as soon as one frame waits unread.
        """
        query = f"?token={token}" + (f"&session={session}" if session else "")
        ws = await asyncio.wait_for(
            # Transport pings off: the protocol's own `ping` frames are the only keepalive.
            connect(url + query, origin=origin, ping_interval=None, open_timeout=WS_TIMEOUT, max_queue=max_queue),
            WS_TIMEOUT,
        )
        first = json.loads(await asyncio.wait_for(ws.recv(), WS_TIMEOUT))
        assert first["type"] == "welcome", first
        return cls(ws, first)

    @property
    def user_id(self) -> int:
        return self.welcome["user"]["id"]

    @property
    def is_open(self) -> bool:
        return not self._reader.done()

    @property
    def close_code(self) -> int | None:
        """The code the server closed with (1006 without a close frame), None while open."""
        return self.ws.close_code

    async def _read(self) -> None:
        try:
            async for raw in self.ws:
                frame = json.loads(raw)
                waiter = self._pending.pop(frame.get("ref"), None) if "ref" in frame else None
                async with self._changed:
                    if waiter is not None and not waiter.done():
                        waiter.set_result(frame)
                    else:
                        self.events.append(frame)
                    self._changed.notify_all()
        except ConnectionClosed:
            pass
        finally:
            for waiter in self._pending.values():
                if not waiter.done():
                    waiter.set_exception(ConnectionError(f"closed with {self.ws.close_code} before the answer"))
            self._pending.clear()
            async with self._changed:
                self._changed.notify_all()

    def submit(self) -> tuple[str, asyncio.Future[dict[str, Any]]]:
        """A fresh ref and the future its answer will resolve; send the frame yourself."""
        ref = f"r{next(self._refs)}"
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[ref] = future
        return ref, future

    async def send(self, frame: dict[str, Any] | str) -> None:
        try:
            await self.ws.send(frame if isinstance(frame, str) else json.dumps(frame))
        except ConnectionClosed:
            raise AssertionError(f"cannot send: the connection closed ({self.close_code})") from None

    async def request(self, frame: dict[str, Any], within: float = WS_TIMEOUT) -> dict[str, Any]:
        """Send with a fresh ref; the answer carrying that ref (events are kept apart)."""
        ref, future = self.submit()
        try:
            await self.send({**frame, "ref": ref})
        except AssertionError:
            self._pending.pop(ref, None)
            future.cancel()  # no answer will come; nobody is left to read its exception
            raise
        return await asyncio.wait_for(future, within)

    async def wait_until(self, predicate: Callable[[], bool], within: float = WS_TIMEOUT) -> None:
        """Wait until `predicate()` holds; fail early if the connection closes first."""

        async def waited() -> None:
            async with self._changed:
                await self._changed.wait_for(lambda: predicate() or not self.is_open)

        await asyncio.wait_for(waited(), within)
        assert predicate(), f"connection closed ({self.close_code}) while waiting; events: {self.events[-5:]}"

    def messages(self, channel: str | None = None) -> list[dict[str, Any]]:
        return [e for e in self.events if e["type"] == "message" and (channel is None or e["channel"] == channel)]

    async def expect_messages(self, channel: str, count: int, within: float = WS_TIMEOUT) -> list[dict[str, Any]]:
        await self.wait_until(lambda: len(self.messages(channel)) >= count, within)
        return self.messages(channel)

    async def wait_closed(self, within: float = WS_TIMEOUT) -> int | None:
        await asyncio.wait_for(asyncio.shield(self._reader), within)
        return self.close_code

    async def close(self) -> None:
        await self.ws.close()
        await asyncio.wait_for(asyncio.shield(self._reader), WS_TIMEOUT)


async def ok_of(session: WsSession, frame: dict[str, Any], within: float = WS_TIMEOUT) -> dict[str, Any]:
    """`request` that must succeed."""
    answer = await session.request(frame, within)
    assert answer["type"] == "ok", answer
    return answer


class SessionPool:
    """Opens sessions and closes whichever are still open at the end of the block."""

    def __init__(self) -> None:
        self.sessions: list[WsSession] = []

    async def __aenter__(self) -> SessionPool:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await asyncio.gather(*(s.close() for s in self.sessions), return_exceptions=True)

    async def open(self, url: str, user: User, *, origin: str | None = None) -> WsSession:
        session = await WsSession.open(url, user.token, origin=origin)
        assert session.welcome["user"] == {"id": user.id, "username": user.username}, session.welcome
        self.sessions.append(session)
        return session
