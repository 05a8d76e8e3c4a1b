"""realtime.limits and realtime.sessions: pure rules driven by an injected clock."""

from __future__ import annotations

import re

import pytest

from realtime.limits import TokenBucket
from realtime.sessions import DeliveryTracker, session_id_new

# --- TokenBucket --------------------------------------------------------------------------


def drain(bucket: TokenBucket, now: float, count: int) -> list[float]:
    return [bucket.take(now) for _ in range(count)]


def test_burst_of_40_then_limited() -> None:
    bucket = TokenBucket(rate=20.0, burst=40)
    assert drain(bucket, 1000.0, 40) == [0.0] * 40
    retry = bucket.take(1000.0)
    assert retry > 0
    assert retry == pytest.approx(1 / 20)  # one token at 20 a second
    assert bucket.take(1000.0) == pytest.approx(1 / 20)  # a refusal takes nothing


def test_retry_after_shrinks_as_time_passes() -> None:
    bucket = TokenBucket(rate=4.0, burst=2)
    assert drain(bucket, 0.0, 2) == [0.0, 0.0]
    assert bucket.take(0.0) == 0.25
    assert bucket.take(0.125) == 0.125  # half a token saved up, half to go
    assert bucket.take(0.25) == 0.0  # retry_after was right: a token is there now
    assert bucket.take(0.25) == 0.25


def test_waiting_retry_after_is_enough() -> None:
    bucket = TokenBucket(rate=20.0, burst=40)
    now = 50.0
    drain(bucket, now, 40)
    for _ in range(5):
        retry = bucket.take(now)
        assert retry > 0
        now += retry + 1e-9
        assert bucket.take(now) == 0.0


def test_refill_at_rate() -> None:
    bucket = TokenBucket(rate=4.0, burst=40)
    drain(bucket, 0.0, 40)
    assert bucket.take(0.0) > 0
    # One second at 4 a second: exactly 4 more sends.
    assert drain(bucket, 1.0, 4) == [0.0] * 4
    assert bucket.take(1.0) == 0.25


def test_sustained_rate_is_allowed() -> None:
    bucket = TokenBucket(rate=4.0, burst=1)
    assert all(bucket.take(i * 0.25) == 0.0 for i in range(100))
    assert bucket.take(99 * 0.25) > 0


def test_saving_up_stops_at_burst() -> None:
    bucket = TokenBucket(rate=20.0, burst=40)
    assert bucket.take(0.0) == 0.0
    # An hour idle saves up at most `burst` tokens.
    assert drain(bucket, 3600.0, 40) == [0.0] * 40
    assert bucket.take(3600.0) > 0


def test_starts_full_at_its_first_use() -> None:
    # The first take sets the clock: a bucket first used late is still full then.
    bucket = TokenBucket(rate=1.0, burst=3)
    assert drain(bucket, 1e6, 3) == [0.0] * 3
    assert bucket.take(1e6) == 1.0


# --- DeliveryTracker ----------------------------------------------------------------------


def test_no_baseline_sends_anything() -> None:
    tracker = DeliveryTracker()
    assert tracker.classify("topic:a", 1) == ("send", 0)
    assert tracker.classify("topic:a", 57) == ("send", 0)


def test_next_seq_is_sent_older_dropped_gap_filled() -> None:
    tracker = DeliveryTracker()
    tracker.mark("topic:a", 5)
    assert tracker.classify("topic:a", 6) == ("send", 0)
    assert tracker.classify("topic:a", 5) == ("drop", 0)
    assert tracker.classify("topic:a", 2) == ("drop", 0)
    assert tracker.classify("topic:a", 9) == ("fill", 5)
    assert tracker.classify("topic:a", 7) == ("fill", 5)


def test_baseline_zero_after_subscribing_to_an_empty_channel() -> None:
    tracker = DeliveryTracker()
    tracker.mark("topic:new", 0)
    assert tracker.classify("topic:new", 1) == ("send", 0)
    assert tracker.classify("topic:new", 3) == ("fill", 0)


def test_mark_only_moves_forward() -> None:
    tracker = DeliveryTracker()
    tracker.mark("dm:1:2", 10)
    tracker.mark("dm:1:2", 4)
    assert tracker.last_sent["dm:1:2"] == 10
    assert tracker.classify("dm:1:2", 10) == ("drop", 0)
    tracker.mark("dm:1:2", 11)
    assert tracker.classify("dm:1:2", 12) == ("send", 0)


def test_channels_are_independent() -> None:
    tracker = DeliveryTracker()
    tracker.mark("topic:a", 3)
    tracker.mark("topic:b", 30)
    assert tracker.classify("topic:a", 4) == ("send", 0)
    assert tracker.classify("topic:b", 4) == ("drop", 0)
    assert tracker.classify("topic:c", 4) == ("send", 0)


def test_forget_drops_the_baseline() -> None:
    tracker = DeliveryTracker()
    tracker.mark("topic:a", 8)
    tracker.mark("topic:b", 2)
    tracker.forget("topic:a")
    assert "topic:a" not in tracker.last_sent
    assert tracker.classify("topic:a", 3) == ("send", 0)
    assert tracker.classify("topic:b", 2) == ("drop", 0)
    tracker.forget("topic:never")  # forgetting an unknown channel is harmless
    assert tracker.last_sent == {"topic:b": 2}


def test_trackers_do_not_share_state() -> None:
    one, two = DeliveryTracker(), DeliveryTracker()
    one.mark("topic:a", 5)
    assert two.classify("topic:a", 2) == ("send", 0)


# --- session ids --------------------------------------------------------------------------


def test_session_ids() -> None:
    ids = {session_id_new() for _ in range(100)}
    assert len(ids) == 100
    assert all(re.fullmatch(r"s_[0-9a-f]{32}", sid) for sid in ids)
