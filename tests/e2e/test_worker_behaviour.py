"""Worker behaviour against our emulator: versioning, filters, draining stop, reconnects."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from durabletask import history, task
from durabletask.client import OrchestrationStatus, TaskHubGrpcClient
from durabletask.emulator import Emulator
from durabletask.grpc_options import GrpcWorkerResiliencyOptions
from durabletask.serialization import JsonDataConverter
from durabletask.worker import (
    TaskHubGrpcWorker,
    VersionFailureStrategy,
    VersioningOptions,
    VersionMatchStrategy,
)
from tests.support.polling import wait_until
from tests.support.runs import run_once
from tests.support.servers import free_port

FAST_RECONNECT = GrpcWorkerResiliencyOptions(reconnect_backoff_base_seconds=0.05, reconnect_backoff_cap_seconds=0.5)


def versioned(ctx: task.OrchestrationContext, _: Any) -> str:
    return f"ran {ctx.version}"


@pytest.fixture()
def emulator() -> Iterator[Emulator]:
    with Emulator(memory=True) as emu:
        yield emu


def _worker(emulator: Emulator, *orchestrators: Any, activities: tuple[Any, ...] = (), **kwargs: Any) -> Any:
    worker = TaskHubGrpcWorker(host_address=emulator.address, resiliency_options=FAST_RECONNECT, **kwargs)
    for fn in orchestrators:
        worker.add_orchestrator(fn)
    for fn in activities:
        worker.add_activity(fn)
    return worker


def test_strict_versioning_leaves_other_versions_for_another_worker(emulator: Emulator) -> None:
    strict = _worker(emulator, versioned)
    strict.use_versioning(VersioningOptions(version="2.0", match_strategy=VersionMatchStrategy.STRICT,
                                            failure_strategy=VersionFailureStrategy.REJECT))
    strict.start()
    with TaskHubGrpcClient(host_address=emulator.address) as client:
        old = client.schedule_new_orchestration(versioned, version="1.0")
        current = client.schedule_new_orchestration(versioned, version="2.0")
        state = client.wait_for_orchestration_completion(current, timeout=10)
        assert state is not None and state.get_output() == "ran 2.0"
        time.sleep(0.3)
        pending = client.get_orchestration_state(old)
        assert pending is not None and pending.runtime_status == OrchestrationStatus.PENDING
        lenient = _worker(emulator, versioned)
        lenient.start()
        try:
            done = client.wait_for_orchestration_completion(old, timeout=10)
            assert done is not None and done.get_output() == "ran 1.0"
        finally:
            lenient.stop(2)
    strict.stop(2)


def test_fail_strategy_fails_newer_versions(emulator: Emulator) -> None:
    worker = _worker(emulator, versioned)
    worker.use_versioning(VersioningOptions(version="1.0", match_strategy=VersionMatchStrategy.CURRENT_OR_OLDER,
                                            failure_strategy=VersionFailureStrategy.FAIL))
    state = run_once(worker, emulator.address, versioned, default_version="1.5")
    assert state.runtime_status == OrchestrationStatus.FAILED
    assert state.failure_details is not None and "greater than the worker version" in state.failure_details.message


def test_work_item_filters_route_work_to_the_worker_that_has_it(emulator: Emulator) -> None:
    def uses_remote(ctx: task.OrchestrationContext, _: Any) -> Any:
        value = yield ctx.call_activity("remote_only", input=1)
        return value

    def remote_only(ctx: task.ActivityContext, x: int) -> str:
        return f"remote {x}"

    orchestrations = _worker(emulator, uses_remote)
    orchestrations.use_work_item_filters()
    activities = _worker(emulator, activities=(remote_only,))
    activities.use_work_item_filters()
    orchestrations.start()
    activities.start()
    try:
        with TaskHubGrpcClient(host_address=emulator.address) as client:
            instance_id = client.schedule_new_orchestration(uses_remote)
            state = client.wait_for_orchestration_completion(instance_id, timeout=10)
            assert state is not None and state.get_output() == "remote 1"
    finally:
        orchestrations.stop(2)
        activities.stop(2)


def test_custom_data_converter_is_used_by_client_and_worker(emulator: Emulator) -> None:
    class Upper(JsonDataConverter):
        def serialize(self, value: Any) -> str | None:
            return None if value is None else super().serialize(value.upper() if isinstance(value, str) else value)

    def shout(ctx: task.OrchestrationContext, text: str) -> str:
        return f"{text}!"

    worker = _worker(emulator, shout, data_converter=Upper())
    assert run_once(worker, emulator.address, shout, "hi", data_converter=Upper()).get_output() == "HI!"


def test_stop_drains_in_flight_activities(emulator: Emulator) -> None:
    started = threading.Event()
    runs: list[str] = []

    def slow(ctx: task.ActivityContext, _: Any) -> str:
        runs.append("run")
        started.set()
        time.sleep(0.5)
        return "finished"

    def calls_slow(ctx: task.OrchestrationContext, _: Any) -> Any:
        value = yield ctx.call_activity(slow)
        return value

    first = _worker(emulator, calls_slow, activities=(slow,))
    first.start()
    with TaskHubGrpcClient(host_address=emulator.address) as client:
        instance_id = client.schedule_new_orchestration(calls_slow)
        assert started.wait(10)
        first.stop(timeout=5)  # waits for the running activity and sends its result
        second = _worker(emulator, calls_slow, activities=(slow,))
        second.start()
        try:
            state = client.wait_for_orchestration_completion(instance_id, timeout=10)
            assert state is not None and state.get_output() == "finished"
            # The result sent while stopping was accepted: the stream stayed open (this backend takes
            # back what a closed stream held), so the activity did not run a second time.
            assert runs == ["run"]
        finally:
            second.stop(2)


def test_stop_gives_back_work_that_outlives_the_drain_timeout(emulator: Emulator) -> None:
    release = threading.Event()
    attempts: list[float] = []

    async def hangs_once(ctx: task.ActivityContext, _: Any) -> str:
        import asyncio

        attempts.append(time.monotonic())
        if len(attempts) == 1:
            while not release.is_set():
                await asyncio.sleep(0.01)
        return f"attempt {len(attempts)}"

    def calls_it(ctx: task.OrchestrationContext, _: Any) -> Any:
        value = yield ctx.call_activity(hangs_once)
        return value

    first = _worker(emulator, calls_it, activities=(hangs_once,))
    first.start()
    with TaskHubGrpcClient(host_address=emulator.address) as client:
        instance_id = client.schedule_new_orchestration(calls_it)
        wait_until(lambda: attempts)
        first.stop(timeout=0.2)  # the activity is cancelled and its work item given back
        release.set()
        second = _worker(emulator, calls_it, activities=(hangs_once,))
        second.start()
        try:
            state = client.wait_for_orchestration_completion(instance_id, timeout=10)
            assert state is not None and state.get_output() == "attempt 2"
        finally:
            second.stop(2)


def test_worker_reconnects_after_the_backend_restarts(tmp_path: Path) -> None:
    """The emulator restarts (same port, same SQLite file) under a running worker."""
    gate = threading.Event()

    def gated(ctx: task.ActivityContext, i: int) -> int:
        gate.wait(10)
        return i

    def fan(ctx: task.OrchestrationContext, n: int) -> Any:
        results = yield task.when_all([ctx.call_activity(gated, input=i) for i in range(n)])
        return sum(results)

    port = free_port()
    db = tmp_path / "state.db"
    emulator = Emulator(port=port, db_path=db).start()
    worker = TaskHubGrpcWorker(host_address=f"localhost:{port}", resiliency_options=FAST_RECONNECT)
    worker.add_orchestrator(fan)
    worker.add_activity(gated)
    worker.start()
    try:
        with TaskHubGrpcClient(host_address=f"localhost:{port}") as client:
            ids = [client.schedule_new_orchestration(fan, input=4) for _ in range(3)]
            for instance_id in ids:
                client.wait_for_orchestration_start(instance_id, timeout=10)
        emulator.stop()
        deadline = time.monotonic() + 10
        while worker.wait_until_connected(0) and time.monotonic() < deadline:
            time.sleep(0.01)  # until the worker has seen the stream break, so the timing below means something
        assert not worker.wait_until_connected(0)
        gate.set()  # activities finish while the backend is down; their completions must retry or be redone
        emulator = Emulator(port=port, db_path=db).start()
        restarted = time.monotonic()
        assert worker.wait_until_connected(5)
        reconnect = time.monotonic() - restarted
        assert reconnect < 2.0, f"reconnected after {reconnect:.2f} s"
        with TaskHubGrpcClient(host_address=f"localhost:{port}") as client:
            for instance_id in ids:
                state = client.wait_for_orchestration_completion(instance_id, timeout=30)
                assert state is not None and state.get_output() == 6
    finally:
        worker.stop(2)
        emulator.stop()


class _FailFirstCompletions:
    """An asyncio interceptor that makes the first completions fail as if the backend were unavailable."""

    def __init__(self, failures: int) -> None:
        self.remaining = failures
        self.seen: list[str] = []

    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        import grpc

        method = details.method.decode() if isinstance(details.method, bytes) else details.method
        self.seen.append(method)
        if method.endswith("/CompleteActivityTask") and self.remaining > 0:
            self.remaining -= 1
            raise grpc.aio.AioRpcError(grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(), grpc.aio.Metadata(),
                                       details="injected outage")
        return await continuation(details, request)


def test_completions_are_retried_on_transient_errors(emulator: Emulator) -> None:
    import grpc

    def echo(ctx: task.ActivityContext, x: int) -> int:
        return x

    def calls_echo(ctx: task.OrchestrationContext, _: Any) -> Any:
        value = yield ctx.call_activity(echo, input=7)
        return value

    faults = _FailFirstCompletions(failures=2)
    interceptor = type("Faults", (grpc.aio.UnaryUnaryClientInterceptor,), {
        "intercept_unary_unary": faults.intercept_unary_unary})()
    worker = _worker(emulator, calls_echo, activities=(echo,), interceptors=[interceptor])
    assert run_once(worker, emulator.address, calls_echo).get_output() == 7
    assert faults.remaining == 0
    assert sum(m.endswith("/CompleteActivityTask") for m in faults.seen) == 3


def test_silent_stream_is_reopened(caplog: pytest.LogCaptureFixture) -> None:
    import logging

    def quick(ctx: task.OrchestrationContext, _: Any) -> str:
        return "ok"

    with Emulator(memory=True, ping_interval=30) as emulator:
        resiliency = GrpcWorkerResiliencyOptions(silent_disconnect_timeout_seconds=0.3,
                                                 reconnect_backoff_base_seconds=0.05,
                                                 reconnect_backoff_cap_seconds=0.1)
        worker = TaskHubGrpcWorker(host_address=emulator.address, resiliency_options=resiliency)
        worker.add_orchestrator(quick)
        with caplog.at_level(logging.WARNING, logger="durabletask.worker"):
            worker.start()
            try:
                time.sleep(1.0)
                with TaskHubGrpcClient(host_address=emulator.address) as client:
                    instance_id = client.schedule_new_orchestration(quick)
                    state = client.wait_for_orchestration_completion(instance_id, timeout=10)
                    assert state is not None and state.get_output() == "ok"
            finally:
                worker.stop(2)
    assert any("reopening the stream" in r.getMessage() for r in caplog.records)


# ---------------------------------------------------------------- holding episodes that start nothing

RELEASE_SLOW = threading.Event()


def quick(ctx: task.ActivityContext, value: int) -> int:
    return value


def slow(ctx: task.ActivityContext, value: int) -> int:
    RELEASE_SLOW.wait(10)
    return value


def quick_slow_and_timer(ctx: task.OrchestrationContext, _: Any) -> Any:
    results = yield task.when_all([ctx.call_activity(quick, input=1), ctx.call_activity(slow, input=2),
                                   ctx.create_timer(timedelta(hours=1))])
    return results[:2]


def fan_in(ctx: task.OrchestrationContext, n: int) -> Any:
    results = yield task.when_all([ctx.call_activity(quick, input=i) for i in range(n)])
    return sum(results)


def test_a_fan_in_whose_activities_all_ran_here_is_not_kept_waiting_by_a_held_episode(emulator: Emulator) -> None:
    # Each episode that only absorbs results may be held for the whole second; the episode is sent as
    # soon as this worker has completed every activity it awaits, so the fan-in ends without the wait.
    worker = _worker(emulator, fan_in, activities=(quick,), result_batching_window=1.0)
    started = time.monotonic()
    state = run_once(worker, emulator.address, fan_in, 20)
    assert state.get_output() == sum(range(20))
    assert time.monotonic() - started < 1.0


def _holds(worker: TaskHubGrpcWorker, instance_id: str) -> bool:
    runtime = worker._runtime  # what the worker holds is not public; this test needs to know when it holds
    return runtime is not None and instance_id in runtime._held


def test_stopping_sends_a_held_episode_instead_of_giving_it_back(emulator: Emulator) -> None:
    RELEASE_SLOW.clear()
    worker = _worker(emulator, quick_slow_and_timer, activities=(quick, slow), result_batching_window=1.0)
    worker.start()
    try:
        with TaskHubGrpcClient(host_address=emulator.address) as client:
            instance_id = client.schedule_new_orchestration(quick_slow_and_timer)
            # The episode that absorbs quick's result starts nothing and still awaits slow and the
            # timer: it is held. Stopping (with less time than the window) must send it.
            assert wait_until(lambda: _holds(worker, instance_id), 10), "the worker never held the episode"
            worker.stop(0.2)
            events = client.get_orchestration_history(instance_id)
            assert [e.result for e in events if isinstance(e, history.TaskCompletedEvent)] == ["1"]
            state = client.get_orchestration_state(instance_id)
            assert state is not None and state.runtime_status == OrchestrationStatus.RUNNING
    finally:
        RELEASE_SLOW.set()
        worker.stop(2)
