"""Random reconnect churn: sessions dropped and resumed on either node while messages flow.

CLIENTS users on two nodes, each with one session subscribed to two topics,
send each other DMs while two publishers post to the topics. Every session
is dropped at random moments (TCP abort or clean close) and resumes on a
random node, sometimes after a resume broken off before its welcome. At
the end each client has, after dropping duplicates by (channel, seq),
exactly the stored messages of its channels; nothing at or below a seq it
had acknowledged came again; and a DM retried after a drop (same
`client_id`) was stored once.

The churn lasts `--churn-seconds` (default 20, for CI; e.g.
`--churn-seconds 600` for a soak run, the test's timeout grows with it).
The seed is printed; `CHURN_SEED=N` replays the same random choices (the
interleaving with the servers still varies).
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections.abc import Coroutine
from typing import Any

import pytest

from .client import User, WsSession, ok_of
from .conftest import NodeStarter
from .flows import QUIET, dm_name, topic_name
from .resuming import ResumingClient, assert_no_tracebacks, stored_messages, users_on
from .servers import Server

pytestmark = pytest.mark.e2e

CLIENTS = 12
PUBLISH_GAP = 0.08  # seconds between two publishes of one publisher
DM_GAP = (0.2, 1.0)
DROP_GAP = (0.5, 3.0)
AWAY = (0.0, 0.6)  # seconds between a drop and the resume
FALSE_STARTS = 0.2  # share of resumes preceded by one broken off before its welcome
SETTLE_TIMEOUT = 40.0


async def _churn(client: ResumingClient, rng: random.Random, nodes: list[Server], until: float) -> int:
    """Drop the session at random and resume it on a random node; the number of drops."""
    drops = 0
    while (left := until - time.monotonic()) > 0:
        await asyncio.sleep(min(left, rng.uniform(*DROP_GAP)))
        if time.monotonic() >= until:
            break
        # An acknowledgement may be in flight: the server's resume point is then
        # at or above what the client knows, never below.
        await client.drop(rng.choice(("abort", "close")), settle_acks=False)
        await asyncio.sleep(rng.uniform(*AWAY))
        if rng.random() < FALSE_STARTS:
            await client.false_start(rng.choice(nodes))
        await client.resume(rng.choice(nodes))
        drops += 1
    return drops


async def _chat(client: ResumingClient, rng: random.Random, peers: list[User], until: float) -> int:
    """Send DMs to random peers until the end, retrying across drops; the number sent."""
    sent = 0
    while time.monotonic() < until:
        await asyncio.sleep(rng.uniform(*DM_GAP))
        peer = rng.choice(peers)
        body = f"{client.user.username}->{peer.username} #{sent}"
        frame = {"type": "direct", "to": peer.id, "body": body, "client_id": f"dm-{sent}"}
        message = await client.send_until_stored(frame)
        assert message["body"] == body and message["channel"] == dm_name(client.user, peer), message
        sent += 1
    return sent


async def _publish(session: WsSession, topics: list[str], until: float, tag: str) -> int:
    count = 0
    while time.monotonic() < until:
        topic = topics[count % len(topics)]
        await ok_of(session, {"type": "publish", "channel": topic, "body": f"{tag}-{count}", "client_id": f"{count}"})
        count += 1
        await asyncio.sleep(PUBLISH_GAP)
    return count


async def _all_of(jobs: dict[str, Coroutine[Any, Any, int]], within: float) -> dict[str, int]:
    """Run the jobs together; fail naming those still running after `within` seconds."""
    tasks = [asyncio.create_task(job, name=name) for name, job in jobs.items()]
    _, pending = await asyncio.wait(tasks, timeout=within)
    for task in pending:
        task.cancel()
    assert not pending, f"still running after {within:.0f}s: {sorted(t.get_name() for t in pending)}"
    return {task.get_name(): task.result() for task in tasks}


async def test_reconnect_churn(start_node: NodeStarter, churn_seconds: float) -> None:
    seed = int(os.environ.get("CHURN_SEED") or random.SystemRandom().randrange(2**32))
    print(f"churn seed {seed} (CHURN_SEED={seed} replays it), {churn_seconds:.0f} s")
    nodes = [start_node(f"churn{n}", CHAT_SEND_RATE="1000", CHAT_SEND_BURST="1000") for n in (1, 2)]
    users = users_on(nodes, CLIENTS + 2, prefix="churn")
    members, publisher_users = users[:CLIENTS], users[CLIENTS:]
    topics = sorted(topic_name() for _ in range(2))
    clients = [ResumingClient(user, ack_every=4) for user in members]
    publishers: list[WsSession] = []
    try:
        for n, client in enumerate(clients):
            await client.connect(nodes[n % 2])
            for topic in topics:
                assert (await client.subscribe(topic))["last_seq"] == 0
        for node, user in zip(nodes, publisher_users, strict=True):
            publishers.append(await WsSession.open(node.ws_url, user.token))

        until = time.monotonic() + churn_seconds
        peers = [[u for u in members if u is not c.user] for c in clients]
        jobs: dict[str, Coroutine[Any, Any, int]] = {}
        for n, (client, others) in enumerate(zip(clients, peers, strict=True)):
            # A generator per job: its choices do not depend on how the jobs interleave.
            jobs[f"churn {client.user.username}"] = _churn(client, random.Random(f"{seed}-{n}-churn"), nodes, until)
            jobs[f"chat {client.user.username}"] = _chat(client, random.Random(f"{seed}-{n}-chat"), others, until)
        for n, publisher in enumerate(publishers):
            jobs[f"publisher {n}"] = _publish(publisher, topics, until, f"p{n}")
        outcome = await _all_of(jobs, churn_seconds + SETTLE_TIMEOUT)
        drops = [n for name, n in outcome.items() if name.startswith("churn ")]
        dms = [n for name, n in outcome.items() if name.startswith("chat ")]
        published = [n for name, n in outcome.items() if name.startswith("publisher ")]
        closed = {c.user.username: [s.ws.close_code for s in c.sockets] for c in clients if not c.is_open}
        assert not closed, f"sockets closed by the server after the last resume: {closed}"

        dm_channels = {channel for c in clients for channel, _ in c.own if channel.startswith("dm:")}
        stored = stored_messages(nodes[0], publisher_users[0].token, set(topics))
        by_id = {u.id: u for u in members}
        for channel in dm_channels:
            member = by_id[int(channel.split(":")[1])]
            stored.update(stored_messages(nodes[1], member.token, {channel}))
        assert sum(1 for channel, _ in stored if channel in topics) == sum(published)
        # A DM retried after a drop (same client_id) was stored once.
        assert sum(1 for channel, _ in stored if channel.startswith("dm:")) == sum(dms)

        mine = {
            c.user.id: set(topics) | {ch for ch in dm_channels if c.user.id in map(int, ch.split(":")[1:])}
            for c in clients
        }
        await asyncio.gather(
            *(c.wait_for({k for k in stored if k[0] in mine[c.user.id]}, SETTLE_TIMEOUT) for c in clients)
        )
        await asyncio.sleep(QUIET)
        results = [c.check(stored, mine[c.user.id]) for c in clients]
    finally:
        for client in clients:
            await client.close()
        for publisher in publishers:
            await publisher.close()

    assert_no_tracebacks(*nodes)
    resumes = sum(len(c.sockets) - 1 for c in clients)
    assert resumes == sum(drops) > 0, (resumes, drops)
    assert all(s.resumed for c in clients for s in c.sockets[1:])
    print(
        f"churn seed {seed}: {resumes} resumes, {sum(dms)} DMs, {sum(published)} topic messages, "
        f"{sum(r.messages for r in results)} delivered to clients, {sum(r.duplicates for r in results)} duplicates "
        f"({sum(r.own_echoes for r in results)} of them a client's own message as an event)"
    )
