"""Retention: moving old messages to the archive table, and purging the archive.

`messages_archive` moves, per channel, the oldest messages past the channel's
retention from `Message` to `ArchivedMessage` (same id and seq), in batches of
`HISTORY["ARCHIVE_BATCH"]` rows, each batch in its own short transaction, and
advances `Channel.archived_seq`. Only a prefix in seq order is ever moved (it
stops at the first message still too young), so `archived_seq` keeps meaning
"every message with seq <= it is out of the hot table".

Why it is safe to run twice, after a crash, and beside live sends:

- The archive insert is an upsert on the id, so rows copied by a run that died
  before its delete are overwritten with the hot row (the truth) and the
  delete then completes the move.
- A batch locks the hot rows it moves (SELECT ... FOR UPDATE) so that an edit
  racing the move is either in the copy or waits and then finds no row.
- Sends lock the channel row to take a seq; archival takes that lock only for
  the one-row `archived_seq` update at the end of each batch. Seqs commit in
  order under that lock, so a send still in flight always has a seq above
  every row a batch can see, and new messages are never old enough anyway.
- `archived_seq` is only ever raised (a conditional UPDATE, fine on SQLite).

Edit history: `MessageRevision` rows point at the hot `Message` with CASCADE and
there is no archive table for them, so archiving a message drops its revisions;
the archived copy keeps the final body, `edited_at` and `deleted_at`. Retention
is a decision to stop keeping old data, and that includes its edit history.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from itertools import takewhile

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from .models import ArchivedMessage, Channel, Message

# Copied as they are; `archived_at` is set once, by the first insert.
_COPIED = ["channel_id", "seq", "sender_id", "body", "client_id", "created_at", "edited_at", "deleted_at"]
_UPDATED = ["channel", "seq", "sender", "body", "client_id", "created_at", "edited_at", "deleted_at"]


@dataclass(frozen=True, slots=True)
class ChannelArchived:
    """What one channel had moved (or would have, in a dry run)."""

    name: str
    messages: int
    archived_seq: int


@dataclass(frozen=True, slots=True)
class ArchiveReport:
    dry_run: bool
    channels: list[ChannelArchived] = field(default_factory=list)

    @property
    def messages(self) -> int:
        return sum(c.messages for c in self.channels)


def retention_effective(*, channel_days: int | None) -> timedelta | None:
    """The channel's own retention, else the global one; None keeps forever."""
    days = channel_days if channel_days is not None else settings.HISTORY["RETENTION_DAYS"]
    return None if days is None else timedelta(days=days)


def _batch_size(batch: int | None) -> int:
    size = batch if batch is not None else settings.HISTORY["ARCHIVE_BATCH"]
    if size < 1:
        raise ValueError("the archive batch must be at least 1 row")
    return size


def messages_archive(*, now: datetime | None = None, batch: int | None = None, dry_run: bool = False) -> ArchiveReport:
    """Move messages older than their channel's retention into the archive."""
    now = now or timezone.now()
    size = _batch_size(batch)
    report = ArchiveReport(dry_run=dry_run)
    channels = Channel.objects.filter(last_seq__gt=F("archived_seq"))
    if settings.HISTORY["RETENTION_DAYS"] is None:
        channels = channels.filter(retention_days__isnull=False)
    for channel_id, name, days in channels.order_by("pk").values_list("pk", "name", "retention_days"):
        retention = retention_effective(channel_days=days)
        if retention is None:
            continue
        moved, upto = _channel_archive(channel_id=channel_id, cutoff=now - retention, size=size, dry_run=dry_run)
        if moved:
            report.channels.append(ChannelArchived(name=name, messages=moved, archived_seq=upto))
    return report


def _channel_archive(*, channel_id: int, cutoff: datetime, size: int, dry_run: bool) -> tuple[int, int]:
    """Archive one channel's old prefix, batch by batch; (rows, highest seq)."""
    moved, after = 0, 0
    while True:
        with transaction.atomic():
            hot = Message.objects.filter(channel_id=channel_id, seq__gt=after).order_by("seq")
            if not dry_run:
                hot = hot.select_for_update()
            rows = list(hot[:size])
            old = list(takewhile(lambda m: m.created_at < cutoff, rows))
            if old and not dry_run:
                _batch_move(channel_id=channel_id, rows=old)
        if not old:
            return moved, after
        moved += len(old)
        after = old[-1].seq
        if len(old) < size:  # a young message stopped it, or the channel ran out
            return moved, after


def _batch_move(*, channel_id: int, rows: list[Message]) -> None:
    """Copy, delete, advance archived_seq; the caller holds the transaction."""
    ArchivedMessage.objects.bulk_create(
        [ArchivedMessage(id=m.pk, **{f: getattr(m, f) for f in _COPIED}) for m in rows],
        update_conflicts=True,
        unique_fields=["id"],
        update_fields=_UPDATED,
    )
    # Django's collector also removes the rows' MessageRevisions (see the module doc).
    Message.objects.filter(pk__in=[m.pk for m in rows]).delete()
    top = rows[-1].seq
    # Last, so the channel row (which sends lock for their seq) is held briefly.
    Channel.objects.filter(pk=channel_id, archived_seq__lt=top).update(archived_seq=top)


def archive_purge(*, now: datetime | None = None, batch: int | None = None, dry_run: bool = False) -> int:
    """Delete archived messages sent more than ARCHIVE_PURGE_DAYS ago; the count.

    Each batch is its own statement (and transaction); None keeps them forever.
    """
    days = settings.HISTORY["ARCHIVE_PURGE_DAYS"]
    if days is None:
        return 0
    expired = ArchivedMessage.objects.filter(created_at__lt=(now or timezone.now()) - timedelta(days=days))
    if dry_run:
        return expired.count()
    size, purged = _batch_size(batch), 0
    while ids := list(expired.order_by("pk").values_list("pk", flat=True)[:size]):
        deleted, _ = ArchivedMessage.objects.filter(pk__in=ids).delete()
        purged += deleted
    return purged
