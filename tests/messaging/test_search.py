"""messaging.search: ranking, the read-permission filter, snippets, filters and the substring fallback.

The suite runs on PostgreSQL, so `message_search` takes the full-text path by
default; `fulltext=False` forces the substring fallback of the SQLite
embedded default (its `icontains` works on PostgreSQL too).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.db import connection
from django.utils import timezone

from messaging import services
from messaging.channels import BROADCAST, dm_channel, system_channel, topic_channel
from messaging.errors import BadRequest, Forbidden, NotFound
from messaging.models import Message
from messaging.search import SNIPPET_CHARS, message_search, messages_searchable, substring_snippet

pytestmark = pytest.mark.django_db

BOTH = pytest.mark.parametrize("fulltext", [True, False], ids=["fulltext", "substring"])


@pytest.fixture(autouse=True)
def _cheap_passwords(settings: Any) -> None:
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def cat(make_user: Any) -> Any:
    return make_user("cat")


def say(user: Any, topic: str, body: str) -> Message:
    return services.message_send(sender=user, name=topic_channel(topic), body=body)[0]


def ids(page: Any) -> list[int]:
    return [hit.message.pk for hit in page.results]


def channels(page: Any) -> set[str]:
    return {hit.message.channel.name for hit in page.results}


def test_suite_runs_on_postgresql() -> None:
    """The full-text tests below mean nothing on another database."""
    assert connection.vendor == "postgresql"


# --- ranking and matching (PostgreSQL) ------------------------------------------------


def test_more_matches_and_shorter_bodies_rank_first(ann: Any) -> None:
    # Same length, twice the matches; then same matches, a much longer body.
    twice = say(ann, "ops", "deploy now, deploy often")
    once_short = say(ann, "ops", "deploy now, ship often")
    filler = " ".join(f"word{i}" for i in range(60))
    once_long = say(ann, "ops", f"{filler} deploy {filler}")
    page = message_search(user=ann, q="deploy")
    # Newest first would be the reverse: the order is relevance.
    assert ids(page) == [twice.pk, once_short.pk, once_long.pk]
    ranks = [hit.rank for hit in page.results]
    assert ranks[0] > ranks[1] > ranks[2] > 0


def test_stemming_finds_other_forms(ann: Any) -> None:
    meeting = say(ann, "ops", "the meeting is at noon")
    meetings = say(ann, "ops", "two meetings today")
    say(ann, "ops", "lunch at noon")
    assert set(ids(message_search(user=ann, q="meetings"))) == {meeting.pk, meetings.pk}
    assert set(ids(message_search(user=ann, q="Meeting"))) == {meeting.pk, meetings.pk}


def test_web_search_syntax(ann: Any) -> None:
    both = say(ann, "food", "apple and banana")
    apple = say(ann, "food", "an apple a day")
    phrase = say(ann, "food", "banana apple split")
    assert ids(message_search(user=ann, q="apple -banana")) == [apple.pk]
    assert ids(message_search(user=ann, q='"banana apple"')) == [phrase.pk]
    assert set(ids(message_search(user=ann, q="apple or banana"))) == {both.pk, apple.pk, phrase.pk}


def test_stop_words_only_and_no_match_give_an_empty_page(ann: Any) -> None:
    say(ann, "ops", "the cat is on the mat")
    for q in ("the", "zeppelin", "!!!"):
        page = message_search(user=ann, q=q)
        assert page.results == [] and page.has_more is False


def test_a_sent_message_is_found_at_once_and_an_edit_reindexes(ann: Any) -> None:
    message = say(ann, "ops", "rollout starts")
    assert ids(message_search(user=ann, q="rollout")) == [message.pk]
    Message.objects.filter(pk=message.pk).update(body="rollback starts", edited_at=timezone.now())
    assert ids(message_search(user=ann, q="rollout")) == []
    assert ids(message_search(user=ann, q="rollback")) == [message.pk]


# --- who sees what ----------------------------------------------------------------------


@pytest.fixture
def world(ann: Any, bob: Any, cat: Any, make_user: Any) -> dict[str, Message]:
    """The word "pumpkin" in every kind of channel; ann may read only some of them."""
    staff = make_user("boss", is_staff=True)
    services.topic_create(user=bob, name="hidden", private=True)
    services.topic_member_add(by=bob, name="hidden", user_ref="cat")
    services.topic_create(user=bob, name="club", private=True)
    services.topic_member_add(by=bob, name="club", user_ref="ann")
    return {
        "topic:open": say(bob, "open", "pumpkin soup in public"),
        "topic:hidden": say(bob, "hidden", "pumpkin plans nobody else may read"),
        "topic:club": say(bob, "club", "pumpkin club meeting"),
        "dm:ann-bob": services.direct_send(sender=bob, to=ann.pk, body="pumpkin for you")[0],
        "dm:bob-cat": services.direct_send(sender=bob, to=cat.pk, body="pumpkin between us")[0],
        "system:ann": services.system_notice_send(user=ann, body="pumpkin notice for ann"),
        "system:bob": services.system_notice_send(user=bob, body="pumpkin notice for bob"),
        "broadcast": services.broadcast_send(sender=staff, body="pumpkin for everyone")[0],
    }


@BOTH
def test_a_user_finds_only_what_they_may_read(world: dict[str, Message], ann: Any, bob: Any, fulltext: bool) -> None:
    page = message_search(user=ann, q="pumpkin", limit=100, fulltext=fulltext)
    expected = {"topic:open", "topic:club", "dm:ann-bob", "system:ann", "broadcast"}
    assert set(ids(page)) == {world[key].pk for key in expected}
    names = channels(page)
    assert "topic:hidden" not in names and f"system:{bob.pk}" not in names
    assert not any(name.startswith("dm:") and str(ann.pk) not in name.split(":")[1:] for name in names)


@BOTH
def test_private_words_never_leak_to_non_members(world: dict[str, Message], ann: Any, fulltext: bool) -> None:
    for q in ("plans", "between", "bob", "nobody"):
        assert message_search(user=ann, q=q, fulltext=fulltext).results == [], q


def test_members_and_pair_partners_do_find_them(world: dict[str, Message], cat: Any) -> None:
    found = set(ids(message_search(user=cat, q="pumpkin", limit=100)))
    assert world["topic:hidden"].pk in found and world["dm:bob-cat"].pk in found
    assert world["topic:club"].pk not in found and world["dm:ann-bob"].pk not in found


def test_leaving_a_private_topic_hides_it(world: dict[str, Message], ann: Any) -> None:
    assert world["topic:club"].pk in ids(message_search(user=ann, q="club"))
    services.topic_member_remove(by=ann, name="club", user_ref="ann")
    assert ids(message_search(user=ann, q="club")) == []


def test_readable_scope_is_one_query(world: dict[str, Message], ann: Any, django_assert_num_queries: Any) -> None:
    with django_assert_num_queries(1):
        rows = list(messages_searchable(user=ann))
        names = {row.channel.name for row in rows}
        senders = {row.sender.username if row.sender else None for row in rows}
    assert {row.pk for row in rows} == {
        world[k].pk for k in ("topic:open", "topic:club", "dm:ann-bob", "system:ann", "broadcast")
    }
    assert "topic:hidden" not in names and senders == {"bob", "boss", None}


# --- deleted messages ---------------------------------------------------------------------


@BOTH
@pytest.mark.parametrize("blank_body", [True, False], ids=["blanked", "body-kept"])
def test_deleted_messages_are_not_found(ann: Any, fulltext: bool, blank_body: bool) -> None:
    kept = say(ann, "ops", "quarterly report draft")
    gone = say(ann, "ops", "quarterly report final")
    update: dict[str, Any] = {"deleted_at": timezone.now()}
    if blank_body:  # as the delete service stores it
        update["body"] = ""
    Message.objects.filter(pk=gone.pk).update(**update)
    assert ids(message_search(user=ann, q="quarterly report", fulltext=fulltext)) == [kept.pk]


# --- snippets -------------------------------------------------------------------------------


@BOTH
def test_snippet_marks_matches_and_escapes_html(ann: Any, fulltext: bool) -> None:
    say(ann, "web", 'look: <script>alert(1)</script> pumpkin & <b>bold</b> "quoted"')
    [hit] = message_search(user=ann, q="pumpkin", fulltext=fulltext).results
    assert "<mark>pumpkin</mark>" in hit.snippet
    assert "&lt;script&gt;" in hit.snippet and "<script>" not in hit.snippet
    assert "&lt;/script&gt;" in hit.snippet and "&lt;b&gt;bold&lt;/b&gt;" in hit.snippet
    assert "&amp;" in hit.snippet and '"quoted' in hit.snippet  # quotes need no escaping in text
    assert hit.snippet.replace("<mark>", "").replace("</mark>", "").count("<") == 0
    # The frame keeps the body as sent; only the snippet is markup.
    assert hit.message.body.startswith("look: <script>")


def test_snippet_markers_cannot_be_forged_by_the_body(ann: Any) -> None:
    say(ann, "web", "see \x02forged\x03 marks near the pumpkin")
    [hit] = message_search(user=ann, q="pumpkin").results
    assert hit.snippet.count("<mark>") == hit.snippet.count("</mark>") == 1
    assert "<mark>pumpkin</mark>" in hit.snippet and "forged" in hit.snippet


def test_entities_in_a_body_are_escaped_too(ann: Any) -> None:
    say(ann, "web", "write &lt; for the pumpkin sign")
    [hit] = message_search(user=ann, q="pumpkin").results
    assert "&amp;lt;" in hit.snippet and "<mark>pumpkin</mark>" in hit.snippet


def test_fulltext_snippet_is_a_fragment_of_a_long_body(ann: Any) -> None:
    filler = " ".join(f"word{i}" for i in range(200))
    say(ann, "ops", f"{filler} the pumpkin is here {filler}")
    [hit] = message_search(user=ann, q="pumpkin").results
    assert "<mark>pumpkin</mark>" in hit.snippet
    assert len(hit.snippet.split()) <= 30


# --- filters ----------------------------------------------------------------------------------


@BOTH
def test_channel_filter(world: dict[str, Message], ann: Any, bob: Any, fulltext: bool) -> None:
    page = message_search(user=ann, q="pumpkin", channel=topic_channel("open"), fulltext=fulltext)
    assert ids(page) == [world["topic:open"].pk]
    page = message_search(user=ann, q="pumpkin", channel=dm_channel(ann.pk, bob.pk), fulltext=fulltext)
    assert ids(page) == [world["dm:ann-bob"].pk]
    page = message_search(user=ann, q="pumpkin", channel=BROADCAST, fulltext=fulltext)
    assert ids(page) == [world["broadcast"].pk]


def test_channel_filter_refuses_what_the_user_may_not_read(
    world: dict[str, Message], ann: Any, bob: Any, cat: Any
) -> None:
    for name in (topic_channel("hidden"), dm_channel(bob.pk, cat.pk), system_channel(bob.pk)):
        with pytest.raises(Forbidden):
            message_search(user=ann, q="pumpkin", channel=name)
    with pytest.raises(NotFound):
        message_search(user=ann, q="pumpkin", channel=topic_channel("nowhere"))


def test_channel_filter_on_a_dm_without_messages_is_empty(world: dict[str, Message], ann: Any, cat: Any) -> None:
    page = message_search(user=ann, q="pumpkin", channel=dm_channel(ann.pk, cat.pk))
    assert page.results == [] and page.has_more is False


@BOTH
def test_sender_filter_by_id_or_username(ann: Any, bob: Any, fulltext: bool) -> None:
    from_ann = say(ann, "ops", "status green")
    from_bob = say(bob, "ops", "status red")
    assert ids(message_search(user=ann, q="status", sender="bob", fulltext=fulltext)) == [from_bob.pk]
    assert ids(message_search(user=ann, q="status", sender=ann.pk, fulltext=fulltext)) == [from_ann.pk]
    with pytest.raises(NotFound):
        message_search(user=ann, q="status", sender="nobody", fulltext=fulltext)


@BOTH
def test_before_and_after_bound_the_time(ann: Any, fulltext: bool) -> None:
    now = timezone.now()
    old, mid, new = (say(ann, "ops", f"backup {label}") for label in ("old", "mid", "new"))
    for message, days in ((old, 3), (mid, 2), (new, 1)):
        Message.objects.filter(pk=message.pk).update(created_at=now - timedelta(days=days))
    assert ids(message_search(user=ann, q="backup", before=now - timedelta(days=2), fulltext=fulltext)) == [old.pk]
    assert ids(message_search(user=ann, q="backup", after=now - timedelta(days=2), fulltext=fulltext)) == [new.pk]
    page = message_search(
        user=ann, q="backup", after=now - timedelta(days=4), before=now - timedelta(days=1, hours=12), fulltext=fulltext
    )
    assert set(ids(page)) == {old.pk, mid.pk}


# --- pagination ---------------------------------------------------------------------------


@BOTH
def test_offset_pages_cover_every_match_once(ann: Any, fulltext: bool) -> None:
    # Equal bodies tie on rank: the order must still be total and stable.
    made = [say(ann, "ops", "incident update").pk for _ in range(5)]
    say(ann, "ops", "unrelated")
    pages = [message_search(user=ann, q="incident", offset=o, limit=2, fulltext=fulltext) for o in (0, 2, 4)]
    assert [p.has_more for p in pages] == [True, True, False]
    seen = [pk for page in pages for pk in ids(page)]
    assert sorted(seen) == sorted(made) and len(seen) == 5
    assert seen == sorted(made, reverse=True)  # equal rank: newest first
    assert message_search(user=ann, q="incident", offset=5, limit=2, fulltext=fulltext).results == []


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"q": ""}, BadRequest),
        ({"q": "   \t "}, BadRequest),
        ({"q": "x" * 257}, BadRequest),
        ({"q": "nul\x00byte"}, BadRequest),
        ({"q": "ok", "limit": 0}, BadRequest),
        ({"q": "ok", "limit": 101}, BadRequest),
        ({"q": "ok", "offset": -1}, BadRequest),
    ],
)
def test_bad_arguments(ann: Any, kwargs: dict[str, Any], error: type[Exception]) -> None:
    with pytest.raises(error):
        message_search(user=ann, **kwargs)


def test_longest_query_and_limit_bounds_are_accepted(ann: Any) -> None:
    message = say(ann, "ops", "boundary")
    assert message_search(user=ann, q="x" * 256, limit=100).results == []
    assert ids(message_search(user=ann, q="boundary" + " " * 248, limit=1)) == [message.pk]


# --- the substring fallback --------------------------------------------------------------


def test_fallback_needs_every_term_case_insensitively(ann: Any) -> None:
    both = say(ann, "ops", "Server DOWN in eu-west")
    say(ann, "ops", "server up")
    later = say(ann, "ops", "down, the server is")
    page = message_search(user=ann, q="server  down", fulltext=False)
    assert ids(page) == [later.pk, both.pk]  # newest first
    assert all(hit.rank == 0.0 for hit in page.results)
    assert "<mark>Server</mark> <mark>DOWN</mark>" in page.results[1].snippet


def test_fallback_matches_substrings_and_escapes_like_wildcards(ann: Any) -> None:
    percent = say(ann, "ops", "cpu at 100% now")
    say(ann, "ops", "cpu at 1000 now")
    assert ids(message_search(user=ann, q="100%", fulltext=False)) == [percent.pk]
    assert ids(message_search(user=ann, q="cpu_at", fulltext=False)) == []  # "_" is no wildcard either


def test_substring_snippet_window() -> None:
    body = "a" * 300 + " needle " + "b" * 300
    snippet = substring_snippet(body, ["NEEDLE"])
    assert "<mark>needle</mark>" in snippet
    assert snippet.startswith("…") and snippet.endswith("…")
    assert len(snippet) <= SNIPPET_CHARS + len("<mark></mark>") + 2
    text = snippet.replace("<mark>", "").replace("</mark>", "").strip("…")
    assert text in body and len(text) == SNIPPET_CHARS


def test_substring_snippet_short_body_and_every_term() -> None:
    assert substring_snippet("Fish & chips & fish", ["fish", "&"]) == (
        "<mark>Fish</mark> <mark>&amp;</mark> chips <mark>&amp;</mark> <mark>fish</mark>"
    )
    assert substring_snippet("<i>x</i>", ["x"]) == "&lt;i&gt;<mark>x</mark>&lt;/i&gt;"
    assert substring_snippet("no match here", ["zzz"]) == "no match here"


def test_substring_snippet_never_cuts_a_match() -> None:
    body = "x" * 10 + "needle" + "y" * 300
    assert substring_snippet(body, ["needle"], width=4) == "…x<mark>needle</mark>…"
    tail = "z" * 300 + "needle"
    assert substring_snippet(tail, ["needle"], width=40).endswith("<mark>needle</mark>")
