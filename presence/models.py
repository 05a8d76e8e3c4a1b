"""When users were last around (the live state itself is in Redis)."""

from django.conf import settings
from django.db import models


class LastSeen(models.Model):
    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, primary_key=True)
    at = models.DateTimeField()

    def __str__(self) -> str:
        return f"{self.user_id} last seen {self.at:%Y-%m-%d %H:%M}"
