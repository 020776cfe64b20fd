"""Run one SDK's replay engine on orchestrator requests: the same script for both SDKs.

This file runs unchanged under the official SDK's interpreter (as a subprocess, see
``tests/support/official.py``) and, imported, under ours. It needs only the standard library,
protobuf and whichever ``durabletask`` is importable; which one that is gets detected at import
time (ours has ``durabletask.internal.replay.engine``, the official one has
``durabletask.worker._OrchestrationExecutor``).

Protocol (stdin -> stdout, one JSON document per line, answered in order, flushed per line):

* request: ``{"scenario": NAME, "request": BASE64}`` where BASE64 is a serialized
  ``OrchestratorRequest`` (instanceId, pastEvents, newEvents);
* a JSON list of such requests is answered with a JSON list of answers, in one line;
* answer: ``{"response": BASE64}`` with a serialized ``OrchestratorResponse`` (instanceId,
  actions, customStatus), or ``{"error": TRACEBACK}`` if the engine raised.

``python lockstep.py --sdk`` prints which SDK is importable.

The scenario orchestrators below only use the public authoring API that both SDKs share.
"""

from __future__ import annotations

import base64
import json
import logging
import sys
import traceback
from datetime import timedelta, timezone
from typing import Any

from google.protobuf import wrappers_pb2

from durabletask import task
from durabletask.entities import EntityInstanceId
from durabletask.internal import orchestrator_service_pb2 as pb

try:
    from durabletask.internal.registry import Registry as _OurRegistry
    from durabletask.internal.replay.engine import OrchestrationExecutor as _OurExecutor

    SDK = "ours"
except ImportError:  # the official SDK
    from durabletask import worker as _official_worker
    from durabletask.serialization import JsonDataConverter as _OfficialConverter

    SDK = "official"


# ----------------------------------------------------------------------------- orchestrators


def chain(ctx: Any, value: Any) -> Any:
    x = value
    for _ in range(5):
        x = yield ctx.call_activity("inc", input=x)
    return x


def fan_out(ctx: Any, count: Any) -> Any:
    tasks = [ctx.call_activity("inc", input=i) for i in range(count)]
    results = yield task.when_all(tasks)
    total = yield ctx.call_activity("inc", input=sum(results))
    return [results, total]


def when_any_timer(ctx: Any, work: Any) -> Any:
    timer = ctx.create_timer(timedelta(minutes=5))
    activity = ctx.call_activity(work, input=1)
    winner = yield task.when_any([timer, activity])
    if winner is activity:
        return ["activity", activity.get_result()]
    late = yield activity  # the timer won: still wait for the slow activity
    return ["timer", late]


def long_timer(ctx: Any, _: Any) -> Any:
    yield ctx.create_timer(timedelta(days=7))
    first = ctx.current_utc_datetime.isoformat()
    yield ctx.create_timer(ctx.current_utc_datetime + timedelta(days=6, hours=1))  # naive absolute datetime
    aware = (ctx.current_utc_datetime + timedelta(days=4)).replace(tzinfo=timezone.utc)
    yield ctx.create_timer(aware.astimezone(timezone(timedelta(hours=-5))))  # aware, not in UTC
    yield ctx.create_timer(timedelta(days=3))  # exactly the maximum interval: one chunk
    x = yield ctx.call_activity("inc", input=1)
    return [first, ctx.current_utc_datetime.isoformat(), x]


def _policy(attempts: int, first: timedelta = timedelta(seconds=10),
            longest: timedelta | None = timedelta(minutes=1)) -> Any:
    return task.RetryPolicy(first_retry_interval=first, max_number_of_attempts=attempts,
                            backoff_coefficient=2.0, max_retry_interval=longest)


def retry_then_succeed(ctx: Any, _: Any) -> Any:
    a = yield ctx.call_activity("fail_twice", input="a", retry_policy=_policy(5))
    both = yield task.when_all([
        ctx.call_activity("fail_twice", input="b", retry_policy=_policy(5)),
        ctx.call_activity("inc", input=1),
        ctx.call_activity("fail_twice", input="c", retry_policy=_policy(3), tags={"k": "v"}),
    ])
    return [a, both]


def retry_none_input(ctx: Any, _: Any) -> Any:
    result = yield ctx.call_activity("fail_twice", retry_policy=_policy(5))
    sub = yield ctx.call_sub_orchestrator("child_fail_twice", retry_policy=_policy(5))
    return [result, sub]


def retry_long_backoff(ctx: Any, _: Any) -> Any:
    # A back-off (4 days) longer than the maximum timer interval (3 days).
    result = yield ctx.call_activity("fail_twice", input="x", retry_policy=_policy(5, timedelta(days=4), None))
    return result


def retry_exhausted(ctx: Any, _: Any) -> Any:
    yield ctx.call_activity("inc", input=0)
    result = yield ctx.call_activity("always_fail", input="doomed", retry_policy=_policy(3))
    return result


def sub_orchestrations(ctx: Any, _: Any) -> Any:
    first = ctx.call_sub_orchestrator("child", input=1)
    second = ctx.call_sub_orchestrator("child", input=2, instance_id="explicit-child")
    third = ctx.call_sub_orchestrator("child", input=3, version="2.0")
    results = yield task.when_all([first, second, third])
    x = yield ctx.call_activity("inc", input=0)
    more = yield ctx.call_sub_orchestrator("child", input=x)
    none_input = yield ctx.call_sub_orchestrator("child")
    return [results, more, none_input]


def sub_orchestration_retry(ctx: Any, _: Any) -> Any:
    result = yield ctx.call_sub_orchestrator("child_fail_twice", input=7, retry_policy=_policy(5))
    return result


def sub_orchestration_retry_versioned(ctx: Any, _: Any) -> Any:
    result = yield ctx.call_sub_orchestrator("child_fail_twice", input=7, version="2.0",
                                             instance_id="versioned-child", retry_policy=_policy(5))
    return result


def external_events(ctx: Any, _: Any) -> Any:
    x = yield ctx.call_activity("inc", input=0)
    early = yield ctx.wait_for_external_event("early")  # raised as "Early" before this wait
    approval = yield ctx.wait_for_external_event("Approval")  # raised later as "APPROVAL"
    pair = yield task.when_all([ctx.wait_for_external_event("twice"), ctx.wait_for_external_event("TWICE")])
    empty = yield ctx.wait_for_external_event("empty")  # raised without a payload
    timer = ctx.create_timer(timedelta(hours=1))
    late = ctx.wait_for_external_event("never")
    winner = yield task.when_any([late, timer])
    return [x, early, approval, pair, empty, winner is timer]


def send_events(ctx: Any, _: Any) -> Any:
    ctx.send_event("other-instance", "Ping", data={"a": 1})
    ctx.send_event("other-instance", "NoData")
    x = yield ctx.call_activity("inc", input=1)
    ctx.send_event("third", "Result", data=x)
    y = yield ctx.call_activity("inc", input=x)
    return y


def continue_as_new_saved(ctx: Any, generation: Any) -> Any:
    n = generation or 0
    tick = yield ctx.wait_for_external_event("tick")
    ctx.set_custom_status({"generation": n, "tick": tick})
    if n < 3:
        ctx.continue_as_new(n + 1, save_events=True)
        return None
    return [n, tick]


def continue_as_new_mixed_case(ctx: Any, generation: Any) -> Any:
    n = generation or 0
    tick = yield ctx.wait_for_external_event("tick")
    if n < 2:
        ctx.continue_as_new(n + 1, save_events=True)
        return None
    return [n, tick]


def continue_as_new_plain(ctx: Any, generation: Any) -> Any:
    n = generation or 0
    x = yield ctx.call_activity("inc", input=n)
    if n < 3:
        ctx.continue_as_new(x)  # events are not saved
        return None
    return x


def custom_status(ctx: Any, _: Any) -> Any:
    ctx.set_custom_status("starting")
    x = yield ctx.call_activity("inc", input=1)
    ctx.set_custom_status({"step": 1, "x": x})
    x = yield ctx.call_activity("inc", input=x)
    ctx.set_custom_status(None)
    x = yield ctx.call_activity("inc", input=x)
    ctx.set_custom_status([x, "done"])
    return x


def new_uuids(ctx: Any, _: Any) -> Any:
    first = [ctx.new_uuid(), ctx.new_uuid()]
    echoed = yield ctx.call_activity("echo", input=first)
    later = ctx.new_uuid()  # after a replay: a different clock
    yield ctx.call_activity("echo", input=later)
    sub = yield ctx.call_sub_orchestrator("child", input=1, instance_id=ctx.new_uuid())
    return [echoed, later, sub]


def compensation(ctx: Any, _: Any) -> Any:
    done = []
    try:
        yield ctx.call_activity("always_fail", input="charge")
    except task.TaskFailedError as ex:
        undo = yield ctx.call_activity("echo", input=["refund", str(ex), ex.details.error_type, ex.details.message])
        done.append(undo)
    try:
        yield ctx.call_sub_orchestrator("child_fail", input=1)
    except task.TaskFailedError as ex:
        undo = yield ctx.call_activity("echo", input=["undo-child", str(ex), ex.details.message])
        done.append(undo)
    try:
        yield task.when_all([ctx.call_activity("inc", input=1), ctx.call_activity("always_fail", input="x")])
    except task.TaskFailedError as ex:
        undo = yield ctx.call_activity("echo", input=["undo-all", str(ex)])
        done.append(undo)
    return done


def suspend_resume(ctx: Any, _: Any) -> Any:
    x = yield ctx.call_activity("slow", input=1)
    ping = yield ctx.wait_for_external_event("ping")
    y = yield ctx.call_activity("inc", input=x)
    return [x, ping, y]


def terminated(ctx: Any, _: Any) -> Any:
    x = yield ctx.call_activity("inc", input=1)
    y = yield ctx.call_activity("slow", input=x)
    return y


def failing(ctx: Any, _: Any) -> Any:
    x = yield ctx.call_activity("inc", input=1)
    if x:
        raise ValueError(f"orchestrator gave up at {x}")
    return x


def fire_and_forget(ctx: Any, _: Any) -> Any:
    x = yield ctx.call_activity("inc", input=1)
    ctx.call_activity("inc", input=x)  # never awaited: still scheduled with the completion
    ctx.send_event("somebody", "Done", data=x)
    ctx.create_timer(timedelta(hours=1))
    return x


def continue_as_new_with_pending(ctx: Any, generation: Any) -> Any:
    n = generation or 0
    ctx.call_activity("inc", input=n)  # scheduled, never awaited
    yield ctx.create_timer(timedelta(minutes=1))
    if n < 2:
        ctx.send_event("watcher", "Generation", data=n)
        ctx.continue_as_new(n + 1)
        ctx.call_activity("inc", input=-1)  # after continue_as_new: still recorded
        return "ignored"
    return n


def inc(ctx: Any, value: int) -> int:
    """An activity function, called by reference (the engines use its name and return annotation)."""
    return value + 1


def edge_cases(ctx: Any, _: Any) -> Any:
    by_reference = yield ctx.call_activity(inc, input=1)
    yield ctx.create_timer(ctx.current_utc_datetime - timedelta(hours=1))  # already due
    yield ctx.create_timer(timedelta(0))
    early = ctx.wait_for_external_event("early")  # buffered before this wait
    first = yield task.when_any([early, ctx.create_timer(timedelta(hours=1))])
    failed_sub = None
    try:
        yield ctx.call_sub_orchestrator("child_fail", input=0, retry_policy=_policy(2))
    except task.TaskFailedError as ex:
        failed_sub = [str(ex), ex.details.error_type]
    return [by_reference, first is early, early.get_result(), failed_sub]


def suspend_edge_cases(ctx: Any, _: Any) -> Any:
    a = yield ctx.wait_for_external_event("a")
    b = yield ctx.call_activity("slow", input=a)
    c = yield ctx.wait_for_external_event("c")
    return [a, b, c]


def nondeterministic(ctx: Any, _: Any) -> Any:
    # Calls a different activity on replay: both engines must detect it at the next episode.
    x = yield ctx.call_activity("echo" if ctx.is_replaying else "inc", input=1)
    y = yield ctx.call_activity("inc", input=x)
    return y


def not_a_generator(ctx: Any, value: Any) -> Any:
    return {"echo": value, "id": ctx.instance_id}


COUNTER = EntityInstanceId("counter", "k")


def entity_calls(ctx: Any, _: Any) -> Any:
    a = yield ctx.call_entity(COUNTER, "add", 5)
    ctx.signal_entity(COUNTER, "add", 1)
    ctx.signal_entity(EntityInstanceId("Audit", "x"), "log", {"a": a},
                      signal_time=ctx.current_utc_datetime + timedelta(minutes=5))
    none_input = yield ctx.call_entity("@counter@k", "get") if SDK == "ours" else ctx.call_entity(COUNTER, "get")
    try:
        yield ctx.call_entity(COUNTER, "fail", "x")
    except task.TaskFailedError as error:
        return [a, none_input, str(error), ctx.new_uuid()]
    return "no failure"


def entity_lock(ctx: Any, _: Any) -> Any:
    b, a = EntityInstanceId("account", "b"), EntityInstanceId("Account", "a")
    with (yield ctx.lock_entities([b, a, b])):
        value = yield ctx.call_entity(a, "get")
        both = yield task.when_all([ctx.call_entity(b, "add", value), ctx.call_entity(a, "add", -value)])
    ctx.signal_entity(b, "done")
    after = yield ctx.call_entity(b, "get")
    return [value, both, after]


def entity_lock_then_fail(ctx: Any, _: Any) -> Any:
    with (yield ctx.lock_entities([COUNTER, EntityInstanceId("other", "z")])):
        yield ctx.call_entity(COUNTER, "get")
        raise ValueError("failing while holding locks")


def entity_lock_returns_inside(ctx: Any, _: Any) -> Any:
    yield ctx.lock_entities([COUNTER])
    value = yield ctx.call_entity(COUNTER, "get")
    return value


def entity_lock_continue_as_new(ctx: Any, generation: Any) -> Any:
    if generation >= 2:
        return generation
    with (yield ctx.lock_entities([COUNTER])):
        yield ctx.call_entity(COUNTER, "add", 1)
        ctx.continue_as_new(generation + 1)
    return None


ORCHESTRATORS = [
    chain, fan_out, when_any_timer, long_timer, retry_then_succeed, retry_none_input, retry_long_backoff,
    retry_exhausted, sub_orchestrations, sub_orchestration_retry, sub_orchestration_retry_versioned,
    external_events, send_events, continue_as_new_saved, continue_as_new_mixed_case, continue_as_new_plain,
    custom_status, new_uuids, compensation, suspend_resume, terminated, failing, fire_and_forget,
    continue_as_new_with_pending, edge_cases, suspend_edge_cases, nondeterministic,
    not_a_generator, entity_calls, entity_lock, entity_lock_then_fail, entity_lock_returns_inside,
    entity_lock_continue_as_new,
]

# Scenario -> maximum timer interval (seconds; None disables chunking). Unlisted: 3 days, both SDKs' default.
MAXIMUM_TIMER_INTERVAL: dict[str, float | None] = {}


# ----------------------------------------------------------------------------- engines


def _timer_interval(scenario: str) -> timedelta | None:
    seconds = MAXIMUM_TIMER_INTERVAL.get(scenario, timedelta(days=3).total_seconds())
    return None if seconds is None else timedelta(seconds=seconds)


_registry: Any = None


def _get_registry() -> Any:
    global _registry
    if _registry is None:
        _registry = _OurRegistry() if SDK == "ours" else _official_worker._Registry()
        for fn in ORCHESTRATORS:
            _registry.add_orchestrator(fn)
    return _registry


_logger = logging.getLogger("durabletask-lockstep")
_logger.setLevel(logging.CRITICAL)
_logger.propagate = False


def execute(scenario: str, request: pb.OrchestratorRequest) -> pb.OrchestratorResponse:
    """Run this interpreter's engine on one request."""
    registry = _get_registry()
    interval = _timer_interval(scenario)
    past, new = list(request.pastEvents), list(request.newEvents)
    if SDK == "ours":
        result = _OurExecutor(registry, maximum_timer_interval=interval).execute(request.instanceId, past, new)
    else:
        executor = _official_worker._OrchestrationExecutor(
            registry, _logger, _OfficialConverter(), maximum_timer_interval=interval)
        result = executor.execute(request.instanceId, past, new)
    status = result.encoded_custom_status
    return pb.OrchestratorResponse(
        instanceId=request.instanceId,
        actions=result.actions,
        customStatus=None if status is None else wrappers_pb2.StringValue(value=status),
    )


def answer(message: dict[str, Any]) -> dict[str, Any]:
    """Answer one protocol request (see the module docstring)."""
    try:
        request = pb.OrchestratorRequest.FromString(base64.b64decode(message["request"]))
        response = execute(message["scenario"], request)
        return {"response": base64.b64encode(response.SerializeToString(deterministic=True)).decode()}
    except Exception:
        return {"error": traceback.format_exc()}


def main() -> int:
    if sys.argv[1:] == ["--sdk"]:
        print(SDK)
        return 0
    logging.disable(logging.CRITICAL)
    for line in sys.stdin:
        if not line.strip():
            continue
        message = json.loads(line)
        reply: Any = [answer(m) for m in message] if isinstance(message, list) else answer(message)
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
