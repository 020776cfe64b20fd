"""End-of-turn work and store outcomes: what lets a commit's answer leave in the pass that committed it."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest

from durabletask.emulator.store import Batch, MemoryStore, SqliteStore, StoreRunner
from durabletask.emulator.store.runner import Durable
from durabletask.emulator.turn import turn_end
from tests.emulator.test_store import message


def on_a_loop(test: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    """Run an async test on a fresh event loop."""
    @functools.wraps(test)
    def run(*args: Any, **kwargs: Any) -> None:
        asyncio.run(test(*args, **kwargs))
    return run


@on_a_loop
async def test_work_added_during_the_pass_runs_in_the_same_pass_in_order() -> None:
    loop = asyncio.get_running_loop()
    ends = turn_end(loop)
    assert turn_end(loop) is ends
    ran: list[str] = []
    turns: list[str] = []
    loop.call_soon(turns.append, "next turn")  # already due: runs before the pass

    def commit() -> None:
        ran.append("commit")
        ends.add(lambda: ran.append("flush"))  # e.g. the answer written by the commit's callback

    ends.add(lambda: ran.append("pump"))
    ends.add(commit)
    await asyncio.sleep(0)
    assert ran == ["pump", "commit", "flush"] and turns == ["next turn"]


@on_a_loop
async def test_sends_run_after_the_other_work_and_pushes_go_first() -> None:
    ends = turn_end(asyncio.get_running_loop())
    ran: list[str] = []

    def commit() -> None:
        ran.append("commit")
        ends.add_send(lambda: ran.append("answer to the client"))  # written by the commit's callback
        ends.add(pump)

    def pump() -> None:
        ran.append("pump")
        ends.add_send(lambda: ran.append("work item to the worker"), first=True)

    ends.add(commit)
    await asyncio.sleep(0)
    assert ran == ["commit", "pump", "work item to the worker", "answer to the client"]
    ends.add_send(lambda: ran.append("next turn"))  # a new pass is scheduled once the last one is over
    await asyncio.sleep(0)
    assert ran[-1] == "next turn"


@on_a_loop
async def test_a_failing_piece_of_work_is_logged_and_the_rest_still_runs(caplog: pytest.LogCaptureFixture) -> None:
    ends = turn_end(asyncio.get_running_loop())
    ran: list[int] = []
    ends.add(lambda: 1 / 0)
    ends.add(lambda: ran.append(2))
    with caplog.at_level(logging.ERROR, logger="durabletask.emulator"):
        await asyncio.sleep(0)
    assert ran == [2] and "ZeroDivisionError" in caplog.text


@on_a_loop
async def test_a_durable_runs_its_callbacks_when_settled_and_can_be_awaited() -> None:
    durable = Durable()
    seen: list[object] = []
    durable.add_done_callback(lambda d: seen.append(("first", d.exception())))
    durable.add_done_callback(lambda d: 1 / 0)  # logged, does not stop the next one
    durable.add_done_callback(lambda d: seen.append("second"))
    waiter = asyncio.ensure_future(_await(durable))
    await asyncio.sleep(0)
    assert not durable.done() and seen == []
    durable.settle()
    assert seen == [("first", None), "second"]  # synchronously, in order
    durable.add_done_callback(lambda d: seen.append("late"))  # already done: at once
    assert seen[-1] == "late"
    assert await waiter == "ok"
    durable.settle(RuntimeError("ignored"))  # settled once only
    assert durable.exception() is None


@on_a_loop
async def test_a_failed_durable_raises_its_error_to_every_awaiter() -> None:
    durable = Durable()
    durable.settle(OSError("disk full"))
    with pytest.raises(OSError, match="disk full"):
        await durable
    with pytest.raises(OSError, match="disk full"):
        await durable


async def _await(durable: Durable) -> str:
    await durable
    return "ok"


@on_a_loop
async def test_batches_of_one_turn_are_committed_together_and_answered_in_that_pass(tmp_path: Path) -> None:
    runner = StoreRunner(SqliteStore(tmp_path / "e.db"))
    await runner.start()
    try:
        answered: list[int] = []
        for i in (1, 2, 3):
            batch = Batch()
            batch.put_message(message(i))
            runner.submit(batch).add_done_callback(lambda d, i=i: answered.append(i))
        assert answered == []  # nothing is durable before the end of the turn
        await asyncio.sleep(0)
        assert answered == [1, 2, 3] and runner.commits == 1
    finally:
        await runner.stop()


@on_a_loop
async def test_a_store_that_never_blocks_settles_at_once() -> None:
    runner = StoreRunner(MemoryStore())
    await runner.start()
    try:
        batch = Batch()
        batch.put_message(message(1))
        assert runner.submit(batch).done()
    finally:
        await runner.stop()


def test_each_loop_keeps_its_own_turn_end_when_loops_alternate() -> None:
    first, second = asyncio.new_event_loop(), asyncio.new_event_loop()
    try:
        ends = turn_end(first)
        assert turn_end(second) is not ends
        assert turn_end(first) is ends and turn_end(first) is ends  # asked again, from the cache or not
        other = turn_end(second)
        assert turn_end(second) is other and other is not ends
    finally:
        first.close()
        second.close()
    third = asyncio.new_event_loop()  # a new loop never gets a closed loop's TurnEnd
    try:
        assert turn_end(third) not in (ends, other)
    finally:
        third.close()
