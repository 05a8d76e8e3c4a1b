"""messaging.channels: channel names of protocol section 3."""

from __future__ import annotations

from typing import Any

import pytest

from messaging.channels import (
    BROADCAST,
    BROADCAST_GROUP,
    ChannelName,
    Kind,
    dm_channel,
    parse_channel,
    system_channel,
    topic_channel,
    topic_group,
    user_group,
)
from messaging.errors import BadRequest


def test_topic() -> None:
    name = parse_channel("topic:general")
    assert name == ChannelName(Kind.TOPIC, topic="general")
    assert name.kind is Kind.TOPIC and name.topic == "general"
    assert not name.auto


@pytest.mark.parametrize("topic", ["a", "0", "a.b-c_d", "9lives", "a" * 64, "x-", "x.", "x_"])
def test_topic_names_allowed(topic: str) -> None:
    assert parse_channel(f"topic:{topic}").topic == topic


def test_dm() -> None:
    name = parse_channel("dm:7:12")
    assert (name.kind, name.user_a, name.user_b) == (Kind.DIRECT, 7, 12)
    assert name.auto


def test_system() -> None:
    name = parse_channel("system:42")
    assert (name.kind, name.user_a) == (Kind.SYSTEM, 42)
    assert name.auto


def test_broadcast() -> None:
    name = parse_channel("broadcast")
    assert name is BROADCAST
    assert name.kind is Kind.BROADCAST and name.auto


@pytest.mark.parametrize(
    "name",
    [
        "dm:2:1",
        "dm:1:1",
        "dm:01:2",
        "dm:1:02",
        "dm:0:1",
        "dm:1",
        "dm:1:",
        "dm::2",
        "dm:1:2:3",
        "dm:-1:2",
        "dm:a:b",
        "dm:1:2 ",
        "dm: 1:2",
        "dm:+1:2",
        "system:x",
        "system:",
        "system:0",
        "system:01",
        "system:-1",
        "system:1.0",
        "system:\u00b2",  # superscript two: str.isdigit() says yes, int() says no
        "system:\u0661",  # Arabic-Indic one: int() reads it as 1
        "dm:1:\u0662",
        "system:" + "1" * 5000,  # over int()'s digit limit
        "dm:1:" + "9" * 20,
        "topic:UPPER",
        "topic:Abc",
        "topic:-x",
        "topic:.x",
        "topic:_x",
        "topic:",
        "topic:a b",
        "topic:a/b",
        "topic:a:b",
        "topic:caf\u00e9",
        "topic:abc\n",
        "topic:" + "a" * 65,
        "topics:a",
        "chat:1",
        "user:1",
        "broadcast:1",
        "Broadcast",
        "broadcast ",
        "general",
        "",
    ],
)
def test_invalid_names(name: str) -> None:
    with pytest.raises(BadRequest) as info:
        parse_channel(name)
    assert info.value.code == "bad_request"


@pytest.mark.parametrize("name", [None, 5, b"topic:a", ["topic:a"], {"topic": "a"}])
def test_non_string(name: Any) -> None:
    with pytest.raises(BadRequest):
        parse_channel(name)


def test_largest_ids_accepted() -> None:
    big = 2**63 - 1
    assert parse_channel(f"dm:1:{big}").user_b == big
    assert parse_channel(f"system:{big}").user_a == big


@pytest.mark.parametrize(
    "wire", ["topic:general", "topic:a.b-c_9", "topic:" + "z" * 64, "dm:1:2", "dm:7:1200", "system:5", "broadcast"]
)
def test_str_round_trip(wire: str) -> None:
    name = parse_channel(wire)
    assert str(name) == wire
    assert parse_channel(str(name)) == name


def test_builders_agree_with_parser() -> None:
    assert dm_channel(12, 7) == dm_channel(7, 12) == parse_channel("dm:7:12")
    assert system_channel(3) == parse_channel("system:3")
    assert topic_channel("news") == parse_channel("topic:news")
    with pytest.raises(BadRequest):
        dm_channel(4, 4)
    with pytest.raises(BadRequest):
        topic_channel("Bad")


def test_group_names() -> None:
    assert parse_channel("topic:news").group == topic_group("news") == "topic.news"
    assert BROADCAST.group == BROADCAST_GROUP == "broadcast"
    assert user_group(7) == "user.7"
    for wire in ("dm:1:2", "system:1"):
        with pytest.raises(ValueError):
            _ = parse_channel(wire).group


def test_topic_groups_are_distinct_per_topic() -> None:
    assert parse_channel("topic:a").group != parse_channel("topic:b").group


def test_members() -> None:
    assert parse_channel("dm:3:9").members() == (3, 9)
    assert parse_channel("system:4").members() == (4,)
    assert parse_channel("topic:a").members() == ()
    assert BROADCAST.members() == ()


def test_channel_names_are_hashable_values() -> None:
    assert {parse_channel("dm:1:2"), dm_channel(2, 1)} == {ChannelName(Kind.DIRECT, user_a=1, user_b=2)}
    with pytest.raises(AttributeError):
        parse_channel("topic:a").topic = "b"  # type: ignore[misc]
