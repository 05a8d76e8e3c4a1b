"""Celery tasks of the messaging app: the hourly retention run (see CELERY_BEAT_SCHEDULE)."""

from __future__ import annotations

import logging

from celery import shared_task
from django.db import OperationalError

from .archival import archive_purge, messages_archive

logger = logging.getLogger(__name__)


# A lost connection or a deadlock with a send is transient; every step is safe
# to repeat, so the whole run is retried with exponential backoff.
@shared_task(autoretry_for=(OperationalError,), retry_backoff=True, max_retries=5)
def archive_messages() -> dict[str, int]:
    """Archive messages past their retention, then purge expired archived ones."""
    report = messages_archive()
    purged = archive_purge()
    summary = {"channels": len(report.channels), "messages": report.messages, "purged": purged}
    logger.info("archival: %(messages)d messages from %(channels)d channels, %(purged)d purged", summary)
    return summary
