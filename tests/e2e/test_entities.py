"""Durable entities end to end: our client and worker against our emulator, in-process.

One emulator (in memory) and one worker serve most tests; each test uses its own entity keys.
Tests about persistence or about losing a worker start their own emulator and workers.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from durabletask import task
from durabletask.client import (
    AsyncTaskHubGrpcClient,
    EntityQuery,
    OrchestrationStatus,
    TaskHubGrpcClient,
)
from durabletask.emulator import Emulator
from durabletask.entities import DurableEntity, EntityContext, EntityInstanceId, EntityOperationFailedException
from durabletask.internal import orchestrator_service_pb2 as pb
from durabletask.worker import TaskHubGrpcWorker

ROOT = Path(__file__).resolve().parents[2]

# What the counter entity ran, per key: (operation, input, wall-clock time).
RAN: dict[str, list[tuple[str, Any, float]]] = {}
# Gates the counter's "hold" operation waits on, per key.
GATES: dict[str, threading.Event] = {}


# ----------------------------------------------------------------------------- entities


def counter(ctx: EntityContext, value: Any) -> Any:
    RAN.setdefault(ctx.entity_id.key, []).append((ctx.operation, value, time.time()))
    current = ctx.get_state(int, 0)
    if ctx.operation == "add":
        ctx.set_state(current + value)
        return current + value
    if ctx.operation == "set":
        ctx.set_state(value)
        return None
    if ctx.operation == "get":
        return current
    if ctx.operation == "fail":
        ctx.set_state(-1000)  # rolled back with the failure
        ctx.signal_entity(EntityInstanceId("counter", f"{ctx.entity_id.key}-side"), "add", 1)  # undone too
        raise ValueError(f"counter refuses {value}")
    if ctx.operation == "hold":
        assert GATES[ctx.entity_id.key].wait(10), "gate never opened"
        return current
    if ctx.operation == "delete":
        ctx.set_state(None)
        return None
    raise NotImplementedError(f"counter has no operation '{ctx.operation}'")


class Account(DurableEntity):
    def deposit(self, amount: int) -> int:
        balance = self.get_state(int, 0) + amount
        self.set_state(balance)
        return balance

    def withdraw(self, amount: int) -> int:
        balance = self.get_state(int, 0)
        if amount > balance:
            raise ValueError(f"insufficient funds: {balance} < {amount}")
        self.set_state(balance - amount)
        return balance - amount

    def balance(self) -> int:
        return self.get_state(int, 0)


@dataclass
class Item:
    name: str
    quantity: int


class Inventory(DurableEntity):
    def add(self, item: Item) -> Item:
        stock = self.get_state(dict, {})
        stock[item.name] = stock.get(item.name, 0) + item.quantity
        self.set_state(stock)
        return Item(item.name, stock[item.name])


class Launcher(DurableEntity):
    def launch(self, key: str) -> str:
        target = EntityInstanceId("counter", key)
        self.signal_entity(target, "add", 100)
        self.signal_entity(target, "add", 1000, signal_time=datetime.now(timezone.utc) + timedelta(seconds=0.5))
        instance_id = self.schedule_new_orchestration("report", input=key, instance_id=f"report-{key}")
        self.set_state(instance_id)
        return instance_id


# ----------------------------------------------------------------------------- orchestrations


def call_account(ctx: task.OrchestrationContext, key: str) -> Any:
    account = EntityInstanceId("account", key)
    yield ctx.call_entity(account, "deposit", 50)
    balance = yield ctx.call_entity(account, "withdraw", 20, return_type=int)
    try:
        yield ctx.call_entity(account, "withdraw", 1000)
    except task.TaskFailedError as error:
        inner = error.details.inner_failure
        return {"balance": balance, "message": str(error), "type": error.details.error_type,
                "inner": None if inner is None else [inner.error_type, inner.message]}
    return {"balance": balance, "message": "no failure"}


def three_calls_in_one_batch(ctx: task.OrchestrationContext, key: str) -> Any:
    target = EntityInstanceId("counter", key)
    first = ctx.call_entity(target, "add", 1)
    failing = ctx.call_entity(target, "fail", "this")
    last = ctx.call_entity(target, "add", 2)
    results: list[Any] = [(yield first)]
    try:
        results.append((yield failing))
    except task.TaskFailedError as error:
        results.append(str(error))
    results.append((yield last))
    return results


def signal_later(ctx: task.OrchestrationContext, key: str) -> str:
    target = EntityInstanceId("counter", key)
    due = ctx.current_utc_datetime + timedelta(seconds=1)
    ctx.signal_entity(target, "add", 1)
    ctx.signal_entity(target, "add", 10, signal_time=due)
    return due.isoformat()


def transfer(ctx: task.OrchestrationContext, args: dict[str, Any]) -> Any:
    source, target = EntityInstanceId("account", args["from"]), EntityInstanceId("account", args["to"])
    with (yield ctx.lock_entities([source, target])):
        available = yield ctx.call_entity(source, "balance")
        if available < args["amount"]:
            return "declined"
        yield task.when_all([ctx.call_entity(source, "withdraw", args["amount"]),
                             ctx.call_entity(target, "deposit", args["amount"])])
    return "done"


def increment_in_section(ctx: task.OrchestrationContext, key: str) -> Any:
    target = EntityInstanceId("counter", key)
    with (yield ctx.lock_entities([target])):
        value = yield ctx.call_entity(target, "get")
        yield ctx.create_timer(timedelta(milliseconds=10))  # widen the window a race would need
        yield ctx.call_entity(target, "set", value + 1)
    return value + 1


def fail_in_section(ctx: task.OrchestrationContext, key: str) -> Any:
    target = EntityInstanceId("counter", key)
    with (yield ctx.lock_entities([target])):
        yield ctx.call_entity(target, "add", 1)
        raise RuntimeError("failed while holding the lock")


def continue_in_section(ctx: task.OrchestrationContext, args: dict[str, Any]) -> Any:
    target = EntityInstanceId("counter", args["key"])
    if args["round"] == 0:
        with (yield ctx.lock_entities([target])):
            yield ctx.call_entity(target, "add", 1)
            ctx.continue_as_new({"key": args["key"], "round": 1})
            return None
    finished = yield ctx.wait_for_external_event("finish")  # runs on, without the lock
    return finished


def hold_lock(ctx: task.OrchestrationContext, key: str) -> Any:
    with (yield ctx.lock_entities([EntityInstanceId("counter", key)])):
        ctx.set_custom_status("locked")
        yield ctx.wait_for_external_event("never")


def section_waiting_for_go(ctx: task.OrchestrationContext, key: str) -> Any:
    target = EntityInstanceId("counter", key)
    with (yield ctx.lock_entities([target])):
        yield ctx.call_entity(target, "add", 1)
        ctx.set_custom_status("in the section")
        yield ctx.wait_for_external_event("go")
        value = yield ctx.call_entity(target, "add", 1)
    return value


def report(ctx: task.OrchestrationContext, key: str) -> Any:
    value = yield ctx.call_entity(EntityInstanceId("counter", key), "get")
    return f"{key}={value}"


def restock(ctx: task.OrchestrationContext, quantity: int) -> Any:
    item = yield ctx.call_entity(EntityInstanceId("inventory", "store"), "add", Item("bolt", quantity),
                                 return_type=Item)
    assert isinstance(item, Item)
    return item.quantity


def call_unregistered(ctx: task.OrchestrationContext, _: Any) -> Any:
    try:
        yield ctx.call_entity(EntityInstanceId("nosuch", "x"), "anything")
    except task.TaskFailedError as error:
        inner = error.details.inner_failure
        return [str(error), None if inner is None else inner.error_type]
    return "no failure"


ORCHESTRATIONS = (call_account, three_calls_in_one_batch, signal_later, transfer, increment_in_section,
                  fail_in_section, continue_in_section, hold_lock, report, restock, call_unregistered)


# ----------------------------------------------------------------------------- fixtures and helpers


@pytest.fixture(scope="module")
def emulator() -> Iterator[Emulator]:
    with Emulator(memory=True) as emu:
        yield emu


@pytest.fixture(scope="module")
def worker(emulator: Emulator) -> Iterator[TaskHubGrpcWorker]:
    w = TaskHubGrpcWorker(host_address=emulator.address)
    w.add_entity(counter)
    w.entity(Account)
    w.add_entity(Launcher)
    w.add_entity(Inventory)
    for fn in ORCHESTRATIONS:
        w.add_orchestrator(fn)
    w.start()
    assert w.wait_until_connected(10)
    yield w
    for gate in GATES.values():
        gate.set()
    w.stop(5)


@pytest.fixture()
def client(emulator: Emulator, worker: TaskHubGrpcWorker) -> Iterator[TaskHubGrpcClient]:
    with TaskHubGrpcClient(host_address=emulator.address) as c:
        yield c


def eventually(check: Callable[[], Any], timeout: float = 15.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"{what} never held"
        time.sleep(0.02)


def state_of(client: TaskHubGrpcClient, entity: EntityInstanceId) -> Any:
    metadata = client.get_entity(entity)
    return None if metadata is None else metadata.get_typed_state()


def settled(client: TaskHubGrpcClient, entity: EntityInstanceId, expected: Any) -> bool:
    metadata = client.get_entity(entity)
    return metadata is not None and metadata.backlog_queue_size == 0 and metadata.get_typed_state() == expected


def finish(client: TaskHubGrpcClient, instance_id: str, status: OrchestrationStatus = OrchestrationStatus.COMPLETED,
           timeout: float = 30) -> Any:
    state = client.wait_for_orchestration_completion(instance_id, timeout=timeout)
    assert state is not None
    assert state.runtime_status == status, state.failure_details
    return state


def run(client: TaskHubGrpcClient, orchestrator: Any, input: Any = None, instance_id: str | None = None) -> Any:
    instance = client.schedule_new_orchestration(orchestrator, input=input, instance_id=instance_id)
    return finish(client, instance).get_output()


def ran(key: str, operation: str) -> list[tuple[Any, float]]:
    return [(value, at) for op, value, at in RAN.get(key, []) if op == operation]


# ----------------------------------------------------------------------------- writing entities


def test_function_entity_signalled_by_the_client(client: TaskHubGrpcClient) -> None:
    entity = EntityInstanceId("Counter", "client-signals")  # the name is lower-cased
    assert str(entity) == "@counter@client-signals"
    for amount in (1, 2, 3):
        client.signal_entity(entity, "add", amount)
    eventually(lambda: settled(client, entity, 6))
    client.signal_entity(entity, "fail", "this")  # fails; its state change and its signal are rolled back
    client.signal_entity(entity, "add", 4)
    eventually(lambda: settled(client, entity, 10))
    assert ran("client-signals", "fail")
    assert client.get_entity(EntityInstanceId("counter", "client-signals-side")) is None


def test_class_entity_and_its_default_delete(client: TaskHubGrpcClient) -> None:
    entity = EntityInstanceId("account", "to-delete")
    client.signal_entity(entity, "deposit", 25)
    eventually(lambda: settled(client, entity, 25))
    client.signal_entity(entity, "delete")  # DurableEntity's built-in operation
    eventually(lambda: client.get_entity(entity) is None, what="the deleted entity disappearing")
    client.signal_entity(entity, "deposit", 1)  # starts afresh
    eventually(lambda: settled(client, entity, 1))


def test_class_entity_with_dataclass_input_and_result(client: TaskHubGrpcClient) -> None:
    assert run(client, restock, 3) == 3
    client.signal_entity(EntityInstanceId("inventory", "store"), "add", Item("nut", 2))
    assert run(client, restock, 4) == 7
    eventually(lambda: settled(client, EntityInstanceId("inventory", "store"), {"bolt": 7, "nut": 2}))


# ----------------------------------------------------------------------------- calls from orchestrations


def test_call_entity_result_and_failure(client: TaskHubGrpcClient) -> None:
    result = run(client, call_account, "alice")
    assert result["balance"] == 30
    assert result["message"] == ("Operation 'withdraw' on entity '@account@alice' failed with error: "
                                 "insufficient funds: 30 < 1000")
    assert result["type"].endswith(EntityOperationFailedException.__name__)
    assert result["inner"][0].endswith("ValueError") and result["inner"][1] == "insufficient funds: 30 < 1000"
    assert state_of(client, EntityInstanceId("account", "alice")) == 30


def test_failed_operation_rolls_back_alone_in_its_batch(client: TaskHubGrpcClient) -> None:
    key = "one-batch"
    entity = EntityInstanceId("counter", key)
    gate = GATES[key] = threading.Event()
    client.signal_entity(entity, "set", 0)  # an entity without state does not exist for get_entity
    client.signal_entity(entity, "hold")
    eventually(lambda: ran(key, "hold"), what="hold running")
    instance_id = client.schedule_new_orchestration(three_calls_in_one_batch, input=key)
    # the three calls queue behind the running "hold", so the next batch carries all three
    eventually(lambda: (m := client.get_entity(entity)) is not None and m.backlog_queue_size == 4,
               what="three calls queued behind hold")
    gate.set()
    first, failure, last = finish(client, instance_id).get_output()
    assert first == 1
    assert failure == f"Operation 'fail' on entity '@counter@{key}' failed with error: counter refuses this"
    assert last == 3  # "fail" set -1000 and raised: rolled back, while "add 1" before it kept its state
    assert settled(client, entity, 3)
    assert client.get_entity(EntityInstanceId("counter", f"{key}-side")) is None  # its signal was undone too


def test_unregistered_entity_fails_each_operation_naming_it(client: TaskHubGrpcClient) -> None:
    message, inner_type = run(client, call_unregistered)
    assert message.startswith("Operation 'anything' on entity '@nosuch@x' failed with error: ")
    assert "nosuch" in message.split("failed with error: ", 1)[1]
    assert inner_type is not None and inner_type.endswith("EntityNotRegisteredError")
    entity = EntityInstanceId("nosuch", "signalled")
    client.signal_entity(entity, "anything")  # fails too, and leaves nothing behind
    transient = EntityQuery(instance_id_starts_with="@nosuch@", include_transient=True)
    eventually(lambda: client.get_all_entities(transient) == [], what="the failed signal leaving no entity")
    assert client.get_entity(entity) is None


# ----------------------------------------------------------------------------- signals


def test_delayed_signal_from_the_client(client: TaskHubGrpcClient) -> None:
    key = "client-delayed"
    entity = EntityInstanceId("counter", key)
    due = datetime.now(timezone.utc) + timedelta(seconds=1)
    client.signal_entity(entity, "add", 5, signal_time=due)
    client.signal_entity(entity, "add", 1)  # not delayed: runs first
    eventually(lambda: settled(client, entity, 1))
    eventually(lambda: settled(client, entity, 6))
    [(_, applied_at)] = ran(key, "add")[1:]
    assert applied_at >= due.timestamp() - 1e-3, "the delayed signal ran before its time"


def test_signals_from_an_orchestration_one_delayed(client: TaskHubGrpcClient) -> None:
    key = "orchestration-delayed"
    entity = EntityInstanceId("counter", key)
    due = datetime.fromisoformat(run(client, signal_later, key))
    eventually(lambda: state_of(client, entity) == 1)
    eventually(lambda: settled(client, entity, 11))
    assert [value for value, _ in ran(key, "add")] == [1, 10]
    assert ran(key, "add")[1][1] >= due.timestamp() - 1e-3, "the delayed signal ran before its time"


def test_entity_signals_another_entity_and_starts_an_orchestration(client: TaskHubGrpcClient) -> None:
    key = "launched"
    client.signal_entity(EntityInstanceId("launcher", "l1"), "launch", key)
    state = eventually(lambda: client.get_orchestration_state(f"report-{key}"), what="the started orchestration")
    state = finish(client, f"report-{key}")
    assert state.get_output() in (f"{key}=0", f"{key}=100")
    eventually(lambda: settled(client, EntityInstanceId("counter", key), 1100))
    assert [value for value, _ in ran(key, "add")] == [100, 1000]  # the delayed one last
    assert state_of(client, EntityInstanceId("launcher", "l1")) == f"report-{key}"


# ----------------------------------------------------------------------------- client reads


def test_get_entity_with_and_without_state(client: TaskHubGrpcClient) -> None:
    entity = EntityInstanceId("counter", "metadata")
    assert client.get_entity(entity) is None
    before = datetime.now(timezone.utc) - timedelta(seconds=1)
    client.signal_entity(entity, "set", {"nested": [1, 2]})
    eventually(lambda: settled(client, entity, {"nested": [1, 2]}))
    with_state = client.get_entity(entity)
    assert with_state is not None and with_state.id == entity and with_state.includes_state
    assert with_state.serialized_state == '{"nested": [1, 2]}' or with_state.get_typed_state() == {"nested": [1, 2]}
    assert with_state.last_modified >= before and with_state.locked_by is None
    without = client.get_entity(entity, include_state=False)
    assert without is not None and without.includes_state is False
    assert without.serialized_state is None and without.get_typed_state() is None


def test_queries_by_prefix_with_pages(client: TaskHubGrpcClient) -> None:
    for i in range(5):
        client.signal_entity(EntityInstanceId("counter", f"page-{i}"), "set", i)
    client.signal_entity(EntityInstanceId("counter", "pager"), "set", -1)  # a longer ID, not under the prefix
    query = EntityQuery(instance_id_starts_with="@counter@page-", page_size=2)
    eventually(lambda: len(client.get_all_entities(query)) == 5)
    found = client.get_all_entities(query)
    assert [(e.id.key, e.get_typed_state()) for e in found] == [(f"page-{i}", i) for i in range(5)]
    pages, token = [], None
    while True:
        page = client.query_entities(query, continuation_token=token)
        pages.append([e.id.key for e in page.items])
        token = page.continuation_token
        if token is None:
            break
    assert pages == [["page-0", "page-1"], ["page-2", "page-3"], ["page-4"]]
    no_state = client.get_all_entities(EntityQuery(instance_id_starts_with="@counter@page-", include_state=False))
    assert len(no_state) == 5 and all(e.serialized_state is None for e in no_state)
    later = EntityQuery(instance_id_starts_with="@counter@page-",
                        last_modified_from=datetime.now(timezone.utc) + timedelta(minutes=1))
    assert client.get_all_entities(later) == []
    client.signal_entity(EntityInstanceId("account", "query"), "deposit", 1)
    eventually(lambda: client.get_entity(EntityInstanceId("account", "query")) is not None)
    accounts = client.get_all_entities(EntityQuery(instance_id_starts_with="acc"))  # a name prefix
    assert accounts and all(e.id.entity == "account" for e in accounts)


def test_clean_entity_storage_releases_orphaned_locks(client: TaskHubGrpcClient) -> None:
    key = "orphaned"
    entity = EntityInstanceId("counter", key)
    client.signal_entity(entity, "set", 1)
    eventually(lambda: settled(client, entity, 1))
    owner = client.schedule_new_orchestration(hold_lock, input=key, instance_id="lock-owner")
    eventually(lambda: (s := client.get_orchestration_state(owner)) is not None and s.serialized_custom_status,
               what="the lock being held")
    assert (metadata := client.get_entity(entity)) is not None and metadata.locked_by == owner
    # replacing the running owner deletes it without finishing it: nobody will release its lock
    policy = pb.OrchestrationIdReusePolicy(replaceableStatus=[pb.ORCHESTRATION_STATUS_RUNNING])
    client.schedule_new_orchestration(continue_in_section, input={"key": key, "round": 1}, instance_id=owner,
                                      reuse_id_policy=policy)  # the replacement runs on, without locks
    client.wait_for_orchestration_start(owner, timeout=10)
    client.signal_entity(entity, "add", 1)  # deferred: the entity is still locked
    eventually(lambda: (m := client.get_entity(entity)) is not None and m.backlog_queue_size == 1)
    assert client.get_entity(entity).locked_by == owner  # type: ignore[union-attr]
    result = client.clean_entity_storage()
    assert (result.orphaned_locks_released, result.empty_entities_removed) == (1, 0)
    eventually(lambda: settled(client, entity, 2))
    assert client.get_entity(entity).locked_by is None  # type: ignore[union-attr]
    again = client.clean_entity_storage()
    assert again.orphaned_locks_released == 0
    client.raise_orchestration_event(owner, "finish", data="done")
    assert finish(client, owner).get_output() == "done"


# ----------------------------------------------------------------------------- critical sections


def test_critical_section_transfer(client: TaskHubGrpcClient) -> None:
    source = EntityInstanceId("account", "src")
    client.signal_entity(source, "deposit", 100)
    eventually(lambda: settled(client, source, 100))
    assert run(client, transfer, {"from": "src", "to": "dst", "amount": 70}) == "done"
    assert run(client, transfer, {"from": "src", "to": "dst", "amount": 70}) == "declined"
    assert state_of(client, source) == 30
    assert state_of(client, EntityInstanceId("account", "dst")) == 70
    assert all(e.locked_by is None for e in client.get_all_entities(EntityQuery(instance_id_starts_with="@account@")))


def test_lock_is_released_when_the_orchestration_fails_in_the_section(client: TaskHubGrpcClient) -> None:
    key = "failed-owner"
    entity = EntityInstanceId("counter", key)
    instance_id = client.schedule_new_orchestration(fail_in_section, input=key)
    state = finish(client, instance_id, OrchestrationStatus.FAILED)
    assert state.failure_details is not None and "failed while holding the lock" in state.failure_details.message
    client.signal_entity(entity, "add", 10)  # would wait forever behind a lock nobody releases
    eventually(lambda: settled(client, entity, 11))
    assert client.get_entity(entity).locked_by is None  # type: ignore[union-attr]
    assert run(client, increment_in_section, key) == 12


def test_lock_is_released_on_continue_as_new(client: TaskHubGrpcClient) -> None:
    key = "continued-owner"
    entity = EntityInstanceId("counter", key)
    instance_id = client.schedule_new_orchestration(continue_in_section, input={"key": key, "round": 0})
    eventually(lambda: settled(client, entity, 1))
    eventually(lambda: (s := client.get_orchestration_state(instance_id)) is not None
               and s.serialized_input is not None and '"round": 1' in s.serialized_input,
               what="the new execution")
    client.signal_entity(entity, "add", 10)  # the new execution still runs but holds no lock
    eventually(lambda: settled(client, entity, 11))
    assert client.get_entity(entity).locked_by is None  # type: ignore[union-attr]
    client.raise_orchestration_event(instance_id, "finish", data="ok")
    assert finish(client, instance_id).get_output() == "ok"


def test_lock_is_released_on_termination(client: TaskHubGrpcClient) -> None:
    key = "terminated-owner"
    entity = EntityInstanceId("counter", key)
    client.signal_entity(entity, "set", 0)  # an entity without state does not exist for get_entity
    instance_id = client.schedule_new_orchestration(hold_lock, input=key)
    eventually(lambda: (m := client.get_entity(entity, include_state=False)) is not None and m.locked_by,
               what="the lock being held")
    client.signal_entity(entity, "add", 1)  # deferred while locked
    client.terminate_orchestration(instance_id, output="stop")
    finish(client, instance_id, OrchestrationStatus.TERMINATED)
    eventually(lambda: settled(client, entity, 1))
    assert client.get_entity(entity).locked_by is None  # type: ignore[union-attr]


def test_twenty_orchestrations_increment_one_counter_in_critical_sections(client: TaskHubGrpcClient) -> None:
    key = "contended"
    ids = [client.schedule_new_orchestration(increment_in_section, input=key) for _ in range(20)]
    results = [finish(client, instance_id, timeout=60).get_output() for instance_id in ids]
    assert sorted(results) == list(range(1, 21))  # each saw a distinct value: the sections never overlapped
    assert settled(client, EntityInstanceId("counter", key), 20)


# ----------------------------------------------------------------------------- async client


def test_async_client_entity_methods(emulator: Emulator, worker: TaskHubGrpcWorker) -> None:
    async def scenario() -> dict[str, Any]:
        async with AsyncTaskHubGrpcClient(host_address=emulator.address) as c:
            entity = EntityInstanceId("counter", "async-1")
            missing = await c.get_entity(entity)
            await c.signal_entity(entity, "add", 3)
            await c.signal_entity(EntityInstanceId("counter", "async-2"), "set", 7)
            await c.signal_entity(entity, "add", 4, signal_time=datetime.now(timezone.utc) + timedelta(seconds=0.3))
            deadline = time.monotonic() + 15
            while True:
                metadata = await c.get_entity(entity)
                if metadata is not None and metadata.get_typed_state() == 7 and metadata.backlog_queue_size == 0:
                    break
                assert time.monotonic() < deadline
                await asyncio.sleep(0.02)
            query = EntityQuery(instance_id_starts_with="@counter@async-", page_size=1)
            first = await c.query_entities(query)
            second = await c.query_entities(query, continuation_token=first.continuation_token)
            everything = await c.get_all_entities(query)
            await c.signal_entity(entity, "delete")
            while await c.get_entity(entity) is not None:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.02)
            cleaned = await c.clean_entity_storage()
            return {"missing": missing, "state": metadata.get_typed_state(int),
                    "pages": [[e.id.key for e in first.items], [e.id.key for e in second.items]],
                    "all": [(e.id.key, e.get_typed_state()) for e in everything], "cleaned": cleaned}

    result = asyncio.run(scenario())
    assert result["missing"] is None and result["state"] == 7
    assert result["pages"] == [["async-1"], ["async-2"]]
    assert result["all"] == [("async-1", 7), ("async-2", 7)]
    assert result["cleaned"].orphaned_locks_released == 0


# ----------------------------------------------------------------------------- workers


def test_work_item_filters_send_entity_work_only_to_the_worker_that_has_the_entity() -> None:
    with Emulator(memory=True) as emu, TaskHubGrpcClient(host_address=emu.address) as c:
        orchestrations = TaskHubGrpcWorker(host_address=emu.address)
        orchestrations.add_orchestrator(report)
        orchestrations.use_work_item_filters()
        entities = TaskHubGrpcWorker(host_address=emu.address)
        entities.add_entity(counter, name="Counter")
        entities.use_work_item_filters()
        orchestrations.start()
        entities.start()
        try:
            assert orchestrations.wait_until_connected(10) and entities.wait_until_connected(10)
            for i in range(5):
                c.signal_entity(EntityInstanceId("counter", f"filtered-{i}"), "set", i)
            ids = [c.schedule_new_orchestration(report, input=f"filtered-{i}") for i in range(5)]
            assert [finish(c, instance_id).get_output() for instance_id in ids] == [
                f"filtered-{i}={i}" for i in range(5)]  # no operation ever reached the worker without it
        finally:
            orchestrations.stop(2)
            entities.stop(2)


# ----------------------------------------------------------------------------- persistence and lost workers


def test_entity_state_pending_signals_and_locks_survive_an_emulator_restart(tmp_path: Path) -> None:
    db = tmp_path / "entities.db"
    entity, locked = EntityInstanceId("counter", "durable"), EntityInstanceId("counter", "locked-durable")

    def started_worker(emu: Emulator) -> TaskHubGrpcWorker:
        w = TaskHubGrpcWorker(host_address=emu.address)
        w.add_entity(counter)
        w.add_orchestrator(section_waiting_for_go)
        w.start()
        return w

    with Emulator(db_path=db) as emu:
        w = started_worker(emu)
        try:
            with TaskHubGrpcClient(host_address=emu.address) as c:
                c.signal_entity(entity, "add", 5)
                eventually(lambda: settled(c, entity, 5))
                c.schedule_new_orchestration(section_waiting_for_go, input="locked-durable", instance_id="in-section")
                eventually(lambda: (st := c.get_orchestration_state("in-section")) and st.serialized_custom_status,
                           what="the section holding its lock")
                c.signal_entity(locked, "add", 10)  # deferred behind the lock
                w.stop(2)
                c.signal_entity(entity, "add", 10, signal_time=datetime.now(timezone.utc) + timedelta(seconds=0.3))
                c.signal_entity(entity, "add", 100)  # queued, no worker to run it
        finally:
            w.stop(2)
    with Emulator(db_path=db) as emu, TaskHubGrpcClient(host_address=emu.address) as c:
        metadata = c.get_entity(entity)
        assert metadata is not None and metadata.get_typed_state() == 5
        held = c.get_entity(locked)
        assert held is not None and held.locked_by == "in-section" and held.backlog_queue_size == 1
        w = started_worker(emu)
        try:
            eventually(lambda: settled(c, entity, 115))
            c.raise_orchestration_event("in-section", "go")
            assert finish(c, "in-section").get_output() == 2  # the lock held across the restart: 10 waited
            eventually(lambda: settled(c, locked, 12))
            assert c.get_entity(locked).locked_by is None  # type: ignore[union-attr]
        finally:
            w.stop(2)


def test_worker_stopped_in_the_middle_of_an_entity_batch_gives_it_back() -> None:
    key = "stopped-mid-batch"
    entity = EntityInstanceId("counter", key)
    release = threading.Event()
    executed: list[int] = []

    def blocking_counter(ctx: EntityContext, amount: int) -> int:
        value = ctx.get_state(int, 0)
        executed.append(value)
        if value == 2 and not release.is_set():
            release.wait(10)  # the third operation of the batch outlives the worker's drain timeout
        ctx.set_state(value + amount)
        return value + amount

    with Emulator(memory=True) as emulator, TaskHubGrpcClient(host_address=emulator.address) as c:
        for _ in range(5):
            c.signal_entity(entity, "add", 1)
        first = TaskHubGrpcWorker(host_address=emulator.address)
        first.add_entity(blocking_counter, name="counter")
        first.start()
        eventually(lambda: len(executed) == 3, what="the batch reaching its third operation")
        first.stop(timeout=0.2)  # gives the batch back
        release.set()
        second = TaskHubGrpcWorker(host_address=emulator.address)
        second.add_entity(blocking_counter, name="counter")
        second.start()
        try:
            eventually(lambda: settled(c, entity, 5))
        finally:
            second.stop(2)
        assert settled(c, entity, 5)


def test_worker_killed_in_the_middle_of_an_entity_batch_loses_no_operation(tmp_path: Path) -> None:
    count, key = 10, "killed-mid-batch"
    entity = EntityInstanceId("counter", key)
    executed: list[int] = []

    def rescuer_counter(ctx: EntityContext, amount: int) -> int:
        value = ctx.get_state(int, 0)
        executed.append(value)
        ctx.set_state(value + amount)
        return value + amount

    with Emulator(db_path=tmp_path / "emulator.db") as emu, TaskHubGrpcClient(host_address=emu.address) as c:
        for _ in range(count):
            c.signal_entity(entity, "add", 1)
        doomed = subprocess.Popen([sys.executable, str(Path(__file__).with_name("entity_worker_process.py")),
                                   emu.address, "--hang-at", "3"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  text=True, cwd=str(ROOT))
        try:
            assert doomed.stdout is not None
            lines = []
            for line in doomed.stdout:
                lines.append(line)
                if "op-started" in line:  # three operations of the batch ran; the fourth hangs
                    break
            assert lines and "op-started" in lines[-1], lines
            doomed.kill()  # SIGKILL: no result, no abandon; the emulator sees the stream break
        finally:
            if doomed.poll() is None:
                doomed.kill()
            doomed.wait()
        rescuer = TaskHubGrpcWorker(host_address=emu.address)
        rescuer.add_entity(rescuer_counter, name="counter")
        rescuer.start()
        try:
            eventually(lambda: settled(c, entity, count), timeout=30)
        finally:
            rescuer.stop(2)
        assert executed == list(range(count))  # every operation ran once, on the rescuer, in order
        assert settled(c, entity, count)
