"""Presence and typing rules as pure functions of state and time (no I/O)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

ONLINE, AWAY, DND, OFFLINE = "online", "away", "dnd", "offline"

TYPING_THROTTLE = 2.0  # seconds between forwarded `start`s per user and channel
TYPING_EXPIRY = 6.0  # a `start` not renewed within this is followed by a `stop`


def presence_aggregate(*, sessions: Mapping[str, tuple[str, float]], dnd: bool, now: float) -> str:
    """A user's status from their sessions' (status, expires_at) pairs.

    offline: no live session; dnd: the user said so and has a live session;
    away: every live session said away; else online.
    """
    live = [status for status, expires_at in sessions.values() if expires_at > now]
    if not live:
        return OFFLINE
    if dnd:
        return DND
    if all(status == AWAY for status in live):
        return AWAY
    return ONLINE


@dataclass(frozen=True, slots=True)
class TypingDecision:
    forward: bool  # send this frame to the channel's other members
    stop_due: float | None  # when the server sends a `stop` unless renewed; None: nothing pending


def typing_decide(*, state: str, now: float, last_forwarded: float | None, pending: bool) -> TypingDecision:
    """What to do with a `typing` frame.

    `start`: forwarded at most once per TYPING_THROTTLE per user and channel;
    every `start` (forwarded or not) pushes the automatic `stop` back to
    now + TYPING_EXPIRY. `stop`: forwarded only if a `start` is pending.
    """
    if state == "start":
        forward = last_forwarded is None or now - last_forwarded >= TYPING_THROTTLE
        return TypingDecision(forward=forward, stop_due=now + TYPING_EXPIRY)
    return TypingDecision(forward=pending, stop_due=None)


def last_seen_due(*, last_written: float | None, now: float, every: float = 60.0) -> bool:
    """Activity updates last_seen at most once a minute per user."""
    return last_written is None or now - last_written >= every
