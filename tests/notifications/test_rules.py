"""The pure rules: mentions, levels, presence, quiet hours, backoff, outcomes, addresses."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta

import pytest

from notifications import rules
from notifications.rules import Outcome, QuietHours


def test_mentions_parse() -> None:
    body = "@Ann hi @bob, (@cid) and mail me at dan@example.com; @e.f. and @"
    assert rules.mentions_parse(body) == {"ann", "bob", "cid", "e.f"}
    assert rules.mentions_parse("") == set()
    many = " ".join(f"@u{i}" for i in range(100))
    assert len(rules.mentions_parse(many)) == rules.MAX_MENTIONS


@pytest.mark.parametrize(
    ("kind", "level", "mentioned", "reason"),
    [
        ("direct", "all", False, "direct"),
        ("direct", "mentions", False, None),
        ("direct", "mentions", True, "direct"),
        ("direct", "muted", True, None),
        ("system", "all", False, "system"),
        ("topic", "mentions", True, "mention"),
        ("topic", "mentions", False, None),
        ("topic", "all", False, "all"),
        ("topic", "all", True, "mention"),
        ("topic", "muted", True, None),
        ("broadcast", "all", True, None),
    ],
)
def test_notify_reason(kind: str, level: str, mentioned: bool, reason: str | None) -> None:
    assert rules.notify_reason(kind=kind, level=level, mentioned=mentioned) == reason


def test_level_defaults() -> None:
    assert rules.level_default("topic") == "mentions"
    assert rules.level_default("direct") == rules.level_default("system") == "all"


@pytest.mark.parametrize(
    ("status", "when_away", "push"),
    [
        ("offline", False, True),
        ("away", True, True),
        ("away", False, False),
        ("online", True, False),
        ("dnd", True, False),
    ],
)
def test_presence_wants_push(status: str, when_away: bool, push: bool) -> None:
    assert rules.presence_wants_push(status=status, when_away=when_away) is push


NIGHT = QuietHours(start=time(22, 0), end=time(7, 0), tz="Europe/Berlin")
LUNCH = QuietHours(start=time(12, 0), end=time(13, 0), tz="America/New_York")


@pytest.mark.parametrize(
    ("quiet", "now", "until"),
    [
        (None, datetime(2026, 1, 1, 12, tzinfo=UTC), None),
        # 22:30 Berlin (winter, UTC+1): until 07:00 next day = 06:00 UTC
        (NIGHT, datetime(2026, 1, 1, 21, 30, tzinfo=UTC), datetime(2026, 1, 2, 6, 0, tzinfo=UTC)),
        # 03:00 Berlin: until 07:00 the same day
        (NIGHT, datetime(2026, 1, 2, 2, 0, tzinfo=UTC), datetime(2026, 1, 2, 6, 0, tzinfo=UTC)),
        # 07:00 sharp is outside; 21:59 too
        (NIGHT, datetime(2026, 1, 2, 6, 0, tzinfo=UTC), None),
        (NIGHT, datetime(2026, 1, 2, 20, 59, tzinfo=UTC), None),
        # summer time (UTC+2): 23:00 Berlin is 21:00 UTC, ends 05:00 UTC
        (NIGHT, datetime(2026, 7, 1, 21, 0, tzinfo=UTC), datetime(2026, 7, 2, 5, 0, tzinfo=UTC)),
        # a daytime period in New York (UTC-5 in winter)
        (LUNCH, datetime(2026, 1, 5, 17, 30, tzinfo=UTC), datetime(2026, 1, 5, 18, 0, tzinfo=UTC)),
        (LUNCH, datetime(2026, 1, 5, 18, 0, tzinfo=UTC), None),
    ],
)
def test_quiet_until(quiet: QuietHours | None, now: datetime, until: datetime | None) -> None:
    assert rules.quiet_until(quiet, now=now) == until


def test_quiet_hours_json() -> None:
    assert NIGHT.as_json() == {"start": "22:00", "end": "07:00", "tz": "Europe/Berlin"}


def test_coalesce_window() -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    assert rules.coalesce_open(head_created_at=start, now=start + timedelta(seconds=4.9), window=5)
    assert not rules.coalesce_open(head_created_at=start, now=start + timedelta(seconds=5), window=5)


def test_backoff_full_jitter_and_cap() -> None:
    assert rules.backoff_delay(attempt=1, base=2, cap=300, rand=lambda: 1.0) == 2
    assert rules.backoff_delay(attempt=3, base=2, cap=300, rand=lambda: 1.0) == 8
    assert rules.backoff_delay(attempt=3, base=2, cap=300, rand=lambda: 0.5) == 4
    assert rules.backoff_delay(attempt=3, base=2, cap=300, rand=lambda: 0.0) == 0
    assert rules.backoff_delay(attempt=20, base=2, cap=300, rand=lambda: 1.0) == 300
    # Retry-After is a floor, within RETRY_AFTER_MAX.
    assert rules.backoff_delay(attempt=1, base=2, cap=300, retry_after=30, rand=lambda: 1.0) == 30
    assert rules.backoff_delay(attempt=9, base=2, cap=300, retry_after=30, rand=lambda: 1.0) == 300
    assert rules.backoff_delay(attempt=1, base=2, cap=300, retry_after=10**6, rand=lambda: 0.0) == rules.RETRY_AFTER_MAX
    delays = {rules.backoff_delay(attempt=4, base=1, cap=300) for _ in range(50)}
    assert all(0 <= d <= 8 for d in delays) and len(delays) > 1


def test_retry_after_parse() -> None:
    now = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    assert rules.retry_after_parse("120", now=now) == 120
    assert rules.retry_after_parse("Thu, 01 Jan 2026 12:01:00 GMT", now=now) == 60
    assert rules.retry_after_parse("Thu, 01 Jan 2026 11:00:00 GMT", now=now) == 0
    assert rules.retry_after_parse("Thu, 01 Jan 2026 12:00:30 -0000", now=now) == 30
    assert rules.retry_after_parse(None, now=now) is None
    assert rules.retry_after_parse("soon", now=now) is None
    assert rules.retry_after_parse("-5", now=now) is None


@pytest.mark.parametrize(
    ("kind", "status", "outcome"),
    [
        ("webhook", 200, Outcome.SENT),
        ("webpush", 201, Outcome.SENT),
        ("webhook", None, Outcome.RETRY),
        ("webhook", 408, Outcome.RETRY),
        ("webhook", 429, Outcome.RETRY),
        ("webpush", 500, Outcome.RETRY),
        ("webpush", 503, Outcome.RETRY),
        ("webpush", 404, Outcome.GONE),
        ("webpush", 410, Outcome.GONE),
        ("webhook", 410, Outcome.GONE),
        ("webhook", 404, Outcome.FAILED),
        ("webpush", 400, Outcome.FAILED),
        ("webpush", 413, Outcome.FAILED),
        ("webhook", 301, Outcome.FAILED),
    ],
)
def test_outcome_of(kind: str, status: int | None, outcome: Outcome) -> None:
    assert rules.outcome_of(kind=kind, status=status) is outcome


@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("8.8.8.8", True),
        ("2606:4700:4700::1111", True),
        ("127.0.0.1", False),
        ("10.0.0.1", False),
        ("172.16.5.4", False),
        ("192.168.1.1", False),
        ("169.254.169.254", False),
        ("100.64.0.1", False),
        ("0.0.0.0", False),
        ("224.0.0.1", False),
        ("::1", False),
        ("fe80::1", False),
        ("fc00::1", False),
        ("::ffff:127.0.0.1", False),
        ("::ffff:8.8.8.8", True),
    ],
)
def test_address_public(address: str, public: bool) -> None:
    assert rules.address_public(address) is public


def test_addresses_allowed() -> None:
    assert rules.addresses_allowed(["8.8.8.8", "1.1.1.1"], allow_private=False)
    assert not rules.addresses_allowed(["8.8.8.8", "10.0.0.1"], allow_private=False)
    assert rules.addresses_allowed(["10.0.0.1"], allow_private=True)
    assert not rules.addresses_allowed([], allow_private=True)
