"""Our client and worker against our emulator, in-process: every client method and worker behaviour."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from durabletask import task
from durabletask.client import AsyncTaskHubGrpcClient, OrchestrationQuery, OrchestrationStatus, TaskHubGrpcClient
from durabletask.emulator import Emulator
from durabletask.internal import orchestrator_service_pb2 as pb
from durabletask.worker import TaskHubGrpcWorker


@dataclass
class Order:
    item: str
    quantity: int


@dataclass
class Receipt:
    item: str
    total: float


def price(ctx: task.ActivityContext, order: Order) -> Receipt:
    return Receipt(order.item, order.quantity * 2.5)


async def slow_echo(ctx: task.ActivityContext, value: Any) -> Any:
    await asyncio.sleep(0.05)
    return value


def fail(ctx: task.ActivityContext, message: str) -> None:
    raise ValueError(message)


def checkout(ctx: task.OrchestrationContext, order: Order) -> Any:
    receipt = yield ctx.call_activity(price, input=order)
    return receipt


def chain(ctx: task.OrchestrationContext, n: int) -> Any:
    total = 0
    for i in range(n):
        total += yield ctx.call_activity(slow_echo, input=i)
    return total


def wait_event(ctx: task.OrchestrationContext, _: Any) -> Any:
    ctx.set_custom_status({"waiting": True})
    value = yield ctx.wait_for_external_event("go")
    return value


def failing(ctx: task.OrchestrationContext, message: str) -> Any:
    yield ctx.call_activity(fail, input=message)


def child(ctx: task.OrchestrationContext, value: int) -> Any:
    yield ctx.wait_for_external_event("never")  # runs until terminated


def parent_of_waiting_child(ctx: task.OrchestrationContext, _: Any) -> Any:
    yield ctx.call_sub_orchestrator(child, input=1, instance_id=f"{ctx.instance_id}-child")


def info(ctx: task.OrchestrationContext, _: Any) -> Any:
    return {"version": ctx.version, "parent": ctx.parent_instance_id}


def with_info_child(ctx: task.OrchestrationContext, _: Any) -> Any:
    result = yield ctx.call_sub_orchestrator(info, version="7")
    return result


@pytest.fixture(scope="module")
def emulator() -> Iterator[Emulator]:
    with Emulator(memory=True) as emu:
        yield emu


@pytest.fixture(scope="module")
def worker(emulator: Emulator) -> Iterator[TaskHubGrpcWorker]:
    w = TaskHubGrpcWorker(host_address=emulator.address)
    for fn in (price, slow_echo, fail):
        w.add_activity(fn)
    for orch in (checkout, chain, wait_event, failing, child, parent_of_waiting_child, info, with_info_child):
        w.add_orchestrator(orch)
    w.start()
    assert w.wait_until_connected(10)
    yield w
    w.stop(5)


@pytest.fixture()
def client(emulator: Emulator, worker: TaskHubGrpcWorker) -> Iterator[TaskHubGrpcClient]:
    with TaskHubGrpcClient(host_address=emulator.address) as c:
        yield c


def complete(client: TaskHubGrpcClient, instance_id: str, timeout: float = 20) -> Any:
    state = client.wait_for_orchestration_completion(instance_id, timeout=timeout)
    assert state is not None
    return state


def until(client: TaskHubGrpcClient, instance_id: str, status: OrchestrationStatus) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        state = client.get_orchestration_state(instance_id)
        if state is not None and state.runtime_status == status:
            return
        time.sleep(0.02)
    raise AssertionError(f"{instance_id} did not reach {status}")


# ---------------------------------------------------------------- starting and reading


def test_typed_inputs_and_outputs_round_trip(client: TaskHubGrpcClient) -> None:
    instance_id = client.schedule_new_orchestration(checkout, input=Order("tea", 4), tags={"shop": "east"},
                                                    version="1.0")
    state = complete(client, instance_id)
    assert state.runtime_status == OrchestrationStatus.COMPLETED
    assert state.get_output(Receipt) == Receipt("tea", 10.0)
    assert state.get_input(Order) == Order("tea", 4)
    assert state.version == "1.0" and state.tags == {"shop": "east"}
    assert state.completed_at is not None and state.completed_at >= state.created_at


def test_explicit_instance_id_and_duplicate_is_rejected(client: TaskHubGrpcClient) -> None:
    import grpc

    instance_id = client.schedule_new_orchestration(chain, input=1, instance_id="fixed-id-1")
    assert instance_id == "fixed-id-1"
    complete(client, instance_id)
    with pytest.raises(grpc.RpcError) as error:
        client.schedule_new_orchestration(chain, input=1, instance_id="fixed-id-1")
    assert error.value.code() == grpc.StatusCode.ALREADY_EXISTS


def test_reuse_policy_replaces_a_completed_instance(client: TaskHubGrpcClient) -> None:
    instance_id = client.schedule_new_orchestration(chain, input=1, instance_id="reused-1")
    complete(client, instance_id)
    policy = pb.OrchestrationIdReusePolicy(replaceableStatus=[pb.ORCHESTRATION_STATUS_COMPLETED])
    client.schedule_new_orchestration(chain, input=2, instance_id="reused-1", reuse_id_policy=policy)
    assert complete(client, "reused-1").get_output() == 1


def test_delayed_start_waits_until_start_at(client: TaskHubGrpcClient) -> None:
    start_at = datetime.now(timezone.utc) + timedelta(seconds=1)
    instance_id = client.schedule_new_orchestration(chain, input=1, start_at=start_at)
    pending = client.get_orchestration_state(instance_id)
    assert pending is not None and pending.runtime_status == OrchestrationStatus.PENDING
    started = client.wait_for_orchestration_start(instance_id, timeout=10)
    assert started is not None
    assert datetime.now(timezone.utc) >= start_at
    complete(client, instance_id)


def test_missing_instance_is_none(client: TaskHubGrpcClient) -> None:
    assert client.get_orchestration_state("does-not-exist") is None


def test_wait_timeout_raises_timeout_error(client: TaskHubGrpcClient) -> None:
    instance_id = client.schedule_new_orchestration(wait_event)
    with pytest.raises(TimeoutError):
        client.wait_for_orchestration_completion(instance_id, timeout=0.3)
    client.terminate_orchestration(instance_id)


def test_sub_orchestration_sees_version_and_parent(client: TaskHubGrpcClient) -> None:
    instance_id = client.schedule_new_orchestration(with_info_child)
    assert complete(client, instance_id).get_output() == {"version": "7", "parent": instance_id}


# ---------------------------------------------------------------- managing


def test_event_and_custom_status(client: TaskHubGrpcClient) -> None:
    instance_id = client.schedule_new_orchestration(wait_event)
    client.wait_for_orchestration_start(instance_id, timeout=10)
    client.raise_orchestration_event(instance_id, "go", data={"ok": 1})
    state = complete(client, instance_id)
    assert state.get_output() == {"ok": 1}
    assert state.get_custom_status() == {"waiting": True}


def test_suspend_resume(client: TaskHubGrpcClient) -> None:
    instance_id = client.schedule_new_orchestration(wait_event)
    client.wait_for_orchestration_start(instance_id, timeout=10)
    client.suspend_orchestration(instance_id, reason="pause")
    until(client, instance_id, OrchestrationStatus.SUSPENDED)
    client.raise_orchestration_event(instance_id, "go", data=5)
    time.sleep(0.2)
    state = client.get_orchestration_state(instance_id)
    assert state is not None and state.runtime_status == OrchestrationStatus.SUSPENDED
    client.resume_orchestration(instance_id, reason="continue")
    assert complete(client, instance_id).get_output() == 5


def test_recursive_terminate_stops_children(client: TaskHubGrpcClient) -> None:
    instance_id = client.schedule_new_orchestration(parent_of_waiting_child)
    until(client, f"{instance_id}-child", OrchestrationStatus.RUNNING)
    client.terminate_orchestration(instance_id, output="bye", recursive=True)
    state = complete(client, instance_id)
    assert state.runtime_status == OrchestrationStatus.TERMINATED and state.get_output() == "bye"
    assert complete(client, f"{instance_id}-child").runtime_status == OrchestrationStatus.TERMINATED


def test_failure_details_and_rewind(client: TaskHubGrpcClient, worker: TaskHubGrpcWorker) -> None:
    instance_id = client.schedule_new_orchestration(failing, input="boom")
    state = complete(client, instance_id)
    assert state.runtime_status == OrchestrationStatus.FAILED
    assert state.failure_details is not None
    assert "boom" in state.failure_details.message
    with pytest.raises(Exception, match="boom"):
        state.raise_if_failed()
    client.rewind_orchestration(instance_id, reason="retry it")
    again = complete(client, instance_id)  # the activity fails again, but it ran again
    assert again.runtime_status == OrchestrationStatus.FAILED
    history = client.get_orchestration_history(instance_id)
    assert sum(1 for e in history if type(e).__name__ == "ExecutionRewoundEvent") == 1


def test_restart_with_same_and_new_id(client: TaskHubGrpcClient) -> None:
    instance_id = client.schedule_new_orchestration(chain, input=2)
    complete(client, instance_id)
    assert client.restart_orchestration(instance_id) == instance_id
    assert complete(client, instance_id).get_output() == 1
    new_id = client.restart_orchestration(instance_id, restart_with_new_instance_id=True)
    assert new_id != instance_id
    assert complete(client, new_id).get_output() == 1


def test_history_is_returned_as_history_objects(client: TaskHubGrpcClient) -> None:
    instance_id = client.schedule_new_orchestration(chain, input=2)
    complete(client, instance_id)
    kinds = [type(e).__name__ for e in client.get_orchestration_history(instance_id)]
    assert kinds[0] == "OrchestratorStartedEvent" and "ExecutionStartedEvent" in kinds
    assert kinds.count("TaskCompletedEvent") == 2 and "ExecutionCompletedEvent" in kinds


# ---------------------------------------------------------------- queries and purge


def test_query_by_prefix_with_pages(client: TaskHubGrpcClient) -> None:
    ids = [client.schedule_new_orchestration(chain, input=1, instance_id=f"page-{i}") for i in range(5)]
    for instance_id in ids:
        complete(client, instance_id)
    query = OrchestrationQuery(instance_id_prefix="page-", max_instance_count=2)
    seen: list[str] = []
    token: str | None = None
    pages = 0
    while True:
        page = client.query_orchestrations(query, continuation_token=token)
        seen += [s.instance_id for s in page.items]
        pages += 1
        token = page.continuation_token
        if token is None:
            break
    assert sorted(seen) == sorted(ids) and pages >= 3
    assert len(client.get_all_orchestration_states(query)) == 5
    statuses = OrchestrationQuery(instance_id_prefix="page-", runtime_status=[OrchestrationStatus.FAILED])
    assert client.get_all_orchestration_states(statuses) == []


def test_list_instance_ids_of_completed_instances(client: TaskHubGrpcClient) -> None:
    ids = {client.schedule_new_orchestration(chain, input=1, instance_id=f"listed-{i}") for i in range(3)}
    for instance_id in ids:
        complete(client, instance_id)
    found: set[str] = set()
    token: str | None = None
    while True:
        page = client.list_instance_ids(runtime_status=[OrchestrationStatus.COMPLETED], page_size=50,
                                        continuation_token=token)
        found |= set(page.items)
        if page.continuation_token is None:
            break
        token = page.continuation_token
    assert ids <= found


def test_purge_by_id_and_by_filter(client: TaskHubGrpcClient) -> None:
    instance_id = client.schedule_new_orchestration(chain, input=1)
    complete(client, instance_id)
    assert client.purge_orchestration(instance_id).deleted_instance_count == 1
    assert client.get_orchestration_state(instance_id) is None
    failed = client.schedule_new_orchestration(failing, input="x")
    complete(client, failed)
    result = client.purge_orchestrations_by(created_time_from=datetime.now(timezone.utc) - timedelta(minutes=5),
                                            runtime_status=[OrchestrationStatus.FAILED])
    assert result.deleted_instance_count >= 1
    assert client.get_orchestration_state(failed) is None


# ---------------------------------------------------------------- async client


def test_async_client_mirrors_the_sync_one(emulator: Emulator, worker: TaskHubGrpcWorker) -> None:
    async def scenario() -> tuple[Any, Any]:
        async with AsyncTaskHubGrpcClient(host_address=emulator.address) as c:
            instance_id = await c.schedule_new_orchestration(wait_event)
            await c.wait_for_orchestration_start(instance_id, timeout=10)
            await c.raise_orchestration_event(instance_id, "go", data="async")
            done = await c.wait_for_orchestration_completion(instance_id, timeout=10)
            page = await c.query_orchestrations(OrchestrationQuery(instance_id_prefix=instance_id))
            return done, page

    done, page = asyncio.run(scenario())
    assert done is not None and done.get_output() == "async"
    assert [s.instance_id for s in page.items] == [done.instance_id]


def test_async_client_metadata_reaches_streaming_calls_too() -> None:
    def hello(ctx: task.OrchestrationContext, _: Any) -> str:
        return "hi"

    with Emulator(memory=True, task_hubs=["only-hub"]) as emu:
        worker = TaskHubGrpcWorker(host_address=emu.address, metadata=[("taskhub", "only-hub")])
        worker.add_orchestrator(hello)
        worker.start()

        async def scenario() -> list[Any]:
            async with AsyncTaskHubGrpcClient(host_address=emu.address, metadata=[("taskhub", "only-hub")]) as c:
                instance_id = await c.schedule_new_orchestration(hello)
                await c.wait_for_orchestration_completion(instance_id, timeout=10)
                return await c.get_orchestration_history(instance_id)  # a server-streaming call

        try:
            history = asyncio.run(scenario())
        finally:
            worker.stop(2)
    assert any(type(e).__name__ == "ExecutionCompletedEvent" for e in history)
