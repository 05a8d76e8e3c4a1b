"""Sends of many sessions of one process share one store call (realtime.consumers.sends_store)."""

from __future__ import annotations

import contextlib

import pytest
from asgiref.sync import sync_to_async

from messaging.models import Message
from realtime.consumers import sends_store
from tests.conftest import ws_session

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("fast_passwords")]

SENDERS = 12


async def test_frames_read_together_are_stored_in_one_batch_each_answered(auser):
    bob = await auser()
    senders = [await auser() for _ in range(SENDERS)]
    async with contextlib.AsyncExitStack() as stack:
        sessions = [await stack.enter_async_context(ws_session(user)) for user in senders]
        receiver = await stack.enter_async_context(ws_session(bob))
        batches = sends_store.for_loop().batches
        # One bad frame among them: its sender alone hears not_found.
        for i, session in enumerate(sessions):
            to = "nobody-here" if i == 3 else bob.pk
            await session.send({"type": "direct", "to": to, "body": f"m{i}", "ref": f"r{i}", "client_id": f"c{i}"})
        answers = [await session.recv() for session in sessions]
        # The first frame read may start a call alone (as under no load); the
        # others arrive while it runs and share the next one.
        assert sends_store.for_loop().batches - batches <= 2
        for i, answer in enumerate(answers):
            assert answer["ref"] == f"r{i}"
            if i == 3:
                assert answer["type"] == "error" and answer["code"] == "not_found", answer
            else:
                assert answer["type"] == "ok", answer
                assert (answer["message"]["body"], answer["message"]["seq"]) == (f"m{i}", 1)
        got = sorted([(await receiver.recv())["body"] for _ in range(SENDERS - 1)])
        assert got == sorted(f"m{i}" for i in range(SENDERS) if i != 3)
        # A retry of one of them in the next batch answers with the stored message.
        again = await sessions[0].request({"type": "direct", "to": bob.pk, "body": "m0", "client_id": "c0"})
        assert again["type"] == "ok" and again["message"]["id"] == answers[0]["message"]["id"]
        assert await receiver.nothing()
    assert await sync_to_async(Message.objects.count)() == SENDERS - 1


async def test_publish_and_broadcast_go_through_the_batch(auser):
    staff = await auser(is_staff=True)
    async with ws_session(staff) as s:
        batches = sends_store.for_loop().batches
        ok = await s.request({"type": "broadcast", "body": "to all"})
        assert ok["type"] == "ok" and ok["message"]["channel"] == "broadcast"
        err = await s.request({"type": "publish", "channel": f"system:{staff.pk}", "body": "no"})
        assert err["type"] == "error" and err["code"] == "forbidden"
        assert sends_store.for_loop().batches == batches + 2
