"""The batcher: concurrent requests share one thread-pool call, each caller gets its own outcome."""

import asyncio

import pytest
from django.contrib.auth import get_user_model

from realtime.batching import Batcher, LoopBatcher


class Recorder:
    """Work that records each call's items and answers item * 10 (or a per-item error)."""

    def __init__(self) -> None:
        self.calls: list[list[int]] = []

    def __call__(self, items: list[int]) -> list[int | BaseException]:
        self.calls.append(list(items))
        return [ValueError(f"bad {item}") if item < 0 else item * 10 for item in items]


async def test_requests_made_together_share_one_call():
    work = Recorder()
    batcher = Batcher(work)
    results = await asyncio.gather(*(batcher.submit(i) for i in range(5)))
    assert results == [0, 10, 20, 30, 40]
    assert work.calls == [[0, 1, 2, 3, 4]]
    assert batcher.batches == 1
    assert batcher.running == 0


async def test_requests_made_while_a_call_runs_go_into_the_next_one():
    work = Recorder()
    batcher = Batcher(work)
    first = asyncio.ensure_future(batcher.submit(1))
    await asyncio.sleep(0)  # the first call starts
    await asyncio.sleep(0)
    later = [asyncio.ensure_future(batcher.submit(i)) for i in (2, 3)]
    assert await asyncio.gather(first, *later) == [10, 20, 30]
    assert work.calls == [[1], [2, 3]]


async def test_a_per_item_error_reaches_only_its_caller():
    batcher = Batcher(Recorder())
    outcomes = await asyncio.gather(batcher.submit(1), batcher.submit(-1), batcher.submit(2), return_exceptions=True)
    assert outcomes[0] == 10 and outcomes[2] == 20
    assert isinstance(outcomes[1], ValueError) and str(outcomes[1]) == "bad -1"


async def test_a_failed_call_fails_every_item_of_its_batch_and_the_next_batch_still_runs():
    calls = []

    def work(items):
        calls.append(items)
        if len(calls) == 1:
            raise RuntimeError("database went away")
        return items

    batcher = Batcher(work)
    outcomes = await asyncio.gather(batcher.submit(1), batcher.submit(2), return_exceptions=True)
    assert [type(o) for o in outcomes] == [RuntimeError, RuntimeError]
    assert await batcher.submit(3) == 3


async def test_work_that_answers_the_wrong_number_of_outcomes_fails_the_batch():
    batcher = Batcher(lambda items: items[:-1])
    with pytest.raises(RuntimeError, match="2 outcomes for 3 items"):
        await asyncio.gather(batcher.submit(1), batcher.submit(2), batcher.submit(3))


async def test_after_sees_the_batch_before_its_callers_hear_their_outcomes():
    seen: list[tuple[list[int], list[object]]] = []
    heard: list[int] = []

    async def after(items, outcomes):
        assert heard == []  # no caller has its outcome yet
        seen.append((items, [o if not isinstance(o, BaseException) else type(o) for o in outcomes]))

    batcher = Batcher(Recorder(), after=after)

    async def caller(item):
        try:
            return await batcher.submit(item)
        finally:
            heard.append(item)

    outcomes = await asyncio.gather(caller(1), caller(-2), caller(3), return_exceptions=True)
    assert seen == [([1, -2, 3], [10, ValueError, 30])]
    assert outcomes[0] == 10 and outcomes[2] == 30 and isinstance(outcomes[1], ValueError)


async def test_a_failing_after_fails_every_item_of_its_batch():
    async def after(items, outcomes):
        raise ConnectionError("redis went away")

    batcher = Batcher(Recorder(), after=after)
    outcomes = await asyncio.gather(batcher.submit(1), batcher.submit(2), return_exceptions=True)
    assert [type(o) for o in outcomes] == [ConnectionError, ConnectionError]


async def test_max_items_splits_a_burst():
    work = Recorder()
    batcher = Batcher(work, max_items=2)
    assert await asyncio.gather(*(batcher.submit(i) for i in range(5))) == [0, 10, 20, 30, 40]
    assert work.calls == [[0, 1], [2, 3], [4]]


async def test_a_cancelled_caller_drops_out_and_the_others_are_answered():
    work = Recorder()
    batcher = Batcher(work)
    doomed = asyncio.ensure_future(batcher.submit(7))
    kept = asyncio.ensure_future(batcher.submit(8))
    await asyncio.sleep(0)
    doomed.cancel()
    assert await kept == 80
    assert doomed.cancelled()
    assert work.calls == [[8]]


async def test_concurrency_allows_calls_side_by_side():
    started = 0
    both_in = asyncio.Event()
    loop = asyncio.get_running_loop()

    def work(items):
        nonlocal started
        started += 1
        if started == 2:
            loop.call_soon_threadsafe(both_in.set)
        # The first call only returns once the second has started: with
        # concurrency 1 this would never happen and the wait times out.
        asyncio.run_coroutine_threadsafe(asyncio.wait_for(both_in.wait(), 5), loop).result()
        return items

    batcher = Batcher(work, concurrency=2, max_items=1)
    assert await asyncio.gather(batcher.submit(1), batcher.submit(2)) == [1, 2]


@pytest.mark.django_db(transaction=True)
async def test_work_runs_in_a_thread_with_the_database():
    def usernames(ids):
        names = dict(get_user_model().objects.filter(pk__in=ids).values_list("pk", "username"))
        return [names.get(i, LookupError(f"no user {i}")) for i in ids]

    users = [await get_user_model().objects.acreate(username=f"batch{i}") for i in range(3)]
    batcher = LoopBatcher(usernames)
    outcomes = await asyncio.gather(*(batcher.submit(u.pk) for u in users), batcher.submit(-5), return_exceptions=True)
    assert outcomes[:3] == ["batch0", "batch1", "batch2"]
    assert isinstance(outcomes[3], LookupError)
    assert batcher.for_loop() is batcher.for_loop()


async def test_async_work_runs_on_the_loop_with_the_same_grouping():
    calls = []

    async def work(items):
        calls.append(list(items))
        await asyncio.sleep(0)
        return [ValueError(f"bad {item}") if item < 0 else item + 1 for item in items]

    batcher = Batcher(work, in_thread=False)
    results = await asyncio.gather(*(batcher.submit(i) for i in (1, -2, 3)), return_exceptions=True)
    assert results[0] == 2 and results[2] == 4
    assert isinstance(results[1], ValueError) and str(results[1]) == "bad -2"
    assert calls == [[1, -2, 3]]
    assert await LoopBatcher(work, in_thread=False).submit(5) == 6


async def test_a_cancelled_batch_cancels_its_callers_and_those_waiting():
    """The loop shutting down while a batch runs: nobody waits forever."""
    started = asyncio.Event()

    async def work(items):
        started.set()
        await asyncio.sleep(60)
        return items

    batcher = Batcher(work, in_thread=False)
    first = asyncio.ensure_future(batcher.submit(1))
    await started.wait()
    later = asyncio.ensure_future(batcher.submit(2))  # waits for the next batch
    await asyncio.sleep(0)
    (task,) = batcher.tasks
    task.cancel()
    outcomes = await asyncio.gather(first, later, return_exceptions=True)
    assert [type(o) for o in outcomes] == [asyncio.CancelledError] * 2
    assert batcher.running == 0 and batcher.pending == [] and not batcher.tasks
