"""The session actor's cursors, receipts, `sync`, and edit/delete (Redis channel layer)."""

from __future__ import annotations

import contextlib
from datetime import timedelta
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.utils import timezone

from messaging import services
from messaging.channels import topic_channel
from messaging.models import ChannelCursor, Message, MessageRevision
from tests.conftest import ws_session

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("fast_passwords")]


def dm_name(a: Any, b: Any) -> str:
    lo, hi = sorted((a.pk, b.pk))
    return f"dm:{lo}:{hi}"


def ref_of(user: Any) -> dict[str, Any]:
    return {"id": user.pk, "username": user.username}


@sync_to_async
def store_dm(sender: Any, to: Any, *bodies: str) -> list[Message]:
    """Stored as a send would, without any live event."""
    return [services.direct_send(sender=sender, to=to.pk, body=b)[0] for b in bodies]


@sync_to_async
def store_topic(sender: Any, topic: str, *bodies: str) -> list[Message]:
    return [services.message_send(sender=sender, name=topic_channel(topic), body=b)[0] for b in bodies]


@sync_to_async
def cursor(user: Any, name: str) -> tuple[int, int] | None:
    row = ChannelCursor.objects.filter(user=user, channel__name=name).first()
    return None if row is None else (row.delivered_seq, row.read_seq)


@sync_to_async
def stored(message_id: int) -> Message:
    return Message.objects.get(pk=message_id)


@sync_to_async
def revisions(message_id: int) -> list[tuple[str, str, int | None]]:
    return list(MessageRevision.objects.filter(message_id=message_id).values_list("action", "body", "editor_id"))


@sync_to_async
def make_old(message_id: int, seconds: int) -> None:
    Message.objects.filter(pk=message_id).update(created_at=timezone.now() - timedelta(seconds=seconds))


async def ok_of(session: Any, frame: dict[str, Any]) -> dict[str, Any]:
    answer = await session.request(frame)
    assert answer["type"] == "ok", answer
    return answer


async def error_of(session: Any, frame: dict[str, Any]) -> str:
    answer = await session.request(frame)
    assert answer["type"] == "error", answer
    assert answer["message"]
    return answer["code"]


# --- receipts --------------------------------------------------------------------


async def test_dm_received_and_read_send_receipts_to_the_other_member(auser):
    ann, bob = await auser(), await auser()
    await store_dm(ann, bob, "one", "two")
    dm = dm_name(ann, bob)
    async with ws_session(ann) as a1, ws_session(ann) as a2, ws_session(bob) as b, ws_session(bob) as b2:
        ok = await ok_of(b, {"type": "received", "channel": dm, "seq": 2})
        assert {k: ok[k] for k in ("channel", "seq", "delivered_seq", "read_seq")} == {
            "channel": dm,
            "seq": 2,
            "delivered_seq": 2,
            "read_seq": 0,
        }
        delivered = {"type": "receipt", "channel": dm, "user": ref_of(bob), "delivered_seq": 2}
        assert await a1.recv() == delivered
        assert await a2.recv() == delivered

        ok = await ok_of(b, {"type": "read", "channel": dm, "seq": 1})
        assert (ok["channel"], ok["delivered_seq"], ok["read_seq"]) == (dm, 2, 1)
        read = {"type": "receipt", "channel": dm, "user": ref_of(bob), "read_seq": 1}
        assert await a1.recv() == read
        assert await a2.recv() == read
        # Not back to the reader's own sessions.
        assert b.skipped == []
        assert await b.nothing() and await b2.nothing(0.1)
    assert await cursor(bob, dm) == (2, 1)


async def test_ann_reading_bobs_messages_sends_the_receipt_to_bob(auser):
    ann, bob = await auser(), await auser()
    await store_dm(bob, ann, "hi ann")
    dm = dm_name(ann, bob)
    async with ws_session(ann) as a, ws_session(bob) as b:
        await ok_of(a, {"type": "read", "channel": dm, "seq": 1})
        assert await b.recv() == {
            "type": "receipt",
            "channel": dm,
            "user": ref_of(ann),
            "delivered_seq": 1,
            "read_seq": 1,
        }
        assert await a.nothing()


async def test_no_receipt_when_the_cursor_did_not_move(auser):
    ann, bob = await auser(), await auser()
    await store_dm(ann, bob, "one", "two")
    dm = dm_name(ann, bob)
    async with ws_session(ann) as a, ws_session(bob) as b:
        await ok_of(b, {"type": "read", "channel": dm, "seq": 2})
        assert (await a.recv())["read_seq"] == 2
        for frame in (
            {"type": "read", "channel": dm, "seq": 2},
            {"type": "read", "channel": dm, "seq": 1},
            {"type": "received", "channel": dm, "seq": 2},
            {"type": "received", "channel": dm, "seq": 0},
        ):
            ok = await ok_of(b, frame)
            assert (ok["delivered_seq"], ok["read_seq"]) == (2, 2)
        assert await a.nothing(0.5)


async def test_cursors_are_clamped_to_last_seq(auser):
    ann, bob, carol = await auser(), await auser(), await auser()
    await store_dm(ann, bob, "only one")
    dm = dm_name(ann, bob)
    async with ws_session(ann) as a, ws_session(bob) as b, ws_session(carol) as c:
        ok = await ok_of(b, {"type": "received", "channel": dm, "seq": 50})
        assert (ok["delivered_seq"], ok["read_seq"]) == (1, 0)
        assert (await a.recv())["delivered_seq"] == 1
        # A DM without any message yet: last_seq is 0, nothing moves, nobody hears.
        empty = dm_name(carol, bob)
        ok = await ok_of(b, {"type": "read", "channel": empty, "seq": 3})
        assert (ok["channel"], ok["delivered_seq"], ok["read_seq"]) == (empty, 0, 0)
        assert await c.nothing() and await a.nothing(0.1)
    assert await cursor(bob, dm) == (1, 0)


async def test_topic_receipt_goes_to_the_author_of_a_covered_message_only(auser):
    ann, bob, carol = await auser(), await auser(), await auser()
    await store_topic(ann, "room", "by ann")
    async with ws_session(ann) as a, ws_session(bob) as b, ws_session(carol) as c:
        for session in (a, b, c):
            await ok_of(session, {"type": "subscribe", "channel": "topic:room"})
        ok = await ok_of(b, {"type": "read", "channel": "topic:room", "seq": 1})
        assert (ok["delivered_seq"], ok["read_seq"]) == (1, 1)
        assert await a.recv() == {
            "type": "receipt",
            "channel": "topic:room",
            "user": ref_of(bob),
            "delivered_seq": 1,
            "read_seq": 1,
        }
        # carol subscribes but wrote nothing the move covers; bob is the reader.
        assert await c.nothing() and await b.nothing(0.1)

        # carol's own move covers ann's message for carol: ann hears, bob does not.
        await ok_of(c, {"type": "received", "channel": "topic:room", "seq": 1})
        receipt = await a.recv()
        assert (receipt["user"], receipt["delivered_seq"]) == (ref_of(carol), 1)
        assert await b.nothing()

        # Reading only one's own message tells nobody.
        await store_topic(bob, "room", "by bob")
        await ok_of(b, {"type": "read", "channel": "topic:room", "seq": 2})
        assert await a.nothing() and await c.nothing(0.1) and await b.nothing(0.1)


# --- received / read / sync answers and errors -------------------------------------------


async def test_cursor_frames_on_channels_one_may_not_read(auser):
    ann, bob, carol = await auser(), await auser(), await auser()
    await store_dm(ann, bob, "private")
    await sync_to_async(services.topic_create)(user=ann, name="club", private=True)
    async with ws_session(carol) as c, ws_session(ann) as a:
        for kind in ("received", "read"):
            assert await error_of(c, {"type": kind, "channel": dm_name(ann, bob), "seq": 1}) == "forbidden"
            assert await error_of(c, {"type": kind, "channel": "topic:club", "seq": 0}) == "forbidden"
            assert await error_of(c, {"type": kind, "channel": "topic:missing", "seq": 1}) == "not_found"
            assert await error_of(c, {"type": kind, "channel": f"system:{ann.pk}", "seq": 1}) == "forbidden"
        assert await a.nothing()
    assert await cursor(carol, dm_name(ann, bob)) is None


async def test_bad_cursor_frames_are_bad_request(auser):
    ann, bob = await auser(), await auser()
    await store_dm(ann, bob, "x")
    dm = dm_name(ann, bob)
    bad = [
        {"channel": dm, "seq": -1},
        {"channel": dm, "seq": "3"},
        {"channel": dm, "seq": 1.5},
        {"channel": dm, "seq": None},
        {"channel": dm},
        {"seq": 1},
        {"channel": "topic:Bad Name", "seq": 1},
        {"channel": f"dm:{max(ann.pk, bob.pk)}:{min(ann.pk, bob.pk)}", "seq": 1},
    ]
    async with ws_session(bob) as b, ws_session(ann) as a:
        for kind in ("received", "read"):
            for frame in bad:
                assert await error_of(b, {"type": kind, **frame}) == "bad_request", (kind, frame)
        assert await a.nothing()
    assert await cursor(bob, dm) is None


async def test_sync_lists_channels_with_cursors_and_unread(auser):
    ann, bob, carol = await auser(), await auser(), await auser()
    await store_dm(ann, bob, "one", "two", "three")
    await store_dm(carol, ann, "not bob's")
    await store_topic(ann, "news", "n1", "n2")
    await store_topic(ann, "elsewhere", "e1")
    async with ws_session(bob) as b:
        empty_topic = await ok_of(b, {"type": "subscribe", "channel": "topic:news"})
        assert empty_topic["last_seq"] == 2
        await ok_of(b, {"type": "read", "channel": dm_name(ann, bob), "seq": 1})
        await ok_of(b, {"type": "received", "channel": "topic:news", "seq": 2})
        ok = await ok_of(b, {"type": "sync"})
    assert ok["channels"] == [
        {"channel": dm_name(ann, bob), "last_seq": 3, "delivered_seq": 1, "read_seq": 1, "unread": 2},
        {"channel": "topic:news", "last_seq": 2, "delivered_seq": 2, "read_seq": 0, "unread": 2},
    ]


async def test_cursors_are_shared_by_the_users_sessions(auser):
    ann, bob = await auser(), await auser()
    await store_dm(ann, bob, "1", "2", "3")
    dm = dm_name(ann, bob)
    async with ws_session(bob) as phone, ws_session(bob) as laptop:
        await ok_of(phone, {"type": "read", "channel": dm, "seq": 3})
        ok = await ok_of(laptop, {"type": "read", "channel": dm, "seq": 1})
        assert (ok["delivered_seq"], ok["read_seq"]) == (3, 3)
        [entry] = (await ok_of(laptop, {"type": "sync"}))["channels"]
        assert (entry["read_seq"], entry["unread"]) == (3, 0)


async def test_sessions_acking_at_once_share_a_batch_with_their_own_answers_and_receipts(auser):
    """Every session's `received` / `read` sent before any is answered: fewer
    batches than requests, each session its own answer (an error only to the
    one that may not), ann one receipt per reader of her topic messages, carol
    the receipt of her DM."""
    from realtime.consumers import cursor_batch

    ann, carol, eve = await auser(), await auser(), await auser()
    readers = [await auser() for _ in range(5)]
    await store_topic(ann, "hall", "h1", "h2")
    await store_dm(carol, readers[0], "psst")
    await store_dm(ann, carol, "not for eve")
    dm = dm_name(carol, readers[0])
    async with contextlib.AsyncExitStack() as stack:
        a = await stack.enter_async_context(ws_session(ann))
        c = await stack.enter_async_context(ws_session(carol))
        e = await stack.enter_async_context(ws_session(eve))
        sessions = [await stack.enter_async_context(ws_session(r)) for r in readers]
        batches = cursor_batch.for_loop().batches
        for i, session in enumerate(sessions):
            kind, seq = ("received", 2) if i % 2 else ("read", 1)
            await session.send({"type": kind, "channel": "topic:hall", "seq": seq, "ref": "r"})
        await sessions[0].send({"type": "read", "channel": dm, "seq": 1, "ref": "dm"})
        await e.send({"type": "read", "channel": dm_name(ann, carol), "seq": 1, "ref": "no"})
        answers = [await s.recv() for s in sessions]
        assert (await e.recv())["code"] == "forbidden"
        assert cursor_batch.for_loop().batches - batches < len(sessions) + 2
        for i, answer in enumerate(answers):
            assert (answer["type"], answer["ref"]) == ("ok", "r")
            assert (answer["delivered_seq"], answer["read_seq"]) == ((2, 0) if i % 2 else (1, 1))
        assert (await sessions[0].recv())["read_seq"] == 1  # the DM's answer
        receipts = [await a.recv() for _ in readers]
        assert sorted(r["user"]["id"] for r in receipts) == sorted(r.pk for r in readers)
        assert {r["channel"] for r in receipts} == {"topic:hall"}
        assert await c.recv() == {
            "type": "receipt",
            "channel": dm,
            "user": ref_of(readers[0]),
            "delivered_seq": 1,
            "read_seq": 1,
        }
        assert await a.nothing(0.2) and await c.nothing(0.1)
    for i, reader in enumerate(readers):
        assert await cursor(reader, "topic:hall") == ((2, 0) if i % 2 else (1, 1))
    assert await cursor(eve, dm_name(ann, carol)) is None


# --- edit -----------------------------------------------------------------------------


async def test_author_edits_a_dm_and_members_get_message_edited(auser):
    ann, bob = await auser(), await auser()
    [message] = await store_dm(ann, bob, "helo")
    async with ws_session(ann) as a1, ws_session(ann) as a2, ws_session(bob) as b:
        ok = await ok_of(a1, {"type": "edit", "id": message.pk, "body": "hello"})
        edited = ok["message"]
        assert edited["type"] == "message" and edited["id"] == message.pk and edited["seq"] == 1
        assert edited["body"] == "hello" and edited["edited_at"] is not None and edited["deleted"] is False
        event = {
            "type": "message.edited",
            "id": message.pk,
            "channel": dm_name(ann, bob),
            "seq": 1,
            "body": "hello",
            "edited_at": edited["edited_at"],
        }
        assert await b.recv() == event
        assert await a2.recv() == event  # the author's other session too
        assert a1.skipped == [] and await a1.nothing()  # not again to the acting session
    assert (await stored(message.pk)).body == "hello"
    assert await revisions(message.pk) == [("edit", "helo", ann.pk)]


async def test_non_author_edit_and_delete_are_forbidden(auser):
    ann, bob = await auser(), await auser()
    [message] = await store_dm(ann, bob, "ann's words")
    async with ws_session(ann) as a, ws_session(bob) as b:
        assert await error_of(b, {"type": "edit", "id": message.pk, "body": "bob's words"}) == "forbidden"
        assert await error_of(b, {"type": "delete", "id": message.pk}) == "forbidden"
        assert await a.nothing()
    row = await stored(message.pk)
    assert row.body == "ann's words" and row.deleted_at is None
    assert await revisions(message.pk) == []


async def test_staff_edits_in_a_public_topic_and_subscribers_see_it(auser):
    ann, bob, mod = await auser(), await auser(), await auser(is_staff=True)
    [message] = await store_topic(ann, "lobby", "buy cheap stuff")
    async with ws_session(mod) as m, ws_session(ann) as a, ws_session(bob) as b:
        await ok_of(a, {"type": "subscribe", "channel": "topic:lobby"})
        ok = await ok_of(m, {"type": "edit", "id": message.pk, "body": "[removed]"})
        assert ok["message"]["body"] == "[removed]"
        assert ok["message"]["from"] == ref_of(ann)  # still ann's message
        event = await a.recv()
        assert (event["type"], event["id"], event["body"]) == ("message.edited", message.pk, "[removed]")
        assert await b.nothing()  # not subscribed to the topic
    assert await revisions(message.pk) == [("edit", "buy cheap stuff", mod.pk)]


async def test_staff_cannot_touch_another_pairs_dm(auser):
    ann, bob, mod = await auser(), await auser(), await auser(is_staff=True)
    [message] = await store_dm(ann, bob, "between us")
    async with ws_session(mod) as m, ws_session(bob) as b:
        assert await error_of(m, {"type": "edit", "id": message.pk, "body": "moderated"}) == "not_found"
        assert await error_of(m, {"type": "delete", "id": message.pk}) == "not_found"
        assert await error_of(m, {"type": "edit", "id": message.pk + 10_000, "body": "x"}) == "not_found"
        assert await b.nothing()
    row = await stored(message.pk)
    assert row.body == "between us" and row.deleted_at is None


async def test_editing_a_deleted_message_is_a_conflict(auser):
    ann, bob = await auser(), await auser()
    [message] = await store_dm(ann, bob, "gone")
    async with ws_session(ann) as a, ws_session(bob) as b:
        await ok_of(a, {"type": "delete", "id": message.pk})
        assert (await b.recv())["type"] == "message.deleted"
        assert await error_of(a, {"type": "edit", "id": message.pk, "body": "back"}) == "conflict"
        assert await b.nothing()


async def test_bad_edit_frames(auser):
    ann, bob = await auser(), await auser()
    [message] = await store_dm(ann, bob, "keep me")
    cases = [
        ({"type": "edit", "id": message.pk, "body": ""}, "bad_request"),
        ({"type": "edit", "id": message.pk, "body": "x" * (16 * 1024 + 1)}, "too_large"),
        ({"type": "edit", "id": message.pk, "body": None}, "bad_request"),
        ({"type": "edit", "id": message.pk, "body": 5}, "bad_request"),
        ({"type": "edit", "id": message.pk}, "bad_request"),
        ({"type": "edit", "id": 0, "body": "x"}, "bad_request"),
        ({"type": "edit", "id": str(message.pk), "body": "x"}, "bad_request"),
        ({"type": "delete"}, "bad_request"),
        ({"type": "delete", "id": -1}, "bad_request"),
    ]
    async with ws_session(ann) as a, ws_session(bob) as b:
        for frame, code in cases:
            assert await error_of(a, frame) == code, frame
        assert await b.nothing()
    row = await stored(message.pk)
    assert row.body == "keep me" and row.deleted_at is None
    assert await revisions(message.pk) == []


async def test_edit_window_forbids_the_author_and_allows_staff(auser, settings):
    settings.HISTORY = {**settings.HISTORY, "EDIT_WINDOW": 1}
    ann, bob, mod = await auser(), await auser(), await auser(is_staff=True)
    [message] = await store_topic(ann, "window", "said long ago")
    await make_old(message.pk, 30)
    async with ws_session(ann) as a, ws_session(mod) as m, ws_session(bob) as b:
        await ok_of(b, {"type": "subscribe", "channel": "topic:window"})
        assert await error_of(a, {"type": "edit", "id": message.pk, "body": "said just now"}) == "forbidden"
        assert await b.nothing()
        ok = await ok_of(m, {"type": "edit", "id": message.pk, "body": "moderated"})
        assert ok["message"]["body"] == "moderated"
        assert (await b.recv())["body"] == "moderated"
    assert await revisions(message.pk) == [("edit", "said long ago", mod.pk)]


# --- delete ---------------------------------------------------------------------------


async def test_delete_tells_the_other_member_and_leaves_a_tombstone(auser):
    ann, bob = await auser(), await auser()
    first, second = await store_dm(ann, bob, "keep", "regret")
    dm = dm_name(ann, bob)
    async with ws_session(ann) as a, ws_session(bob) as b:
        ok = await ok_of(a, {"type": "delete", "id": second.pk})
        assert ok["message"]["id"] == second.pk
        assert ok["message"]["deleted"] is True and ok["message"]["body"] is None
        assert await b.recv() == {"type": "message.deleted", "id": second.pk, "channel": dm, "seq": 2}
        assert await a.nothing(0.1)

        history = await ok_of(b, {"type": "history", "channel": dm})
        assert [(m["seq"], m["body"], m["deleted"]) for m in history["messages"]] == [
            (1, "keep", False),
            (2, None, True),
        ]
        assert history["messages"][1]["id"] == second.pk

        again = await ok_of(a, {"type": "delete", "id": second.pk})
        assert again["message"]["deleted"] is True
        assert await b.nothing(0.5)  # no second event
    row = await stored(second.pk)
    assert row.body == "" and row.deleted_at is not None
    assert await revisions(second.pk) == [("delete", "regret", ann.pk)]


async def test_staff_deletes_in_a_public_topic(auser):
    ann, bob, mod = await auser(), await auser(), await auser(is_staff=True)
    [message] = await store_topic(ann, "town", "spam")
    async with ws_session(mod) as m, ws_session(bob) as b:
        await ok_of(b, {"type": "subscribe", "channel": "topic:town"})
        await ok_of(m, {"type": "delete", "id": message.pk})
        assert await b.recv() == {"type": "message.deleted", "id": message.pk, "channel": "topic:town", "seq": 1}
    assert await revisions(message.pk) == [("delete", "spam", mod.pk)]


# --- coalesced `received` (CHAT["ACK_INTERVAL"]) ----------------------------------


async def test_received_within_the_interval_moves_the_cursor_once_on_close(auser, chat_settings):
    """The first `received` moves the cursor at once; later ones within the
    interval (here never ending) only move the resume point and are written
    in one move, the highest seq, when the session closes."""
    chat_settings(ACK_INTERVAL=3600)
    ann, bob = await auser(), await auser()
    await store_dm(ann, bob, "one", "two", "three", "four")
    dm = dm_name(ann, bob)
    async with ws_session(ann) as a:
        async with ws_session(bob) as b:
            ok = await ok_of(b, {"type": "received", "channel": dm, "seq": 1})
            assert (ok["seq"], ok["delivered_seq"]) == (1, 1)
            assert await a.recv() == {"type": "receipt", "channel": dm, "user": ref_of(bob), "delivered_seq": 1}
            for seq in (3, 2, 4):
                ok = await ok_of(b, {"type": "received", "channel": dm, "seq": seq})
            # The answer shows the session's view; the resume point moved.
            assert (ok["seq"], ok["delivered_seq"], ok["read_seq"]) == (4, 4, 0)
            # A seq past the channel's last_seq is not reported as delivered.
            ok = await ok_of(b, {"type": "received", "channel": dm, "seq": 9})
            assert (ok["seq"], ok["delivered_seq"]) == (9, 4)
            assert await cursor(bob, dm) == (1, 0)
        # Closing wrote the coalesced move, clamped to last_seq, and sent one receipt.
        assert await a.recv() == {"type": "receipt", "channel": dm, "user": ref_of(bob), "delivered_seq": 4}
        assert await a.nothing()
    assert await cursor(bob, dm) == (4, 0)


async def test_received_coalesced_moves_the_cursor_when_the_interval_ends(auser, chat_settings):
    """The window ends on its own timer: the receipt comes without a close."""
    chat_settings(ACK_INTERVAL=0.2)
    ann, bob = await auser(), await auser()
    await store_dm(ann, bob, "one", "two", "three")
    dm = dm_name(ann, bob)
    async with ws_session(ann) as a, ws_session(bob) as b:
        await ok_of(b, {"type": "received", "channel": dm, "seq": 1})
        assert await a.recv() == {"type": "receipt", "channel": dm, "user": ref_of(bob), "delivered_seq": 1}
        await ok_of(b, {"type": "received", "channel": dm, "seq": 2})
        await ok_of(b, {"type": "received", "channel": dm, "seq": 3})
        assert await a.recv() == {"type": "receipt", "channel": dm, "user": ref_of(bob), "delivered_seq": 3}
        assert await cursor(bob, dm) == (3, 0)
    assert await cursor(bob, dm) == (3, 0)


async def test_read_carries_a_coalesced_received_along(auser, chat_settings):
    chat_settings(ACK_INTERVAL=3600)
    ann, bob = await auser(), await auser()
    await store_dm(ann, bob, "one", "two", "three")
    dm = dm_name(ann, bob)
    async with ws_session(ann) as a:
        async with ws_session(bob) as b:
            await ok_of(b, {"type": "received", "channel": dm, "seq": 1})
            assert await a.recv() == {"type": "receipt", "channel": dm, "user": ref_of(bob), "delivered_seq": 1}
            await ok_of(b, {"type": "received", "channel": dm, "seq": 3})
            ok = await ok_of(b, {"type": "read", "channel": dm, "seq": 2})
            assert (ok["delivered_seq"], ok["read_seq"]) == (3, 2)
            assert await a.recv() == {
                "type": "receipt",
                "channel": dm,
                "user": ref_of(bob),
                "delivered_seq": 3,
                "read_seq": 2,
            }
            assert await cursor(bob, dm) == (3, 2)
        # Nothing was left to write on close: no second receipt.
        assert await a.nothing()


async def test_received_with_no_interval_moves_the_cursor_every_time(auser, chat_settings):
    chat_settings(ACK_INTERVAL=0)
    ann, bob = await auser(), await auser()
    await store_dm(ann, bob, "one", "two")
    dm = dm_name(ann, bob)
    async with ws_session(ann) as a, ws_session(bob) as b:
        for seq in (1, 2):
            await ok_of(b, {"type": "received", "channel": dm, "seq": seq})
            assert await a.recv() == {"type": "receipt", "channel": dm, "user": ref_of(bob), "delivered_seq": seq}
            assert await cursor(bob, dm) == (seq, 0)


async def test_a_coalesced_received_of_a_channel_no_longer_readable_is_dropped(auser, chat_settings):
    """Access lost within the window: the move at close is refused and skipped."""
    chat_settings(ACK_INTERVAL=3600)
    ann, bob = await auser(), await auser()
    await sync_to_async(services.topic_create)(user=ann, name="priv", private=True)
    await sync_to_async(services.topic_member_add)(by=ann, name="priv", user_ref=bob.pk)
    await store_topic(ann, "priv", "one", "two")
    async with ws_session(ann) as a:
        async with ws_session(bob) as b:
            await ok_of(b, {"type": "received", "channel": "topic:priv", "seq": 1})
            assert await a.recv() == {
                "type": "receipt",
                "channel": "topic:priv",
                "user": ref_of(bob),
                "delivered_seq": 1,
            }
            await ok_of(b, {"type": "received", "channel": "topic:priv", "seq": 2})
            await sync_to_async(services.topic_member_remove)(by=ann, name="priv", user_ref=bob.pk)
        assert await a.nothing()
    assert await cursor(bob, "topic:priv") == (1, 0)
