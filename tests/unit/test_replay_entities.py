"""The replay engine's entity support: call, signal and lock from orchestrations, from histories alone."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import pytest
from google.protobuf import wrappers_pb2

from durabletask import task
from durabletask.entities import EntityInstanceId, EntityLock
from durabletask.internal import orchestrator_service_pb2 as pb
from durabletask.internal.replay.engine import ExecutionResult
from tests.unit import histories as h
from tests.unit.replay_support import INSTANCE, completion, failure, kinds, output, run

A = EntityInstanceId("counter", "a")
B = EntityInstanceId("Counter", "b")
C = EntityInstanceId("audit", "x")


def _sv(value: str | None) -> wrappers_pb2.StringValue | None:
    return None if value is None else wrappers_pb2.StringValue(value=value)


def expected_uuid(counter: int, when: datetime = h.T0) -> str:
    """How every Durable Task SDK derives deterministic IDs (instance, episode time, counter)."""
    namespace = uuid.uuid5(uuid.NAMESPACE_OID, "9e952958-5e33-4daf-827f-2fa12937b875")
    return str(uuid.uuid5(namespace, f"{INSTANCE}_{when.strftime('%Y-%m-%dT%H:%M:%S.%fZ')}_{counter}"))


def confirmations(result: ExecutionResult) -> list[pb.HistoryEvent]:
    """What a backend records for the episode's entity actions (the message, under the action's id)."""
    out = []
    for action in result.actions:
        if action.HasField("sendEntityMessage"):
            message = action.sendEntityMessage
            kind = message.WhichOneof("EntityMessageType")
            assert kind is not None
            out.append(pb.HistoryEvent(eventId=action.id, **{kind: getattr(message, kind)}))
    return out


def messages(result: ExecutionResult) -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for a in result.actions:
        if a.HasField("sendEntityMessage"):
            kind = a.sendEntityMessage.WhichOneof("EntityMessageType")
            assert kind is not None
            out.append((kind, getattr(a.sendEntityMessage, kind)))
    return out


def completed(request_id: str, value: Any) -> pb.HistoryEvent:
    return pb.HistoryEvent(eventId=-1, entityOperationCompleted=pb.EntityOperationCompletedEvent(
        requestId=request_id, output=_sv(h.enc(value))))


def failed(request_id: str, message: str = "negative") -> pb.HistoryEvent:
    return pb.HistoryEvent(eventId=-1, entityOperationFailed=pb.EntityOperationFailedEvent(
        requestId=request_id, failureDetails=h.failure(message)))


def granted(section_id: str) -> pb.HistoryEvent:
    return pb.HistoryEvent(eventId=-1, entityLockGranted=pb.EntityLockGrantedEvent(criticalSectionId=section_id))


class Episodes:
    """Drives an orchestrator episode by episode, recording the history as a backend would."""

    def __init__(self, fn: Callable[..., Any], input: Any = None) -> None:
        self.fn = fn
        self.past: list[pb.HistoryEvent] = []
        self.pending: list[pb.HistoryEvent] = [h.orchestrator_started(), h.execution_started(fn.__name__, input)]

    def step(self, *arrivals: pb.HistoryEvent) -> ExecutionResult:
        new = [*self.pending, *arrivals] if self.pending else [h.orchestrator_started(), *arrivals]
        result = run(self.fn, self.past, new)
        self.past += [*new, *confirmations(result), h.orchestrator_completed()]
        self.pending = []
        return result


# ---------------------------------------------------------------- call_entity


def calls_counter(ctx: task.OrchestrationContext, amount: int) -> Any:
    total = yield ctx.call_entity(A, "add", amount)
    return total


def test_call_entity_sends_a_call_with_a_deterministic_request_id_and_returns_the_result() -> None:
    episodes = Episodes(calls_counter, 5)
    first = episodes.step()
    [(kind, call)] = messages(first)
    assert kind == "entityOperationCalled" and first.actions[0].id == 1
    assert (call.targetInstanceId.value, call.operation, call.input.value) == ("@counter@a", "add", "5")
    assert call.parentInstanceId.value == INSTANCE and not call.HasField("parentExecutionId")
    assert call.requestId == expected_uuid(0)
    assert not first.is_complete
    assert output(episodes.step(completed(call.requestId, 12))) == 12


def test_call_entity_failure_is_a_task_failed_error_wrapping_the_entity_failure() -> None:
    def catches(ctx: task.OrchestrationContext, _: Any) -> Any:
        try:
            yield ctx.call_entity(A, "add", -1)
        except task.TaskFailedError as error:
            inner = error.details.inner_failure
            assert inner is not None
            return [str(error), error.details.error_type, inner.message, inner.error_type]
        return "no failure"

    episodes = Episodes(catches)
    request_id = messages(episodes.step())[0][1].requestId
    message, error_type, inner, inner_type = output(episodes.step(failed(request_id)))
    assert message == "Operation 'add' on entity '@counter@a' failed with error: negative"
    assert error_type == "durabletask.entities.entity_operation_failed_exception.EntityOperationFailedException"
    assert (inner, inner_type) == ("negative", "builtins.ValueError")


def test_call_entity_result_decodes_into_return_type() -> None:
    def typed(ctx: task.OrchestrationContext, _: Any) -> Any:
        value = yield ctx.call_entity("@counter@a", "get", return_type=float)
        return type(value).__name__

    episodes = Episodes(typed)
    request_id = messages(episodes.step())[0][1].requestId
    assert output(episodes.step(completed(request_id, 3.5))) == "float"


def test_an_unknown_or_duplicate_entity_result_is_ignored() -> None:
    episodes = Episodes(calls_counter, 1)
    request_id = messages(episodes.step())[0][1].requestId
    result = episodes.step(completed("somebody-else", 1), completed(request_id, 2), completed(request_id, 3))
    assert output(result) == 2


# ---------------------------------------------------------------- signal_entity


def test_signal_entity_is_fire_and_forget_with_an_optional_time() -> None:
    when = datetime(2030, 1, 2, 3, 4, 5)

    def signals(ctx: task.OrchestrationContext, _: Any) -> str:
        ctx.signal_entity(A, "add", 1)
        ctx.signal_entity(C, "log", {"k": "v"}, signal_time=when)
        return "sent"

    result = Episodes(signals).step()
    assert kinds(result) == ["sendEntityMessage", "sendEntityMessage", "completeOrchestration"]
    (k1, s1), (k2, s2) = messages(result)
    assert k1 == k2 == "entityOperationSignaled"
    assert (s1.targetInstanceId.value, s1.operation, s1.input.value, s1.HasField("scheduledTime")) == (
        "@counter@a", "add", "1", False)
    assert s2.scheduledTime.ToDatetime() == when and json.loads(s2.input.value) == {"k": "v"}
    assert [s1.requestId, s2.requestId] == [expected_uuid(0), expected_uuid(1)]


def test_replaying_a_confirmed_signal_sends_nothing_again() -> None:
    def signals_then_waits(ctx: task.OrchestrationContext, _: Any) -> Any:
        ctx.signal_entity(A, "add", 1)
        value = yield ctx.wait_for_external_event("go")
        return value

    episodes = Episodes(signals_then_waits)
    assert len(messages(episodes.step())) == 1
    assert kinds(episodes.step(h.event_raised("go", "done"))) == ["completeOrchestration"]


# ---------------------------------------------------------------- critical sections


def transfer(ctx: task.OrchestrationContext, _: Any) -> Any:
    with (yield ctx.lock_entities([B, A, A])) as lock:
        assert isinstance(lock, EntityLock)
        a = yield ctx.call_entity(A, "get")
        b = yield ctx.call_entity(B, "get")
        both = yield task.when_all([ctx.call_entity(A, "add", -1), ctx.call_entity(B, "add", 1)])
    ctx.signal_entity(A, "after")  # allowed again once the section is over
    return [a, b, both]


def test_lock_call_unlock_in_a_critical_section() -> None:
    episodes = Episodes(transfer)
    first = episodes.step()
    [(kind, lock)] = messages(first)
    assert kind == "entityLockRequested"
    assert list(lock.lockSet) == ["@counter@a", "@counter@b"]  # sorted, without duplicates
    assert lock.position == 0 and lock.parentInstanceId.value == INSTANCE
    assert lock.criticalSectionId == expected_uuid(0)

    second = episodes.step(granted(lock.criticalSectionId))
    [(_, get_a)] = messages(second)
    third = episodes.step(completed(get_a.requestId, 10))
    [(_, get_b)] = messages(third)
    fourth = episodes.step(completed(get_b.requestId, 20))
    adds = [m for _, m in messages(fourth)]
    assert [m.operation for m in adds] == ["add", "add"]
    last = episodes.step(completed(adds[1].requestId, 21), completed(adds[0].requestId, 9))
    assert kinds(last) == ["sendEntityMessage"] * 3 + ["completeOrchestration"]
    # Released in the order the last calls completed (b's add, then a's), as the official SDK does.
    unlock_b, unlock_a, after = [m for _, m in messages(last)]
    for unlock, target in ((unlock_a, "@counter@a"), (unlock_b, "@counter@b")):
        assert unlock.criticalSectionId == lock.criticalSectionId
        assert (unlock.targetInstanceId.value, unlock.parentInstanceId.value) == (target, INSTANCE)
    assert after.operation == "after"
    ids = [a.id for a in last.actions]
    assert ids == sorted(ids) and len(set(ids)) == 4
    assert output(last) == [10, 20, [9, 21]]

    # The whole history replays to the same outcome with nothing left to send but the completion.
    assert kinds(run(transfer, episodes.past[:-1], [h.orchestrator_started()])) == ["completeOrchestration"]


def _in_section(body: Callable[[task.OrchestrationContext], Any]) -> Callable[..., Any]:
    def orchestrator(ctx: task.OrchestrationContext, _: Any) -> Any:
        with (yield ctx.lock_entities([A])):
            yield from body(ctx)
        return "done"
    return orchestrator


def _fails_in_section(body: Callable[[task.OrchestrationContext], Any]) -> tuple[ExecutionResult, str]:
    fn = _in_section(body)
    fn.__name__ = "in_section"
    episodes = Episodes(fn)
    lock = messages(episodes.step())[0][1]
    result = episodes.step(granted(lock.criticalSectionId))
    return result, failure(result).errorMessage


def _call_other(ctx: task.OrchestrationContext) -> Any:
    yield ctx.call_entity(C, "log")


def _signal_locked(ctx: task.OrchestrationContext) -> Any:
    ctx.signal_entity(A, "add", 1)
    yield ctx.create_timer(timedelta(seconds=1))


def _nested(ctx: task.OrchestrationContext) -> Any:
    yield ctx.lock_entities([C])


def _two_calls(ctx: task.OrchestrationContext) -> Any:
    yield task.when_all([ctx.call_entity(A, "get"), ctx.call_entity(A, "get")])


@pytest.mark.parametrize(("body", "words"), [
    (_call_other, "'@audit@x' is not one of the locked entities (@counter@a)"),
    (_signal_locked, "use call_entity() instead"),
    (_nested, "sections do not nest"),
    (_two_calls, "an earlier call to it is still running"),
])
def test_critical_section_rules_fail_clearly_and_the_locks_are_released(body: Any, words: str) -> None:
    result, message = _fails_in_section(body)
    assert words in message
    unlocks = [m for k, m in messages(result) if k == "entityUnlockSent"]
    assert [u.targetInstanceId.value for u in unlocks] == ["@counter@a"]
    assert kinds(result)[-1] == "completeOrchestration"


def test_calling_before_the_lock_is_granted_is_refused() -> None:
    def eager(ctx: task.OrchestrationContext, _: Any) -> Any:
        ctx.lock_entities([A])
        yield ctx.call_entity(A, "get")

    result = Episodes(eager).step()
    assert "before the locks were granted" in failure(result).errorMessage
    assert [k for k, _ in messages(result)] == ["entityLockRequested", "entityUnlockSent"]


def test_lock_entities_needs_entities() -> None:
    def empty(ctx: task.OrchestrationContext, _: Any) -> Any:
        yield ctx.lock_entities([])

    assert "at least one entity" in failure(Episodes(empty).step()).errorMessage


def test_locks_are_released_when_the_orchestration_returns_inside_the_section() -> None:
    def returns_inside(ctx: task.OrchestrationContext, _: Any) -> Any:
        yield ctx.lock_entities([A, B])
        return "kept the lock"

    episodes = Episodes(returns_inside)
    lock = messages(episodes.step())[0][1]
    result = episodes.step(granted(lock.criticalSectionId))
    assert kinds(result) == ["sendEntityMessage", "sendEntityMessage", "completeOrchestration"]
    assert output(result) == "kept the lock"
    assert completion(result) is not None and result.actions[-1].id > result.actions[1].id


def test_locks_are_released_on_continue_as_new_and_on_termination() -> None:
    def again(ctx: task.OrchestrationContext, n: int) -> Any:
        with (yield ctx.lock_entities([A])):
            ctx.continue_as_new(n + 1)
            yield ctx.create_timer(timedelta(seconds=1))

    episodes = Episodes(again, 0)
    lock = messages(episodes.step())[0][1]
    result = episodes.step(granted(lock.criticalSectionId))
    assert [k for k, _ in messages(result)] == ["entityUnlockSent"]
    assert completion(result).orchestrationStatus == pb.ORCHESTRATION_STATUS_CONTINUED_AS_NEW

    def waits(ctx: task.OrchestrationContext, _: Any) -> Any:
        with (yield ctx.lock_entities([A])):
            yield ctx.wait_for_external_event("never")

    episodes = Episodes(waits)
    lock = messages(episodes.step())[0][1]
    episodes.step(granted(lock.criticalSectionId))
    result = episodes.step(h.terminated("stop"))
    assert [k for k, _ in messages(result)] == ["entityUnlockSent"]
    assert completion(result).orchestrationStatus == pb.ORCHESTRATION_STATUS_TERMINATED


# ---------------------------------------------------------------- determinism and older histories


def test_a_changed_entity_operation_is_a_non_determinism_failure() -> None:
    episodes = Episodes(calls_counter, 1)
    episodes.step()

    def changed(ctx: task.OrchestrationContext, amount: int) -> Any:
        total = yield ctx.call_entity(A, "subtract", amount)
        return total

    changed.__name__ = "calls_counter"
    result = run(changed, episodes.past, [h.orchestrator_started()])
    details = failure(result)
    assert details.errorType.endswith("NonDeterminismError")
    assert "call_entity('@counter@a', 'add')" in details.errorMessage
    assert "call_entity('@counter@a', 'subtract')" in details.errorMessage


def test_another_sdks_request_ids_are_followed() -> None:
    episodes = Episodes(calls_counter, 1)
    first = episodes.step()
    recorded = episodes.past[-2]
    recorded.entityOperationCalled.requestId = "from-another-sdk"
    assert first.actions[0].sendEntityMessage.entityOperationCalled.requestId != "from-another-sdk"
    assert output(episodes.step(completed("from-another-sdk", 7))) == 7


def test_legacy_shape_event_sent_and_event_raised_by_request_id() -> None:
    def both(ctx: task.OrchestrationContext, _: Any) -> Any:
        with (yield ctx.lock_entities([A])):
            ok = yield ctx.call_entity(A, "get")
            try:
                yield ctx.call_entity(A, "boom")
            except task.TaskFailedError as error:
                return [ok, str(error)]
        return "unreachable"

    first = run(both, [], [h.orchestrator_started(), h.execution_started("both")])
    lock_action = first.actions[0]
    section = lock_action.sendEntityMessage.entityLockRequested.criticalSectionId
    past = [h.orchestrator_started(), h.execution_started("both"),
            h.event_sent(lock_action.id, "@counter@a", "op", {"id": section, "op": None}), h.orchestrator_completed()]
    grant = h.event_raised(section, {"result": "Lock Acquisition Completed"})
    second = run(both, past, [h.orchestrator_started(), grant])
    call = second.actions[0]
    request_id = call.sendEntityMessage.entityOperationCalled.requestId
    past += [h.orchestrator_started(), h.event_raised(section, {"result": "Lock Acquisition Completed"}),
             h.event_sent(call.id, "@counter@a", "op", {"id": request_id, "op": "get"}), h.orchestrator_completed()]
    third = run(both, past, [h.orchestrator_started(), h.event_raised(request_id, {"result": "5"})])
    call2 = third.actions[0]
    request2 = call2.sendEntityMessage.entityOperationCalled.requestId
    past += [h.orchestrator_started(), h.event_raised(request_id, {"result": "5"}),
             h.event_sent(call2.id, "@counter@a", "op", {"id": request2, "op": "boom"}), h.orchestrator_completed()]
    last = run(both, past, [h.orchestrator_started(),
                            h.event_raised(request2, {"result": '"it broke"', "exceptionType": "System.Exception"})])
    assert output(last) == [5, "Operation 'boom' on entity '@counter@a' failed with error: it broke"]
