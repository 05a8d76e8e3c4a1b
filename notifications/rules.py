"""Notification rules as pure functions of state and time (no I/O).

Who is notified for a message, what a channel's level allows, mention
parsing, quiet hours in the user's time zone, the coalescing window, the
outcome of a push answer, and the retry delay (exponential backoff with full
jitter, or the endpoint's Retry-After).
"""

from __future__ import annotations

import ipaddress
import random
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from email.utils import parsedate_to_datetime
from enum import StrEnum
from zoneinfo import ZoneInfo

ALL, MENTIONS, MUTED = "all", "mentions", "muted"
LEVELS = (ALL, MENTIONS, MUTED)

# Why a user is notified.
DIRECT, MENTION, SYSTEM, TOPIC_ALL = "direct", "mention", "system", "all"

# The longest Retry-After honoured; a longer one is treated as this.
RETRY_AFTER_MAX = 3600.0

# `@name` preceded by start, whitespace or an opening bracket; Django usernames
# are letters, digits and @ . + - _ (a trailing dot is punctuation).
_MENTION_RE = re.compile(r"(?:^|(?<=[\s(\[{<\"']))@([\w.@+-]{1,150})")
MAX_MENTIONS = 50


def mentions_parse(body: str) -> set[str]:
    """The usernames mentioned as `@name`, lower-cased (at most MAX_MENTIONS)."""
    names: set[str] = set()
    for match in _MENTION_RE.finditer(body or ""):
        name = match.group(1).rstrip(".")
        if name:
            names.add(name.lower())
        if len(names) >= MAX_MENTIONS:
            break
    return names


def level_default(kind: str) -> str:
    """DMs and notices notify for every message; topics only for mentions."""
    return MENTIONS if kind == "topic" else ALL


def notify_reason(*, kind: str, level: str, mentioned: bool) -> str | None:
    """Why a message reaches this user under the channel's level, or None.

    dm: and system: notify at `all`; at `mentions` only when the message
    names the user; `muted` never. A topic notifies a mentioned user unless
    muted, and everyone who chose `all` for it.
    """
    if level == MUTED:
        return None
    if kind == "direct" or kind == "system":
        if level == ALL or mentioned:
            return DIRECT if kind == "direct" else SYSTEM
        return None
    if kind == "topic":
        if mentioned:
            return MENTION
        return TOPIC_ALL if level == ALL else None
    return None


def presence_wants_push(*, status: str, when_away: bool) -> bool:
    """Offline users get pushes; away ones if they asked for it; online and dnd
    users have a live session that shows the message itself."""
    if status == "offline":
        return True
    return status == "away" and when_away


@dataclass(frozen=True, slots=True)
class QuietHours:
    start: time
    end: time
    tz: str

    def as_json(self) -> dict[str, str]:
        return {"start": self.start.strftime("%H:%M"), "end": self.end.strftime("%H:%M"), "tz": self.tz}


def quiet_until(quiet: QuietHours | None, *, now: datetime) -> datetime | None:
    """When the quiet period containing `now` ends (UTC), or None outside one.

    Times are wall-clock times in the user's zone; a period whose start is
    after its end runs over midnight (22:00 to 07:00).
    """
    if quiet is None:
        return None
    local = now.astimezone(ZoneInfo(quiet.tz))
    clock = local.time().replace(tzinfo=None)
    if quiet.start < quiet.end:
        inside = quiet.start <= clock < quiet.end
        end_day = local.date()
    else:
        inside = clock >= quiet.start or clock < quiet.end
        end_day = local.date() + timedelta(days=1) if clock >= quiet.start else local.date()
    if not inside:
        return None
    end = datetime.combine(end_day, quiet.end, tzinfo=ZoneInfo(quiet.tz))
    return end.astimezone(UTC)


def coalesce_open(*, head_created_at: datetime, now: datetime, window: float) -> bool:
    """A new message folds into a pending notification created less than
    `window` seconds ago."""
    return now - head_created_at < timedelta(seconds=window)


class Outcome(StrEnum):
    SENT = "sent"
    RETRY = "retry"  # transient: try again later
    GONE = "gone"  # the target no longer exists: remove the device
    FAILED = "failed"  # permanent: do not try again


def outcome_of(*, kind: str, status: int | None) -> Outcome:
    """What a push answer means; `status` None is a timeout or a connection error."""
    if status is None or status == 408 or status == 429 or status >= 500:
        return Outcome.RETRY
    if 200 <= status < 300:
        return Outcome.SENT
    if status == 410 or (kind == "webpush" and status == 404):
        return Outcome.GONE
    return Outcome.FAILED


def retry_after_parse(value: str | None, *, now: datetime) -> float | None:
    """Retry-After as seconds: delta-seconds or an HTTP date; None if absent or bad."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())


def backoff_delay(
    *,
    attempt: int,
    base: float,
    cap: float,
    retry_after: float | None = None,
    rand: Callable[[], float] = random.random,
) -> float:
    """Seconds before try number `attempt + 1`, after `attempt` failures.

    Full jitter: uniform in [0, min(cap, base * 2**(attempt - 1))]. A
    Retry-After from the endpoint is a floor (at most RETRY_AFTER_MAX).
    """
    ceiling = min(cap, base * 2 ** max(0, attempt - 1))
    delay = rand() * ceiling
    if retry_after is not None:
        delay = max(delay, min(retry_after, RETRY_AFTER_MAX))
    return delay


def address_public(address: str) -> bool:
    """An address a push may go to without WEBHOOK_ALLOW_PRIVATE: not
    loopback, private, link-local, multicast, reserved or unspecified."""
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return not (
        ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
        or (isinstance(ip, ipaddress.IPv4Address) and ip in ipaddress.IPv4Network("100.64.0.0/10"))
    )


def addresses_allowed(addresses: Iterable[str], *, allow_private: bool) -> bool:
    """Every address a host name resolves to must be public (none: refused)."""
    found = list(addresses)
    return bool(found) and (allow_private or all(address_public(a) for a in found))
