"""Notifications in the admin: read-only views of what was pushed, and devices."""

from __future__ import annotations

from django.contrib import admin

from .models import Attempt, Delivery, Device, Notification, Preference


@admin.register(Preference)
class PreferenceAdmin(admin.ModelAdmin):
    list_display = ("user", "enabled", "when_away", "quiet_start", "quiet_end", "quiet_tz")
    search_fields = ("user__username",)


@admin.register(Device)
class DeviceAdmin(admin.ModelAdmin):
    list_display = ("id", "user", "kind", "endpoint", "enabled", "created_at")
    list_filter = ("kind", "enabled")
    search_fields = ("user__username", "endpoint")
    exclude = ("secret",)


class AttemptInline(admin.TabularInline):
    model = Attempt
    extra = 0
    can_delete = False
    readonly_fields = ("at", "status", "outcome", "error")


@admin.register(Delivery)
class DeliveryAdmin(admin.ModelAdmin):
    list_display = ("id", "notification", "device", "state", "attempts", "next_at", "sent_at")
    list_filter = ("state",)
    inlines = [AttemptInline]


@admin.register(Notification)
class NotificationAdmin(admin.ModelAdmin):
    list_display = ("id", "user", "channel", "reason", "state", "detail", "count", "created_at", "sent_at")
    list_filter = ("state", "reason")
    search_fields = ("user__username", "channel")
    readonly_fields = ("payload",)
