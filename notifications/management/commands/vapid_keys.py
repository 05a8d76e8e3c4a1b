"""`manage.py vapid_keys`: print a new VAPID key pair for Web Push, as settings."""

from __future__ import annotations

import base64
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from django.core.management.base import BaseCommand


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def vapid_pair() -> tuple[str, str]:
    """(public, private): the public key as the browser's applicationServerKey
    (uncompressed P-256 point), the private key as its raw 32 bytes, both base64url."""
    key = ec.generate_private_key(ec.SECP256R1())
    public = key.public_key().public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    private = key.private_numbers().private_value.to_bytes(32, "big")
    return _b64url(public), _b64url(private)


class Command(BaseCommand):
    help = "Generate a VAPID key pair for Web Push; put the two lines in the environment or .env."

    def handle(self, *args: Any, **options: Any) -> None:
        public, private = vapid_pair()
        self.stdout.write(f"VAPID_PUBLIC_KEY={public}\nVAPID_PRIVATE_KEY={private}\n")
