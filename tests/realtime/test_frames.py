"""realtime.frames: every client frame of protocol section 4, every error code it decides."""

from __future__ import annotations

import json
from typing import Any

import pytest

from messaging.errors import BadRequest, ChatError, Forbidden, RateLimited
from realtime import frames


def parse(frame: dict[str, Any] | str | bytes) -> frames.Frame:
    return frames.parse(frame if isinstance(frame, str | bytes) else json.dumps(frame))


def refused(frame: dict[str, Any] | str | bytes) -> ChatError:
    with pytest.raises(ChatError) as info:
        parse(frame)
    return info.value


# --- every frame type parses into its typed value ------------------------------


def test_direct_by_id_and_by_username() -> None:
    by_id = parse({"type": "direct", "to": 12, "body": "hi", "client_id": "c-1", "ref": "r1"})
    assert by_id == frames.Direct(to=12, body="hi", client_id="c-1", ref="r1")
    by_name = parse({"type": "direct", "to": "bob", "body": "hi"})
    assert isinstance(by_name, frames.Direct)
    assert by_name.to == "bob" and by_name.client_id is None and by_name.ref is None


def test_publish() -> None:
    frame = parse({"type": "publish", "channel": "topic:general", "body": "hello", "client_id": "x"})
    assert frame == frames.Publish(channel="topic:general", body="hello", client_id="x")
    assert frames.channel_of(frame).topic == "general"


def test_broadcast() -> None:
    assert parse({"type": "broadcast", "body": "news"}) == frames.Broadcast(body="news")


def test_subscribe_with_and_without_since() -> None:
    assert parse({"type": "subscribe", "channel": "topic:a"}) == frames.Subscribe(channel="topic:a")
    assert parse({"type": "subscribe", "channel": "topic:a", "since": 0}).since == 0
    assert parse({"type": "subscribe", "channel": "dm:1:2", "since": 7}).since == 7


def test_unsubscribe() -> None:
    assert parse({"type": "unsubscribe", "channel": "topic:a"}) == frames.Unsubscribe(channel="topic:a")


@pytest.mark.parametrize("kind, cls", [("received", frames.Received), ("read", frames.Read)])
def test_cursor_frames(kind: str, cls: type[frames.Frame]) -> None:
    frame = parse({"type": kind, "channel": "system:3", "seq": 15, "ref": "c"})
    assert frame == cls(channel="system:3", seq=15, ref="c")  # type: ignore[call-arg]


def test_history_all_fields() -> None:
    frame = parse({"type": "history", "channel": "broadcast", "before": 10, "after": 2, "limit": 200})
    assert frame == frames.History(channel="broadcast", before=10, after=2, limit=200)
    bare = parse({"type": "history", "channel": "topic:a"})
    assert (bare.before, bare.after, bare.limit) == (None, None, None)  # type: ignore[attr-defined]
    assert parse({"type": "history", "channel": "topic:a", "limit": 1}).limit == 1  # type: ignore[attr-defined]


def test_edit_and_delete() -> None:
    assert parse({"type": "edit", "id": 1042, "body": "fixed"}) == frames.Edit(id=1042, body="fixed")
    assert parse({"type": "delete", "id": 1042}) == frames.Delete(id=1042)


@pytest.mark.parametrize("state", ["start", "stop"])
def test_typing(state: str) -> None:
    frame = parse({"type": "typing", "channel": "dm:1:2", "state": state})
    assert frame == frames.Typing(channel="dm:1:2", state=state)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "kind, cls",
    [("presence.subscribe", frames.PresenceSubscribe), ("presence.unsubscribe", frames.PresenceUnsubscribe)],
)
def test_presence_users(kind: str, cls: type[frames.Frame]) -> None:
    frame = parse({"type": kind, "users": [7, "ann"]})
    assert frame == cls(users=[7, "ann"])  # type: ignore[call-arg]
    assert len(parse({"type": kind, "users": list(range(1, 1001))}).users) == 1000  # type: ignore[attr-defined]


@pytest.mark.parametrize("status", ["online", "away", "dnd"])
def test_presence_set(status: str) -> None:
    assert parse({"type": "presence.set", "status": status}) == frames.PresenceSet(status=status)  # type: ignore[arg-type]


def test_sync_ping_auth() -> None:
    assert parse({"type": "sync", "ref": "s"}) == frames.Sync(ref="s")
    assert parse({"type": "ping"}) == frames.Ping()
    assert parse({"type": "auth", "token": "abc.def.ghi"}) == frames.Auth(token="abc.def.ghi")


def test_bytes_input_and_unknown_fields_ignored() -> None:
    assert parse(b'{"type": "ping", "ref": "b"}') == frames.Ping(ref="b")
    assert parse({"type": "ping", "extra": [1, 2]}) == frames.Ping()


def test_every_protocol_type_is_known() -> None:
    expected = {
        "direct",
        "publish",
        "broadcast",
        "subscribe",
        "unsubscribe",
        "received",
        "read",
        "history",
        "edit",
        "delete",
        "typing",
        "presence.subscribe",
        "presence.unsubscribe",
        "presence.set",
        "sync",
        "ping",
        "auth",
    }
    assert set(frames.FRAME_TYPES) == expected


# --- bad_json ---------------------------------------------------------------------


@pytest.mark.parametrize("text", ["", "{", "not json", "{'type': 'ping'}", '{"type": "ping"} x', b"\xff\xfe"])
def test_invalid_json(text: str | bytes) -> None:
    err = refused(text)
    assert err.code == "bad_json"
    assert err.ref is None  # type: ignore[attr-defined]


@pytest.mark.parametrize("text", ["[]", '["ping"]', '"x"', "5", "null", "true"])
def test_json_that_is_not_an_object(text: str) -> None:
    assert refused(text).code == "bad_json"


# --- bad_request ---------------------------------------------------------------------


def test_missing_type() -> None:
    err = refused({"ref": "r1"})
    assert err.code == "bad_request"
    assert err.ref == "r1"  # type: ignore[attr-defined]


@pytest.mark.parametrize("kind", [5, None, True, ["ping"], {"t": "ping"}])
def test_non_string_type(kind: Any) -> None:
    err = refused({"type": kind, "ref": "r2"})
    assert err.code == "bad_request"
    assert err.ref == "r2"  # type: ignore[attr-defined]


@pytest.mark.parametrize("ref", [5, True, ["r"], {"r": 1}])
def test_ref_not_a_string(ref: Any) -> None:
    err = refused({"type": "ping", "ref": ref})
    assert err.code == "bad_request"
    assert err.ref is None  # type: ignore[attr-defined]


def test_ref_length_limit() -> None:
    assert parse({"type": "ping", "ref": "r" * 64}).ref == "r" * 64
    long_ref = "r" * 65
    err = refused({"type": "ping", "ref": long_ref})
    assert err.code == "bad_request"
    assert err.ref == long_ref  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "frame",
    [
        {"type": "direct", "body": "hi"},
        {"type": "direct", "to": 1},
        {"type": "publish", "body": "hi"},
        {"type": "publish", "channel": "topic:a"},
        {"type": "broadcast"},
        {"type": "subscribe"},
        {"type": "unsubscribe"},
        {"type": "received", "channel": "topic:a"},
        {"type": "read", "seq": 1},
        {"type": "history"},
        {"type": "edit", "id": 1},
        {"type": "edit", "body": "x"},
        {"type": "delete"},
        {"type": "typing", "channel": "topic:a"},
        {"type": "presence.subscribe"},
        {"type": "presence.unsubscribe"},
        {"type": "presence.set"},
        {"type": "auth"},
    ],
)
def test_missing_field(frame: dict[str, Any]) -> None:
    err = refused({**frame, "ref": "m"})
    assert err.code == "bad_request"
    assert err.ref == "m"  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "frame",
    [
        {"type": "direct", "to": 1.5, "body": "hi"},
        {"type": "direct", "to": None, "body": "hi"},
        {"type": "direct", "to": 0, "body": "hi"},
        {"type": "direct", "to": -3, "body": "hi"},
        {"type": "direct", "to": "", "body": "hi"},
        {"type": "direct", "to": "u" * 151, "body": "hi"},
        {"type": "direct", "to": 1, "body": 5},
        {"type": "direct", "to": 1, "body": None},
        {"type": "direct", "to": 1, "body": ["hi"]},
        {"type": "direct", "to": 1, "body": "hi", "client_id": 5},
        {"type": "publish", "channel": 5, "body": "hi"},
        {"type": "publish", "channel": "topic:a", "body": {"t": "hi"}},
        {"type": "broadcast", "body": 1},
        {"type": "subscribe", "channel": "topic:a", "since": "3"},
        {"type": "subscribe", "channel": "topic:a", "since": 1.0},
        {"type": "received", "channel": "topic:a", "seq": "1"},
        {"type": "history", "channel": "topic:a", "limit": "10"},
        {"type": "edit", "id": "5", "body": "x"},
        {"type": "edit", "id": 0, "body": "x"},
        {"type": "delete", "id": -1},
        {"type": "presence.subscribe", "users": "ann"},
        {"type": "presence.subscribe", "users": [1.5]},
        {"type": "presence.subscribe", "users": [None]},
        {"type": "presence.unsubscribe", "users": [0]},
        {"type": "auth", "token": ""},
        {"type": "auth", "token": 5},
    ],
)
def test_wrongly_typed_field(frame: dict[str, Any]) -> None:
    err = refused({**frame, "ref": "w"})
    assert err.code == "bad_request", err.message
    assert err.ref == "w"  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "frame",
    [
        {"type": "direct", "to": True, "body": "hi"},
        {"type": "subscribe", "channel": "topic:a", "since": False},
        {"type": "received", "channel": "topic:a", "seq": True},
        {"type": "read", "channel": "topic:a", "seq": False},
        {"type": "history", "channel": "topic:a", "limit": True},
        {"type": "history", "channel": "topic:a", "before": True},
        {"type": "edit", "id": True, "body": "x"},
        {"type": "delete", "id": True},
        {"type": "presence.subscribe", "users": [True]},
    ],
)
def test_bool_where_int_expected(frame: dict[str, Any]) -> None:
    assert refused(frame).code == "bad_request"


@pytest.mark.parametrize(
    "frame",
    [
        {"type": "received", "channel": "topic:a", "seq": -1},
        {"type": "read", "channel": "topic:a", "seq": -5},
        {"type": "subscribe", "channel": "topic:a", "since": -1},
        {"type": "history", "channel": "topic:a", "before": -1},
        {"type": "history", "channel": "topic:a", "after": -2},
    ],
)
def test_negative_seq(frame: dict[str, Any]) -> None:
    assert refused(frame).code == "bad_request"


def test_seq_zero_is_allowed() -> None:
    assert parse({"type": "received", "channel": "topic:a", "seq": 0}).seq == 0  # type: ignore[attr-defined]


@pytest.mark.parametrize("limit", [0, 201, -1, 10_000])
def test_history_limit_bounds(limit: int) -> None:
    err = refused({"type": "history", "channel": "topic:a", "limit": limit, "ref": "h"})
    assert err.code == "bad_request"
    assert err.ref == "h"  # type: ignore[attr-defined]


@pytest.mark.parametrize("after, before", [(5, 5), (6, 5), (0, 0)])
def test_history_after_not_below_before(after: int, before: int) -> None:
    err = refused({"type": "history", "channel": "topic:a", "after": after, "before": before, "ref": "ab"})
    assert err.code == "bad_request"
    assert err.ref == "ab"  # type: ignore[attr-defined]


def test_history_after_just_below_before() -> None:
    frame = parse({"type": "history", "channel": "topic:a", "after": 4, "before": 5})
    assert (frame.after, frame.before) == (4, 5)  # type: ignore[attr-defined]


@pytest.mark.parametrize("kind", ["publish", "subscribe", "unsubscribe", "received", "read", "history", "typing"])
@pytest.mark.parametrize(
    "channel", ["dm:2:1", "dm:1:1", "dm:01:2", "system:x", "topic:UPPER", "topic:-x", "topic:" + "a" * 65, "chat:1", ""]
)
def test_bad_channel_name(kind: str, channel: str) -> None:
    extra = {"publish": {"body": "b"}, "received": {"seq": 1}, "read": {"seq": 1}, "typing": {"state": "start"}}
    frame: dict[str, Any] = {"type": kind, "channel": channel, "ref": "ch", **extra.get(kind, {})}
    err = refused(frame)
    assert err.code == "bad_request"
    assert err.ref == "ch"  # type: ignore[attr-defined]


def test_presence_users_empty_or_over_1000() -> None:
    assert refused({"type": "presence.subscribe", "users": []}).code == "bad_request"
    assert refused({"type": "presence.unsubscribe", "users": []}).code == "bad_request"
    assert refused({"type": "presence.subscribe", "users": list(range(1, 1002))}).code == "bad_request"
    assert refused({"type": "presence.unsubscribe", "users": ["u"] * 1001}).code == "bad_request"


@pytest.mark.parametrize("state", ["START", "typing", "", None, 1])
def test_bad_typing_state(state: Any) -> None:
    assert refused({"type": "typing", "channel": "topic:a", "state": state}).code == "bad_request"


@pytest.mark.parametrize("status", ["offline", "busy", "Online", "", None])
def test_bad_presence_status(status: Any) -> None:
    # `offline` is what others see when every session is gone; a client cannot set it.
    assert refused({"type": "presence.set", "status": status}).code == "bad_request"


@pytest.mark.parametrize("kind", ["direct", "publish", "broadcast"])
def test_client_id_length(kind: str) -> None:
    base: dict[str, Any] = {"type": kind, "body": "hi", "to": 1, "channel": "topic:a"}
    assert parse({**base, "client_id": "c" * 64}).client_id == "c" * 64  # type: ignore[attr-defined]
    err = refused({**base, "client_id": "c" * 65, "ref": "cid"})
    assert err.code == "bad_request"
    assert err.ref == "cid"  # type: ignore[attr-defined]
    assert refused({**base, "client_id": ""}).code == "bad_request"


@pytest.mark.parametrize("kind", ["direct", "publish", "broadcast", "edit"])
def test_empty_body(kind: str) -> None:
    assert refused({"type": kind, "body": "", "to": 1, "channel": "topic:a", "id": 1}).code == "bad_request"


def test_lone_surrogate_in_body_is_not_json() -> None:
    assert refused('{"type": "broadcast", "body": "\\ud800"}').code == "bad_json"


# --- unknown_type ---------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["hello", "Ping", "message", "ok", "presence", "", "presence.get"])
def test_unknown_type(kind: str) -> None:
    err = refused({"type": kind, "ref": "u"})
    assert err.code == "unknown_type"
    assert err.ref == "u"  # type: ignore[attr-defined]


# --- too_large ---------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["direct", "publish", "broadcast", "edit"])
def test_body_size_limit(kind: str) -> None:
    base: dict[str, Any] = {"type": kind, "to": 1, "channel": "topic:a", "id": 1, "ref": "big"}
    assert parse({**base, "body": "a" * 16384}).body == "a" * 16384  # type: ignore[attr-defined]
    err = refused({**base, "body": "a" * 16385})
    assert err.code == "too_large"
    assert err.ref == "big"  # type: ignore[attr-defined]


def test_body_limit_counts_utf8_bytes_not_characters() -> None:
    euro = "\u20ac"  # three bytes in UTF-8
    body = euro * 5462  # 5462 chars, 16386 bytes
    assert len(body) < 16384 < len(body.encode())
    assert refused({"type": "broadcast", "body": body}).code == "too_large"
    exact = euro * 5461 + "a"  # 16384 bytes
    assert len(exact.encode()) == 16384
    assert parse({"type": "broadcast", "body": exact}).body == exact  # type: ignore[attr-defined]
    over = euro * 5461 + "ab"  # 16385 bytes
    assert refused({"type": "broadcast", "body": over}).code == "too_large"


def test_body_of_4_byte_chars() -> None:
    assert parse({"type": "broadcast", "body": "\U0001f600" * 4096}).body  # type: ignore[attr-defined]
    assert refused({"type": "broadcast", "body": "\U0001f600" * 4096 + "a"}).code == "too_large"


# --- server frames ---------------------------------------------------------------------


def test_encode_is_compact_json_text() -> None:
    text = frames.encode({"type": "pong", "t": 5, "body": "h\u00e9"})
    assert isinstance(text, str)
    assert json.loads(text) == {"type": "pong", "t": 5, "body": "h\u00e9"}


def test_ok_with_and_without_ref() -> None:
    assert frames.ok("r1", last_seq=3) == {"type": "ok", "ref": "r1", "last_seq": 3}
    assert frames.ok(None) == {"type": "ok"}
    assert "ref" not in frames.ok(None, channel="topic:a")


def test_error_frame() -> None:
    assert frames.error("r9", Forbidden("no")) == {"type": "error", "ref": "r9", "code": "forbidden", "message": "no"}
    no_ref = frames.error(None, BadRequest())
    assert no_ref == {"type": "error", "code": "bad_request", "message": "bad request"}


def test_error_frame_carries_retry_after() -> None:
    frame = frames.error("r", RateLimited("slow down", retry_after=0.05))
    assert frame["code"] == "rate_limited"
    assert frame["retry_after"] == 0.05 > 0
    assert "retry_after" not in frames.error("r", BadRequest("x"))


def test_error_from_parse_round_trips_its_ref() -> None:
    err = refused({"type": "nope", "ref": "abc"})
    frame = json.loads(frames.encode(frames.error(err.ref, err)))  # type: ignore[attr-defined]
    assert frame == {"type": "error", "ref": "abc", "code": "unknown_type", "message": err.message}
