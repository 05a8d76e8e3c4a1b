"""The presence services' database side, on real PostgreSQL."""

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from messaging.wire import iso_utc, user_ref
from presence.models import LastSeen
from presence.services import last_seen_touch, last_seen_touch_many, presence_enter_many
from presence.session import last_seen_touches

pytestmark = pytest.mark.django_db


def test_enter_many_touches_due_last_seen_and_frames_announced_statuses(ann, bob, carol):
    earlier = datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
    LastSeen.objects.create(user=bob, at=earlier)
    frames = presence_enter_many([(ann, True, "online"), (bob, False, "away"), (carol, True, None)])
    stored = dict(LastSeen.objects.values_list("user_id", "at"))
    # ann and carol were due: written now (one upsert); bob's stays.
    assert set(stored) == {ann.pk, bob.pk, carol.pk}
    assert stored[bob.pk] == earlier
    assert stored[ann.pk] > earlier + timedelta(days=1)
    assert frames == [
        {"type": "presence", "user": user_ref(ann), "status": "online", "last_seen": iso_utc(stored[ann.pk])},
        {"type": "presence", "user": user_ref(bob), "status": "away", "last_seen": iso_utc(earlier)},
        None,  # nothing to announce
    ]


def test_enter_many_updates_an_existing_last_seen(ann):
    LastSeen.objects.create(user=ann, at=datetime(2026, 1, 1, tzinfo=UTC))
    [frame] = presence_enter_many([(ann, True, "online")])
    at = LastSeen.objects.get(user=ann).at
    assert at > datetime(2026, 1, 2, tzinfo=UTC)
    assert frame["last_seen"] == iso_utc(at)


def test_enter_many_without_last_seen_announces_none(ann):
    assert presence_enter_many([(ann, False, "online")]) == [
        {"type": "presence", "user": user_ref(ann), "status": "online", "last_seen": None}
    ]


def test_a_user_deleted_before_the_enter_gets_no_frame_and_no_row(ann, bob, carol):
    gone_touched, gone_untouched = bob, carol
    bob_id, carol_id = bob.pk, carol.pk
    gone_touched.delete()
    gone_untouched.delete()
    gone_touched.pk, gone_untouched.pk = bob_id, carol_id  # as the session's user object still has it
    frames = presence_enter_many(
        [(gone_touched, True, "online"), (ann, True, "online"), (gone_untouched, False, "online")]
    )
    assert frames[0] is None and frames[2] is None
    assert frames[1]["user"] == user_ref(ann)
    assert set(LastSeen.objects.values_list("user_id", flat=True)) == {ann.pk}


def test_last_seen_touch_many_marks_existing_users_once_each(ann, bob, carol):
    earlier = datetime(2026, 1, 1, tzinfo=UTC)
    LastSeen.objects.create(user=bob, at=earlier)
    carol_id = carol.pk
    carol.delete()  # a session of a user deleted meanwhile: no row, no error
    assert last_seen_touch_many([ann.pk, bob.pk, carol_id, ann.pk]) == [None] * 4
    stored = dict(LastSeen.objects.values_list("user_id", "at"))
    assert set(stored) == {ann.pk, bob.pk}
    assert stored[bob.pk] > earlier
    assert last_seen_touch_many([]) == []


def test_last_seen_touch_of_one_user(ann):
    last_seen_touch(user_id=ann.pk)
    first = LastSeen.objects.get(user=ann).at
    last_seen_touch(user_id=ann.pk)
    assert LastSeen.objects.get(user=ann).at >= first


@pytest.mark.django_db(transaction=True)
async def test_sessions_marking_last_seen_at_once_share_one_statement(ann, bob, carol):
    batcher = last_seen_touches.for_loop()
    before = batcher.batches
    await asyncio.gather(*(last_seen_touches.submit(u.pk) for u in (ann, bob, carol)))
    assert batcher.batches == before + 1
    assert await LastSeen.objects.filter(user_id__in=[ann.pk, bob.pk, carol.pk]).acount() == 3
