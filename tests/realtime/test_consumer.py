"""The session actor's requests: frames and their errors, direct, broadcast, history, limits."""

import json

import pytest
from asgiref.sync import sync_to_async

from messaging.models import Channel, Message
from tests.conftest import recv_messages, ws_session

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("fast_passwords")]


def dm_name(a, b):
    lo, hi = sorted((a.pk, b.pk))
    return f"dm:{lo}:{hi}"


@sync_to_async
def stored(channel: str) -> list[int]:
    """The seqs stored on a channel (none when the channel does not exist)."""
    return list(Message.objects.filter(channel__name=channel).order_by("seq").values_list("seq", flat=True))


async def still_open(session) -> None:
    pong = await session.request({"type": "ping"})
    assert pong["type"] == "pong"


# --- ping and frame errors -------------------------------------------------------


async def test_ping_answers_pong_with_time_and_ref(auser):
    import time

    async with ws_session(await auser()) as s:
        before = int(time.time() * 1000)
        await s.send({"type": "ping", "ref": "p1"})
        pong = await s.recv()
        after = int(time.time() * 1000)
        assert pong["type"] == "pong" and pong["ref"] == "p1"
        assert isinstance(pong["t"], int) and before - 1000 <= pong["t"] <= after + 1000
        await s.send({"type": "ping"})
        bare = await s.recv()
        assert bare["type"] == "pong" and "ref" not in bare


@pytest.mark.parametrize("raw", ["not json", "{", "[1, 2]", '"text"', "42", "null"])
async def test_bad_json_then_still_open(auser, raw):
    async with ws_session(await auser()) as s:
        await s.send(raw)
        err = await s.recv()
        assert err["type"] == "error" and err["code"] == "bad_json" and err["message"]
        assert "ref" not in err
        await still_open(s)


async def test_binary_frame_is_bad_json(auser):
    async with ws_session(await auser()) as s:
        await s.comm.send_to(bytes_data=json.dumps({"type": "ping", "ref": "b"}).encode())
        err = await s.recv()
        assert err["type"] == "error" and err["code"] == "bad_json"
        await still_open(s)


async def test_no_type_is_bad_request_with_ref(auser):
    async with ws_session(await auser()) as s:
        await s.send({"ref": "x1", "channel": "topic:a"})
        err = await s.recv()
        assert err == {"type": "error", "ref": "x1", "code": "bad_request", "message": err["message"]}
        await s.send({"type": 5, "ref": "x2"})
        err = await s.recv()
        assert err["code"] == "bad_request" and err["ref"] == "x2"
        await still_open(s)


async def test_long_ref_is_bad_request_carrying_the_ref(auser):
    long_ref = "r" * 65
    async with ws_session(await auser()) as s:
        await s.send({"type": "ping", "ref": long_ref})
        err = await s.recv()
        assert err["type"] == "error" and err["code"] == "bad_request" and err["ref"] == long_ref
        # 64 characters is still fine.
        await s.send({"type": "ping", "ref": "r" * 64})
        pong = await s.recv()
        assert pong["type"] == "pong" and pong["ref"] == "r" * 64


async def test_non_string_ref_is_bad_request(auser):
    async with ws_session(await auser()) as s:
        await s.send({"type": "ping", "ref": 7})
        err = await s.recv()
        assert err["type"] == "error" and err["code"] == "bad_request"
        await still_open(s)


async def test_unknown_type_carries_ref(auser):
    async with ws_session(await auser()) as s:
        err = await s.request({"type": "frobnicate"})
        assert err["type"] == "error" and err["code"] == "unknown_type"
        await still_open(s)


@pytest.mark.parametrize(
    "frame",
    [
        {"type": "publish", "channel": "topic:a"},  # no body
        {"type": "publish", "channel": "topic:Upper", "body": "x"},  # bad topic name
        {"type": "publish", "channel": "nowhere", "body": "x"},
        {"type": "publish", "channel": "topic:a", "body": ""},
        {"type": "publish", "channel": "topic:a", "body": 5},
        {"type": "publish", "channel": "topic:a", "body": "x", "client_id": "c" * 65},
        {"type": "direct", "to": 0, "body": "x"},
        {"type": "subscribe", "channel": "topic:a", "since": -1},
        {"type": "subscribe", "channel": "topic:a", "since": "1"},
        {"type": "history", "channel": "topic:a", "limit": 201},
        {"type": "history", "channel": "topic:a", "after": 5, "before": 5},
        {"type": "unsubscribe"},
    ],
    ids=lambda f: json.dumps(f)[:60],
)
async def test_invalid_fields_are_bad_request(auser, frame):
    async with ws_session(await auser()) as s:
        err = await s.request(frame)
        assert err["type"] == "error" and err["code"] == "bad_request", err
        await still_open(s)
    assert not await sync_to_async(Message.objects.exists)()


async def test_frame_over_64_kib_closes_1009(auser):
    async with ws_session(await auser()) as s:
        await s.send(json.dumps({"type": "ping", "pad": "x" * (64 * 1024)}))
        assert await s.closed() == 1009


async def test_frame_over_64_kib_in_utf8_closes_1009(auser):
    # 22,000 characters, but 66,000 bytes of UTF-8.
    async with ws_session(await auser()) as s:
        await s.send(json.dumps({"type": "ping", "pad": "\u20ac" * 22000}, ensure_ascii=False))
        assert await s.closed() == 1009


async def test_binary_frame_over_64_kib_closes_1009(auser):
    async with ws_session(await auser()) as s:
        await s.comm.send_to(bytes_data=b"x" * (64 * 1024 + 1))
        assert await s.closed() == 1009


async def test_body_over_16_kib_is_too_large(auser):
    async with ws_session(await auser()) as s:
        err = await s.request({"type": "publish", "channel": "topic:big", "body": "x" * (16 * 1024 + 1)})
        assert err["type"] == "error" and err["code"] == "too_large"
        # Counted in UTF-8 bytes: 5462 euro signs are 16,386 bytes.
        err = await s.request({"type": "publish", "channel": "topic:big", "body": "\u20ac" * 5462})
        assert err["code"] == "too_large"
        ok = await s.request({"type": "publish", "channel": "topic:big", "body": "x" * (16 * 1024)})
        assert ok["type"] == "ok" and ok["message"]["seq"] == 1
    assert await stored("topic:big") == [1]


# --- direct ----------------------------------------------------------------------


@pytest.mark.parametrize("by", ["id", "username"])
async def test_direct_reaches_recipient_and_senders_other_sessions(auser, by):
    ann, bob = await auser(), await auser()
    async with ws_session(ann) as a1, ws_session(ann) as a2, ws_session(bob) as b:
        to = bob.pk if by == "id" else bob.username
        ok = await a1.request({"type": "direct", "to": to, "body": "hi bob", "client_id": "c-1"})
        assert ok["type"] == "ok"
        msg = ok["message"]
        assert msg["type"] == "message"
        assert msg["kind"] == "direct"
        assert msg["channel"] == dm_name(ann, bob)
        assert msg["seq"] == 1
        assert msg["from"] == {"id": ann.pk, "username": ann.username}
        assert msg["body"] == "hi bob" and msg["client_id"] == "c-1"
        assert msg["created_at"].endswith("Z") and msg["edited_at"] is None and msg["deleted"] is False
        assert (await b.recv()) == msg
        assert (await a2.recv()) == msg
        assert await a1.nothing()
        assert await b.nothing(0.1) and await a2.nothing(0.1)


async def test_direct_channel_name_orders_ids(auser):
    ann, bob = await auser(), await auser()
    async with ws_session(bob) as b, ws_session(ann) as a:  # the higher id sends
        ok = await b.request({"type": "direct", "to": ann.pk, "body": "hey"})
        assert ok["message"]["channel"] == f"dm:{ann.pk}:{bob.pk}"
        assert (await a.recv())["channel"] == f"dm:{ann.pk}:{bob.pk}"


async def test_direct_conversation_keeps_seq_order_both_ways(auser):
    ann, bob = await auser(), await auser()
    async with ws_session(ann) as a, ws_session(bob) as b:
        got_a, got_b = [], []
        for i in range(3):
            # Events that arrive before a request's answer are kept in `skipped`.
            assert (await a.request({"type": "direct", "to": bob.pk, "body": f"a{i}"}))["message"]["seq"] == 2 * i + 1
            got_a += a.skipped
            assert (await b.request({"type": "direct", "to": ann.pk, "body": f"b{i}"}))["message"]["seq"] == 2 * i + 2
            got_b += b.skipped
        got_a += await recv_messages(a, 3 - len(got_a))
        got_b += await recv_messages(b, 3 - len(got_b))
        assert [(m["seq"], m["body"]) for m in got_b] == [(1, "a0"), (3, "a1"), (5, "a2")]
        assert [(m["seq"], m["body"]) for m in got_a] == [(2, "b0"), (4, "b1"), (6, "b2")]
        assert await a.nothing() and await b.nothing(0.1)


async def test_direct_to_self_is_bad_request(auser):
    ann = await auser()
    async with ws_session(ann) as a:
        for to in (ann.pk, ann.username):
            err = await a.request({"type": "direct", "to": to, "body": "me"})
            assert err["type"] == "error" and err["code"] == "bad_request"
        assert await a.nothing()
    assert not await sync_to_async(Message.objects.exists)()


@pytest.mark.parametrize("to", [999999, "nobody-here"])
async def test_direct_to_unknown_user_is_not_found(auser, to):
    async with ws_session(await auser()) as a:
        err = await a.request({"type": "direct", "to": to, "body": "hello?"})
        assert err["type"] == "error" and err["code"] == "not_found"
        await still_open(a)
    assert not await sync_to_async(Message.objects.exists)()


# --- idempotent sends ------------------------------------------------------------


async def test_same_client_id_twice_stores_and_delivers_once(auser):
    ann, bob = await auser(), await auser()
    async with ws_session(ann) as a, ws_session(bob) as b:
        first = await a.request({"type": "direct", "to": bob.pk, "body": "once", "client_id": "dup-1"})
        again = await a.request({"type": "direct", "to": bob.pk, "body": "once", "client_id": "dup-1"})
        assert first["type"] == again["type"] == "ok"
        assert again["message"] == first["message"]
        assert (await b.recv())["id"] == first["message"]["id"]
        assert await b.nothing(0.5)
        # The retry took no seq: the next message is seq 2.
        nxt = await a.request({"type": "direct", "to": bob.pk, "body": "next", "client_id": "dup-2"})
        assert nxt["message"]["seq"] == 2
        assert (await b.recv())["seq"] == 2
    assert await stored(dm_name(ann, bob)) == [1, 2]


async def test_same_client_id_on_topic_publishes_once(auser):
    ann, bob = await auser(), await auser()
    async with ws_session(ann) as a, ws_session(bob) as b:
        assert (await b.request({"type": "subscribe", "channel": "topic:idem"}))["type"] == "ok"
        first = await a.request({"type": "publish", "channel": "topic:idem", "body": "x", "client_id": "k"})
        again = await a.request({"type": "publish", "channel": "topic:idem", "body": "x", "client_id": "k"})
        assert again["message"]["id"] == first["message"]["id"] and again["message"]["seq"] == 1
        assert (await b.recv())["id"] == first["message"]["id"]
        assert await b.nothing(0.5)
    assert await stored("topic:idem") == [1]


async def test_client_ids_of_different_users_do_not_collide(auser):
    ann, bob = await auser(), await auser()
    async with ws_session(ann) as a, ws_session(bob) as b:
        one = await a.request({"type": "direct", "to": bob.pk, "body": "from ann", "client_id": "same"})
        two = await b.request({"type": "direct", "to": ann.pk, "body": "from bob", "client_id": "same"})
        assert one["message"]["id"] != two["message"]["id"]
        assert two["message"]["body"] == "from bob" and two["message"]["seq"] == 2


# --- broadcast -------------------------------------------------------------------


async def test_broadcast_by_non_staff_is_forbidden(auser):
    ann, bob = await auser(), await auser()
    async with ws_session(ann) as a, ws_session(bob) as b:
        err = await a.request({"type": "broadcast", "body": "everyone!"})
        assert err["type"] == "error" and err["code"] == "forbidden"
        assert await b.nothing()
    assert await stored("broadcast") == []


async def test_staff_broadcast_reaches_every_session_but_the_sender(auser):
    boss, ann, bob = await auser(is_staff=True), await auser(), await auser()
    async with (
        ws_session(boss) as sender,
        ws_session(boss) as boss2,
        ws_session(ann) as a,
        ws_session(bob) as b1,
        ws_session(bob) as b2,
    ):
        ok = await sender.request({"type": "broadcast", "body": "maintenance at noon"})
        assert ok["type"] == "ok"
        msg = ok["message"]
        assert msg["kind"] == "broadcast" and msg["channel"] == "broadcast" and msg["seq"] == 1
        assert msg["from"]["id"] == boss.pk
        for other in (boss2, a, b1, b2):
            assert (await other.recv()) == msg
        assert await sender.nothing()


# --- history ---------------------------------------------------------------------


async def test_history_pages(auser):
    ann, bob, carol = await auser(), await auser(), await auser()
    dm = dm_name(ann, bob)
    async with ws_session(ann) as a, ws_session(bob) as b, ws_session(carol) as c:
        for i in range(1, 6):
            assert (await a.request({"type": "direct", "to": bob.pk, "body": f"m{i}"}))["type"] == "ok"

        async def page(**bounds):
            ok = await b.request({"type": "history", "channel": dm, **bounds})
            assert ok["type"] == "ok", ok
            return [m["seq"] for m in ok["messages"]], ok["has_more"]

        assert await page() == ([1, 2, 3, 4, 5], False)
        assert await page(limit=2) == ([4, 5], True)
        assert await page(before=4, limit=2) == ([2, 3], True)
        assert await page(before=3, limit=2) == ([1, 2], False)
        assert await page(after=3) == ([4, 5], False)
        assert await page(after=1, limit=2) == ([2, 3], True)
        assert await page(after=1, before=5) == ([2, 3, 4], False)

        full = await b.request({"type": "history", "channel": dm, "limit": 1})
        assert full["messages"][0]["body"] == "m5" and full["messages"][0]["kind"] == "direct"

        err = await c.request({"type": "history", "channel": dm})
        assert err["type"] == "error" and err["code"] == "forbidden"


async def test_history_of_unknown_topic_is_not_found_and_empty_dm_is_empty(auser):
    ann, bob = await auser(), await auser()
    async with ws_session(ann) as a:
        err = await a.request({"type": "history", "channel": "topic:never-made"})
        assert err["type"] == "error" and err["code"] == "not_found"
        ok = await a.request({"type": "history", "channel": dm_name(ann, bob)})
        assert ok["type"] == "ok" and ok["messages"] == [] and ok["has_more"] is False
    assert not await sync_to_async(Channel.objects.filter(name="topic:never-made").exists)()


async def test_history_of_system_channel_is_its_owners_only(auser):
    ann, bob = await auser(), await auser()
    async with ws_session(ann) as a:
        ok = await a.request({"type": "history", "channel": f"system:{ann.pk}"})
        assert ok["type"] == "ok" and ok["messages"] == []
        err = await a.request({"type": "history", "channel": f"system:{bob.pk}"})
        assert err["type"] == "error" and err["code"] == "forbidden"


# --- limits ----------------------------------------------------------------------


async def test_rate_limit(auser, chat_settings):
    chat_settings(SEND_RATE=1, SEND_BURST=3)
    ann = await auser()
    async with ws_session(ann) as a:
        for seq in (1, 2, 3):
            ok = await a.request({"type": "publish", "channel": "topic:fast", "body": f"m{seq}"})
            assert ok["type"] == "ok" and ok["message"]["seq"] == seq
        err = await a.request({"type": "publish", "channel": "topic:fast", "body": "m4"})
        assert err["type"] == "error" and err["code"] == "rate_limited"
        assert isinstance(err["retry_after"], (int, float)) and 0 < err["retry_after"] <= 1.0
        # Nothing was stored for the refused send.
        sub = await a.request({"type": "subscribe", "channel": "topic:fast"})
        assert sub["last_seq"] == 3
        hist = await a.request({"type": "history", "channel": "topic:fast"})
        assert [m["body"] for m in hist["messages"]] == ["m1", "m2", "m3"]
    assert await stored("topic:fast") == [1, 2, 3]


async def test_rate_limit_is_per_session(auser, chat_settings):
    chat_settings(SEND_RATE=1, SEND_BURST=1)
    ann, bob = await auser(), await auser()
    async with ws_session(ann) as a1, ws_session(ann) as a2:
        assert (await a1.request({"type": "direct", "to": bob.pk, "body": "1"}))["type"] == "ok"
        assert (await a1.request({"type": "direct", "to": bob.pk, "body": "2"}))["code"] == "rate_limited"
        assert (await a2.request({"type": "direct", "to": bob.pk, "body": "3"}))["type"] == "ok"
    assert await stored(dm_name(ann, bob)) == [1, 2]


async def test_subscription_limit(auser, chat_settings):
    chat_settings(MAX_SUBSCRIPTIONS=3)
    async with ws_session(await auser()) as s:
        for name in ("t1", "t2", "t3"):
            assert (await s.request({"type": "subscribe", "channel": f"topic:{name}"}))["type"] == "ok"
        err = await s.request({"type": "subscribe", "channel": "topic:t4"})
        assert err["type"] == "error" and err["code"] == "bad_request"
        # Subscribing again to one it has is not a new subscription.
        assert (await s.request({"type": "subscribe", "channel": "topic:t2"}))["type"] == "ok"
        # Room is made by unsubscribing.
        assert (await s.request({"type": "unsubscribe", "channel": "topic:t1"}))["type"] == "ok"
        assert (await s.request({"type": "subscribe", "channel": "topic:t4"}))["type"] == "ok"
