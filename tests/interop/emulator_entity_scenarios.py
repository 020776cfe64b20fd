"""Durable entity scenarios run by the OFFICIAL durabletask SDK (client and worker) against our emulator.

Run with the official SDK's interpreter (never ours: same import name):

    python emulator_entity_scenarios.py ADDRESS [scenario,scenario,...]

One worker (with work item filters, so entity filters are exercised too) runs in this process; the
scenarios run in parallel threads and the script prints one JSON object:
``{scenario: {"ok": bool, "detail": str}}``.
"""

from __future__ import annotations

import json
import logging
import sys
import time
import traceback
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from typing import Any

from durabletask import client as dc
from durabletask import entities, task
from durabletask import worker as dw
from durabletask.entities import EntityInstanceId
from durabletask.internal import orchestrator_service_pb2 as pb

logging.basicConfig(level=logging.CRITICAL)

ADDRESS = sys.argv[1]
SELECTED = sys.argv[2].split(",") if len(sys.argv) > 2 and sys.argv[2] else None
TIMEOUT = 30
COUNTER_RUNS = 20


# -- entities


def counter(ctx: entities.EntityContext, input: Any) -> Any:
    """A function entity: add, get, set, reset, delete, fail."""
    value = ctx.get_state(int, 0)
    if ctx.operation == "add":
        ctx.set_state(value + (input or 1))
    elif ctx.operation == "set":
        ctx.set_state(input)
    elif ctx.operation == "get":
        return value
    elif ctx.operation == "delete":
        ctx.set_state(None)
    elif ctx.operation == "fail":
        ctx.set_state(value + 1000)  # rolled back by the worker: the operation fails
        raise ValueError(f"fail asked with {input}")
    return None


class Account(entities.DurableEntity):
    """A class entity."""

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


class Spawner(entities.DurableEntity):
    """Starts an orchestration and signals another entity."""

    def spawn(self, args: dict[str, str]) -> None:
        self.schedule_new_orchestration("echo", input=args["payload"], instance_id=args["instance_id"])
        self.signal_entity(EntityInstanceId("counter", args["counter_key"]), "add", 7)
        self.set_state("spawned")


# -- orchestrations


def echo(ctx: task.OrchestrationContext, x: Any) -> Any:
    return x


def call_account(ctx: task.OrchestrationContext, key: str):
    account = EntityInstanceId("account", key)
    after_deposit = yield ctx.call_entity(account, "deposit", 100)
    try:
        yield ctx.call_entity(account, "withdraw", 1000)
        failure = None
    except Exception as error:  # EntityOperationFailedException (a TaskFailedError)
        failure = str(error)
    balance = yield ctx.call_entity(account, "balance")
    return [after_deposit, failure, balance]


def signal_later(ctx: task.OrchestrationContext, key: str):
    due = ctx.current_utc_datetime + timedelta(seconds=1.5)
    ctx.signal_entity(EntityInstanceId("counter", key), "add", 3, signal_time=due)
    ctx.signal_entity(EntityInstanceId("counter", key), "add", 1)
    return "signalled"


def critical_section(ctx: task.OrchestrationContext, keys: list[str]):
    source, target = (EntityInstanceId("counter", k) for k in keys)
    lock = yield ctx.lock_entities([target, source])
    with lock:
        yield ctx.wait_for_external_event("go")
        amount = yield ctx.call_entity(source, "get")
        yield ctx.call_entity(source, "set", 0)
        yield ctx.call_entity(target, "add", amount)
    return amount


def wait_forever(ctx: task.OrchestrationContext, _: Any):
    yield ctx.wait_for_external_event("never")


def hold_lock(ctx: task.OrchestrationContext, key: str):
    lock = yield ctx.lock_entities([EntityInstanceId("counter", key)])
    with lock:
        yield ctx.wait_for_external_event("never")


def increment_locked(ctx: task.OrchestrationContext, key: str):
    entity = EntityInstanceId("counter", key)
    lock = yield ctx.lock_entities([entity])
    with lock:
        value = yield ctx.call_entity(entity, "get")
        yield ctx.call_entity(entity, "set", value + 1)
    return value


ORCHESTRATORS = [echo, wait_forever, call_account, signal_later, critical_section, hold_lock, increment_locked]


def new_worker() -> dw.TaskHubGrpcWorker:
    w = dw.TaskHubGrpcWorker(host_address=ADDRESS)
    for fn in ORCHESTRATORS:
        w.add_orchestrator(fn)
    w.add_entity(counter)
    w.add_entity(Account)
    w.add_entity(Spawner)
    w.use_work_item_filters()
    w.start()
    return w


c = dc.TaskHubGrpcClient(host_address=ADDRESS)


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def completed(instance_id: str) -> Any:
    state = c.wait_for_orchestration_completion(instance_id, timeout=TIMEOUT)
    assert state is not None, f"{instance_id} does not exist"
    assert state.runtime_status == dc.OrchestrationStatus.COMPLETED, (
        f"{instance_id}: {state.runtime_status} {state.failure_details}")
    return json.loads(state.serialized_output) if state.serialized_output else None


def locked_by(entity_id: EntityInstanceId) -> str | None:
    """The raw ``lockedBy``: the official ``get_locked_by()`` parses it as an entity ID, but the owner of a
    lock is an orchestration, whose ID it cannot parse."""
    metadata = c.get_entity(entity_id)
    return None if metadata is None else (metadata._locked_by or None)


def state_of(entity_id: EntityInstanceId) -> Any:
    metadata = c.get_entity(entity_id)
    return None if metadata is None else json.loads(metadata.get_state())


def eventually(check: Any, what: str, timeout: float = TIMEOUT) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


# -- scenarios


def s_function_entity():
    entity = EntityInstanceId("counter", uid("fn"))
    for amount in (1, 2, 3):
        c.signal_entity(entity, "add", amount)
    eventually(lambda: state_of(entity) == 6, "6")
    c.signal_entity(entity, "delete")
    eventually(lambda: c.get_entity(entity) is None, "the entity to be deleted")


def s_class_entity_call_result_and_failure():
    key = uid("acct")
    after_deposit, failure, balance = completed(c.schedule_new_orchestration(call_account, input=key))
    assert after_deposit == 100 and balance == 100, (after_deposit, balance)
    assert failure is not None and "insufficient funds" in failure, failure
    assert state_of(EntityInstanceId("account", key)) == 100


def s_operation_failure_rolls_back():
    entity = EntityInstanceId("counter", uid("rb"))
    c.signal_entity(entity, "add", 5)
    c.signal_entity(entity, "fail", "x")
    c.signal_entity(entity, "add", 1)
    eventually(lambda: state_of(entity) == 6, "6 (the failed operation rolled back)")


def s_client_signal_time():
    entity = EntityInstanceId("counter", uid("later"))
    began = time.monotonic()
    c.signal_entity(entity, "add", 2, signal_time=datetime.now(timezone.utc) + timedelta(seconds=1.5))
    c.signal_entity(entity, "add", 1)
    eventually(lambda: state_of(entity) == 1, "the immediate signal")
    assert state_of(entity) == 1
    eventually(lambda: state_of(entity) == 3, "the scheduled signal")
    assert time.monotonic() - began >= 1.4


def s_orchestration_signals():
    key = uid("osig")
    began = time.monotonic()
    assert completed(c.schedule_new_orchestration(signal_later, input=key)) == "signalled"
    entity = EntityInstanceId("counter", key)
    eventually(lambda: state_of(entity) == 1, "the immediate signal")
    eventually(lambda: state_of(entity) == 4, "the scheduled signal")
    assert time.monotonic() - began >= 1.4


def s_get_entity():
    entity = EntityInstanceId("counter", uid("get"))
    assert c.get_entity(entity) is None
    c.signal_entity(entity, "set", 41)
    eventually(lambda: c.get_entity(entity) is not None, "the entity")
    with_state = c.get_entity(entity, include_state=True)
    assert with_state.get_state() == "41" and with_state._locked_by in (None, "")
    assert with_state.backlog_queue_size == 0
    assert abs((datetime.now(timezone.utc) - with_state.last_modified).total_seconds()) < 30
    without = c.get_entity(entity, include_state=False)
    assert without is not None and not without.includes_state


def s_entity_queries():
    prefix = uid("q")
    ids = [EntityInstanceId("counter", f"{prefix}-{i}") for i in range(5)]
    for i, entity in enumerate(ids):
        c.signal_entity(entity, "set", i)
    eventually(lambda: all(c.get_entity(e) is not None for e in ids), "five entities")
    found = c.get_all_entities(dc.EntityQuery(instance_id_starts_with=f"@counter@{prefix}", page_size=2))
    assert [str(m.id) for m in found] == sorted(str(e) for e in ids), [str(m.id) for m in found]
    assert [json.loads(m.get_state()) for m in found] == [0, 1, 2, 3, 4]
    later = c.get_all_entities(dc.EntityQuery(instance_id_starts_with=f"@counter@{prefix}",
                                              last_modified_from=datetime.now(timezone.utc) + timedelta(minutes=1)))
    assert later == []
    no_state = c.get_all_entities(dc.EntityQuery(instance_id_starts_with=f"@counter@{prefix}", include_state=False))
    assert len(no_state) == 5 and all(not m.includes_state for m in no_state)


def s_clean_entity_storage():
    key = uid("orphan")
    entity = EntityInstanceId("counter", key)
    c.signal_entity(entity, "set", 1)
    eventually(lambda: c.get_entity(entity) is not None, "the entity")
    holder = c.schedule_new_orchestration(hold_lock, input=key)
    eventually(lambda: locked_by(entity) == holder, "the lock")
    # replacing the running holder removes it without finishing it: its lock is orphaned
    policy = pb.OrchestrationIdReusePolicy(replaceableStatus=[pb.ORCHESTRATION_STATUS_RUNNING])
    c.schedule_new_orchestration(wait_forever, instance_id=holder, reuse_id_policy=policy)
    c.wait_for_orchestration_start(holder, timeout=TIMEOUT)
    result = c.clean_entity_storage()
    assert result.orphaned_locks_released >= 1, result
    assert locked_by(entity) is None
    c.signal_entity(entity, "add", 1)
    eventually(lambda: state_of(entity) == 2, "operations to run again")
    c.terminate_orchestration(holder)


def s_lock_entities_critical_section():
    keys = [uid("src"), uid("dst")]
    source, target = (EntityInstanceId("counter", k) for k in keys)
    c.signal_entity(source, "set", 10)
    c.signal_entity(target, "set", 1)
    eventually(lambda: state_of(source) == 10 and state_of(target) == 1, "initial states")
    iid = c.schedule_new_orchestration(critical_section, input=keys)
    eventually(lambda: locked_by(source) == iid and locked_by(target) == iid, "locks")
    c.signal_entity(source, "add", 5)  # an outsider: deferred until the critical section ends
    time.sleep(0.5)
    assert state_of(source) == 10 and c.get_entity(source).backlog_queue_size >= 1
    c.raise_orchestration_event(iid, "go")
    assert completed(iid) == 10
    eventually(lambda: state_of(source) == 5, "the deferred signal after the unlock")
    assert state_of(target) == 11
    assert locked_by(source) is None and locked_by(target) is None


def s_entity_starts_orchestration_and_signals():
    key = uid("spawn")
    child = uid("spawned")
    spawner = EntityInstanceId("spawner", key)
    c.signal_entity(spawner, "spawn", {"payload": "hello", "instance_id": child, "counter_key": key})
    eventually(lambda: c.get_orchestration_state(child) is not None, "the orchestration")
    assert completed(child) == "hello"
    eventually(lambda: state_of(EntityInstanceId("counter", key)) == 7, "the signal")
    assert state_of(spawner) == "spawned"


def s_counter_critical_sections():
    key = uid("shared")
    entity = EntityInstanceId("counter", key)
    ids = [c.schedule_new_orchestration(increment_locked, input=key) for _ in range(COUNTER_RUNS)]
    seen = sorted(completed(iid) for iid in ids)
    assert seen == list(range(COUNTER_RUNS)), seen  # each one saw a different value: no lost update
    assert state_of(entity) == COUNTER_RUNS


SCENARIOS = {name[2:]: fn for name, fn in sorted(globals().items()) if name.startswith("s_") and callable(fn)}


def run(name: str) -> tuple[str, dict[str, object]]:
    began = time.monotonic()
    try:
        SCENARIOS[name]()
        return name, {"ok": True, "detail": "", "seconds": round(time.monotonic() - began, 2)}
    except BaseException:
        return name, {"ok": False, "detail": traceback.format_exc(), "seconds": round(time.monotonic() - began, 2)}


def main() -> None:
    names = [n for n in SCENARIOS if SELECTED is None or n in SELECTED]
    worker = new_worker()
    try:
        with ThreadPoolExecutor(max_workers=len(names) or 1) as pool:
            results = dict(pool.map(run, names))
    finally:
        worker.stop()
    print(json.dumps(results))


if __name__ == "__main__":
    main()
