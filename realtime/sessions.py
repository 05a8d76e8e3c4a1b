"""Session identity and the per-session delivery bookkeeping (pure)."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field


def session_id_new() -> str:
    return "s_" + secrets.token_hex(16)


@dataclass(slots=True)
class DeliveryTracker:
    """The last `seq` this session sent per channel, to drop repeats and see gaps.

    A channel with no entry has no baseline yet: its first live message sets
    one. A subscribe sets the baseline to the channel's `last_seq` (or
    replays up to it first).
    """

    last_sent: dict[str, int] = field(default_factory=dict)

    def classify(self, channel: str, seq: int) -> tuple[str, int]:
        """("drop", 0), ("send", 0), or ("fill", after): fetch after < s < seq first."""
        last = self.last_sent.get(channel)
        if last is None or seq == last + 1:
            return "send", 0
        if seq <= last:
            return "drop", 0
        return "fill", last

    def mark(self, channel: str, seq: int) -> None:
        if seq > self.last_sent.get(channel, -1):
            self.last_sent[channel] = seq

    def forget(self, channel: str) -> None:
        self.last_sent.pop(channel, None)
