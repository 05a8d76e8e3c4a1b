"""Moderation hooks: deactivating a user closes their live sessions (4403)."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.db.models.signals import post_save, pre_save
from django.dispatch import receiver

from . import delivery

CLOSE_FORBIDDEN = 4403


@receiver(pre_save, sender=get_user_model())
def _remember_active(sender: Any, instance: Any, **kwargs: Any) -> None:
    if instance.pk is None:
        instance._was_active = False
        return
    instance._was_active = sender.objects.filter(pk=instance.pk, is_active=True).exists()


@receiver(post_save, sender=get_user_model())
def _close_sessions_of_deactivated(sender: Any, instance: Any, **kwargs: Any) -> None:
    if getattr(instance, "_was_active", False) and not instance.is_active:
        delivery.sessions_close_on_commit(user_id=instance.pk, code=CLOSE_FORBIDDEN)
