"""The orchestration side of entities: actions, critical sections, and the entity history events.

Calls, signals and lock requests are actions like activity calls: each takes a sequence number
and is confirmed by a history event carrying that number. Results come back keyed by the request
ID (a name-based UUID, so the same on every replay and the same as the official SDK's), and a
lock grant by the critical section ID. Histories written by Durable Functions in the older shape
(``eventSent`` for entity messages, ``eventRaised`` named by request ID for results) replay too.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from google.protobuf import wrappers_pb2

from durabletask.entities.entity_instance_id import EntityInstanceId
from durabletask.entities.entity_lock import EntityLock
from durabletask.entities.entity_operation_failed_exception import EntityOperationFailedException
from durabletask.internal import orchestrator_service_pb2 as pb
from durabletask.internal.failures import qualified_name
from durabletask.internal.replay import nondeterminism
from durabletask.internal.replay.actions import Action, _WithInput, to_timestamp
from durabletask.serialization import DataConverter

if TYPE_CHECKING:
    from durabletask.internal.replay.context import ReplayContext
    from durabletask.internal.tasks import CompletableTask

logger = logging.getLogger("durabletask.orchestration")

CALLED = "entityOperationCalled"
SIGNALED = "entityOperationSignaled"
LOCK_REQUESTED = "entityLockRequested"
UNLOCK_SENT = "entityUnlockSent"


def _sv(value: str | None) -> wrappers_pb2.StringValue | None:
    return None if value is None else wrappers_pb2.StringValue(value=value)


# ----------------------------------------------------------------------------- actions


class CallEntity(_WithInput):
    __slots__ = ("operation", "parent_instance_id", "request_id")
    method = "call_entity"
    kind = CALLED

    def __init__(self, id: int, target: str, operation: str, data: Any, converter: DataConverter | None,
                 request_id: str, parent_instance_id: str) -> None:
        _WithInput.__init__(self, id, target, data, converter)
        self.operation = operation
        self.request_id = request_id
        self.parent_instance_id = parent_instance_id

    def describe(self) -> str:
        return f"{self.method}('{self.name}', '{self.operation}')"

    def to_proto(self, converter: DataConverter) -> pb.OrchestratorAction:
        return pb.OrchestratorAction(id=self.id, sendEntityMessage=pb.SendEntityMessageAction(
            entityOperationCalled=pb.EntityOperationCalledEvent(
                requestId=self.request_id,
                operation=self.operation,
                input=_sv(self.encoded_input(converter)),
                parentInstanceId=_sv(self.parent_instance_id),
                targetInstanceId=_sv(self.name),
            )))


class SignalEntity(CallEntity):
    __slots__ = ("signal_time",)
    method = "signal_entity"
    kind = SIGNALED

    def __init__(self, id: int, target: str, operation: str, data: Any, converter: DataConverter | None,
                 request_id: str, signal_time: datetime | None) -> None:
        CallEntity.__init__(self, id, target, operation, data, converter, request_id, "")
        self.signal_time = signal_time

    def to_proto(self, converter: DataConverter) -> pb.OrchestratorAction:
        return pb.OrchestratorAction(id=self.id, sendEntityMessage=pb.SendEntityMessageAction(
            entityOperationSignaled=pb.EntityOperationSignaledEvent(
                requestId=self.request_id,
                operation=self.operation,
                scheduledTime=None if self.signal_time is None else to_timestamp(self.signal_time),
                input=_sv(self.encoded_input(converter)),
                targetInstanceId=_sv(self.name),
            )))


class LockEntities(Action):
    __slots__ = ("critical_section_id", "lock_set", "parent_instance_id")
    method = "lock_entities"
    kind = LOCK_REQUESTED

    def __init__(self, id: int, critical_section_id: str, lock_set: list[str], parent_instance_id: str) -> None:
        Action.__init__(self, id, ", ".join(lock_set))
        self.critical_section_id = critical_section_id
        self.lock_set = lock_set
        self.parent_instance_id = parent_instance_id

    def describe(self) -> str:
        return f"lock_entities([{self.name}])"

    def to_proto(self, converter: DataConverter) -> pb.OrchestratorAction:
        return pb.OrchestratorAction(id=self.id, sendEntityMessage=pb.SendEntityMessageAction(
            entityLockRequested=pb.EntityLockRequestedEvent(
                criticalSectionId=self.critical_section_id,
                lockSet=self.lock_set,
                position=0,
                parentInstanceId=_sv(self.parent_instance_id),
            )))


class UnlockEntity(Action):
    __slots__ = ("critical_section_id", "parent_instance_id")
    method = "unlock"
    kind = UNLOCK_SENT

    def __init__(self, id: int, critical_section_id: str, target: str, parent_instance_id: str) -> None:
        Action.__init__(self, id, target)
        self.critical_section_id = critical_section_id
        self.parent_instance_id = parent_instance_id

    def describe(self) -> str:
        return f"the release of the lock on '{self.name}' (leaving a lock_entities() section)"

    def to_proto(self, converter: DataConverter) -> pb.OrchestratorAction:
        return pb.OrchestratorAction(id=self.id, sendEntityMessage=pb.SendEntityMessageAction(
            entityUnlockSent=pb.EntityUnlockSentEvent(
                criticalSectionId=self.critical_section_id,
                parentInstanceId=_sv(self.parent_instance_id),
                targetInstanceId=_sv(self.name),
            )))


# ----------------------------------------------------------------------------- per-orchestration state


class EntityCalls:
    """What one orchestration has outstanding with entities, and its critical section if any."""

    __slots__ = ("available", "calls", "lock_requests", "locks", "pending_grant", "section_id")

    def __init__(self) -> None:
        # request ID -> (sequence number, entity, operation) of calls waiting for a result
        self.calls: dict[str, tuple[int, EntityInstanceId, str]] = {}
        # critical section ID -> sequence number of the lock request waiting for its grant
        self.lock_requests: dict[str, int] = {}
        self.section_id: str | None = None
        self.locks: list[EntityInstanceId] = []
        self.available: list[EntityInstanceId] = []
        self.pending_grant = False

    def check_call(self, target: EntityInstanceId) -> None:
        """Inside a critical section, a call must go to a locked entity that is not busy."""
        if self.section_id is None:
            return
        if target in self.available:
            self.available.remove(target)
            return
        if self.pending_grant:
            raise RuntimeError(
                f"call_entity('{target}') inside a critical section before the locks were granted: "
                f"yield the lock_entities() task first (with (yield ctx.lock_entities([...])):)")
        if target in self.locks:
            raise RuntimeError(
                f"call_entity('{target}') inside a critical section while an earlier call to it is still "
                f"running: yield the earlier call's task first (one call per locked entity at a time)")
        raise RuntimeError(
            f"call_entity('{target}') inside a critical section, but '{target}' is not one of the locked "
            f"entities ({', '.join(map(str, self.locks))}): lock it too, or call it outside the section")

    def check_signal(self, target: EntityInstanceId) -> None:
        if self.section_id is not None and target in self.locks:
            raise RuntimeError(
                f"signal_entity('{target}') inside a critical section that holds its lock: a signal would "
                f"wait for the lock this orchestration holds; use call_entity() instead")

    def check_lock(self) -> None:
        if self.section_id is not None:
            raise RuntimeError(
                "lock_entities() inside a critical section: sections do not nest; lock every entity you "
                "need in one lock_entities([...]) call")

    def enter(self, section_id: str, entities: list[EntityInstanceId]) -> list[EntityInstanceId]:
        """Open a section over ``entities`` (sorted, without duplicates) and return that lock set."""
        lock_set = sorted(set(entities))
        self.section_id = section_id
        self.locks = lock_set
        self.available = []
        self.pending_grant = True
        return lock_set

    def granted(self, section_id: str) -> bool:
        if self.section_id != section_id:
            return False
        self.available = list(self.locks)
        self.pending_grant = False
        return True

    def call_done(self, target: EntityInstanceId) -> None:
        if self.section_id is not None:
            self.available.append(target)
            # The official SDK releases locks in the order their last calls completed (its list of
            # available locks is its list of locks); follow that order so that the actions match.
            if target in self.locks:
                self.locks.remove(target)
                self.locks.append(target)


# ----------------------------------------------------------------------------- history events


def _recorded(action_kind: str, target: str, operation: str = "") -> str:
    method = {CALLED: "call_entity", SIGNALED: "signal_entity"}.get(action_kind, "lock_entities")
    return f"{method}('{target}', '{operation}')" if operation else f"{method}('{target}')"


def _confirm(ctx: ReplayContext, event: pb.HistoryEvent, kind: str, target: str, operation: str) -> Any:
    seq = event.eventId
    action: Any = ctx.pending_actions.pop(seq, None)
    recorded = _recorded(kind, target, operation)
    if action is None:
        raise nondeterminism.missing_action(seq, recorded)
    if action.kind != kind:
        raise nondeterminism.mismatch(seq, recorded, action)
    if kind != LOCK_REQUESTED and (action.name != target or action.operation != operation):
        raise nondeterminism.mismatch(seq, recorded, action)
    return action


def operation_called(ctx: ReplayContext, event: pb.HistoryEvent) -> None:
    called = event.entityOperationCalled
    action = _confirm(ctx, event, CALLED, called.targetInstanceId.value, called.operation)
    if called.requestId != action.request_id:  # another SDK's IDs: results come under the recorded one
        calls = ctx.entity_calls().calls
        entry = calls.pop(action.request_id, None)
        if entry is not None:
            calls[called.requestId] = entry


def operation_signaled(ctx: ReplayContext, event: pb.HistoryEvent) -> None:
    signaled = event.entityOperationSignaled
    _confirm(ctx, event, SIGNALED, signaled.targetInstanceId.value, signaled.operation)


def lock_requested(ctx: ReplayContext, event: pb.HistoryEvent) -> None:
    requested = event.entityLockRequested
    action = _confirm(ctx, event, LOCK_REQUESTED, ", ".join(requested.lockSet), "")
    if requested.criticalSectionId != action.critical_section_id:
        requests = ctx.entity_calls().lock_requests
        seq = requests.pop(action.critical_section_id, None)
        if seq is not None:
            requests[requested.criticalSectionId] = seq


def unlock_sent(ctx: ReplayContext, event: pb.HistoryEvent) -> None:
    section_id = event.entityUnlockSent.criticalSectionId
    pending = ctx.pending_actions
    for seq in [s for s, a in pending.items()
                if isinstance(a, UnlockEntity) and a.critical_section_id == section_id]:
        del pending[seq]


def lock_granted(ctx: ReplayContext, event: pb.HistoryEvent) -> None:
    _grant(ctx, event.entityLockGranted.criticalSectionId)


def _grant(ctx: ReplayContext, section_id: str) -> None:
    calls = ctx.entity_calls()
    seq = calls.lock_requests.pop(section_id, None)
    task = ctx.pending_tasks.pop(seq, None) if seq is not None else None
    if task is None or task._is_complete or not calls.granted(section_id):
        _ignored(ctx, f"a lock grant for unknown critical section '{section_id}'")
        return
    task.complete(EntityLock(ctx))
    ctx.resume()


def _call_task(ctx: ReplayContext, request_id: str) -> tuple[CompletableTask[Any], EntityInstanceId, str] | None:
    entry = ctx.entity_calls().calls.pop(request_id, None)
    if entry is None:
        return None
    seq, target, operation = entry
    task = ctx.pending_tasks.pop(seq, None)
    if task is None or task._is_complete:
        return None
    ctx.entity_calls().call_done(target)
    return task, target, operation


def operation_completed(ctx: ReplayContext, event: pb.HistoryEvent) -> None:
    done = event.entityOperationCompleted
    _call_succeeded(ctx, done.requestId, done.output.value if done.HasField("output") else None)


def _call_succeeded(ctx: ReplayContext, request_id: str, raw: str | None) -> None:
    found = _call_task(ctx, request_id)
    if found is None:
        _ignored(ctx, f"a result for unknown entity request '{request_id}'")
        return
    task = found[0]
    task.complete(ctx._deserialize(raw, task._expected_type) if raw else None)
    ctx.resume()


def operation_failed(ctx: ReplayContext, event: pb.HistoryEvent) -> None:
    failed = event.entityOperationFailed
    _call_failed(ctx, failed.requestId, failed.failureDetails)


def _call_failed(ctx: ReplayContext, request_id: str, details: pb.TaskFailureDetails) -> None:
    found = _call_task(ctx, request_id)
    if found is None:
        _ignored(ctx, f"a failure for unknown entity request '{request_id}'")
        return
    task, target, operation = found
    error = EntityOperationFailedException(target, operation, details)
    wrapped = pb.TaskFailureDetails(errorType=qualified_name(EntityOperationFailedException),
                                    errorMessage=str(error), innerFailure=details)
    for key, value in details.properties.items():
        wrapped.properties[key].CopyFrom(value)
    task.fail(str(error), wrapped)
    ctx.resume()


def _ignored(ctx: ReplayContext, what: str) -> None:
    if not ctx.is_replaying:
        logger.warning("%s: ignoring %s", ctx.instance_id, what)


# ----------------------------------------------------------------------------- the older (eventSent/eventRaised) shape


def legacy_event_sent(ctx: ReplayContext, event: pb.HistoryEvent, action: Action) -> None:
    """An ``eventSent`` confirming an entity action (Durable Functions' translation of it)."""
    sent = event.eventSent
    if isinstance(action, UnlockEntity | CallEntity):
        target = action.name
    elif isinstance(action, LockEntities):
        target = action.lock_set[0]
    else:
        target = None
    if target != sent.instanceId:
        raise nondeterminism.mismatch(event.eventId, f"send_event('{sent.instanceId}', '{sent.name}')", action)
    if type(action) is CallEntity or isinstance(action, LockEntities):
        try:
            message_id = json.loads(sent.input.value)["id"]
        except (ValueError, KeyError, TypeError):
            return
        calls = ctx.entity_calls()
        if isinstance(action, LockEntities):
            if message_id != action.critical_section_id and action.critical_section_id in calls.lock_requests:
                calls.lock_requests[message_id] = calls.lock_requests.pop(action.critical_section_id)
        elif message_id != action.request_id and action.request_id in calls.calls:
            calls.calls[message_id] = calls.calls.pop(action.request_id)


def legacy_event_raised(ctx: ReplayContext, name: str, raw: str | None) -> bool:
    """Handle an ``eventRaised`` that answers an entity call or lock; False if it is a plain event."""
    calls = ctx.entity_calls()
    if name in calls.lock_requests:
        _grant(ctx, name)
        return True
    if name not in calls.calls:
        return False
    response = ctx._converter.deserialize(raw) if raw else None
    if isinstance(response, dict) and ("exceptionType" in response or isinstance(response.get("failureDetails"), dict)):
        structured = response.get("failureDetails")
        if isinstance(structured, dict):
            details = _core_failure(structured)
        else:
            message = response.get("result")
            if isinstance(message, str):
                with contextlib.suppress(ValueError):
                    message = ctx._converter.deserialize(message)
            details = pb.TaskFailureDetails(errorType=str(response.get("exceptionType") or ""),
                                            errorMessage="" if message is None else str(message))
        _call_failed(ctx, name, details)
        return True
    result = response.get("result") if isinstance(response, dict) else None
    _call_succeeded(ctx, name, result if isinstance(result, str) else None)
    return True


def _core_failure(data: dict[str, Any], depth: int = 0) -> pb.TaskFailureDetails:
    """Failure details written by DurableTask.Core (PascalCase keys; camelCase accepted too)."""
    def get(key: str) -> Any:
        return data.get(key, data.get(key[0].lower() + key[1:]))
    inner = get("InnerFailure")
    details = pb.TaskFailureDetails(errorType=str(get("ErrorType") or ""), errorMessage=str(get("ErrorMessage") or ""),
                                    isNonRetriable=bool(get("IsNonRetriable")))
    stack = get("StackTrace")
    if stack is not None:
        details.stackTrace.value = str(stack)
    if isinstance(inner, dict) and depth < 10:
        details.innerFailure.CopyFrom(_core_failure(inner, depth + 1))
    return details


HANDLERS: dict[str | None, Callable[[ReplayContext, pb.HistoryEvent], None] | None] = {
    CALLED: operation_called,
    SIGNALED: operation_signaled,
    LOCK_REQUESTED: lock_requested,
    UNLOCK_SENT: unlock_sent,
    "entityLockGranted": lock_granted,
    "entityOperationCompleted": operation_completed,
    "entityOperationFailed": operation_failed,
}
"""Entity history event kind -> handler, merged into the engine's table."""
