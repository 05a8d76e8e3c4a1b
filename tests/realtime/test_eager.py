"""run_eagerly: a coroutine runs now; a task adopts it only when it suspends, with await's semantics."""

import asyncio

import pytest

from realtime.eager import run_eagerly


async def test_a_coroutine_that_never_suspends_finishes_in_the_call_without_a_task():
    done = []

    async def write():
        done.append("written")

    tasks_before = len(asyncio.all_tasks())
    assert run_eagerly(write()) is None
    assert done == ["written"]
    assert len(asyncio.all_tasks()) == tasks_before


async def test_an_error_before_any_suspension_is_raised_in_the_call():
    async def write():
        raise ConnectionResetError("gone")

    with pytest.raises(ConnectionResetError, match="gone"):
        run_eagerly(write())


async def test_a_suspended_coroutine_is_adopted_and_finishes_with_its_result():
    room = asyncio.get_running_loop().create_future()
    steps = []

    async def write():
        steps.append("first")
        await room
        steps.append("second")
        await asyncio.sleep(0)  # a bare yield to the loop
        return "all written"

    task = run_eagerly(write())
    assert steps == ["first"]
    assert task is not None and not task.done()
    room.set_result(None)
    assert await task == "all written"
    assert steps == ["first", "second"]


async def test_the_awaited_futures_value_reaches_the_coroutine():
    room = asyncio.get_running_loop().create_future()

    async def write():
        return await room * 2

    task = run_eagerly(write())
    room.set_result(21)
    assert await task == 42


async def test_an_error_after_suspension_ends_the_task_with_it():
    room = asyncio.get_running_loop().create_future()

    async def write():
        await room
        raise BrokenPipeError("client gone")

    task = run_eagerly(write())
    room.set_result(None)
    with pytest.raises(BrokenPipeError):
        await task


async def test_a_failed_future_is_raised_inside_the_coroutine():
    room = asyncio.get_running_loop().create_future()
    seen = []

    async def write():
        try:
            await room
        except OSError as exc:
            seen.append(str(exc))
            return "handled"

    task = run_eagerly(write())
    room.set_exception(OSError("reset"))
    assert await task == "handled"
    assert seen == ["reset"]


async def test_cancelling_the_task_cancels_the_coroutine_where_it_waits():
    room = asyncio.get_running_loop().create_future()
    cleaned = []

    async def write():
        try:
            await room
        finally:
            cleaned.append("finally ran")

    task = run_eagerly(write())
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert cleaned == ["finally ran"]
    assert room.cancelled()
