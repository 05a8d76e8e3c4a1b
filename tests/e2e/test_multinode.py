"""Two server processes sharing one PostgreSQL database and one Redis namespace."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from .client import SessionPool, WsSession, ok_of
from .flows import QUIET, dm_name, topic_name
from .servers import Server

pytestmark = pytest.mark.e2e

PUBLISHERS_PER_NODE = 2
MESSAGES_EACH = 50
RACE_TIMEOUT = 60.0


async def test_dm_and_topic_cross_nodes(two_nodes: list[Server]) -> None:
    node1, node2 = two_nodes
    ann, bob = node1.api.new_user("ann"), node2.api.new_user("bob")
    async with SessionPool() as pool:
        a = await pool.open(node1.ws_url, ann)
        b = await pool.open(node2.ws_url, bob)

        sent = (await ok_of(a, {"type": "direct", "to": bob.username, "body": "across"}))["message"]
        assert sent["seq"] == 1 and sent["channel"] == dm_name(ann, bob), sent
        [received] = await b.expect_messages(sent["channel"], 1)
        assert received == sent

        topic = topic_name()
        assert (await ok_of(a, {"type": "subscribe", "channel": topic}))["last_seq"] == 0
        posted = (await ok_of(b, {"type": "publish", "channel": topic, "body": "from node 2"}))["message"]
        [event] = await a.expect_messages(topic, 1)
        assert event == posted and posted["seq"] == 1

        await asyncio.sleep(QUIET)
        assert a.messages(sent["channel"]) == [] and b.messages(topic) == []
        # Either node serves what the other stored.
        assert node2.api.history(ann.token, topic)["messages"] == [posted]
        assert node1.api.history(bob.token, sent["channel"])["messages"] == [sent]


async def _publish_all(session: WsSession, channel: str, bodies: list[str]) -> list[dict[str, Any]]:
    """Pipeline every publish at once; resend those refused as rate_limited.

    Returns the stored messages in the order of their `ok`s.
    """
    stored: list[dict[str, Any]] = []
    pending = list(bodies)
    for _ in range(100):
        if not pending:
            return stored
        submitted = []
        for body in pending:
            ref, answer = session.submit()
            await session.send({"type": "publish", "channel": channel, "body": body, "ref": ref})
            submitted.append((body, answer))
        pending, wait = [], 0.0
        for body, answer in submitted:
            frame = await asyncio.wait_for(answer, RACE_TIMEOUT)
            if frame["type"] == "ok":
                stored.append(frame["message"])
                continue
            assert frame["code"] == "rate_limited" and frame["retry_after"] > 0, frame
            pending.append(body)
            wait = max(wait, frame["retry_after"])
        await asyncio.sleep(wait)
    raise AssertionError(f"{len(pending)} publishes still refused after 100 rounds")


async def test_concurrent_publishers_get_gapless_seqs(two_nodes: list[Server]) -> None:
    node1, node2 = two_nodes
    topic = topic_name()
    async with SessionPool() as pool:
        watch_users = node1.api.new_users(2, "watch")
        watchers: list[WsSession] = []
        for node, user in zip(two_nodes, watch_users, strict=True):
            watcher = await pool.open(node.ws_url, user)
            assert (await ok_of(watcher, {"type": "subscribe", "channel": topic}))["last_seq"] == 0
            watchers.append(watcher)
        homes = [node for node in two_nodes for _ in range(PUBLISHERS_PER_NODE)]
        pub_users = node2.api.new_users(len(homes), "pub")
        publishers = [await pool.open(node.ws_url, user) for node, user in zip(homes, pub_users, strict=True)]
        assert {p.ws.remote_address[1] for p in publishers} == {node1.port, node2.port}
        # Publishers listen too: they must get everyone's messages but their own.
        for pub in publishers:
            await ok_of(pub, {"type": "subscribe", "channel": topic})
        plans = [[f"p{p}-m{i}" for i in range(MESSAGES_EACH)] for p in range(len(publishers))]
        total = sum(len(plan) for plan in plans)

        results = await asyncio.gather(
            *(_publish_all(pub, topic, plan) for pub, plan in zip(publishers, plans, strict=True))
        )
        for watcher in watchers:
            await watcher.expect_messages(topic, total, within=RACE_TIMEOUT)
        for pub, stored in zip(publishers, results, strict=True):
            await pub.expect_messages(topic, total - len(stored), within=RACE_TIMEOUT)
        await asyncio.sleep(QUIET)

        every_seq = list(range(1, total + 1))
        by_seq = {m["seq"]: m for stored in results for m in stored}
        assert sorted(by_seq) == every_seq and sum(map(len, results)) == total, "seqs in the oks"
        for pub, plan, stored in zip(publishers, plans, results, strict=True):
            assert sorted(m["body"] for m in stored) == sorted(plan)
            # One session's frames are handled in order, so the seqs of its oks only grow.
            seqs = [m["seq"] for m in stored]
            assert seqs == sorted(set(seqs)), seqs
            others = [s for s in every_seq if s not in set(seqs)]
            seen = [m["seq"] for m in pub.messages(topic)]
            assert not set(seen) & set(seqs), "a publisher got its own messages back as events"
            assert seen == others, "a publisher missed, repeated or reordered the others' messages"

        for n, watcher in enumerate(watchers, 1):
            seen = watcher.messages(topic)
            assert [m["seq"] for m in seen] == every_seq, f"node {n}'s watcher: missing, repeated or out of order"
            assert all(m == by_seq[m["seq"]] for m in seen), f"node {n}'s watcher saw other content than stored"

    token = pub_users[0].token
    for node in two_nodes:
        history = node.api.history_all(token, topic)
        assert history == [by_seq[s] for s in every_seq], f"history on node port {node.port}"
    newest = node2.api.history(token, topic, limit=1)
    assert newest["messages"][0]["seq"] == total and newest["has_more"] is True
