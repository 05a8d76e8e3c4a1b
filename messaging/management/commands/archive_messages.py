"""`manage.py archive_messages [--dry-run] [--batch N]`: the retention run, by hand."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from messaging.archival import archive_purge, messages_archive


class Command(BaseCommand):
    help = (
        "Move messages past their retention (CHAT_RETENTION_DAYS or the topic's own) to the archive, "
        "then purge archived messages older than CHAT_ARCHIVE_PURGE_DAYS; the same as the Celery task."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--dry-run", action="store_true", help="report what would change, change nothing")
        parser.add_argument("--batch", type=int, default=None, help="rows per transaction (default CHAT_ARCHIVE_BATCH)")

    def handle(self, *args: Any, **options: Any) -> None:
        dry_run, batch = options["dry_run"], options["batch"]
        if batch is not None and batch < 1:
            raise CommandError("--batch must be at least 1")
        report = messages_archive(batch=batch, dry_run=dry_run)
        verb = "would archive" if dry_run else "archived"
        for channel in report.channels:
            self.stdout.write(f"{channel.name}: {verb} {channel.messages} (up to seq {channel.archived_seq})")
        purged = archive_purge(batch=batch, dry_run=dry_run)
        self.stdout.write(
            f"{verb} {report.messages} messages in {len(report.channels)} channels; "
            f"{'would purge' if dry_run else 'purged'} {purged} archived messages"
            + (" (dry run: nothing changed)" if dry_run else "")
        )
