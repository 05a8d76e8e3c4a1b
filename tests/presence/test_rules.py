"""The pure presence and typing rules, with the clock passed in (no sleeps)."""

import pytest

from presence import rules
from presence.rules import AWAY, DND, OFFLINE, ONLINE, TYPING_EXPIRY, TYPING_THROTTLE

NOW = 1_000_000.0
LIVE = NOW + 30  # an expiry still ahead
DEAD = NOW - 1  # an expiry passed


# --- presence_aggregate ----------------------------------------------------------------


def test_no_session_is_offline_even_with_dnd():
    assert rules.presence_aggregate(sessions={}, dnd=False, now=NOW) == OFFLINE
    assert rules.presence_aggregate(sessions={}, dnd=True, now=NOW) == OFFLINE


def test_only_expired_sessions_is_offline():
    sessions = {"a": (ONLINE, DEAD), "b": (AWAY, NOW)}  # expiring exactly now counts as gone
    assert rules.presence_aggregate(sessions=sessions, dnd=False, now=NOW) == OFFLINE
    assert rules.presence_aggregate(sessions=sessions, dnd=True, now=NOW) == OFFLINE


def test_one_live_session_is_online():
    assert rules.presence_aggregate(sessions={"a": (ONLINE, LIVE)}, dnd=False, now=NOW) == ONLINE


def test_dnd_wins_over_any_live_session_status():
    assert rules.presence_aggregate(sessions={"a": (ONLINE, LIVE)}, dnd=True, now=NOW) == DND
    assert rules.presence_aggregate(sessions={"a": (AWAY, LIVE), "b": (AWAY, LIVE)}, dnd=True, now=NOW) == DND


def test_away_only_when_every_live_session_is_away():
    assert rules.presence_aggregate(sessions={"a": (AWAY, LIVE), "b": (AWAY, LIVE)}, dnd=False, now=NOW) == AWAY
    assert rules.presence_aggregate(sessions={"a": (AWAY, LIVE), "b": (ONLINE, LIVE)}, dnd=False, now=NOW) == ONLINE


def test_expired_sessions_do_not_count_in_the_mix():
    # The online session expired: only the away one lives.
    sessions = {"a": (ONLINE, DEAD), "b": (AWAY, LIVE)}
    assert rules.presence_aggregate(sessions=sessions, dnd=False, now=NOW) == AWAY
    # The away one expired: the online one decides.
    sessions = {"a": (ONLINE, LIVE), "b": (AWAY, DEAD)}
    assert rules.presence_aggregate(sessions=sessions, dnd=False, now=NOW) == ONLINE


def test_the_same_sessions_go_offline_as_the_clock_passes_their_expiry():
    sessions = {"a": (ONLINE, NOW + 5), "b": (AWAY, NOW + 10)}
    assert rules.presence_aggregate(sessions=sessions, dnd=False, now=NOW) == ONLINE
    assert rules.presence_aggregate(sessions=sessions, dnd=False, now=NOW + 6) == AWAY
    assert rules.presence_aggregate(sessions=sessions, dnd=False, now=NOW + 10) == OFFLINE


# --- typing_decide -----------------------------------------------------------------------


def test_first_start_is_forwarded_and_schedules_a_stop():
    decision = rules.typing_decide(state="start", now=NOW, last_forwarded=None, pending=False)
    assert decision.forward is True
    assert decision.stop_due == NOW + TYPING_EXPIRY


def test_start_within_the_throttle_is_not_forwarded_but_pushes_the_stop_back():
    decision = rules.typing_decide(state="start", now=NOW + 1.5, last_forwarded=NOW, pending=True)
    assert decision.forward is False
    assert decision.stop_due == NOW + 1.5 + TYPING_EXPIRY


@pytest.mark.parametrize("elapsed", [TYPING_THROTTLE, TYPING_THROTTLE + 0.01, 10.0])
def test_start_after_the_throttle_is_forwarded_again(elapsed):
    decision = rules.typing_decide(state="start", now=NOW + elapsed, last_forwarded=NOW, pending=True)
    assert decision.forward is True
    assert decision.stop_due == NOW + elapsed + TYPING_EXPIRY


def test_throttle_is_two_seconds_and_expiry_six():
    assert (TYPING_THROTTLE, TYPING_EXPIRY) == (2.0, 6.0)
    assert not rules.typing_decide(state="start", now=NOW + 1.99, last_forwarded=NOW, pending=True).forward


def test_stop_is_forwarded_only_when_a_start_is_pending():
    pending = rules.typing_decide(state="stop", now=NOW, last_forwarded=NOW - 1, pending=True)
    assert pending.forward is True and pending.stop_due is None
    idle = rules.typing_decide(state="stop", now=NOW, last_forwarded=None, pending=False)
    assert idle.forward is False and idle.stop_due is None


# --- last_seen_due -----------------------------------------------------------------------


def test_last_seen_first_write_is_due():
    assert rules.last_seen_due(last_written=None, now=NOW) is True


def test_last_seen_at_most_once_a_minute():
    assert rules.last_seen_due(last_written=NOW, now=NOW) is False
    assert rules.last_seen_due(last_written=NOW, now=NOW + 59.9) is False
    assert rules.last_seen_due(last_written=NOW, now=NOW + 60) is True
    assert rules.last_seen_due(last_written=NOW, now=NOW + 5, every=5) is True
