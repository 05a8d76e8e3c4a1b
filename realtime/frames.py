"""Client frames parsed into typed values, and server frames encoded; no I/O.

Every protocol error a frame itself can cause is decided here:

    not JSON, or not an object        -> bad_json
    no `type`, bad `ref`, bad field   -> bad_request
    a `type` the protocol lacks       -> unknown_type
    a body over 16 KiB of UTF-8       -> too_large

`parse` raises a `messaging.errors.ChatError` whose `ref` attribute holds the
frame's `ref` (when it had a string one), so the answer can carry it.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

from messaging.channels import ChannelName, parse_channel
from messaging.errors import BadJson, BadRequest, ChatError, UnknownType
from messaging.rules import body_validate, client_id_validate

MAX_REF = 64
MAX_PRESENCE_USERS = 1000

Seq = Annotated[int, msgspec.Meta(ge=0)]
Id = Annotated[int, msgspec.Meta(ge=1)]
UserRef = Id | Annotated[str, msgspec.Meta(min_length=1, max_length=150)]


class Frame(msgspec.Struct, frozen=True, kw_only=True, tag_field="type"):
    ref: str | None = None


class Direct(Frame, tag="direct"):
    to: UserRef
    body: str
    client_id: str | None = None


class Publish(Frame, tag="publish"):
    channel: str
    body: str
    client_id: str | None = None


class Broadcast(Frame, tag="broadcast"):
    body: str
    client_id: str | None = None


class Subscribe(Frame, tag="subscribe"):
    channel: str
    since: Seq | None = None


class Unsubscribe(Frame, tag="unsubscribe"):
    channel: str


class Received(Frame, tag="received"):
    channel: str
    seq: Seq


class Read(Frame, tag="read"):
    channel: str
    seq: Seq


class History(Frame, tag="history"):
    channel: str
    before: Seq | None = None
    after: Seq | None = None
    limit: Annotated[int, msgspec.Meta(ge=1, le=200)] | None = None


class Edit(Frame, tag="edit"):
    id: Id
    body: str


class Delete(Frame, tag="delete"):
    id: Id


class Typing(Frame, tag="typing"):
    channel: str
    state: Literal["start", "stop"]


class PresenceSubscribe(Frame, tag="presence.subscribe"):
    users: Annotated[list[UserRef], msgspec.Meta(min_length=1, max_length=MAX_PRESENCE_USERS)]


class PresenceUnsubscribe(Frame, tag="presence.unsubscribe"):
    users: Annotated[list[UserRef], msgspec.Meta(min_length=1, max_length=MAX_PRESENCE_USERS)]


class PresenceSet(Frame, tag="presence.set"):
    status: Literal["online", "away", "dnd"]


class Sync(Frame, tag="sync"):
    pass


class Ping(Frame, tag="ping"):
    pass


class Auth(Frame, tag="auth"):
    token: Annotated[str, msgspec.Meta(min_length=1)]


FRAME_TYPES: dict[str, type[Frame]] = {
    cls.__struct_config__.tag: cls  # type: ignore[misc]
    for cls in (
        Direct,
        Publish,
        Broadcast,
        Subscribe,
        Unsubscribe,
        Received,
        Read,
        History,
        Edit,
        Delete,
        Typing,
        PresenceSubscribe,
        PresenceUnsubscribe,
        PresenceSet,
        Sync,
        Ping,
        Auth,
    )
}

# Frames that name a channel: the name is checked here, before any I/O.
_CHANNEL_FRAMES = (Publish, Subscribe, Unsubscribe, Received, Read, History, Typing)
_BODY_FRAMES = (Direct, Publish, Broadcast, Edit)

_decoder = msgspec.json.Decoder()
_encoder = msgspec.json.Encoder()


def _fail(error: ChatError, ref: str | None) -> ChatError:
    error.ref = ref  # type: ignore[attr-defined]
    return error


def parse(data: str | bytes) -> Frame:
    """Parse one client frame into its typed value, or raise a ChatError."""
    try:
        raw = _decoder.decode(data)
    except msgspec.DecodeError:
        raise _fail(BadJson("frame is not valid JSON"), None) from None
    if not isinstance(raw, dict):
        raise _fail(BadJson("frame must be a JSON object"), None)

    ref = raw.get("ref")
    if ref is not None and not isinstance(ref, str):
        raise _fail(BadRequest("ref must be a string"), None)
    if ref is not None and len(ref) > MAX_REF:
        raise _fail(BadRequest(f"ref is longer than {MAX_REF} characters"), ref)

    kind = raw.get("type")
    if not isinstance(kind, str):
        raise _fail(BadRequest("frame has no string `type`"), ref)
    cls = FRAME_TYPES.get(kind)
    if cls is None:
        raise _fail(UnknownType(f"unknown frame type {kind!r}"), ref)
    try:
        frame = msgspec.convert(raw, cls, strict=True)
    except msgspec.ValidationError as exc:
        raise _fail(BadRequest(str(exc)), ref) from None
    try:
        _check(frame)
    except ChatError as exc:
        raise _fail(exc, ref) from None
    return frame


def _check(frame: Frame) -> None:
    """Rules msgspec's types cannot say: channel names, body size, limits."""
    if isinstance(frame, _CHANNEL_FRAMES):
        parse_channel(frame.channel)
    if isinstance(frame, _BODY_FRAMES):
        body_validate(frame.body)
    if isinstance(frame, (Direct, Publish, Broadcast)):
        client_id_validate(frame.client_id)
    if isinstance(frame, History) and None not in (frame.before, frame.after):
        if frame.after >= frame.before:  # type: ignore[operator]
            raise BadRequest("history needs after < before")


def channel_of(frame: Frame) -> ChannelName:
    """The parsed channel of a frame that names one (already validated)."""
    return parse_channel(frame.channel)  # type: ignore[attr-defined]


# --- Server frames ------------------------------------------------------------


def encode(frame: dict[str, Any]) -> str:
    return _encoder.encode(frame).decode()


def ok(ref: str | None, **result: Any) -> dict[str, Any]:
    frame: dict[str, Any] = {"type": "ok"}
    if ref is not None:
        frame["ref"] = ref
    frame.update(result)
    return frame


def error(ref: str | None, err: ChatError) -> dict[str, Any]:
    frame: dict[str, Any] = {"type": "error"}
    if ref is not None:
        frame["ref"] = ref
    frame["code"] = err.code
    frame["message"] = err.message
    retry_after = getattr(err, "retry_after", None)
    if retry_after is not None:
        frame["retry_after"] = retry_after
    return frame
