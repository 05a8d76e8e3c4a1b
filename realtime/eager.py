"""Run a coroutine now, up to its first real suspension; a task takes over only then.

A live frame goes to a socket through a chain of coroutines (channels'
`send`, uvicorn's `send`) that never suspend while the socket takes data:
the write happens synchronously inside them. Wrapping that chain in a task
per frame costs more than the write itself (in a profile of a fan-out to
2,000 sessions, about a quarter of the server's samples were `create_task`).
So the actor steps the coroutine by hand; when it does suspend (the socket's
buffer is full and the server waits for the client), a task adopts the
coroutine where it stopped, passing the awaited future up and every outcome
(result, exception, cancellation) back down, as `await` would.

Python 3.12's eager task factory does this for all tasks of a loop; this
does it for one call site, on 3.11 too.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Generator
from typing import Any


class _Adopted:
    """Awaitable that resumes a coroutine stopped on `waiting`."""

    __slots__ = ("coro", "waiting")

    def __init__(self, coro: Coroutine[Any, Any, Any], waiting: Any) -> None:
        self.coro = coro
        self.waiting = waiting

    def __await__(self) -> Generator[Any, None, Any]:
        coro, waiting = self.coro, self.waiting
        while True:
            try:
                yield waiting
            except BaseException as exc:  # noqa: BLE001 - cancellation and errors go down to the coroutine
                step = coro.throw
                arg: Any = exc
            else:
                step = coro.send
                arg = None
            try:
                waiting = step(arg)
            except StopIteration as stop:
                return stop.value


async def _finish(coro: Coroutine[Any, Any, Any], waiting: Any) -> Any:
    return await _Adopted(coro, waiting)


def run_eagerly(coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any] | None:
    """Run `coro` until it first suspends. None: it finished (its exception,
    if any, is raised here); else the task that runs the rest."""
    try:
        waiting = coro.send(None)
    except StopIteration:
        return None
    return asyncio.ensure_future(_finish(coro, waiting))
