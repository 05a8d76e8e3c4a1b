"""`manage.py notify USER... --body TEXT`: send a system notice to users."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from messaging.errors import ChatError
from messaging.selectors import user_resolve
from messaging.services import system_notice_send


class Command(BaseCommand):
    help = "Send a system notice (system:U) to users, by id or username, or to every active user."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("users", nargs="*", help="user ids or usernames")
        parser.add_argument("--body", required=True, help="the notice text")
        parser.add_argument("--all", action="store_true", help="every active user")

    def handle(self, *args: Any, **options: Any) -> None:
        refs = options["users"]
        if bool(refs) == bool(options["all"]):
            raise CommandError("name users or pass --all, not both")
        try:
            if options["all"]:
                users = list(get_user_model().objects.filter(is_active=True))
            else:
                users = [user_resolve(ref=int(r) if r.isdigit() else r) for r in refs]
            for user in users:
                message = system_notice_send(user=user, body=options["body"])
                self.stdout.write(f"{message.channel.name} seq {message.seq}")
        except ChatError as exc:
            raise CommandError(exc.message) from None
