"""Our entities, client and worker against the official SDK's in-memory backend (its own process).

The official backend dispatches entity work items in the ``entityRequestV2`` shape, routes call
results by the operation infos we return, grants locks and records our entity actions; if these
pass, our side of the entity protocol is what an official backend expects.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from durabletask import task
from durabletask.client import EntityQuery, OrchestrationStatus, TaskHubGrpcClient
from durabletask.entities import DurableEntity, EntityContext, EntityInstanceId
from durabletask.worker import TaskHubGrpcWorker
from tests.support.servers import official_in_memory_backend

pytestmark = pytest.mark.interop


# ----------------------------------------------------------------------------- entities


def counter(ctx: EntityContext, value: Any) -> Any:
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
        ctx.set_state(-1000)  # rolled back
        raise ValueError(f"counter refuses {value}")
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


class Launcher(DurableEntity):
    def launch(self, key: str) -> str:
        self.signal_entity(EntityInstanceId("counter", key), "add", 100)
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
        return [balance, str(error)]
    return [balance, "no failure"]


def signal_later(ctx: task.OrchestrationContext, key: str) -> str:
    target = EntityInstanceId("counter", key)
    ctx.signal_entity(target, "add", 1)
    ctx.signal_entity(target, "add", 10, signal_time=ctx.current_utc_datetime + timedelta(seconds=2))
    return "sent"


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


def report(ctx: task.OrchestrationContext, key: str) -> Any:
    value = yield ctx.call_entity(EntityInstanceId("counter", key), "get")
    return f"{key}={value}"


@pytest.fixture(scope="module")
def address() -> Iterator[str]:
    with official_in_memory_backend() as addr:
        worker = TaskHubGrpcWorker(host_address=addr)
        worker.add_entity(counter)
        worker.entity(Account)
        worker.add_entity(Launcher)
        for fn in (call_account, signal_later, transfer, increment_in_section, report):
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


def eventually(check: Callable[[], Any], timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.05)


def state_of(client: TaskHubGrpcClient, entity: EntityInstanceId) -> Any:
    metadata = client.get_entity(entity)
    return None if metadata is None else metadata.get_typed_state()


def run(client: TaskHubGrpcClient, orchestrator: Any, input: Any = None, instance_id: str | None = None) -> Any:
    instance = client.schedule_new_orchestration(orchestrator, input=input, instance_id=instance_id)
    state = client.wait_for_orchestration_completion(instance, timeout=30)
    assert state is not None
    assert state.runtime_status == OrchestrationStatus.COMPLETED, state.failure_details
    return state.get_output()


# ----------------------------------------------------------------------------- tests


def test_function_entity_signalled_by_the_client(client: TaskHubGrpcClient) -> None:
    entity = EntityInstanceId("Counter", "client-signals")
    for amount in (1, 2, 3):
        client.signal_entity(entity, "add", amount)
    assert eventually(lambda: state_of(client, entity) == 6)
    client.signal_entity(entity, "fail", "this")  # fails and rolls back its state change
    client.signal_entity(entity, "add", 4)
    assert eventually(lambda: state_of(client, entity) == 10)


def test_get_entity_with_and_without_state(client: TaskHubGrpcClient) -> None:
    entity = EntityInstanceId("counter", "metadata")
    assert client.get_entity(entity) is None
    client.signal_entity(entity, "set", {"nested": [1, 2]})
    assert eventually(lambda: state_of(client, entity) == {"nested": [1, 2]})
    with_state = client.get_entity(entity)
    assert with_state is not None and with_state.id == entity
    assert with_state.get_typed_state() == {"nested": [1, 2]}
    assert with_state.last_modified.tzinfo is not None
    without = client.get_entity(entity, include_state=False)
    assert without is not None and without.includes_state is False and without.get_typed_state() is None


def test_class_entity_call_result_and_failure(client: TaskHubGrpcClient) -> None:
    balance, failure = run(client, call_account, "alice")
    assert balance == 30
    assert failure == "Operation 'withdraw' on entity '@account@alice' failed with error: insufficient funds: 30 < 1000"
    assert state_of(client, EntityInstanceId("account", "alice")) == 30


def test_signals_from_an_orchestration_one_delayed(client: TaskHubGrpcClient) -> None:
    entity = EntityInstanceId("counter", "delayed")
    started = time.monotonic()
    assert run(client, signal_later, "delayed") == "sent"
    assert eventually(lambda: state_of(client, entity) == 1, timeout=1.5)
    assert eventually(lambda: state_of(client, entity) == 11)
    assert time.monotonic() - started >= 1.5


def test_delayed_signal_from_the_client(client: TaskHubGrpcClient) -> None:
    entity = EntityInstanceId("counter", "client-delayed")
    client.signal_entity(entity, "add", 5, signal_time=datetime.now(timezone.utc) + timedelta(seconds=1.5))
    time.sleep(0.5)
    assert state_of(client, entity) is None  # not run yet (the backend may already list the entity)
    assert eventually(lambda: state_of(client, entity) == 5)


def test_critical_section_transfer(client: TaskHubGrpcClient) -> None:
    client.signal_entity(EntityInstanceId("account", "src"), "deposit", 100)
    assert eventually(lambda: state_of(client, EntityInstanceId("account", "src")) == 100)
    assert run(client, transfer, {"from": "src", "to": "dst", "amount": 70}) == "done"
    assert run(client, transfer, {"from": "src", "to": "dst", "amount": 70}) == "declined"
    assert state_of(client, EntityInstanceId("account", "src")) == 30
    assert state_of(client, EntityInstanceId("account", "dst")) == 70


def test_twenty_orchestrations_increment_one_counter_in_critical_sections(client: TaskHubGrpcClient) -> None:
    key = "contended"
    ids = [client.schedule_new_orchestration(increment_in_section, input=key) for _ in range(20)]
    results = []
    for instance_id in ids:
        state = client.wait_for_orchestration_completion(instance_id, timeout=60)
        assert state is not None and state.runtime_status == OrchestrationStatus.COMPLETED, state
        results.append(state.get_output())
    assert sorted(results) == list(range(1, 21))  # each saw a distinct value: the sections never overlapped
    assert state_of(client, EntityInstanceId("counter", key)) == 20


def test_entity_starts_an_orchestration_and_signals_another_entity(client: TaskHubGrpcClient) -> None:
    client.signal_entity(EntityInstanceId("launcher", "l1"), "launch", "launched")
    assert eventually(lambda: client.get_orchestration_state("report-launched") is not None)
    state = client.wait_for_orchestration_completion("report-launched", timeout=30)
    assert state is not None and state.get_output() in ("launched=0", "launched=100")
    assert eventually(lambda: state_of(client, EntityInstanceId("counter", "launched")) == 100)
    assert state_of(client, EntityInstanceId("launcher", "l1")) == "report-launched"


def test_entity_query_pages_by_prefix(client: TaskHubGrpcClient) -> None:
    for i in range(5):
        client.signal_entity(EntityInstanceId("counter", f"page-{i}"), "set", i)
    query = EntityQuery(instance_id_starts_with="@counter@page-", page_size=2)
    assert eventually(lambda: len(client.get_all_entities(query)) == 5)
    found = client.get_all_entities(query)
    assert sorted((e.id.key, e.get_typed_state()) for e in found) == [(f"page-{i}", i) for i in range(5)]
    pages, token = [], None
    while True:
        page = client.query_entities(query, continuation_token=token)
        pages.append(len(page.items))
        token = page.continuation_token
        if token is None:
            break
    assert pages == [2, 2, 1]
    accounts = client.get_all_entities(EntityQuery(instance_id_starts_with="account"))
    assert accounts and all(e.id.entity == "account" for e in accounts)


def test_clean_entity_storage(client: TaskHubGrpcClient) -> None:
    entity = EntityInstanceId("counter", "to-delete")
    client.signal_entity(entity, "set", 1)
    assert eventually(lambda: state_of(client, entity) == 1)
    client.signal_entity(entity, "delete")
    assert eventually(lambda: state_of(client, entity) is None)
    result = client.clean_entity_storage()
    assert result.empty_entities_removed >= 0 and result.orphaned_locks_released >= 0
    assert client.get_entity(entity) is None
