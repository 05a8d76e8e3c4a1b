"""Logs what would be pushed: the embedded default, so `make run` needs nothing."""

from __future__ import annotations

import json
import logging
from typing import Any

from .base import Push, PushResult

log = logging.getLogger("notifications.console")


class ConsoleBackend:
    def send(self, *, device: Any, push: Push) -> PushResult:
        target = f"{device.kind} device {device.pk}" if device is not None else "no device"
        log.info("push to user %s via %s: %s", push.user["id"], target, json.dumps(push.as_json()))
        return PushResult(status=200)
