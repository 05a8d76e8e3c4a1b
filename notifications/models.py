"""Preferences, push targets, notifications and their per-device deliveries."""

from __future__ import annotations

import secrets

from django.conf import settings
from django.db import models


class Preference(models.Model):
    """A user's notification preferences; a missing row means the defaults."""

    class QuietMode(models.TextChoices):
        DELIVER = "deliver"  # held until quiet hours end
        DROP = "drop"

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, primary_key=True)
    enabled = models.BooleanField(default=True)
    # Also push when every live session of the user is `away`.
    when_away = models.BooleanField(default=True)
    quiet_start = models.TimeField(null=True, blank=True)
    quiet_end = models.TimeField(null=True, blank=True)
    quiet_tz = models.CharField(max_length=64, blank=True, default="")
    quiet_mode = models.CharField(max_length=8, choices=QuietMode.choices, default=QuietMode.DELIVER)
    # {channel name: "all" | "mentions" | "muted"}; channels not named use the defaults.
    channels = models.JSONField(default=dict, blank=True)

    def __str__(self) -> str:
        return f"preferences of {self.user_id}"


def _secret() -> str:
    return secrets.token_urlsafe(32)


class Device(models.Model):
    """A push target: a browser's Web Push subscription or a webhook URL."""

    class Kind(models.TextChoices):
        WEBPUSH = "webpush"
        WEBHOOK = "webhook"

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="push_devices")
    kind = models.CharField(max_length=16, choices=Kind.choices)
    # Web Push: the subscription endpoint; webhook: the URL.
    endpoint = models.CharField(max_length=2048)
    # Web Push: the subscription's keys {"p256dh", "auth"}.
    keys = models.JSONField(default=dict, blank=True)
    # Webhook: the HMAC-SHA256 key of X-Signature.
    secret = models.CharField(max_length=64, default=_secret, blank=True)
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "endpoint"], name="device_user_endpoint")]

    def __str__(self) -> str:
        return f"{self.kind} {self.pk} of {self.user_id}"


class Notification(models.Model):
    """One per (user, message) that addresses an offline user.

    DMs from one sender that arrive while a notification is still waiting
    fold into it (state `coalesced`, `merged_into` the head); the head is
    pushed once, with the count.
    """

    class State(models.TextChoices):
        QUEUED = "queued"
        SENT = "sent"
        FAILED = "failed"
        CANCELLED = "cancelled"
        SUPPRESSED = "suppressed"
        COALESCED = "coalesced"

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="notifications")
    # Null once the message is archived (or deleted for good).
    message = models.ForeignKey("messaging.Message", null=True, on_delete=models.SET_NULL, related_name="+")
    channel = models.CharField(max_length=80)
    sender = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    reason = models.CharField(max_length=16)
    state = models.CharField(max_length=16, choices=State.choices, default=State.QUEUED)
    # Why it was suppressed (muted, disabled, quiet_hours, no_device) or failed.
    detail = models.CharField(max_length=64, blank=True, default="")
    merged_into = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="merged")
    count = models.PositiveIntegerField(default=1)
    # The pushed `message` frame (the latest one when several were coalesced).
    payload = models.JSONField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    due_at = models.DateTimeField()
    sent_at = models.DateTimeField(null=True, blank=True)
    read_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "message"], name="notification_user_message")]
        indexes = [
            models.Index(fields=["user", "-id"], name="notification_user_id"),
            models.Index(fields=["user", "channel", "sender", "state"], name="notification_coalesce"),
        ]

    def __str__(self) -> str:
        return f"notification {self.pk} to {self.user_id} ({self.state})"


class Delivery(models.Model):
    """A notification's push to one device, with its tries."""

    class State(models.TextChoices):
        PENDING = "pending"
        SENT = "sent"
        FAILED = "failed"
        CANCELLED = "cancelled"

    notification = models.ForeignKey(Notification, on_delete=models.CASCADE, related_name="deliveries")
    # Null once the device is removed (a 404/410 from its endpoint, or the user).
    device = models.ForeignKey(Device, null=True, on_delete=models.SET_NULL, related_name="deliveries")
    state = models.CharField(max_length=16, choices=State.choices, default=State.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    next_at = models.DateTimeField()
    # Set while a try is pushing: another task leaves the delivery alone until then.
    claimed_until = models.DateTimeField(null=True, blank=True)
    sent_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["notification", "device"], name="delivery_notification_device")]

    def __str__(self) -> str:
        return f"delivery {self.pk} ({self.state})"


class Attempt(models.Model):
    """One try of a delivery: the HTTP status (null: no answer) and what it meant."""

    delivery = models.ForeignKey(Delivery, on_delete=models.CASCADE, related_name="log")
    at = models.DateTimeField(auto_now_add=True)
    status = models.PositiveIntegerField(null=True, blank=True)
    outcome = models.CharField(max_length=16)
    error = models.CharField(max_length=255, blank=True, default="")

    def __str__(self) -> str:
        return f"attempt {self.pk}: {self.outcome}"
