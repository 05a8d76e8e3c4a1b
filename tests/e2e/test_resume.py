"""Sessions outlive sockets: resume after a drop, after the window, after 4409, across a SIGTERM.

Real server processes on loopback with the real PostgreSQL and Redis. The
clients know only the wire protocol: they resume with `&session=`,
acknowledge with `received` and drop duplicates by (channel, seq).
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from .client import WS_TIMEOUT, SessionPool, WsSession, ok_of
from .conftest import NodeStarter
from .flows import QUIET, dm_name, topic_name
from .resuming import ResumingClient, assert_no_tracebacks, stored_messages, users_on
from .servers import Server

pytestmark = pytest.mark.e2e

FAST = {"CHAT_SEND_RATE": "1000", "CHAT_SEND_BURST": "1000"}
STREAM = 150  # messages in the mid-stream drop tests
STREAM_GAP = 0.01  # seconds between two publishes
DELIVERY_TIMEOUT = 30.0


@pytest.fixture(scope="module")
def fast_nodes(start_node: NodeStarter) -> list[Server]:
    """Two nodes that let one publisher send a steady stream."""
    return [start_node(f"fast{n}", **FAST) for n in (1, 2)]


async def publish_stream(session: WsSession, channel: str, count: int, *, gap: float, size: int = 0) -> list[int]:
    """Publish `count` messages one after another, `gap` seconds apart; their seqs."""
    seqs = []
    for i in range(count):
        body = f"m{i}-" + "x" * size
        ok = await ok_of(session, {"type": "publish", "channel": channel, "body": body, "client_id": f"s-{i}"})
        seqs.append(ok["message"]["seq"])
        await asyncio.sleep(gap)
    return seqs


def rss_kib(server: Server) -> int:
    """The server process's resident set (uvicorn with one worker serves in this process)."""
    for line in Path(f"/proc/{server.proc.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


# --- 1. drop mid-stream and resume -----------------------------------------------


@pytest.mark.parametrize("where", ["same", "other"])
@pytest.mark.parametrize("how", ["abort", "close"])
async def test_drop_mid_stream_and_resume(fast_nodes: list[Server], how: str, where: str) -> None:
    node1, node2 = fast_nodes
    reader_user, pub_user = node1.api.new_users(2, "stream")
    topic = topic_name()
    reader = ResumingClient(reader_user, ack_every=5)
    async with SessionPool() as pool:
        try:
            first = await reader.connect(node1)
            assert first.welcome["resumed"] is False and first.welcome["channels"] == [], first.welcome
            assert (await reader.subscribe(topic))["last_seq"] == 0
            publisher = await pool.open(node2.ws_url, pub_user)
            stream = asyncio.create_task(publish_stream(publisher, topic, STREAM, gap=STREAM_GAP))

            # Drop a third of the way in, with acknowledged and unacknowledged messages seen.
            await first.wait_until(lambda: len(first.messages(topic)) >= STREAM // 3 and reader.acked, 20)
            code = await reader.drop(how)
            assert code == (1006 if how == "abort" else 1000), code
            floor = reader.acked[topic]
            seen_before = [m["seq"] for m in first.messages(topic)]
            assert seen_before == list(range(1, len(seen_before) + 1)), "the first socket missed or reordered"
            assert 5 <= floor <= seen_before[-1], (floor, seen_before[-1])

            await asyncio.sleep(0.3)  # messages stored while nobody holds the session
            second = await reader.resume(node1 if where == "same" else node2)
            assert await asyncio.wait_for(stream, DELIVERY_TIMEOUT) == list(range(1, STREAM + 1))
            await reader.wait_for({(topic, s) for s in range(1, STREAM + 1)}, DELIVERY_TIMEOUT)
            await asyncio.sleep(QUIET)
        finally:
            await reader.close()

    stored = stored_messages(node2, pub_user.token, {topic})
    result = reader.check(stored, {topic})
    assert result.messages == STREAM and result.sockets == 2
    after = [m["seq"] for m in second.messages(topic)]
    # The resumed socket starts right after the acknowledged point and misses nothing after it:
    # the seen but unacknowledged messages come exactly once more, nothing acknowledged does.
    assert after == list(range(floor + 1, STREAM + 1)), (floor, after[:10])
    assert result.duplicates == len(seen_before) - floor
    assert_no_tracebacks(node1, node2)


# --- unacknowledged backlog stays unacknowledged -------------------------------------


async def test_unacknowledged_backlog_is_sent_again_on_every_resume(fast_nodes: list[Server]) -> None:
    """DMs that came while the session was away are sent on resume; as long as the client
    does not acknowledge them, every later resume sends them again, even after newer
    live messages of the same channel (protocol sections 1 and 6)."""
    node1, node2 = fast_nodes
    ann, bob = node1.api.new_users(2, "unacked")
    channel = dm_name(ann, bob)
    async with SessionPool() as pool:
        first = await pool.open(node1.ws_url, ann)
        sid = first.welcome["session"]
        await first.close()
        sender = await pool.open(node2.ws_url, bob)
        away = [(await ok_of(sender, {"type": "direct", "to": ann.id, "body": f"away {i}"}))["message"] for i in (1, 2)]

        second = await WsSession.open(node1.ws_url, ann.token, session=sid)
        pool.sessions.append(second)
        assert second.welcome["resumed"] is True, second.welcome
        assert await second.expect_messages(channel, 2) == away
        live = (await ok_of(sender, {"type": "direct", "to": ann.id, "body": "live"}))["message"]
        assert (await second.expect_messages(channel, 3))[2] == live
        await second.close()  # nothing acknowledged

        third = await WsSession.open(node2.ws_url, ann.token, session=sid)
        pool.sessions.append(third)
        assert third.welcome["resumed"] is True, third.welcome
        await third.expect_messages(channel, 1)
        await asyncio.sleep(QUIET)
        assert [m["seq"] for m in third.messages(channel)] == [1, 2, 3], "unacknowledged messages were not sent again"


# --- 2. resume after the window -----------------------------------------------------


async def test_resume_after_the_window_starts_a_new_session(start_node: NodeStarter) -> None:
    node = start_node("window", CHAT_RESUME_WINDOW="2")
    user, pub_user, other = node.api.new_users(3, "window")
    topic = topic_name()
    async with SessionPool() as pool:
        first = await pool.open(node.ws_url, user)
        assert first.welcome["resume_window"] == 2, first.welcome
        sid = first.welcome["session"]
        await ok_of(first, {"type": "subscribe", "channel": topic})
        await first.close()

        # Another user's id is no key to it: a fresh session, and the owner's stays resumable.
        foreign = await WsSession.open(node.ws_url, other.token, session=sid)
        pool.sessions.append(foreign)
        assert foreign.welcome["resumed"] is False and foreign.welcome["session"] != sid, foreign.welcome
        assert foreign.welcome["channels"] == [], foreign.welcome

        # Inside the window (a control): the session comes back.
        await asyncio.sleep(0.5)
        second = await WsSession.open(node.ws_url, user.token, session=sid)
        pool.sessions.append(second)
        assert second.welcome["resumed"] is True and second.welcome["session"] == sid, second.welcome
        assert second.welcome["channels"] == [topic], second.welcome

        # The window counts from the latest disconnect, here an abrupt one.
        second.ws.transport.abort()
        await second.wait_closed()
        await asyncio.sleep(3.5)
        third = await WsSession.open(node.ws_url, user.token, session=sid)
        pool.sessions.append(third)
        welcome = third.welcome
        assert welcome["resumed"] is False and welcome["channels"] == [], welcome
        assert welcome["session"] != sid and welcome["session"].startswith("s_"), welcome

        # The expired session's subscription is not carried over: the topic stays silent.
        publisher = await pool.open(node.ws_url, pub_user)
        await ok_of(publisher, {"type": "publish", "channel": topic, "body": "anyone?"})
        await asyncio.sleep(QUIET)
        assert third.messages() == [], third.messages()
        # And the new session resumes as itself.
        await third.close()
        fourth = await WsSession.open(node.ws_url, user.token, session=welcome["session"])
        pool.sessions.append(fourth)
        assert fourth.welcome["resumed"] is True and fourth.welcome["session"] == welcome["session"]


# --- resuming a session whose old socket still looks open ----------------------------


async def test_resume_while_the_old_socket_is_open_takes_it_over(fast_nodes: list[Server]) -> None:
    """A client that gave up on a half-open socket resumes elsewhere: the old socket is
    closed by the server (with a close frame), and only the new one gets what follows."""
    node1, node2 = fast_nodes
    user, pub_user = node1.api.new_users(2, "takeover")
    topic = topic_name()
    async with SessionPool() as pool:
        old = await pool.open(node1.ws_url, user)
        await ok_of(old, {"type": "subscribe", "channel": topic})
        sid = old.welcome["session"]
        new = await WsSession.open(node2.ws_url, user.token, session=sid)
        pool.sessions.append(new)
        assert new.welcome["resumed"] is True and new.welcome["channels"] == [topic], new.welcome
        code = await old.wait_closed()
        assert code not in (None, 1006), f"the old socket was not closed with a close frame: {code}"

        publisher = await pool.open(node1.ws_url, pub_user)
        posted = (await ok_of(publisher, {"type": "publish", "channel": topic, "body": "after"}))["message"]
        [got] = await new.expect_messages(topic, 1)
        assert got == posted
        assert old.messages(topic) == []
    print(f"the taken-over socket was closed with {code}")


# --- 3. a slow reader is closed with 4409 and resumes -------------------------------

SLOW_TOTAL = 600
SLOW_ACKED = 10
SLOW_BODY = 12 * 1024


async def _recv_json(ws: ClientConnection, within: float = WS_TIMEOUT) -> dict[str, Any]:
    frame: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), within))
    return frame


async def _answer(ws: ClientConnection, frame: dict[str, Any], ref: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Send a frame with `ref`; its answer and the frames that came before it."""
    await ws.send(json.dumps({**frame, "ref": ref}))
    before = []
    while (got := await _recv_json(ws)).get("ref") != ref:
        before.append(got)
    return got, before


async def _drain(ws: ClientConnection, within: float) -> list[dict[str, Any]]:
    """Read until the server closes; every frame read on the way."""
    frames: list[dict[str, Any]] = []
    deadline = time.monotonic() + within
    with pytest.raises(ConnectionClosed):
        while True:
            frames.append(await _recv_json(ws, max(0.1, deadline - time.monotonic())))
    return frames


async def test_slow_reader_is_closed_4409_and_resumes_without_loss(start_node: NodeStarter) -> None:
    node = start_node("slowbuf", CHAT_OUTBOUND_BUFFER="20", **FAST)
    slow_user, fast_user, pub_user = node.api.new_users(3, "slow")
    topic = topic_name()
    rss_start = rss_kib(node)
    async with SessionPool() as pool:
        # max_queue=1: the client stops reading the socket as soon as one frame waits.
        slow = await connect(
            f"{node.ws_url}?token={slow_user.token}", ping_interval=None, max_queue=1, open_timeout=WS_TIMEOUT
        )
        try:
            welcome = await _recv_json(slow)
            assert welcome["type"] == "welcome", welcome
            sid = welcome["session"]
            subscribed, _ = await _answer(slow, {"type": "subscribe", "channel": topic}, "sub")
            assert subscribed["type"] == "ok" and subscribed["last_seq"] == 0, subscribed

            fast = await pool.open(node.ws_url, fast_user)
            await ok_of(fast, {"type": "subscribe", "channel": topic})
            publisher = await pool.open(node.ws_url, pub_user)

            # The slow client reads and acknowledges the first few, then stops reading.
            await publish_stream(publisher, topic, SLOW_ACKED, gap=0)
            first = [await _recv_json(slow) for _ in range(SLOW_ACKED)]
            assert [m["seq"] for m in first] == list(range(1, SLOW_ACKED + 1)), first
            acked, _ = await _answer(slow, {"type": "received", "channel": topic, "seq": SLOW_ACKED}, "ack")
            assert acked["type"] == "ok" and acked["seq"] == SLOW_ACKED, acked

            # The rest, pipelined: the fast subscriber gets them all.
            answers = []
            for i in range(SLOW_ACKED, SLOW_TOTAL):
                ref, answer = publisher.submit()
                body = f"big{i}-" + "y" * SLOW_BODY
                await publisher.send({"type": "publish", "channel": topic, "body": body, "ref": ref})
                answers.append(answer)
            oks = [await asyncio.wait_for(a, DELIVERY_TIMEOUT) for a in answers]
            assert all(ok["type"] == "ok" for ok in oks), [ok for ok in oks if ok["type"] != "ok"][:3]
            got = await fast.expect_messages(topic, SLOW_TOTAL, within=DELIVERY_TIMEOUT)
            assert [m["seq"] for m in got] == list(range(1, SLOW_TOTAL + 1))
            rss_peak = rss_kib(node)

            # Now the slow client reads: what was on its way, then the close frame.
            buffered = await _drain(slow, DELIVERY_TIMEOUT)
        finally:
            await slow.close()
        assert slow.close_code == 4409, (slow.close_code, slow.close_reason)
        seqs = [m["seq"] for m in buffered if m["type"] == "message"]
        assert seqs == list(range(SLOW_ACKED + 1, SLOW_ACKED + 1 + len(seqs))), seqs[:5]
        assert len(seqs) < SLOW_TOTAL - SLOW_ACKED, "closed 4409 although everything reached the client"

        # It resumes and gets every message it had not acknowledged, and nothing it had.
        resumed = await WsSession.open(node.ws_url, slow_user.token, session=sid)
        pool.sessions.append(resumed)
        assert resumed.welcome["resumed"] is True and resumed.welcome["session"] == sid, resumed.welcome
        assert resumed.welcome["channels"] == [topic], resumed.welcome
        backlog = await resumed.expect_messages(topic, SLOW_TOTAL - SLOW_ACKED, within=DELIVERY_TIMEOUT)
        await asyncio.sleep(QUIET)
        assert [m["seq"] for m in resumed.messages(topic)] == list(range(SLOW_ACKED + 1, SLOW_TOTAL + 1))
        stored = stored_messages(node, pub_user.token, {topic})
        assert all(m == stored[(topic, m["seq"])] for m in first + buffered + backlog if m["type"] == "message")
        seen = {m["seq"] for m in first + buffered + backlog if m["type"] == "message"}
        assert seen == set(range(1, SLOW_TOTAL + 1))
    rss_end = rss_kib(node)
    assert_no_tracebacks(node)
    # Recorded, not asserted: the outbox bounds what a slow client costs.
    print(f"server VmRSS KiB: start {rss_start}, peak {rss_peak}, end {rss_end}")
    print(f"the slow client read {len(seqs)} messages before 4409")


# --- 4. SIGTERM (and SIGKILL) of one node during traffic ------------------------------

TERM_READERS_PER_NODE = 3
TERM_PUBLISHERS = 2
TERM_EACH = 150
TERM_GAP = 0.02
TERM_AFTER = 1.0  # seconds of traffic before the SIGTERM
TERM_EXIT_WITHIN = 15.0


async def _follow(client: ResumingClient, nodes: list[Server], stop: asyncio.Event) -> None:
    """On any close (1012 included) resume on the other node, or any node still running."""
    while not stop.is_set():
        ws = client.current
        closed = asyncio.create_task(ws.wait_closed(within=3600))
        stopping = asyncio.create_task(stop.wait())
        await asyncio.wait({closed, stopping}, return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        if stop.is_set():
            closed.cancel()
            return
        await client.acker_done()
        here = client.sockets[-1].server
        live = [n for n in nodes if n is not here and n.proc.poll() is None] or [here]
        deadline = time.monotonic() + 10
        while True:
            try:
                await client.resume(live[0])
                break
            except (OSError, TimeoutError):
                assert time.monotonic() < deadline, "could not reconnect within 10 s"
                await asyncio.sleep(0.2)


@pytest.mark.parametrize(
    ("sig", "close_code"),
    [(signal.SIGTERM, 1012), (signal.SIGKILL, 1006)],
    ids=["sigterm", "sigkill"],
)
async def test_node_stopped_during_traffic(start_node: NodeStarter, sig: signal.Signals, close_code: int) -> None:
    """SIGTERM: uvicorn closes every socket with 1012 and exits; SIGKILL (a crash): the
    sockets just break. Either way the node's clients resume on the other node."""
    node1, node2 = start_node(f"{sig.name}-1", **FAST), start_node(f"{sig.name}-2", **FAST)
    nodes = [node1, node2]
    users = users_on(nodes, 2 * TERM_READERS_PER_NODE + TERM_PUBLISHERS, prefix="term")
    topic = topic_name()
    readers = [ResumingClient(u, ack_every=7) for u in users[: 2 * TERM_READERS_PER_NODE]]
    stop = asyncio.Event()
    async with SessionPool() as pool:
        try:
            for n, reader in enumerate(readers):
                await reader.connect(nodes[n % 2])
                await reader.subscribe(topic)
            followers = [asyncio.create_task(_follow(r, nodes, stop)) for r in readers]
            publishers = [await pool.open(node2.ws_url, u) for u in users[len(readers) :]]
            streams = [
                asyncio.create_task(_publish_tagged(p, topic, TERM_EACH, tag=f"p{n}")) for n, p in enumerate(publishers)
            ]
            await asyncio.sleep(TERM_AFTER)
            assert not any(s.done() for s in streams), f"the traffic ended before the {sig.name}"

            started = time.monotonic()
            node1.proc.send_signal(sig)
            exit_code = await asyncio.to_thread(_wait_exit, node1, TERM_EXIT_WITHIN)
            took = time.monotonic() - started
            assert exit_code is not None, f"node 1 still running {TERM_EXIT_WITHIN}s after {sig.name}"

            await asyncio.wait_for(asyncio.gather(*streams), DELIVERY_TIMEOUT)
            total = TERM_PUBLISHERS * TERM_EACH
            expected = {(topic, s) for s in range(1, total + 1)}
            delivered = asyncio.gather(*(r.wait_for(expected, DELIVERY_TIMEOUT) for r in readers))
            await asyncio.wait([delivered, *followers], return_when=asyncio.FIRST_COMPLETED)
            for follower in followers:
                if follower.done():
                    follower.result()  # a failed resume, reported as itself
            await delivered
            await asyncio.sleep(QUIET)
            stop.set()
            await asyncio.wait_for(asyncio.gather(*followers), 10)
        finally:
            stop.set()
            for reader in readers:
                await reader.close()

    stored = stored_messages(node2, users[0].token, {topic})
    assert len(stored) == total
    for n, reader in enumerate(readers):
        reader.check(stored, {topic})
        first = reader.sockets[0]
        if first.server is node1:
            assert first.ws.messages(topic), f"the traffic had not reached node 1's readers before the {sig.name}"
            assert first.ws.close_code == close_code, (reader.user.username, first.ws.close_code)
            assert len(reader.sockets) == 2 and reader.sockets[1].server is node2, reader.sockets
            assert reader.sockets[1].resumed
        else:
            assert len(reader.sockets) == 1, f"reader {n} on node 2 was dropped: {reader.sockets}"
    assert_no_tracebacks(node1, node2)
    print(f"node 1 exited with {exit_code} {took:.1f}s after {sig.name}")


async def _publish_tagged(session: WsSession, channel: str, count: int, *, tag: str) -> None:
    for i in range(count):
        frame = {"type": "publish", "channel": channel, "body": f"{tag}-{i}", "client_id": f"{tag}-{i}"}
        await ok_of(session, frame)
        await asyncio.sleep(TERM_GAP)


def _wait_exit(server: Server, within: float) -> int | None:
    try:
        return server.proc.wait(timeout=within)
    except subprocess.TimeoutExpired:
        return None
