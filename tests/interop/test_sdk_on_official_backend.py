"""Our client and worker against the official SDK's in-memory backend (its own process).

If these pass, our worker and client speak the protocol the way the official backend expects,
not just the way our own emulator does.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest

from durabletask import history, task
from durabletask.client import AsyncTaskHubGrpcClient, OrchestrationStatus, TaskHubGrpcClient
from durabletask.worker import TaskHubGrpcWorker
from tests.support.servers import official_in_memory_backend

pytestmark = pytest.mark.interop

FLAKY_CALLS: dict[str, int] = {}


def inc(ctx: task.ActivityContext, value: int) -> int:
    return value + 1


async def async_double(ctx: task.ActivityContext, value: int) -> int:
    await asyncio.sleep(0)
    return value * 2


def flaky(ctx: task.ActivityContext, key: str) -> str:
    FLAKY_CALLS[key] = FLAKY_CALLS.get(key, 0) + 1
    if FLAKY_CALLS[key] < 3:
        raise ConnectionError(f"attempt {FLAKY_CALLS[key]} failed")
    return f"ok after {FLAKY_CALLS[key]}"


BODY_STARTS: dict[str, int] = {}


def chain(ctx: task.OrchestrationContext, n: int) -> Any:
    BODY_STARTS[ctx.instance_id] = BODY_STARTS.get(ctx.instance_id, 0) + 1
    x = 0
    for _ in range(n):
        x = yield ctx.call_activity(inc, input=x)
    return x


def fan_out(ctx: task.OrchestrationContext, n: int) -> Any:
    results = yield task.when_all([ctx.call_activity(async_double, input=i) for i in range(n)])
    return sum(results)


def timer_then_value(ctx: task.OrchestrationContext, _: Any) -> Any:
    start = ctx.current_utc_datetime
    yield ctx.create_timer(timedelta(seconds=1))
    return (ctx.current_utc_datetime - start).total_seconds()


def approval(ctx: task.OrchestrationContext, _: Any) -> Any:
    ctx.set_custom_status("waiting")
    answer = yield ctx.wait_for_external_event("approve")
    return f"approved by {answer}"


def child(ctx: task.OrchestrationContext, value: int) -> int:
    return value * 10


def parent(ctx: task.OrchestrationContext, _: Any) -> Any:
    results = yield task.when_all([ctx.call_sub_orchestrator(child, input=i) for i in range(3)])
    return results


def counter(ctx: task.OrchestrationContext, count: int) -> Any:
    if count < 3:
        yield ctx.create_timer(timedelta(milliseconds=10))
        ctx.continue_as_new(count + 1)
        return None
    return count


def forever(ctx: task.OrchestrationContext, _: Any) -> Any:
    yield ctx.wait_for_external_event("never")


def retried(ctx: task.OrchestrationContext, key: str) -> Any:
    policy = task.RetryPolicy(first_retry_interval=timedelta(milliseconds=100), max_number_of_attempts=5,
                              handle_failure=lambda f: f.is_caused_by(ConnectionError))
    result = yield ctx.call_activity(flaky, input=key, retry_policy=policy)
    return result


def failing(ctx: task.OrchestrationContext, _: Any) -> Any:
    yield ctx.call_activity("not_registered_anywhere")


@pytest.fixture(scope="module")
def address() -> Iterator[str]:
    with official_in_memory_backend() as addr:
        worker = TaskHubGrpcWorker(host_address=addr)
        for fn in (inc, async_double, flaky):
            worker.add_activity(fn)
        for fn in (chain, fan_out, timer_then_value, approval, child, parent, counter, forever, retried, failing):
            worker.add_orchestrator(fn)
        worker.start()
        assert worker.wait_until_connected(10)
        try:
            yield addr
        finally:
            worker.stop(5)


@pytest.fixture()
def client(address: str) -> Iterator[TaskHubGrpcClient]:
    with TaskHubGrpcClient(host_address=address) as c:
        yield c


def run(client: TaskHubGrpcClient, orchestrator: Any, input: Any = None, timeout: float = 30) -> Any:
    instance_id = client.schedule_new_orchestration(orchestrator, input=input)
    state = client.wait_for_orchestration_completion(instance_id, timeout=timeout)
    assert state is not None
    return state


def test_chain(client: TaskHubGrpcClient) -> None:
    state = run(client, chain, 10)
    assert state.runtime_status == OrchestrationStatus.COMPLETED
    assert state.get_output() == 10
    # The official backend's histories continue what the worker kept: 11 episodes, one start of the body.
    assert BODY_STARTS[state.instance_id] == 1


def test_fan_out_with_async_activities(client: TaskHubGrpcClient) -> None:
    assert run(client, fan_out, 50).get_output() == sum(i * 2 for i in range(50))


def test_durable_timer(client: TaskHubGrpcClient) -> None:
    assert run(client, timer_then_value).get_output() >= 1.0


def test_external_event_and_custom_status(client: TaskHubGrpcClient) -> None:
    instance_id = client.schedule_new_orchestration(approval)
    started = client.wait_for_orchestration_start(instance_id, timeout=10)
    assert started is not None
    client.raise_orchestration_event(instance_id, "approve", data="kim")
    state = client.wait_for_orchestration_completion(instance_id, timeout=10)
    assert state is not None and state.get_output() == "approved by kim"
    assert state.get_custom_status() == "waiting"


def test_sub_orchestrations(client: TaskHubGrpcClient) -> None:
    assert run(client, parent).get_output() == [0, 10, 20]


def test_continue_as_new(client: TaskHubGrpcClient) -> None:
    assert run(client, counter, 0).get_output() == 3


def test_terminate(client: TaskHubGrpcClient) -> None:
    instance_id = client.schedule_new_orchestration(forever)
    client.wait_for_orchestration_start(instance_id, timeout=10)
    client.terminate_orchestration(instance_id, output="stopped")
    state = client.wait_for_orchestration_completion(instance_id, timeout=10)
    assert state is not None
    assert state.runtime_status == OrchestrationStatus.TERMINATED
    assert state.get_output() == "stopped"


def test_suspend_and_resume(client: TaskHubGrpcClient) -> None:
    instance_id = client.schedule_new_orchestration(approval)
    client.wait_for_orchestration_start(instance_id, timeout=10)
    client.suspend_orchestration(instance_id, reason="hold")
    _wait_for_status(client, instance_id, OrchestrationStatus.SUSPENDED)
    client.raise_orchestration_event(instance_id, "approve", data="later")
    client.resume_orchestration(instance_id, reason="go")
    state = client.wait_for_orchestration_completion(instance_id, timeout=10)
    assert state is not None and state.get_output() == "approved by later"


def test_resume_of_a_running_instance_does_not_fail_it(client: TaskHubGrpcClient) -> None:
    # The official backend forwards such a resume; the official worker would fail the instance.
    instance_id = client.schedule_new_orchestration(approval)
    client.wait_for_orchestration_start(instance_id, timeout=10)
    client.resume_orchestration(instance_id)
    client.raise_orchestration_event(instance_id, "approve", data="still fine")
    state = client.wait_for_orchestration_completion(instance_id, timeout=10)
    assert state is not None and state.runtime_status == OrchestrationStatus.COMPLETED


def test_retries_with_predicate(client: TaskHubGrpcClient) -> None:
    state = run(client, retried, "retry-1")
    assert state.get_output() == "ok after 3"


def test_unregistered_activity_fails_naming_it(client: TaskHubGrpcClient) -> None:
    state = run(client, failing)
    assert state.runtime_status == OrchestrationStatus.FAILED
    assert state.failure_details is not None
    assert "not_registered_anywhere" in state.failure_details.message or (
        state.failure_details.inner_failure is not None
        and "not_registered_anywhere" in state.failure_details.inner_failure.message)


def test_async_client(address: str) -> None:
    async def scenario() -> Any:
        async with AsyncTaskHubGrpcClient(host_address=address) as c:
            instance_id = await c.schedule_new_orchestration(chain, input=3)
            return await c.wait_for_orchestration_completion(instance_id, timeout=10)

    state = asyncio.run(scenario())
    assert state is not None and state.get_output() == 3


def test_wait_timeout_raises_timeout_error(client: TaskHubGrpcClient) -> None:
    instance_id = client.schedule_new_orchestration(forever)
    with pytest.raises(TimeoutError, match=instance_id):
        client.wait_for_orchestration_completion(instance_id, timeout=0.5)
    client.terminate_orchestration(instance_id)


def _wait_for_status(client: TaskHubGrpcClient, instance_id: str, status: OrchestrationStatus) -> None:
    import time

    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        state = client.get_orchestration_state(instance_id)
        if state is not None and state.runtime_status == status:
            return
        time.sleep(0.05)
    raise AssertionError(f"{instance_id} never reached {status}")


def test_work_that_arrives_while_stopping_is_given_back_for_another_worker() -> None:
    # A stopping worker keeps its stream open while it finishes its work, so work keeps arriving; it
    # must neither run it nor keep it, since this backend never takes back what a closed stream held.
    started, release = threading.Event(), threading.Event()
    runs: list[str] = []

    def blocks(ctx: task.ActivityContext, _: Any) -> str:
        runs.append("run")
        started.set()
        release.wait(10)
        return "unblocked"

    def calls_blocks(ctx: task.OrchestrationContext, _: Any) -> Any:
        value = yield ctx.call_activity(blocks)
        return value

    def hello(ctx: task.OrchestrationContext, name: str) -> str:
        return f"hello {name}"

    def worker(addr: str) -> TaskHubGrpcWorker:
        w = TaskHubGrpcWorker(host_address=addr)
        w.add_orchestrator(calls_blocks)
        w.add_orchestrator(hello)
        w.add_activity(blocks)
        return w

    with official_in_memory_backend() as addr, TaskHubGrpcClient(host_address=addr) as client:
        first = worker(addr)
        first.start()
        client.schedule_new_orchestration(calls_blocks)
        assert started.wait(10)
        stopping = threading.Thread(target=first.stop, args=(10,))
        stopping.start()  # drains: waits for the blocked activity
        time.sleep(0.2)
        late = client.schedule_new_orchestration(hello, input="late")
        time.sleep(0.3)
        release.set()  # the activity's result is sent; the episode it causes arrives while stopping too
        stopping.join()
        second = worker(addr)
        second.start()
        try:
            state = client.wait_for_orchestration_completion(late, timeout=10)
            assert state is not None and state.get_output() == "hello late"
            assert runs == ["run"]  # the drained activity was not given back
            # (Whether ``blocked`` goes on is up to this backend: the episode its result causes may be
            # handed to the stream as it closes, and this backend then keeps it in flight for good.)
        finally:
            second.stop(2)


def _episodes_of_a_fan_out(address: str, window: float, n: int) -> int:
    worker = TaskHubGrpcWorker(host_address=address, result_batching_window=window)
    worker.add_activity(inc)
    worker.add_orchestrator(plain_fan_out)
    worker.start()
    try:
        assert worker.wait_until_connected(10)
        with TaskHubGrpcClient(host_address=address) as c:
            state = run(c, plain_fan_out, n)
            assert state.get_output() == sum(range(1, n + 1))
            events = c.get_orchestration_history(state.instance_id)
    finally:
        worker.stop(5)
    return sum(isinstance(event, history.OrchestratorStartedEvent) for event in events)


def plain_fan_out(ctx: task.OrchestrationContext, n: int) -> Any:
    results = yield task.when_all([ctx.call_activity(inc, input=i) for i in range(n)])
    return sum(results)


def test_results_of_a_fan_out_share_episodes_while_an_episode_is_held() -> None:
    # This backend dispatches the orchestration again as soon as one result reaches it, so a worker
    # that completes every episode at once runs an episode for every one or two results (about 90
    # here on an idle machine), each carrying the whole history. Held (here for up to a second), the
    # episode that absorbed the first results goes back once this worker has completed every activity
    # it awaits, and the rest come in one episode.
    with official_in_memory_backend() as addr:
        episodes = _episodes_of_a_fan_out(addr, 1.0, 200)
    assert episodes <= 5, f"expected the results to come in a few episodes, got {episodes}"
