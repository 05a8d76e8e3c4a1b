"""A real local HTTP server standing in for push endpoints, and a task recorder."""

from __future__ import annotations

import json
import threading
from collections import defaultdict, deque
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

# Tasks the pipeline scheduled (task, args, countdown); see the `tasks` fixture.
SCHEDULED: list[tuple[Any, tuple[Any, ...], float]] = []


def record(task: Any, args: tuple[Any, ...], countdown: float) -> None:
    """NOTIFICATIONS["RUNNER"] in the tests: the test runs the tasks itself."""
    SCHEDULED.append((task, args, countdown))


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class PushServer:
    """Answers POSTs with scripted statuses per path (default 201) and keeps them."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.script: dict[str, deque[tuple[int, dict[str, str]]]] = defaultdict(deque)
        self.arrived = threading.Condition()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                queue = server.script[self.path]
                status, headers = queue.popleft() if queue else (201, {})
                with server.arrived:
                    server.received.append(Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body))
                    server.arrived.notify_all()
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def url(self, path: str) -> str:
        return self.base + path

    def answer(self, path: str, *statuses: int | tuple[int, dict[str, str]]) -> None:
        for item in statuses:
            self.script[path].append(item if isinstance(item, tuple) else (item, {}))

    def at(self, path: str) -> list[Received]:
        return [r for r in self.received if r.path == path]

    def wait_for(self, path: str, count: int, timeout: float = 60) -> list[Received]:
        with self.arrived:
            self.arrived.wait_for(lambda: len(self.at(path)) >= count, timeout=timeout)
        return self.at(path)

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def broker_down(task: Any, args: tuple[Any, ...], countdown: float) -> None:
    """NOTIFICATIONS["RUNNER"] for a broker that cannot be reached."""
    raise ConnectionError("broker unreachable")
