# ruff: noqa: F811  (the suite's fixtures are imported, then requested by name)
"""Server CPU of one connect, one `received`, one stored message and one hub publish, in process (issue 7).

Drives the real ASGI application through `WebsocketCommunicator` on the
real PostgreSQL and Redis, and reads the process CPU time (all threads,
the test client's share included) around many operations. Not part of the
suite (it borrows the suite's fixtures); run it as:

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/<db> REDIS_URL=redis://127.0.0.1:6379/<n> \\
    DEBUG=0 CONN_MAX_AGE=60 SECRET_KEY=x ENV_FILE=/nonexistent CHAT_AUTH_RATE=100000/minute \\
    .venv/bin/python -m pytest benchmarks/micro_cpu.py -q -s -p no:cacheprovider --no-cov
"""

from __future__ import annotations

import time

import pytest
from asgiref.sync import sync_to_async

from messaging import services
from messaging.channels import topic_channel
from tests.conftest import auser, chat_settings, fast_passwords, make_user, token_for, ws_session  # noqa: F401

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("fast_passwords")]

CONNECTS = 600
ACKS = 400
READERS = 200
ROUNDS = 5


async def test_cpu_per_connect(auser):
    """Connect (welcome read) and disconnect, cycling over 50 users."""
    tokens = [token_for(await auser()) for _ in range(50)]
    async with ws_session(token=tokens[0]):
        pass
    cpu, wall = time.process_time(), time.perf_counter()
    for i in range(CONNECTS):
        async with ws_session(token=tokens[i % len(tokens)]):
            pass
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    print(f"\nCPU per connect+disconnect: {cpu / CONNECTS * 1000:.2f} ms; wall {wall / CONNECTS * 1000:.2f} ms")


@pytest.mark.parametrize("interval", [0, 1.0])
async def test_cpu_per_received(auser, chat_settings, interval):
    """One session acknowledging a DM as fast as it can (the cursor moves 20 times)."""
    chat_settings(ACK_INTERVAL=interval)
    ann, bob = await auser(), await auser()
    for i in range(20):
        await sync_to_async(services.direct_send)(sender=ann, to=bob.pk, body=f"m{i}")
    lo, hi = sorted((ann.pk, bob.pk))
    dm = f"dm:{lo}:{hi}"
    async with ws_session(ann), ws_session(bob) as b:
        cpu = time.process_time()
        for i in range(ACKS):
            await b.request({"type": "received", "channel": dm, "seq": 1 + i * 19 // ACKS})
        cpu = time.process_time() - cpu
    print(f"\nACK_INTERVAL={interval}: CPU per received {cpu / ACKS * 1000:.3f} ms")


async def test_cpu_per_received_of_many_sessions(auser, chat_settings):
    """READERS sessions of a topic each send `received` at once, ROUNDS times
    (every one moves its cursor and sends a receipt to the author): the fan-out
    with acks, where a process's sessions ack together."""
    import asyncio
    import contextlib

    chat_settings(ACK_INTERVAL=0)
    ann = await auser()
    readers = [await auser() for _ in range(READERS)]
    for i in range(ROUNDS + 1):
        await sync_to_async(services.message_send)(sender=ann, name=topic_channel("hall"), body=f"m{i}")
    async with contextlib.AsyncExitStack() as stack:
        author = await stack.enter_async_context(ws_session(ann))
        sessions = [await stack.enter_async_context(ws_session(r)) for r in readers]
        for s in sessions:  # the first ack of each session (creates its cursor row) is not counted
            await s.request({"type": "received", "channel": "topic:hall", "seq": 1})
        for _ in sessions:  # their receipts
            assert (await author.recv(30))["type"] == "receipt"
        cpu, wall = time.process_time(), time.perf_counter()
        for seq in range(2, ROUNDS + 2):
            for s in sessions:
                await s.send({"type": "received", "channel": "topic:hall", "seq": seq, "ref": f"r{seq}"})
            answers = await asyncio.gather(*(s.recv(30) for s in sessions))
            assert all(a["type"] == "ok" and a["delivered_seq"] == seq for a in answers), answers[0]
            receipts = [await author.recv(30) for _ in sessions]
            assert all(r["type"] == "receipt" for r in receipts)
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    acks = READERS * ROUNDS
    print(f"\n{READERS} sessions x {ROUNDS} rounds: CPU per received {cpu / acks * 1000:.3f} ms; wall {wall:.2f} s")


STORE_SENDERS = 200
STORE_ROUNDS = 5


@pytest.mark.parametrize("batch", [1, 20, 200])
async def test_cpu_per_stored_message(make_user, batch):
    """`direct` sends of 200 senders to one user through `messages_send`, `batch`
    at a time, each batch in one `database_sync_to_async` call as the session
    actors make it (batch 1: a thread hop and a transaction per message, as
    before the batching). Process CPU per stored message; PostgreSQL's is apart."""
    from channels.db import database_sync_to_async

    bob = await sync_to_async(make_user)()
    senders = [await sync_to_async(make_user)() for _ in range(STORE_SENDERS)]
    send = database_sync_to_async(services.messages_send, thread_sensitive=False)
    await send([services.SendRequest(s, "warm", to=bob.pk) for s in senders])  # the dm channels exist
    requests = [
        services.SendRequest(s, f"m{n}", client_id=f"c{n}-{i}", to=bob.pk)
        for n in range(STORE_ROUNDS)
        for i, s in enumerate(senders)
    ]
    cpu, wall = time.process_time(), time.perf_counter()
    for start in range(0, len(requests), batch):
        outcomes = await send(requests[start : start + batch])
        assert all(not isinstance(o, Exception) for o in outcomes)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    count = len(requests)
    print(f"\nbatch {batch}: CPU per stored message {cpu / count * 1000:.3f} ms; wall {wall / count * 1000:.3f} ms")


async def test_cpu_per_direct_send(make_user):
    """`services.direct_send` one at a time, each in its own thread-pool call
    (the same call before and after the batching: comparable across commits)."""
    from channels.db import database_sync_to_async

    bob = await sync_to_async(make_user)()
    senders = [await sync_to_async(make_user)() for _ in range(STORE_SENDERS)]
    send = database_sync_to_async(services.direct_send, thread_sensitive=False)
    for s in senders:
        await send(sender=s, to=bob.pk, body="warm")
    cpu, wall = time.process_time(), time.perf_counter()
    for n in range(STORE_ROUNDS):
        for i, s in enumerate(senders):
            await send(sender=s, to=bob.pk, body=f"m{n}", client_id=f"c{n}-{i}")
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    count = STORE_SENDERS * STORE_ROUNDS
    print(f"\ndirect_send: CPU per stored message {cpu / count * 1000:.3f} ms; wall {wall / count * 1000:.3f} ms")


PUBLISHES = 2000


@pytest.mark.parametrize("together", [1, 100])
async def test_cpu_per_fanout_publish(together):
    """Hub publishes to Redis, `together` made in one turn (one pipeline) or one at a time."""
    import asyncio

    from messaging.fanout import FanoutHub

    hub = FanoutHub()
    hub.start()
    try:
        event = {"type": "chat.message", "channel": "dm:1:2", "seq": 1, "text": "x" * 200}
        await hub.publish("nobody", event)
        cpu = time.process_time()
        for _ in range(PUBLISHES // together):
            await asyncio.gather(*(hub.publish("nobody", event) for _ in range(together)))
        cpu = time.process_time() - cpu
    finally:
        await hub.stop()
    print(f"\n{together} per turn: CPU per publish {cpu / PUBLISHES * 1000:.3f} ms")


HANDOVERS = 300


def test_cpu_per_notification_handover(settings):
    """One `task_schedule(messages_notify, ids)`: what each stored batch (before
    the batching: each stored message) costs on the send path. The runner is
    what the server uses with `REDIS_URL` (a Celery publish to the broker)."""
    from kombu import Connection

    from notifications import tasks as ntasks
    from notifications.runner import task_schedule

    settings.NOTIFICATIONS = {**settings.NOTIFICATIONS, "RUNNER": "celery", "QUEUE": "micro-cpu-handover"}
    task_schedule(ntasks.messages_notify, [0])  # the broker connection is made
    cpu = time.process_time()
    for i in range(HANDOVERS):
        task_schedule(ntasks.messages_notify, [i])
    cpu = time.process_time() - cpu
    with Connection(settings.CELERY_BROKER_URL) as broker:  # nobody consumes the queue: drop it
        broker.default_channel.queue_purge("micro-cpu-handover")
    print(f"\nCPU per notification hand-over (Celery publish): {cpu / HANDOVERS * 1000:.3f} ms")
