"""Moderation in the Django admin: topics and members, messages."""

from __future__ import annotations

from django.contrib import admin

from . import delivery, editing
from .models import ArchivedMessage, Channel, ChannelMember, Message, MessageRevision


class ChannelMemberInline(admin.TabularInline):
    model = ChannelMember
    raw_id_fields = ["user"]
    extra = 0


@admin.register(Channel)
class ChannelAdmin(admin.ModelAdmin):
    list_display = ["name", "kind", "is_private", "last_seq", "created_by", "created_at"]
    list_filter = ["kind", "is_private"]
    search_fields = ["name"]
    # archived_seq is moved by archival only; retention_days stays editable here.
    readonly_fields = ["last_seq", "archived_seq", "created_at"]
    raw_id_fields = ["created_by"]
    inlines = [ChannelMemberInline]

    def get_readonly_fields(self, request, obj=None):  # type: ignore[no-untyped-def]
        # The name and kind are fixed once messages hang off them.
        return [*self.readonly_fields, "name", "kind"] if obj else self.readonly_fields


class MessageRevisionInline(admin.TabularInline):
    """Earlier bodies of an edited or deleted message, for moderators."""

    model = MessageRevision
    fields = ["action", "body", "editor", "created_at"]
    readonly_fields = fields
    extra = 0
    can_delete = False

    def has_add_permission(self, request, obj=None) -> bool:  # type: ignore[no-untyped-def]
        return False


def moderate_delete(request, messages) -> int:  # type: ignore[no-untyped-def]
    """Tombstone messages as a delete over the API would, and tell live clients."""
    changed = 0
    for message in messages:
        change = editing.message_delete(user=request.user, message_id=message.pk, moderation=True)
        if change.event is not None:
            delivery.channel_event_publish_on_commit(change.message.channel.name, change.event)
            changed += 1
    return changed


@admin.register(Message)
class MessageAdmin(admin.ModelAdmin):
    list_display = ["id", "channel", "seq", "sender", "short_body", "created_at", "edited_at", "deleted_at"]
    list_filter = ["channel__kind", ("deleted_at", admin.EmptyFieldListFilter), "created_at"]
    search_fields = ["body", "channel__name", "sender__username"]
    raw_id_fields = ["channel", "sender"]
    readonly_fields = ["channel", "seq", "sender", "body", "client_id", "created_at", "edited_at", "deleted_at"]
    list_select_related = ["channel", "sender"]
    date_hierarchy = "created_at"

    @admin.display(description="body")
    def short_body(self, obj: Message) -> str:
        return obj.body if len(obj.body) <= 80 else obj.body[:77] + "..."

    inlines = [MessageRevisionInline]

    def has_add_permission(self, request) -> bool:  # type: ignore[no-untyped-def]
        return False  # messages are sent through the API, which numbers them

    # Deleting keeps a tombstone (id and seq stay) and reaches live clients.
    def delete_model(self, request, obj) -> None:  # type: ignore[no-untyped-def]
        moderate_delete(request, [obj])

    def delete_queryset(self, request, queryset) -> None:  # type: ignore[no-untyped-def]
        moderate_delete(request, queryset)


@admin.register(ArchivedMessage)
class ArchivedMessageAdmin(admin.ModelAdmin):
    """Messages moved out of history by retention: staff read them, nobody changes them."""

    list_display = ["id", "channel", "seq", "sender", "short_body", "created_at", "deleted_at", "archived_at"]
    list_filter = ["channel__kind", ("deleted_at", admin.EmptyFieldListFilter), "created_at"]
    search_fields = ["body", "channel__name", "sender__username"]
    list_select_related = ["channel", "sender"]
    date_hierarchy = "created_at"

    @admin.display(description="body")
    def short_body(self, obj: ArchivedMessage) -> str:
        return obj.body if len(obj.body) <= 80 else obj.body[:77] + "..."

    # Read-only: only archival writes here (and the purge removes rows).
    def has_add_permission(self, request) -> bool:  # type: ignore[no-untyped-def]
        return False

    def has_change_permission(self, request, obj=None) -> bool:  # type: ignore[no-untyped-def]
        return False

    def has_delete_permission(self, request, obj=None) -> bool:  # type: ignore[no-untyped-def]
        return False
