"""Group concurrent requests of one kind into one thread-pool call.

Many sessions of a process ask for the same kind of database work at once
(store a message, move a cursor). One `database_sync_to_async` call costs
the thread hop and the connection bookkeeping around it whatever it does,
so a `Batcher` hands everything submitted while its previous call ran to
the next call as one list. Under no load a request runs alone, after one
turn of the event loop; under load the batch grows instead of the queue.

`work(items)` runs in a worker thread and returns one outcome per item, in
order: a result, or an exception instance that is raised to that item's
caller only. An exception escaping `work` itself fails every item of the
batch. `after(items, outcomes)`, if given, runs on the event loop once a
call returned and before its callers hear their outcomes (the receipts of a
batch of cursor moves are published together there); an exception from it
also fails every item of the batch. One batcher per event loop (a
connection, and a future, belongs to its loop): `Batcher.for_loop()` makes
it on first use.

With `in_thread=False`, `work` is a coroutine function run on the event
loop itself: the same grouping for I/O that has an asyncio client (one Redis
pipeline for the requests of many sessions instead of one round trip each).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Generic, TypeVar

from channels.db import database_sync_to_async

Item = TypeVar("Item")
Result = TypeVar("Result")


class Batcher(Generic[Item, Result]):
    """Runs `work` on lists of items, at most `concurrency` calls at a time
    (in the thread pool, or on the loop when `in_thread` is False)."""

    def __init__(
        self,
        work: Callable[[list[Item]], Sequence[Result | BaseException]],
        *,
        max_items: int = 200,
        concurrency: int = 1,
        in_thread: bool = True,
        after: Callable[[list[Item], Sequence[Result | BaseException]], Awaitable[None]] | None = None,
    ) -> None:
        self.work = database_sync_to_async(work, thread_sensitive=False) if in_thread else work
        self.after = after
        self.max_items = max_items
        self.concurrency = concurrency
        self.pending: list[tuple[Item, asyncio.Future[Result]]] = []
        self.running = 0
        self.tasks: set[asyncio.Task[None]] = set()  # kept: the loop holds tasks only weakly
        self.batches = 0  # calls made, for tests and the benchmarks' counters

    async def submit(self, item: Item) -> Result:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Result] = loop.create_future()
        self.pending.append((item, future))
        if self.running < self.concurrency:
            self.running += 1
            # call_soon, not a call now: requests made in this same turn of
            # the loop (a burst of frames read from many sockets) join it.
            loop.call_soon(self._start, loop)
        return await future

    def _start(self, loop: asyncio.AbstractEventLoop) -> None:
        task = loop.create_task(self._run())
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _run(self) -> None:
        try:
            while self.pending:
                batch, self.pending = self.pending[: self.max_items], self.pending[self.max_items :]
                # A caller cancelled while waiting (its session closed) drops out.
                batch = [(item, future) for item, future in batch if not future.done()]
                if not batch:
                    continue
                self.batches += 1
                try:
                    items = [item for item, _ in batch]
                    outcomes = await self.work(items)
                    if len(outcomes) != len(batch):
                        raise RuntimeError(f"batch work returned {len(outcomes)} outcomes for {len(batch)} items")
                    if self.after is not None:
                        await self.after(items, outcomes)
                except Exception as exc:  # noqa: BLE001 - the whole call failed: every caller hears why
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                except asyncio.CancelledError:
                    # The loop is shutting down: no caller may wait forever.
                    for _, future in batch + self.pending:
                        future.cancel()
                    self.pending = []
                    raise
                for (_, future), outcome in zip(batch, outcomes, strict=True):
                    if future.done():
                        continue
                    if isinstance(outcome, BaseException):
                        future.set_exception(outcome)
                    else:
                        future.set_result(outcome)
        finally:
            self.running -= 1


class LoopBatcher(Generic[Item, Result]):
    """One `Batcher` per running event loop, made on first use."""

    def __init__(self, work: Callable[[list[Item]], Sequence[Result | BaseException]], **options: Any) -> None:
        self.work = work
        self.options = options
        self._batchers: dict[asyncio.AbstractEventLoop, Batcher[Item, Result]] = {}

    def for_loop(self) -> Batcher[Item, Result]:
        loop = asyncio.get_running_loop()
        batcher = self._batchers.get(loop)
        if batcher is None:
            for old in [lp for lp in self._batchers if lp.is_closed()]:
                del self._batchers[old]
            batcher = self._batchers[loop] = Batcher(self.work, **self.options)
        return batcher

    async def submit(self, item: Item) -> Result:
        return await self.for_loop().submit(item)
