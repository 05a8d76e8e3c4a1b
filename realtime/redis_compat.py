"""A redis-py write that never loses a cancellation, for Python 3.11.

redis-py 7 bounds each write with `asyncio.wait_for(..., socket_timeout)`. On
Python 3.11, `wait_for` returns normally when the write completes in the same
loop turn as a `cancel()` of the caller, and the cancellation is lost
(CPython gh-86296; 3.12 rebuilt `wait_for` on `asyncio.timeout`).
channels-redis' receive loop then goes on to another blocking BZPOPMIN, so
the actor of a closed WebSocket never finishes: it leaks, and uvicorn's
graceful shutdown waits for it until its timeout. Sessions that close
together hit it often: one's cancelled receive hands the layer's receive
lock to the next, which starts a write just as its own cancel arrives.

`install()` replaces the write with the same code bounded by
`asyncio.timeout`, which lets a cancellation through; reads already use
`asyncio.timeout` in redis-py. It is installed once, from the app's `ready()`,
and covers every asyncio Redis connection of the process (the channel layer,
the session store).
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterable

import redis
from redis import exceptions
from redis.asyncio.connection import AbstractConnection


async def send_packed_command(
    self: AbstractConnection, command: bytes | str | Iterable[bytes], check_health: bool = True
) -> None:
    """redis-py 7.4.1's `AbstractConnection.send_packed_command`, without `wait_for`."""
    if not self.is_connected:
        await self.connect_check_health(check_health=False)
    if check_health:
        await self.check_health()
    if isinstance(command, str):
        command = command.encode()
    if isinstance(command, bytes):
        command = [command]
    try:
        async with asyncio.timeout(self.socket_timeout or None):
            self._writer.writelines(command)
            await self._writer.drain()
    except TimeoutError:  # before OSError, of which it is a subclass
        await self.disconnect(nowait=True)
        raise exceptions.TimeoutError("Timeout writing to socket") from None
    except OSError as exc:
        await self.disconnect(nowait=True)
        raise exceptions.ConnectionError(f"Error while writing to socket: {exc}") from exc
    except BaseException:
        # A half-sent command leaves the connection unusable (as in redis-py).
        await self.disconnect(nowait=True)
        raise


def install() -> None:
    """Only where needed: Python 3.11 with the redis-py 7 this copy follows."""
    if sys.version_info < (3, 12) and redis.__version__.startswith("7."):
        AbstractConnection.send_packed_command = send_packed_command  # type: ignore[method-assign]
