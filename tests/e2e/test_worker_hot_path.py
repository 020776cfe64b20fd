"""The worker's per-item path against our emulator: plain activities on the activity threads, completions
started with a done callback (retried in a task on transient errors), items given back on stop."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

import grpc
import pytest

from durabletask import task
from durabletask.client import OrchestrationStatus, TaskHubGrpcClient
from durabletask.emulator import Emulator
from durabletask.grpc_options import GrpcWorkerResiliencyOptions
from durabletask.internal.grpc import h2_calls
from durabletask.worker import ConcurrencyOptions, TaskHubGrpcWorker
from tests.support.polling import wait_until
from tests.support.runs import run_once

FAST_RECONNECT = GrpcWorkerResiliencyOptions(reconnect_backoff_base_seconds=0.05, reconnect_backoff_cap_seconds=0.5)


@pytest.fixture()
def emulator() -> Iterator[Emulator]:
    with Emulator(memory=True) as emu:
        yield emu


def _worker(emulator: Emulator, orchestrator: Any, *activities: Any, **kwargs: Any) -> TaskHubGrpcWorker:
    worker = TaskHubGrpcWorker(host_address=emulator.address, resiliency_options=FAST_RECONNECT, **kwargs)
    worker.add_orchestrator(orchestrator)
    for fn in activities:
        worker.add_activity(fn)
    return worker


def test_plain_activities_run_on_at_most_the_configured_threads(emulator: Emulator) -> None:
    lock = threading.Lock()
    running = peak = 0
    threads: set[str] = set()

    def work(ctx: task.ActivityContext, i: int) -> int:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
            threads.add(threading.current_thread().name)
        time.sleep(0.02)
        with lock:
            running -= 1
        return i * 2

    def fan(ctx: task.OrchestrationContext, n: int) -> Any:
        results = yield task.when_all([ctx.call_activity(work, input=i) for i in range(n)])
        return sum(results)

    worker = _worker(emulator, fan, work, concurrency_options=ConcurrencyOptions(maximum_thread_pool_workers=3))
    assert run_once(worker, emulator.address, fan, 30, timeout=30).get_output() == 2 * sum(range(30))
    assert peak == 3 and len(threads) == 3
    assert all(name.startswith("durabletask-activity") for name in threads)


def test_a_plain_activity_may_return_an_awaitable_and_async_ones_run_on_the_loop(emulator: Emulator) -> None:
    loops: list[Any] = []

    async def later(x: int) -> int:
        loops.append(asyncio.get_running_loop())
        return x + 1

    def returns_awaitable(ctx: task.ActivityContext, x: int) -> Any:
        return later(x)

    async def on_loop(ctx: task.ActivityContext, x: int) -> int:
        loops.append(asyncio.get_running_loop())
        return x * 10

    def fails(ctx: task.ActivityContext, _: Any) -> None:
        raise KeyError("boom")

    def both(ctx: task.OrchestrationContext, x: int) -> Any:
        y = yield ctx.call_activity(returns_awaitable, input=x)
        z = yield ctx.call_activity(on_loop, input=y)
        try:
            yield ctx.call_activity(fails)
        except task.TaskFailedError as error:
            return [z, error.details.error_type]
        return [z, None]

    worker = _worker(emulator, both, returns_awaitable, on_loop, fails)
    assert run_once(worker, emulator.address, both, 4).get_output() == [50, "builtins.KeyError"]
    assert len(loops) == 2 and loops[0] is loops[1]


def test_stop_gives_back_a_plain_activity_that_outlives_the_drain(emulator: Emulator) -> None:
    release = threading.Event()
    attempts: list[str] = []

    def slow_once(ctx: task.ActivityContext, _: Any) -> str:
        attempts.append(threading.current_thread().name)
        if len(attempts) == 1:
            release.wait(10)  # its result arrives after the item was given back, and is dropped
        return f"attempt {len(attempts)}"

    def calls_it(ctx: task.OrchestrationContext, _: Any) -> Any:
        value = yield ctx.call_activity(slow_once)
        return value

    first = _worker(emulator, calls_it, slow_once)
    first.start()
    with TaskHubGrpcClient(host_address=emulator.address) as client:
        instance_id = client.schedule_new_orchestration(calls_it)
        wait_until(lambda: attempts)
        started = time.monotonic()
        first.stop(timeout=0.2)
        assert time.monotonic() - started < 5
        second = _worker(emulator, calls_it, slow_once)
        second.start()
        try:
            state = client.wait_for_orchestration_completion(instance_id, timeout=10)
            assert state is not None and state.get_output() == "attempt 2"
        finally:
            release.set()
            second.stop(2)


class _Faults:
    """Makes the outcome of the first completions started with a done callback look like ``code``."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, method: str, code: grpc.StatusCode, times: int) -> None:
        self.remaining = times
        self.started: list[str] = []
        original = h2_calls.UnaryUnaryMultiCallable.start
        faults = self

        def start(call: Any, request: Any, on_done: Any, **kwargs: Any) -> Any:
            faults.started.append(call._method)
            if call._method.endswith(method) and faults.remaining > 0:
                faults.remaining -= 1  # not sent at all
                asyncio.get_running_loop().call_soon(on_done, h2_calls.rpc_error(code, "injected"))
                return faults
            return original(call, request, on_done, **kwargs)

        monkeypatch.setattr(h2_calls.UnaryUnaryMultiCallable, "start", start)

    def cancel(self) -> None:
        pass


def test_a_completion_failing_transiently_is_retried(emulator: Emulator, monkeypatch: pytest.MonkeyPatch) -> None:
    def echo(ctx: task.ActivityContext, x: int) -> int:
        return x

    def calls_echo(ctx: task.OrchestrationContext, _: Any) -> Any:
        value = yield ctx.call_activity(echo, input=7)
        return value

    faults = _Faults(monkeypatch, "/CompleteActivityTask", grpc.StatusCode.UNAVAILABLE, 1)
    worker = _worker(emulator, calls_echo, echo)
    assert run_once(worker, emulator.address, calls_echo).get_output() == 7
    assert faults.remaining == 0  # the retry was awaited in a task, not started again with a callback
    assert sum(m.endswith("/CompleteActivityTask") for m in faults.started) == 1


def test_a_rejected_completion_is_logged_and_not_retried(emulator: Emulator, monkeypatch: pytest.MonkeyPatch,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    def quick(ctx: task.OrchestrationContext, _: Any) -> str:
        return "ok"

    faults = _Faults(monkeypatch, "/CompleteOrchestratorTask", grpc.StatusCode.FAILED_PRECONDITION, 1)
    worker = _worker(emulator, quick)
    with caplog.at_level(logging.WARNING, logger="durabletask.worker"):
        worker.start()
        try:
            with TaskHubGrpcClient(host_address=emulator.address) as client:
                instance_id = client.schedule_new_orchestration(quick)
                deadline = time.monotonic() + 10
                while faults.remaining and time.monotonic() < deadline:
                    time.sleep(0.01)
                time.sleep(0.2)
                state = client.get_orchestration_state(instance_id)
                assert state is not None and state.runtime_status != OrchestrationStatus.COMPLETED
        finally:
            started = time.monotonic()
            worker.stop(5)
            assert time.monotonic() - started < 2  # nothing left in flight to wait for
    assert sum(m.endswith("/CompleteOrchestratorTask") for m in faults.started) == 1
    assert any("CompleteOrchestratorTask rejected (FAILED_PRECONDITION" in r.getMessage() for r in caplog.records)
