"""uvicorn's sans-I/O WebSocket protocol, holding less per idle connection.

`manage.py serve` runs this class (`ws="realtime.wsprotocol:LeanWebSocketProtocol"`).
It is uvicorn's `WebSocketsSansIOProtocol` unchanged on the wire; only what
each connection keeps while idle is smaller (docs/PERFORMANCE.md, "Smaller
idle sessions"):

- the receive queue is a list made while a message waits and one future
  while the app waits, not an `asyncio.Queue` (four deques, about 3 KiB);
- `writable` is a flag and a future made only while the transport is
  paused, not an `asyncio.Event` (a deque, about 750 bytes);
- the attributes live in slots, not in an instance dict (uvicorn sets more
  than the 30 attributes CPython shares keys for: a 1.6 KiB dict);
- the handshake's request and response (their headers) are let go once the
  handshake is answered (the scope keeps its own copy of the headers).
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.datastructures import Headers

EMPTY_HEADERS = Headers()


class Inbox:
    """What `asyncio.Queue` did for uvicorn's protocol: unbounded, one reader."""

    __slots__ = ("items", "waiter")

    def __init__(self) -> None:
        self.items: list[Any] | None = None
        self.waiter: asyncio.Future[None] | None = None

    def put_nowait(self, item: Any) -> None:
        if self.items is None:
            self.items = [item]
        else:
            self.items.append(item)
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def empty(self) -> bool:
        return not self.items

    async def get(self) -> Any:
        while not self.items:
            if self.waiter is None or self.waiter.done():
                self.waiter = asyncio.get_running_loop().create_future()
            await self.waiter
        assert self.items is not None
        item = self.items.pop(0)
        if not self.items:
            self.items = None
        return item


class Gate:
    """What `asyncio.Event` did for `writable`: set, clear, wait."""

    __slots__ = ("open", "waiter")

    def __init__(self) -> None:
        self.open = True
        self.waiter: asyncio.Future[None] | None = None

    def set(self) -> None:
        self.open = True
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def clear(self) -> None:
        self.open = False

    def is_set(self) -> bool:
        return self.open

    async def wait(self) -> bool:
        while not self.open:
            if self.waiter is None or self.waiter.done():
                self.waiter = asyncio.get_running_loop().create_future()
            await asyncio.shield(self.waiter)
        return True


class LeanWebSocketProtocol(WebSocketsSansIOProtocol):
    __slots__ = (
        "config",
        "app",
        "loop",
        "logger",
        "root_path",
        "asgi_version",
        "app_state",
        "connections",
        "tasks",
        "default_headers",
        "transport",
        "server",
        "client",
        "scheme",
        "queue",
        "handshake_initiated",
        "handshake_complete",
        "close_sent",
        "disconnected",
        "close_timer",
        "close_timeout",
        "initial_response",
        "conn",
        "read_paused",
        "writable",
        "ping_interval",
        "ping_timeout",
        "ping_timer",
        "pong_timer",
        "pending_ping_payload",
        "ping_sent_at",
        "last_ping_rtt",
        "frames",
        "curr_msg_data_type",
        "request",
        "response",
        "scope",
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.queue = Inbox()  # type: ignore[assignment]
        self.writable = Gate()  # type: ignore[assignment]

    async def send(self, message: Any) -> None:
        await super().send(message)
        if message["type"] == "websocket.accept" and self.handshake_complete:
            # Read only while the handshake is answered. The `websockets`
            # parser's generator keeps the request object for the life of the
            # connection: empty it, so that its headers go too.
            self.request.headers = EMPTY_HEADERS
            self.request.path = ""
            self.request = self.response = None  # type: ignore[assignment]
