"""The lean uvicorn WebSocket protocol (realtime/wsprotocol.py) and the ASGI
layers that hand their inner app's coroutine back (config/asgi.py,
realtime/routing.py, realtime/auth.py): same behaviour, less kept per
connection."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import pytest
import uvicorn
from channels.testing import WebsocketCommunicator
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from config.asgi import application
from realtime.wsprotocol import Gate, Inbox, LeanWebSocketProtocol
from tests.conftest import token_for

# --- Inbox and Gate -------------------------------------------------------------------------


async def test_inbox_gives_items_in_order_and_waits_when_empty() -> None:
    inbox = Inbox()
    assert inbox.empty()
    inbox.put_nowait(1)
    inbox.put_nowait(2)
    assert not inbox.empty()
    assert [await inbox.get(), await inbox.get()] == [1, 2]
    assert inbox.empty() and inbox.items is None  # nothing held while idle
    getter = asyncio.ensure_future(inbox.get())
    await asyncio.sleep(0)
    assert not getter.done()
    inbox.put_nowait(3)
    assert await getter == 3


async def test_inbox_get_cancelled_while_waiting_loses_nothing() -> None:
    inbox = Inbox()
    getter = asyncio.ensure_future(inbox.get())
    await asyncio.sleep(0)
    getter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await getter
    inbox.put_nowait("kept")
    assert await inbox.get() == "kept"


async def test_gate_open_until_cleared_and_wakes_every_waiter_when_set() -> None:
    gate = Gate()
    assert gate.is_set() and await gate.wait()
    gate.clear()
    assert not gate.is_set()
    first, second = asyncio.ensure_future(gate.wait()), asyncio.ensure_future(gate.wait())
    await asyncio.sleep(0)
    assert not first.done() and not second.done()
    gate.set()
    assert await first and await second
    assert gate.waiter is None


async def test_gate_waiter_cancelled_does_not_cancel_the_others() -> None:
    gate = Gate()
    gate.clear()
    cancelled, waiting = asyncio.ensure_future(gate.wait()), asyncio.ensure_future(gate.wait())
    await asyncio.sleep(0)
    cancelled.cancel()
    await asyncio.sleep(0)
    assert not waiting.done()
    gate.set()
    assert await waiting
    assert cancelled.cancelled()


# --- the protocol under a real uvicorn server ------------------------------------------------


async def echo_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    assert scope["type"] == "websocket"
    assert (await receive())["type"] == "websocket.connect"
    if scope["path"] == "/refuse":
        await send({"type": "websocket.close", "code": 1000})
        return
    await send({"type": "websocket.accept"})
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            return
        if message.get("text") == "close please":
            await send({"type": "websocket.close", "code": 4321, "reason": "asked"})
            return
        if message.get("text") is not None:
            await send({"type": "websocket.send", "text": "echo " + message["text"]})
        else:
            await send({"type": "websocket.send", "bytes": message["bytes"][::-1]})


@contextlib.asynccontextmanager
async def lean_server() -> Any:
    config = uvicorn.Config(
        echo_app,
        host="127.0.0.1",
        port=0,
        ws=LeanWebSocketProtocol,
        ws_per_message_deflate=False,
        ws_ping_interval=None,
        lifespan="off",
        log_level="warning",
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        async with asyncio.timeout(10):
            while not server.started:  # noqa: ASYNC110 - uvicorn offers a flag, no event
                await asyncio.sleep(0.01)
        port = server.servers[0].sockets[0].getsockname()[1]
        yield server, f"ws://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


async def test_lean_protocol_echoes_text_and_bytes_and_forgets_the_handshake() -> None:
    async with lean_server() as (server, url), connect(url + "/echo", compression=None) as ws:
        await ws.send("hello")
        assert await ws.recv() == "echo hello"
        await ws.send(b"\x01\x02\x03")
        assert await ws.recv() == b"\x03\x02\x01"
        [protocol] = server.server_state.connections
        assert isinstance(protocol, LeanWebSocketProtocol)
        assert not hasattr(protocol, "__dict__") or not protocol.__dict__  # all in slots
        assert protocol.request is None and protocol.response is None
        # The websockets parser's generator still holds the request: emptied.
        held = protocol.conn.parser.gi_frame.f_locals["request"]
        assert not list(held.headers.raw_items()) and held.path == ""
        assert protocol.scope["headers"], "the ASGI scope keeps its own headers"


async def test_lean_protocol_close_code_and_refusal() -> None:
    async with lean_server() as (_, url):
        async with connect(url + "/echo", compression=None) as ws:
            await ws.send("close please")
            with pytest.raises(ConnectionClosed):
                await ws.recv()
            assert ws.close_code == 4321 and ws.close_reason == "asked"
        with pytest.raises(Exception, match="403"):
            async with connect(url + "/refuse", compression=None):
                pass


async def test_lean_protocol_sees_the_client_go() -> None:
    async with lean_server() as (server, url):
        async with connect(url + "/echo", compression=None) as ws:
            await ws.send("x")
            await ws.recv()
        async with asyncio.timeout(10):
            while server.server_state.connections:  # noqa: ASYNC110 - a set uvicorn keeps, no event
                await asyncio.sleep(0.01)


# --- the layers in front of the session actor -----------------------------------------------


async def test_unknown_websocket_path_is_an_error_as_with_urlrouter() -> None:
    comm = WebsocketCommunicator(application, "/elsewhere/")
    with pytest.raises(ValueError, match="No route found"):
        await comm.connect()


async def test_unknown_scope_type_is_an_error() -> None:
    with pytest.raises(ValueError, match="No application configured"):
        application({"type": "telepathy"}, None, None)


async def test_origin_checked_layer_refuses_non_websocket_scopes() -> None:
    websocket_app = application.application_mapping["websocket"]
    with pytest.raises(ValueError, match="non-WebSocket"):
        websocket_app({"type": "http"}, None, None)


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("fast_passwords")
async def test_session_on_ws_path_is_served_through_the_layers(auser: Any) -> None:
    ann = await auser("ann")
    comm = WebsocketCommunicator(application, f"/ws/?token={token_for(ann)}")
    connected, _ = await comm.connect()
    assert connected
    assert (await comm.receive_json_from(timeout=10))["type"] == "welcome"
    await comm.disconnect()
