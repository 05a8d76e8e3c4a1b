"""Channel names: parsing and the pure access rules of protocol section 3."""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

from .errors import BadRequest

TOPIC_NAME_RE = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}")


class Kind(StrEnum):
    TOPIC = "topic"
    DIRECT = "direct"
    BROADCAST = "broadcast"
    SYSTEM = "system"


@dataclass(frozen=True, slots=True)
class ChannelName:
    """A parsed channel name; `str()` gives the wire form back."""

    kind: Kind
    topic: str = ""
    user_a: int = 0  # dm: the smaller id; system: the owner
    user_b: int = 0

    def __str__(self) -> str:
        if self.kind is Kind.TOPIC:
            return f"topic:{self.topic}"
        if self.kind is Kind.DIRECT:
            return f"dm:{self.user_a}:{self.user_b}"
        if self.kind is Kind.SYSTEM:
            return f"system:{self.user_a}"
        return "broadcast"

    @property
    def group(self) -> str:
        """The channel-layer group that carries this channel's live messages.

        dm: and system: channels travel on their users' groups, so a session
        receives them without subscribing.
        """
        if self.kind is Kind.TOPIC:
            return topic_group(self.topic)
        if self.kind is Kind.BROADCAST:
            return BROADCAST_GROUP
        raise ValueError("dm: and system: channels go to user groups")

    @property
    def auto(self) -> bool:
        """True for the channels every session receives without subscribing."""
        return self.kind is not Kind.TOPIC

    def members(self) -> tuple[int, ...]:
        """The users of a dm: or system: channel."""
        if self.kind is Kind.DIRECT:
            return (self.user_a, self.user_b)
        if self.kind is Kind.SYSTEM:
            return (self.user_a,)
        return ()


BROADCAST_GROUP = "broadcast"
BROADCAST = ChannelName(Kind.BROADCAST)


def topic_group(name: str) -> str:
    return f"topic.{name}"


def user_group(user_id: int) -> str:
    return f"user.{user_id}"


def dm_channel(a: int, b: int) -> ChannelName:
    if a == b:
        raise BadRequest("a direct conversation needs two different users")
    lo, hi = sorted((a, b))
    return ChannelName(Kind.DIRECT, user_a=lo, user_b=hi)


def system_channel(user_id: int) -> ChannelName:
    return ChannelName(Kind.SYSTEM, user_a=user_id)


def topic_channel(name: str) -> ChannelName:
    if not TOPIC_NAME_RE.fullmatch(name):
        raise BadRequest("topic names match [a-z0-9][a-z0-9_.-]{0,63}")
    return ChannelName(Kind.TOPIC, topic=name)


def _positive_id(text: str) -> int:
    # isdigit() alone admits "²" and "١" (int() rejects one, reads the other as
    # 1), and a very long digit run makes int() raise ValueError; 19 digits
    # covers every bigint id.
    if not (text.isascii() and text.isdigit()) or text.startswith("0") or len(text) > 19:
        raise BadRequest(f"bad user id {text[:24]!r} in channel name")
    return int(text)


def parse_channel(name: object) -> ChannelName:
    """Parse a wire channel name, or raise BadRequest saying what is wrong."""
    if not isinstance(name, str) or not name:
        raise BadRequest("channel must be a non-empty string")
    if name == "broadcast":
        return BROADCAST
    prefix, _, rest = name.partition(":")
    if prefix == "topic":
        return topic_channel(rest)
    if prefix == "system":
        return system_channel(_positive_id(rest))
    if prefix == "dm":
        a, sep, b = rest.partition(":")
        lo, hi = _positive_id(a), _positive_id(b) if sep else 0
        if not sep or lo >= hi:
            raise BadRequest("dm channels are named dm:A:B with user ids A < B")
        return ChannelName(Kind.DIRECT, user_a=lo, user_b=hi)
    raise BadRequest(f"unknown channel {name!r}")
