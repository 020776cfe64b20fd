"""Scenarios run by the OFFICIAL durabletask SDK (its client and worker) against our emulator.

Run with the official SDK's interpreter (never ours: same import name):

    python emulator_scenarios.py MAIN_ADDRESS WORKER_REWIND_ADDRESS [scenario,scenario,...]

MAIN_ADDRESS serves task hubs ``default`` and ``hub2`` and rewrites rewound histories itself;
WORKER_REWIND_ADDRESS is an emulator in ``rewind_mode="worker"`` (the Python SDK's own rewind
flow). One worker per emulator/hub runs in this process; the scenarios run in parallel threads and
the script prints one JSON object: ``{scenario: {"ok": bool, "detail": str}}``.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
import traceback
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone

import grpc

from durabletask import client as dc
from durabletask import task
from durabletask import worker as dw
from durabletask.internal import orchestrator_service_pb2 as pb

logging.basicConfig(level=logging.CRITICAL)

MAIN, WORKER_REWIND = sys.argv[1], sys.argv[2]
SELECTED = sys.argv[3].split(",") if len(sys.argv) > 3 and sys.argv[3] else None
TIMEOUT = 30

_lock = threading.Lock()
_attempts: dict[str, int] = {}
_running: dict[str, int] = {}


def attempt(key: str) -> int:
    with _lock:
        _attempts[key] = _attempts.get(key, 0) + 1
        return _attempts[key]


# -- activities


def inc(ctx: task.ActivityContext, x: int) -> int:
    return x + 1


def square(ctx: task.ActivityContext, x: int) -> int:
    return x * x


def boom(ctx: task.ActivityContext, message: str) -> None:
    raise ValueError(message)


def flaky(ctx: task.ActivityContext, key: str) -> str:
    """Fails the first time it is called with a key, succeeds afterwards."""
    if attempt(key) == 1:
        raise RuntimeError(f"first attempt of {key} fails")
    return f"ok:{key}"


def flaky_twice(ctx: task.ActivityContext, key: str) -> str:
    if attempt(key) <= 2:
        raise RuntimeError(f"attempt {_attempts[key]} of {key} fails")
    return f"ok:{key}"


def only_b_activity(ctx: task.ActivityContext, x: str) -> str:
    return f"b:{x}"


# -- orchestrators


def chain(ctx: task.OrchestrationContext, n: int):
    x = 0
    for _ in range(n):
        x = yield ctx.call_activity(inc, input=x)
    return x


def fanout(ctx: task.OrchestrationContext, n: int):
    results = yield task.when_all([ctx.call_activity(square, input=i) for i in range(n)])
    return sum(results)


def timer(ctx: task.OrchestrationContext, seconds: float):
    start = ctx.current_utc_datetime
    yield ctx.create_timer(timedelta(seconds=seconds))
    return (ctx.current_utc_datetime - start).total_seconds()


def wait_event(ctx: task.OrchestrationContext, name: str):
    value = yield ctx.wait_for_external_event(name)
    return value


def sender(ctx: task.OrchestrationContext, target: str):
    ctx.send_event(target, "ping", data={"from": ctx.instance_id})
    return "sent"


def child(ctx: task.OrchestrationContext, x: int):
    y = yield ctx.call_activity(inc, input=x)
    return {"child": ctx.instance_id, "parent": getattr(ctx, "parent_instance_id", None), "value": y}


def failing_child(ctx: task.OrchestrationContext, message: str):
    yield ctx.call_activity(boom, input=message)


def parent(ctx: task.OrchestrationContext, x: int):
    result = yield ctx.call_sub_orchestrator(child, input=x, instance_id=f"{ctx.instance_id}-child")
    try:
        yield ctx.call_sub_orchestrator(failing_child, input="child failed")
    except task.TaskFailedError as error:
        return [result, error.details.message]
    return [result, None]


def waiting_child(ctx: task.OrchestrationContext, _: None):
    yield ctx.wait_for_external_event("never")


def waiting_parent(ctx: task.OrchestrationContext, _: None):
    yield ctx.call_sub_orchestrator(waiting_child, instance_id=f"{ctx.instance_id}-child")


def counter(ctx: task.OrchestrationContext, n: int):
    if n == 0:
        yield ctx.create_timer(timedelta(seconds=0.3))  # the event arrives meanwhile and is carried over
    if n < 3:
        ctx.continue_as_new(n + 1, save_events=True)
        return None
    value = yield ctx.wait_for_external_event("e")
    return [n, value]


def status_setter(ctx: task.OrchestrationContext, _: None):
    ctx.set_custom_status({"stage": "waiting"})
    yield ctx.wait_for_external_event("go")
    ctx.set_custom_status({"stage": "done"})
    return "finished"


def fails(ctx: task.OrchestrationContext, message: str):
    yield ctx.call_activity(boom, input=message)


def retries(ctx: task.OrchestrationContext, key: str):
    policy = task.RetryPolicy(first_retry_interval=timedelta(seconds=0.1), max_number_of_attempts=3)
    result = yield ctx.call_activity(flaky_twice, input=key, retry_policy=policy)
    return result


def rewindable(ctx: task.OrchestrationContext, key: str):
    first = yield ctx.call_activity(inc, input=1)
    second = yield ctx.call_activity(flaky, input=key)
    return [first, second]


def rewindable_parent(ctx: task.OrchestrationContext, key: str):
    result = yield ctx.call_sub_orchestrator(rewindable, input=key, instance_id=f"{ctx.instance_id}-child")
    return result


def echo(ctx: task.OrchestrationContext, x: object):
    return x


def only_b(ctx: task.OrchestrationContext, x: str):
    result = yield ctx.call_activity(only_b_activity, input=x)
    return result


def conflicting_parent(ctx: task.OrchestrationContext, busy_id: str):
    try:
        yield ctx.call_sub_orchestrator(waiting_child, instance_id=busy_id)
    except task.TaskFailedError as error:
        return error.details.message
    return "no conflict"


ORCHESTRATORS = [chain, fanout, timer, wait_event, sender, child, failing_child, parent, waiting_child,
                 waiting_parent, counter, status_setter, fails, retries, rewindable, rewindable_parent, echo,
                 conflicting_parent]
ACTIVITIES = [inc, square, boom, flaky, flaky_twice]


def new_worker(address: str, hub: str | None = None, *, orchestrators=ORCHESTRATORS, activities=ACTIVITIES,
               filters: bool = True) -> dw.TaskHubGrpcWorker:
    metadata = [("taskhub", hub)] if hub else None
    w = dw.TaskHubGrpcWorker(host_address=address, metadata=metadata)
    for fn in orchestrators:
        w.add_orchestrator(fn)
    for fn in activities:
        w.add_activity(fn)
    if filters:
        w.use_work_item_filters()
    w.start()
    return w


def new_client(address: str, hub: str | None = None) -> dc.TaskHubGrpcClient:
    return dc.TaskHubGrpcClient(host_address=address, metadata=[("taskhub", hub)] if hub else None)


c = new_client(MAIN)
c_worker_rewind = new_client(WORKER_REWIND)


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def done(instance_id: str, client: dc.TaskHubGrpcClient = c) -> dc.OrchestrationState:
    state = client.wait_for_orchestration_completion(instance_id, timeout=TIMEOUT)
    assert state is not None, f"{instance_id} does not exist"
    return state


def completed(instance_id: str, client: dc.TaskHubGrpcClient = c):
    state = done(instance_id, client)
    assert state.runtime_status == dc.OrchestrationStatus.COMPLETED, (
        f"{instance_id}: {state.runtime_status} {state.failure_details}")
    return json.loads(state.serialized_output) if state.serialized_output else None


def grpc_code(call) -> grpc.StatusCode | None:
    try:
        call()
    except grpc.RpcError as error:
        return error.code()
    return None


# -- scenarios


def s_chain():
    assert completed(c.schedule_new_orchestration(chain, input=5)) == 5


def s_fanout():
    assert completed(c.schedule_new_orchestration(fanout, input=10)) == sum(i * i for i in range(10))


def s_timer():
    began = time.monotonic()
    elapsed = completed(c.schedule_new_orchestration(timer, input=1.0))
    assert elapsed >= 1.0 and time.monotonic() - began >= 1.0, elapsed


def s_external_event():
    iid = c.schedule_new_orchestration(wait_event, input="approve")
    c.raise_orchestration_event(iid, "approve", data={"ok": True})
    assert completed(iid) == {"ok": True}
    # an event raised after the orchestration waits
    iid = c.schedule_new_orchestration(wait_event, input="later")
    c.wait_for_orchestration_start(iid, timeout=TIMEOUT)
    time.sleep(0.2)
    c.raise_orchestration_event(iid, "LATER", data=7)  # event names match case-insensitively
    assert completed(iid) == 7


def s_send_event():
    target = c.schedule_new_orchestration(wait_event, input="ping")
    sid = c.schedule_new_orchestration(sender, input=target)
    assert completed(target) == {"from": sid}
    assert completed(sid) == "sent"


def s_sub_orchestration():
    iid = uid("parent")
    result, message = completed(c.schedule_new_orchestration(parent, input=41, instance_id=iid))
    assert result == {"child": f"{iid}-child", "parent": iid, "value": 42}, result
    assert "child failed" in message, message
    child_state = c.get_orchestration_state(f"{iid}-child")
    assert child_state is not None and child_state.runtime_status == dc.OrchestrationStatus.COMPLETED


def s_sub_orchestration_conflict():
    busy = c.schedule_new_orchestration(waiting_child)
    c.wait_for_orchestration_start(busy, timeout=TIMEOUT)
    message = completed(c.schedule_new_orchestration(conflicting_parent, input=busy))
    assert busy in message, message
    c.terminate_orchestration(busy)


def s_terminate_recursive():
    iid = uid("tparent")
    c.schedule_new_orchestration(waiting_parent, instance_id=iid)
    deadline = time.monotonic() + TIMEOUT
    while c.get_orchestration_state(f"{iid}-child") is None:
        assert time.monotonic() < deadline, "child never started"
        time.sleep(0.05)
    c.wait_for_orchestration_start(f"{iid}-child", timeout=TIMEOUT)
    c.terminate_orchestration(iid, output="stop", recursive=True)
    state = done(iid)
    assert state.runtime_status == dc.OrchestrationStatus.TERMINATED and json.loads(state.serialized_output) == "stop"
    child_state = done(f"{iid}-child")
    assert child_state.runtime_status == dc.OrchestrationStatus.TERMINATED, child_state.runtime_status


def s_terminate_pending():
    iid = c.schedule_new_orchestration(echo, input=1, start_at=datetime.now(timezone.utc) + timedelta(hours=1))
    c.terminate_orchestration(iid, output="never ran")
    state = done(iid)
    assert state.runtime_status == dc.OrchestrationStatus.TERMINATED
    assert json.loads(state.serialized_output) == "never ran"


def s_suspend_resume():
    iid = c.schedule_new_orchestration(wait_event, input="go")
    c.wait_for_orchestration_start(iid, timeout=TIMEOUT)
    c.resume_orchestration(iid)  # a stray resume must not fail a running orchestration
    c.suspend_orchestration(iid, reason="hold")
    deadline = time.monotonic() + TIMEOUT
    while c.get_orchestration_state(iid).runtime_status != dc.OrchestrationStatus.SUSPENDED:
        assert time.monotonic() < deadline, "never suspended"
        time.sleep(0.05)
    c.raise_orchestration_event(iid, "go", data="went")
    time.sleep(0.5)
    assert c.get_orchestration_state(iid).runtime_status == dc.OrchestrationStatus.SUSPENDED
    c.resume_orchestration(iid, reason="continue")
    assert completed(iid) == "went"
    c.resume_orchestration(iid)  # ignored for a finished instance
    c.suspend_orchestration(iid)
    assert c.get_orchestration_state(iid).runtime_status == dc.OrchestrationStatus.COMPLETED


def s_continue_as_new():
    iid = c.schedule_new_orchestration(counter, input=0)
    c.raise_orchestration_event(iid, "e", data="carried")
    assert completed(iid) == [3, "carried"]


def s_custom_status():
    iid = c.schedule_new_orchestration(status_setter)
    deadline = time.monotonic() + TIMEOUT
    while True:
        state = c.get_orchestration_state(iid)
        if state.serialized_custom_status:
            break
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert json.loads(state.serialized_custom_status) == {"stage": "waiting"}
    c.raise_orchestration_event(iid, "go")
    assert completed(iid) == "finished"
    assert json.loads(c.get_orchestration_state(iid).serialized_custom_status) == {"stage": "done"}


def s_activity_failure():
    state = done(c.schedule_new_orchestration(fails, input="kaput"))
    assert state.runtime_status == dc.OrchestrationStatus.FAILED
    assert "kaput" in state.failure_details.message, state.failure_details


def s_retry():
    assert completed(c.schedule_new_orchestration(retries, input=uid("retry"))).startswith("ok:")


def s_query_and_list():
    prefix = uid("q")
    ids = [c.schedule_new_orchestration(echo, input=i, instance_id=f"{prefix}-{i}") for i in range(5)]
    for iid in ids:
        completed(iid)
    query = dc.OrchestrationQuery(instance_id_prefix=prefix, runtime_status=[dc.OrchestrationStatus.COMPLETED],
                                  max_instance_count=2, fetch_inputs_and_outputs=True)
    states = c.get_all_orchestration_states(query)
    assert sorted(s.instance_id for s in states) == sorted(ids), [s.instance_id for s in states]
    assert all(s.serialized_input is not None for s in states)
    none = c.get_all_orchestration_states(dc.OrchestrationQuery(
        instance_id_prefix=prefix, runtime_status=[dc.OrchestrationStatus.FAILED]))
    assert none == []
    later = c.get_all_orchestration_states(dc.OrchestrationQuery(
        instance_id_prefix=prefix, created_time_from=datetime.now(timezone.utc) + timedelta(minutes=1)))
    assert later == []
    seen, token = [], None
    while True:
        page = c.list_instance_ids(runtime_status=[dc.OrchestrationStatus.COMPLETED], page_size=3,
                                   continuation_token=token)
        seen.extend(page.items)
        token = page.continuation_token
        if not token:
            break
    assert set(ids) <= set(seen)


def s_purge():
    iid = c.schedule_new_orchestration(echo, input="x")
    completed(iid)
    assert c.purge_orchestration(iid).deleted_instance_count == 1
    assert c.get_orchestration_state(iid) is None
    running = c.schedule_new_orchestration(wait_event, input="never")
    assert grpc_code(lambda: c.purge_orchestration(running)) == grpc.StatusCode.FAILED_PRECONDITION
    c.terminate_orchestration(running)
    done(running)
    # recursive: the parent and its sub-orchestrations
    pid = uid("pparent")
    completed(c.schedule_new_orchestration(parent, input=1, instance_id=pid))
    result = c.purge_orchestration(pid, recursive=True)
    assert result.deleted_instance_count >= 3, result.deleted_instance_count
    assert c.get_orchestration_state(f"{pid}-child") is None
    # by filter, in hub2: in the shared hub it would also purge the FAILED instances other scenarios
    # are about to rewind
    c2 = new_client(MAIN, "hub2")
    since = datetime.now(timezone.utc) - timedelta(seconds=1)
    failed = c2.schedule_new_orchestration(fails, input="purge me")
    done(failed, c2)
    result = c2.purge_orchestrations_by(created_time_from=since, runtime_status=[dc.OrchestrationStatus.FAILED])
    assert result.deleted_instance_count == 1 and c2.get_orchestration_state(failed) is None


def s_restart():
    iid = c.schedule_new_orchestration(chain, input=2)
    assert completed(iid) == 2
    assert c.restart_orchestration(iid) == iid
    assert completed(iid) == 2
    new_id = c.restart_orchestration(iid, restart_with_new_instance_id=True)
    assert new_id != iid and completed(new_id) == 2
    running = c.schedule_new_orchestration(wait_event, input="never")
    assert grpc_code(lambda: c.restart_orchestration(running)) == grpc.StatusCode.FAILED_PRECONDITION
    c.terminate_orchestration(running)


def _rewind(client: dc.TaskHubGrpcClient) -> None:
    key = uid("rw")
    iid = client.schedule_new_orchestration(rewindable, input=key)
    state = done(iid, client)
    assert state.runtime_status == dc.OrchestrationStatus.FAILED, state.runtime_status
    client.rewind_orchestration(iid, reason="try again")
    assert completed(iid, client) == [2, f"ok:{key}"]
    # a failed sub-orchestration is rewound with its parent
    key = uid("rwp")
    pid = client.schedule_new_orchestration(rewindable_parent, input=key)
    assert done(pid, client).runtime_status == dc.OrchestrationStatus.FAILED
    client.rewind_orchestration(pid)
    assert completed(pid, client) == [2, f"ok:{key}"]
    running = client.schedule_new_orchestration(wait_event, input="never")
    assert grpc_code(lambda: client.rewind_orchestration(running)) == grpc.StatusCode.FAILED_PRECONDITION
    client.terminate_orchestration(running)


def s_rewind_server():
    _rewind(c)


def s_rewind_worker():
    _rewind(c_worker_rewind)


def s_history():
    iid = c.schedule_new_orchestration(chain, input=2)
    completed(iid)
    kinds = [type(e).__name__ for e in c.get_orchestration_history(iid)]
    assert kinds[:2] == ["OrchestratorStartedEvent", "ExecutionStartedEvent"], kinds
    assert kinds.count("TaskScheduledEvent") == 2 and kinds.count("TaskCompletedEvent") == 2, kinds
    assert "ExecutionCompletedEvent" in kinds, kinds
    assert grpc_code(lambda: c.get_orchestration_history("no-such-instance")) == grpc.StatusCode.NOT_FOUND


def s_reuse_policy():
    iid = uid("reuse")
    completed(c.schedule_new_orchestration(echo, input=1, instance_id=iid))
    assert grpc_code(lambda: c.schedule_new_orchestration(echo, input=2, instance_id=iid)) == \
        grpc.StatusCode.ALREADY_EXISTS
    policy = pb.OrchestrationIdReusePolicy(replaceableStatus=[pb.ORCHESTRATION_STATUS_COMPLETED])
    c.schedule_new_orchestration(echo, input=3, instance_id=iid, reuse_id_policy=policy)
    assert completed(iid) == 3


def s_delayed_start():
    began = time.monotonic()
    iid = c.schedule_new_orchestration(echo, input="late", start_at=datetime.now(timezone.utc) + timedelta(seconds=1.5))
    state = c.get_orchestration_state(iid)
    assert state.runtime_status == dc.OrchestrationStatus.PENDING, state.runtime_status
    try:
        c.wait_for_orchestration_start(iid, timeout=0.5)
        raise AssertionError("started too early")
    except TimeoutError:
        pass
    assert completed(iid) == "late"
    assert time.monotonic() - began >= 1.4


def s_unknown_instance():
    assert grpc_code(lambda: c.raise_orchestration_event("no-such-instance", "x")) == grpc.StatusCode.NOT_FOUND
    assert c.get_orchestration_state("no-such-instance") is None
    assert c.wait_for_orchestration_completion("no-such-instance", timeout=5) is None


def s_filters():
    # Only worker B hosts `only_b`; the main worker's filters keep it away from it.
    w = new_worker(MAIN, orchestrators=[only_b], activities=[only_b_activity])
    try:
        assert completed(c.schedule_new_orchestration(only_b, input="x")) == "b:x"
    finally:
        w.stop()


def s_task_hubs():
    c2 = new_client(MAIN, "hub2")
    iid = c2.schedule_new_orchestration(chain, input=3)
    assert completed(iid, c2) == 3
    assert c.get_orchestration_state(iid) is None  # hubs are separate
    bad = new_client(MAIN, "nohub")
    assert grpc_code(lambda: bad.get_orchestration_state("x")) == grpc.StatusCode.NOT_FOUND


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
    workers = [new_worker(MAIN), new_worker(MAIN, "hub2"), new_worker(WORKER_REWIND)]
    try:
        with ThreadPoolExecutor(max_workers=len(names) or 1) as pool:
            results = dict(pool.map(run, names))
    finally:
        for w in workers:
            w.stop()
    print(json.dumps(results))


if __name__ == "__main__":
    main()
