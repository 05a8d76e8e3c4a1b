"""Moderation in the Django admin: topics and members, messages."""

from __future__ import annotations

from django.contrib import admin

from .models import Channel, ChannelMember, Message


class ChannelMemberInline(admin.TabularInline):
    model = ChannelMember
    raw_id_fields = ["user"]
    extra = 0


@admin.register(Channel)
class ChannelAdmin(admin.ModelAdmin):
    list_display = ["name", "kind", "is_private", "last_seq", "created_by", "created_at"]
    list_filter = ["kind", "is_private"]
    search_fields = ["name"]
    readonly_fields = ["last_seq", "created_at"]
    raw_id_fields = ["created_by"]
    inlines = [ChannelMemberInline]

    def get_readonly_fields(self, request, obj=None):  # type: ignore[no-untyped-def]
        # The name and kind are fixed once messages hang off them.
        return [*self.readonly_fields, "name", "kind"] if obj else self.readonly_fields


@admin.register(Message)
class MessageAdmin(admin.ModelAdmin):
    list_display = ["id", "channel", "seq", "sender", "short_body", "created_at", "edited_at", "deleted_at"]
    list_filter = ["channel__kind", ("deleted_at", admin.EmptyFieldListFilter), "created_at"]
    search_fields = ["body", "channel__name", "sender__username"]
    raw_id_fields = ["channel", "sender"]
    readonly_fields = ["channel", "seq", "sender", "client_id", "created_at"]
    list_select_related = ["channel", "sender"]
    date_hierarchy = "created_at"

    @admin.display(description="body")
    def short_body(self, obj: Message) -> str:
        return obj.body if len(obj.body) <= 80 else obj.body[:77] + "..."

    def has_add_permission(self, request) -> bool:  # type: ignore[no-untyped-def]
        return False  # messages are sent through the API, which numbers them
