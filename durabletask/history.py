"""Orchestration history as plain Python objects.

Each protobuf ``HistoryEvent`` kind has a dataclass here, with the names, field names and field
types of the official SDK's ``durabletask.history``. `from_protobuf` converts one wire event and
`to_dict` turns an event into JSON-ready data (datetimes as ISO 8601 strings), in the same shape as
the official SDK's ``to_dict``.

Conventions of the conversion, shared with the official SDK:

* Optional wire strings (``google.protobuf.StringValue``) become ``None`` when absent, and ``""``
  when present but empty.
* Timestamps become timezone-aware UTC datetimes (``tzinfo=timezone.utc``), truncated to
  microseconds.
* Empty ``tags`` maps become ``None``; ``lock_set`` is always a list.
* ``HistoryStateEvent.orchestration_state`` is the protobuf JSON mapping of the state, keyed by the
  proto field names.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from google.protobuf.wrappers_pb2 import StringValue

from durabletask import task
from durabletask.internal import orchestrator_service_pb2 as pb
from durabletask.internal.failures import FailureDetails, failure_details_from_proto

__all__ = [
    "ContinueAsNewEvent", "EntityLockGrantedEvent", "EntityLockRequestedEvent", "EntityOperationCalledEvent",
    "EntityOperationCompletedEvent", "EntityOperationFailedEvent", "EntityOperationSignaledEvent",
    "EntityUnlockSentEvent", "EventRaisedEvent", "EventSentEvent", "ExecutionCompletedEvent",
    "ExecutionResumedEvent", "ExecutionRewoundEvent", "ExecutionStartedEvent", "ExecutionSuspendedEvent",
    "ExecutionTerminatedEvent", "GenericEvent", "HistoryEvent", "HistoryStateEvent", "OrchestrationInstance",
    "OrchestratorCompletedEvent", "OrchestratorStartedEvent", "ParentInstanceInfo",
    "SubOrchestrationInstanceCompletedEvent", "SubOrchestrationInstanceCreatedEvent",
    "SubOrchestrationInstanceFailedEvent", "TaskCompletedEvent", "TaskFailedEvent", "TaskScheduledEvent",
    "TimerCreatedEvent", "TimerFiredEvent", "TraceContext", "from_protobuf", "to_dict",
]


# --- helper records --------------------------------------------------------------------------------

@dataclass(slots=True)
class OrchestrationInstance:
    """Identifies one orchestration instance, and optionally one execution of it."""
    instance_id: str
    execution_id: str | None = None


@dataclass(slots=True)
class ParentInstanceInfo:
    """The orchestration that started a sub-orchestration.

    Attributes:
        task_scheduled_id: Event id of the parent's sub-orchestration task.
        name: The parent orchestrator's name.
        version: The parent orchestrator's version.
        orchestration_instance: The parent instance.
    """

    task_scheduled_id: int
    name: str | None = None
    version: str | None = None
    orchestration_instance: OrchestrationInstance | None = None


@dataclass(slots=True)
class TraceContext:
    """W3C trace context handed from a parent span.

    Attributes:
        trace_parent: The ``traceparent`` header value.
        span_id: The parent span's id (deprecated on the wire, still reported).
        trace_state: The ``tracestate`` header value, if any.
    """

    trace_parent: str
    span_id: str
    trace_state: str | None = None


# --- events ----------------------------------------------------------------------------------------

@dataclass(slots=True)
class HistoryEvent:
    """Base of every history event; also what an event of an unknown kind converts to.

    Attributes:
        event_id: The event's id (a task's sequence number, or -1).
        timestamp: When the event was recorded (aware, UTC).
    """

    event_id: int
    timestamp: datetime

    def to_dict(self) -> dict[str, Any]:
        """Return this event as JSON-ready data; see `to_dict`."""
        cls = type(self)
        return _record_to_dict(self, _FIELD_NAMES.get(cls) or _field_names(cls))


@dataclass(slots=True)
class ExecutionStartedEvent(HistoryEvent):
    """The orchestration (this execution of it) started."""
    name: str
    version: str | None = None
    input: str | None = None
    orchestration_instance: OrchestrationInstance | None = None
    parent_instance: ParentInstanceInfo | None = None
    scheduled_start_timestamp: datetime | None = None
    parent_trace_context: TraceContext | None = None
    orchestration_span_id: str | None = None
    tags: dict[str, str] | None = None


@dataclass(slots=True)
class ExecutionCompletedEvent(HistoryEvent):
    """The orchestration reached a final status (``orchestration_status`` is the wire enum)."""
    orchestration_status: int
    result: str | None = None
    failure_details: task.FailureDetails | None = None


@dataclass(slots=True)
class ExecutionTerminatedEvent(HistoryEvent):
    """The orchestration was terminated (``input`` is the reason)."""
    input: str | None = None
    recurse: bool = False


@dataclass(slots=True)
class TaskScheduledEvent(HistoryEvent):
    """An activity was scheduled."""
    name: str
    version: str | None = None
    input: str | None = None
    parent_trace_context: TraceContext | None = None
    tags: dict[str, str] | None = None


@dataclass(slots=True)
class TaskCompletedEvent(HistoryEvent):
    """An activity returned a result."""
    task_scheduled_id: int
    result: str | None = None


@dataclass(slots=True)
class TaskFailedEvent(HistoryEvent):
    """An activity failed."""
    task_scheduled_id: int
    failure_details: task.FailureDetails | None = None


@dataclass(slots=True)
class SubOrchestrationInstanceCreatedEvent(HistoryEvent):
    """A sub-orchestration was scheduled."""
    instance_id: str
    name: str
    version: str | None = None
    input: str | None = None
    parent_trace_context: TraceContext | None = None
    tags: dict[str, str] | None = None


@dataclass(slots=True)
class SubOrchestrationInstanceCompletedEvent(HistoryEvent):
    """A sub-orchestration completed."""
    task_scheduled_id: int
    result: str | None = None


@dataclass(slots=True)
class SubOrchestrationInstanceFailedEvent(HistoryEvent):
    """A sub-orchestration failed."""
    task_scheduled_id: int
    failure_details: task.FailureDetails | None = None


@dataclass(slots=True)
class TimerCreatedEvent(HistoryEvent):
    """A durable timer was created."""
    fire_at: datetime


@dataclass(slots=True)
class TimerFiredEvent(HistoryEvent):
    """A durable timer fired (``timer_id`` is the creating event's id)."""
    fire_at: datetime
    timer_id: int


@dataclass(slots=True)
class OrchestratorStartedEvent(HistoryEvent):
    """An orchestrator episode started."""


@dataclass(slots=True)
class OrchestratorCompletedEvent(HistoryEvent):
    """An orchestrator episode ended."""


@dataclass(slots=True)
class EventSentEvent(HistoryEvent):
    """The orchestration sent an event to another instance."""
    instance_id: str
    name: str
    input: str | None = None


@dataclass(slots=True)
class EventRaisedEvent(HistoryEvent):
    """An external event reached the orchestration."""
    name: str
    input: str | None = None


@dataclass(slots=True)
class GenericEvent(HistoryEvent):
    """A free-form event."""
    data: str | None = None


@dataclass(slots=True)
class HistoryStateEvent(HistoryEvent):
    """A snapshot of the orchestration's state, as protobuf JSON keyed by proto field names."""
    orchestration_state: dict[str, Any]


@dataclass(slots=True)
class ContinueAsNewEvent(HistoryEvent):
    """The orchestration restarted itself with a new input."""
    input: str | None = None


@dataclass(slots=True)
class ExecutionSuspendedEvent(HistoryEvent):
    """The orchestration was suspended (``input`` is the reason)."""
    input: str | None = None


@dataclass(slots=True)
class ExecutionResumedEvent(HistoryEvent):
    """The orchestration was resumed (``input`` is the reason)."""
    input: str | None = None


@dataclass(slots=True)
class EntityOperationSignaledEvent(HistoryEvent):
    """A one-way operation was sent to an entity."""
    request_id: str
    operation: str
    scheduled_time: datetime | None = None
    input: str | None = None
    target_instance_id: str | None = None


@dataclass(slots=True)
class EntityOperationCalledEvent(HistoryEvent):
    """A two-way operation was sent to an entity."""
    request_id: str
    operation: str
    scheduled_time: datetime | None = None
    input: str | None = None
    parent_instance_id: str | None = None
    parent_execution_id: str | None = None
    target_instance_id: str | None = None


@dataclass(slots=True)
class EntityOperationCompletedEvent(HistoryEvent):
    """An entity operation returned ``output``."""
    request_id: str
    output: str | None = None


@dataclass(slots=True)
class EntityOperationFailedEvent(HistoryEvent):
    """An entity operation failed."""
    request_id: str
    failure_details: task.FailureDetails | None = None


@dataclass(slots=True)
class EntityLockRequestedEvent(HistoryEvent):
    """The orchestration asked for the locks of ``lock_set`` (a critical section)."""
    critical_section_id: str
    lock_set: list[str]
    position: int
    parent_instance_id: str | None = None


@dataclass(slots=True)
class EntityLockGrantedEvent(HistoryEvent):
    """The locks of a critical section were granted."""
    critical_section_id: str


@dataclass(slots=True)
class EntityUnlockSentEvent(HistoryEvent):
    """The orchestration released a lock of a critical section."""
    critical_section_id: str
    parent_instance_id: str | None = None
    target_instance_id: str | None = None


@dataclass(slots=True)
class ExecutionRewoundEvent(HistoryEvent):
    """A failed orchestration was rewound; most fields are only set for sub-orchestrations."""
    reason: str | None = None
    parent_execution_id: str | None = None
    instance_id: str | None = None
    parent_trace_context: TraceContext | None = None
    name: str | None = None
    version: str | None = None
    input: str | None = None
    parent_instance: ParentInstanceInfo | None = None
    tags: dict[str, str] | None = None


# --- to_dict ---------------------------------------------------------------------------------------

_JSON_SCALARS: frozenset[type[Any]] = frozenset({str, int, float, bool, type(None)})


def _field_names(cls: type[Any]) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(cls))


# Field names of the records this module produces, computed once. FailureDetails is listed with
# the official SDK's fields only: our `is_non_retriable` has no counterpart there, and exported
# histories must have the official shape.
_FIELD_NAMES: dict[type[Any], tuple[str, ...]] = {
    FailureDetails: ("message", "error_type", "stack_trace", "inner_failure", "properties"),
}


def _plain(value: Any) -> Any:
    cls = type(value)
    if cls in _JSON_SCALARS:
        return value
    names = _FIELD_NAMES.get(cls)
    if names is not None:
        return _record_to_dict(value, names)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    if isinstance(value, tuple):
        return tuple(_plain(item) for item in value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _record_to_dict(value, _field_names(cls))
    return value


def _record_to_dict(record: Any, names: tuple[str, ...]) -> dict[str, Any]:
    return {name: _plain(getattr(record, name)) for name in names}


def to_dict(event: HistoryEvent) -> dict[str, Any]:
    """Return ``event`` as JSON-ready data, in the official SDK's shape.

    Every dataclass field becomes a key (nested records become dicts, in field order); datetimes
    become ISO 8601 strings; ``None`` stays ``None``. Failure details carry ``message``,
    ``error_type``, ``stack_trace``, ``inner_failure`` and ``properties``.

    Args:
        event: Any history event, including a base `HistoryEvent`.

    Returns:
        A new dict; changing it does not change the event.
    """
    return event.to_dict()


# --- from_protobuf ---------------------------------------------------------------------------------

def _utc(ts: Timestamp) -> datetime:
    return ts.ToDatetime(timezone.utc)


def _opt_str(msg: Message, name: str) -> str | None:
    if not msg.HasField(name):
        return None
    wrapper: StringValue = getattr(msg, name)
    return wrapper.value


def _opt_time(msg: Message, name: str) -> datetime | None:
    if not msg.HasField(name):
        return None
    ts: Timestamp = getattr(msg, name)
    return ts.ToDatetime(timezone.utc)


def _opt_failure(msg: Message, name: str) -> FailureDetails | None:
    if not msg.HasField(name):
        return None
    details: pb.TaskFailureDetails = getattr(msg, name)
    return failure_details_from_proto(details)


def _opt_trace(msg: Message, name: str) -> TraceContext | None:
    if not msg.HasField(name):
        return None
    ctx: pb.TraceContext = getattr(msg, name)
    return TraceContext(ctx.traceParent, ctx.spanID, _opt_str(ctx, "traceState"))


def _instance(inst: pb.OrchestrationInstance) -> OrchestrationInstance:
    return OrchestrationInstance(inst.instanceId, _opt_str(inst, "executionId"))


def _opt_parent(msg: Message, name: str) -> ParentInstanceInfo | None:
    if not msg.HasField(name):
        return None
    parent: pb.ParentInstanceInfo = getattr(msg, name)
    return ParentInstanceInfo(
        parent.taskScheduledId,
        _opt_str(parent, "name"),
        _opt_str(parent, "version"),
        _instance(parent.orchestrationInstance) if parent.HasField("orchestrationInstance") else None,
    )


def _execution_started(p: pb.ExecutionStartedEvent, eid: int, ts: datetime) -> HistoryEvent:
    return ExecutionStartedEvent(
        eid, ts, p.name, _opt_str(p, "version"), _opt_str(p, "input"),
        _instance(p.orchestrationInstance) if p.HasField("orchestrationInstance") else None,
        _opt_parent(p, "parentInstance"), _opt_time(p, "scheduledStartTimestamp"),
        _opt_trace(p, "parentTraceContext"), _opt_str(p, "orchestrationSpanID"),
        dict(p.tags) if p.tags else None,
    )


def _execution_rewound(p: pb.ExecutionRewoundEvent, eid: int, ts: datetime) -> HistoryEvent:
    return ExecutionRewoundEvent(
        eid, ts, _opt_str(p, "reason"), _opt_str(p, "parentExecutionId"), _opt_str(p, "instanceId"),
        _opt_trace(p, "parentTraceContext"), _opt_str(p, "name"), _opt_str(p, "version"),
        _opt_str(p, "input"), _opt_parent(p, "parentInstance"), dict(p.tags) if p.tags else None,
    )


def _suborchestration_created(p: pb.SubOrchestrationInstanceCreatedEvent, eid: int,
                              ts: datetime) -> HistoryEvent:
    return SubOrchestrationInstanceCreatedEvent(
        eid, ts, p.instanceId, p.name, _opt_str(p, "version"), _opt_str(p, "input"),
        _opt_trace(p, "parentTraceContext"), dict(p.tags) if p.tags else None,
    )


def _entity_called(p: pb.EntityOperationCalledEvent, eid: int, ts: datetime) -> HistoryEvent:
    return EntityOperationCalledEvent(
        eid, ts, p.requestId, p.operation, _opt_time(p, "scheduledTime"), _opt_str(p, "input"),
        _opt_str(p, "parentInstanceId"), _opt_str(p, "parentExecutionId"), _opt_str(p, "targetInstanceId"),
    )


# Payload message (the member of the ``eventType`` oneof), event id, timestamp -> event.
_Converter = Callable[[Any, int, datetime], HistoryEvent]

_CONVERTERS: dict[str, _Converter] = {
    "executionStarted": _execution_started,
    "executionCompleted": lambda p, eid, ts: ExecutionCompletedEvent(
        eid, ts, p.orchestrationStatus, _opt_str(p, "result"), _opt_failure(p, "failureDetails")),
    "executionTerminated": lambda p, eid, ts: ExecutionTerminatedEvent(
        eid, ts, _opt_str(p, "input"), p.recurse),
    "taskScheduled": lambda p, eid, ts: TaskScheduledEvent(
        eid, ts, p.name, _opt_str(p, "version"), _opt_str(p, "input"),
        _opt_trace(p, "parentTraceContext"), dict(p.tags) if p.tags else None),
    "taskCompleted": lambda p, eid, ts: TaskCompletedEvent(
        eid, ts, p.taskScheduledId, _opt_str(p, "result")),
    "taskFailed": lambda p, eid, ts: TaskFailedEvent(
        eid, ts, p.taskScheduledId, _opt_failure(p, "failureDetails")),
    "subOrchestrationInstanceCreated": _suborchestration_created,
    "subOrchestrationInstanceCompleted": lambda p, eid, ts: SubOrchestrationInstanceCompletedEvent(
        eid, ts, p.taskScheduledId, _opt_str(p, "result")),
    "subOrchestrationInstanceFailed": lambda p, eid, ts: SubOrchestrationInstanceFailedEvent(
        eid, ts, p.taskScheduledId, _opt_failure(p, "failureDetails")),
    "timerCreated": lambda p, eid, ts: TimerCreatedEvent(eid, ts, _utc(p.fireAt)),
    "timerFired": lambda p, eid, ts: TimerFiredEvent(eid, ts, _utc(p.fireAt), p.timerId),
    "orchestratorStarted": lambda p, eid, ts: OrchestratorStartedEvent(eid, ts),
    "orchestratorCompleted": lambda p, eid, ts: OrchestratorCompletedEvent(eid, ts),
    "eventSent": lambda p, eid, ts: EventSentEvent(eid, ts, p.instanceId, p.name, _opt_str(p, "input")),
    "eventRaised": lambda p, eid, ts: EventRaisedEvent(eid, ts, p.name, _opt_str(p, "input")),
    "genericEvent": lambda p, eid, ts: GenericEvent(eid, ts, _opt_str(p, "data")),
    "historyState": lambda p, eid, ts: HistoryStateEvent(
        eid, ts, json_format.MessageToDict(p.orchestrationState, preserving_proto_field_name=True)),
    "continueAsNew": lambda p, eid, ts: ContinueAsNewEvent(eid, ts, _opt_str(p, "input")),
    "executionSuspended": lambda p, eid, ts: ExecutionSuspendedEvent(eid, ts, _opt_str(p, "input")),
    "executionResumed": lambda p, eid, ts: ExecutionResumedEvent(eid, ts, _opt_str(p, "input")),
    "entityOperationSignaled": lambda p, eid, ts: EntityOperationSignaledEvent(
        eid, ts, p.requestId, p.operation, _opt_time(p, "scheduledTime"), _opt_str(p, "input"),
        _opt_str(p, "targetInstanceId")),
    "entityOperationCalled": _entity_called,
    "entityOperationCompleted": lambda p, eid, ts: EntityOperationCompletedEvent(
        eid, ts, p.requestId, _opt_str(p, "output")),
    "entityOperationFailed": lambda p, eid, ts: EntityOperationFailedEvent(
        eid, ts, p.requestId, _opt_failure(p, "failureDetails")),
    "entityLockRequested": lambda p, eid, ts: EntityLockRequestedEvent(
        eid, ts, p.criticalSectionId, list(p.lockSet), p.position, _opt_str(p, "parentInstanceId")),
    "entityLockGranted": lambda p, eid, ts: EntityLockGrantedEvent(eid, ts, p.criticalSectionId),
    "entityUnlockSent": lambda p, eid, ts: EntityUnlockSentEvent(
        eid, ts, p.criticalSectionId, _opt_str(p, "parentInstanceId"), _opt_str(p, "targetInstanceId")),
    "executionRewound": _execution_rewound,
}


def from_protobuf(event: pb.HistoryEvent) -> HistoryEvent:
    """Convert one wire history event to its dataclass.

    Args:
        event: The protobuf event.

    Returns:
        The dataclass of the event's kind. An event whose kind is not set -- which is also how an
        event of a kind newer than this package's protocol arrives -- becomes a plain
        `HistoryEvent` with only its id and timestamp (the official SDK raises ``ValueError``).

    Raises:
        ValueError: A timestamp is outside the range protobuf allows.
    """
    kind = event.WhichOneof("eventType")
    timestamp = event.timestamp.ToDatetime(timezone.utc)
    if kind is not None:
        converter = _CONVERTERS.get(kind)
        if converter is not None:
            return converter(getattr(event, kind), event.eventId, timestamp)
    return HistoryEvent(event.eventId, timestamp)


# The official SDK's name for `from_protobuf`; its client helpers import it under this name.
_from_protobuf = from_protobuf


def _register_field_names() -> None:
    for value in list(globals().values()):
        if isinstance(value, type) and dataclasses.is_dataclass(value) and value.__module__ == __name__:
            _FIELD_NAMES[value] = _field_names(value)


_register_field_names()
