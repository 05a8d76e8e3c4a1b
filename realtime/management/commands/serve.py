"""`manage.py serve`: run the ASGI app under uvicorn with the measured settings.

Per-message deflate is off: it costs about twice the memory per
connection and slows fan-out (docs/PERFORMANCE.md). Frames over 64 KiB
are refused by the server itself with close code 1009.
"""

from __future__ import annotations

from typing import Any

import uvicorn
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

# "lean": uvicorn's sans-I/O protocol holding less per idle connection.
WS_PROTOCOLS = {"lean": "realtime.wsprotocol:LeanWebSocketProtocol"}


class Command(BaseCommand):
    help = "Serve the ASGI application (HTTP API and WebSockets) with uvicorn."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default=settings.HOST)
        parser.add_argument("--port", type=int, default=settings.PORT)
        parser.add_argument("--workers", type=int, default=1, help="server processes sharing the port")
        parser.add_argument(
            "--ws",
            default="lean",
            choices=["lean", "websockets-sansio", "websockets", "wsproto"],
            help="uvicorn's WebSocket implementation (docs/PERFORMANCE.md compares them)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if options["workers"] > 1 and not settings.REDIS_URL:
            raise CommandError("--workers above 1 needs REDIS_URL: the in-memory layer is per process")
        uvicorn.run(
            "config.asgi:application",
            host=options["host"],
            port=options["port"],
            workers=options["workers"],
            loop="uvloop",
            http="httptools",
            ws=WS_PROTOCOLS.get(options["ws"], options["ws"]),
            ws_max_size=settings.CHAT["MAX_FRAME_BYTES"],
            ws_per_message_deflate=False,
            # The protocol has its own heartbeat; transport pings add nothing.
            ws_ping_interval=None,
            lifespan="off",
            timeout_graceful_shutdown=10,
            proxy_headers=True,
            server_header=False,
            log_level="warning",
        )
