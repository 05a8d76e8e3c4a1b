"""Conversations the end-to-end tests play against one or more servers."""

from __future__ import annotations

import asyncio
import secrets
from typing import Any

from .client import SessionPool, User, WsSession, ok_of
from .servers import Server

QUIET = 0.3  # how long "nothing more arrives" is watched for


def dm_name(a: User, b: User) -> str:
    lo, hi = sorted((a.id, b.id))
    return f"dm:{lo}:{hi}"


def topic_name() -> str:
    return f"topic:e2e-{secrets.token_hex(4)}"


def assert_welcome(session: WsSession) -> None:
    welcome = session.welcome
    assert welcome["session"].startswith("s_"), welcome
    assert welcome["resumed"] is False and welcome["channels"] == [], welcome
    assert welcome["heartbeat"] == 25 and welcome["resume_window"] == 120, welcome


async def dm_flow(sender: WsSession, recipient: WsSession, ann: User, bob: User) -> dict[str, Any]:
    """ann DMs bob by username: bob gets the event, ann only her `ok` with seq 1."""
    channel = dm_name(ann, bob)
    ok = await ok_of(sender, {"type": "direct", "to": bob.username, "body": "hi bob", "client_id": "c-1"})
    message = ok["message"]
    assert message["type"] == "message" and message["channel"] == channel and message["seq"] == 1, message
    assert message["kind"] == "direct" and message["from"] == {"id": ann.id, "username": ann.username}, message
    assert message["body"] == "hi bob" and message["client_id"] == "c-1", message
    assert message["deleted"] is False and message["edited_at"] is None, message
    assert message["created_at"].endswith("Z"), message

    [event] = await recipient.expect_messages(channel, 1)
    assert event == message

    # The same client_id again: the first message back, nothing new stored or sent.
    again = await ok_of(sender, {"type": "direct", "to": bob.username, "body": "hi bob", "client_id": "c-1"})
    assert again["message"] == message
    reply = await ok_of(recipient, {"type": "direct", "to": ann.id, "body": "hi ann"})
    assert reply["message"]["seq"] == 2 and reply["message"]["channel"] == channel, reply
    [back] = await sender.expect_messages(channel, 1)
    assert back == reply["message"]
    await asyncio.sleep(QUIET)
    assert recipient.messages(channel) == [message], "bob got a duplicate or his own reply back"
    assert sender.messages(channel) == [reply["message"]], "ann got her own DM back as an event"
    return message


async def topic_flow(publisher: WsSession, subscriber: WsSession, channel: str) -> list[dict[str, Any]]:
    """subscriber subscribes; publisher (not subscribed) publishes; only subscriber gets it."""
    subscribed = await ok_of(subscriber, {"type": "subscribe", "channel": channel})
    assert subscribed["last_seq"] == 0 and subscribed["channel"] == channel, subscribed

    first = (await ok_of(publisher, {"type": "publish", "channel": channel, "body": "to all"}))["message"]
    assert first["seq"] == 1 and first["kind"] == "topic" and first["channel"] == channel, first
    [event] = await subscriber.expect_messages(channel, 1)
    assert event == first

    second = (await ok_of(subscriber, {"type": "publish", "channel": channel, "body": "me too"}))["message"]
    assert second["seq"] == 2, second
    await asyncio.sleep(QUIET)
    assert publisher.messages(channel) == [], "a session that never subscribed got a topic message"
    assert subscriber.messages(channel) == [first], "the publishing subscriber got its own message back"
    return [first, second]


async def dm_and_topic(server: Server) -> None:
    """The basic conversation on one server, checked against REST and WS history."""
    api = server.api
    ann, bob, eve = api.new_users(3, "user")
    async with SessionPool() as pool:
        a = await pool.open(server.ws_url, ann)
        b = await pool.open(server.ws_url, bob)
        assert_welcome(a)
        assert a.welcome["session"] != b.welcome["session"]

        first_dm = await dm_flow(a, b, ann, bob)
        topic = topic_name()
        posted = await topic_flow(a, b, topic)

        dm_history = api.history(bob.token, dm_name(ann, bob))
        assert [m["seq"] for m in dm_history["messages"]] == [1, 2] and dm_history["has_more"] is False
        assert dm_history["messages"][0] == first_dm
        assert api.history(ann.token, topic) == {"messages": posted, "has_more": False}
        assert api.history(ann.token, topic, after=1) == {"messages": posted[1:], "has_more": False}
        assert api.history(ann.token, topic, limit=1) == {"messages": posted[1:], "has_more": True}

        over_ws = await ok_of(a, {"type": "history", "channel": topic})
        assert over_ws["messages"] == posted and over_ws["has_more"] is False

        # A third user may not read ann and bob's conversation.
        status, body = api.call("GET", f"/api/channels/{dm_name(ann, bob)}/messages/", token=eve.token)
        assert (status, body["code"]) == (403, "forbidden"), body
