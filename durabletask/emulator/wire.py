"""Protobuf building blocks for the emulator: timestamps, history events, hand-assembled work items.

History events are stored serialized. A work item carries the instance's whole history, so instead
of parsing every stored event into a message only to serialize it again, work items and history
chunks are assembled from the stored bytes directly: a repeated message field on the wire is just
``tag, length, bytes`` per element. ``tests/emulator/test_wire.py`` checks the result against the
generated stubs.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence

from google.protobuf import timestamp_pb2, wrappers_pb2

from durabletask.internal import orchestrator_service_pb2 as pb

# Field numbers of the messages assembled by hand (see orchestrator_service.proto).
_WORK_ITEM_ORCHESTRATOR = 1
_WORK_ITEM_ACTIVITY = 2
_WORK_ITEM_TOKEN = 10
_REQUEST_INSTANCE_ID = 1
_REQUEST_EXECUTION_ID = 2
_REQUEST_PAST = 3
_REQUEST_NEW = 4
_REQUEST_TRACE_CONTEXT = 8
_CHUNK_EVENTS = 1

HEALTH_PING = pb.WorkItem(healthPing=pb.HealthPing()).SerializeToString()


def now() -> float:
    return time.time()


def timestamp(seconds: float) -> timestamp_pb2.Timestamp:
    whole, nanos = divmod(int(seconds * 1e9), 1_000_000_000)
    return timestamp_pb2.Timestamp(seconds=whole, nanos=nanos)


def seconds(ts: timestamp_pb2.Timestamp) -> float:
    return float(ts.seconds) + ts.nanos / 1e9


def string_value(value: str | None) -> wrappers_pb2.StringValue | None:
    return None if value is None else wrappers_pb2.StringValue(value=value)


def optional(message: wrappers_pb2.StringValue, present: bool) -> str | None:
    """The value of a ``StringValue`` field, or None when the field is absent (``present`` False)."""
    return message.value if present else None


_SMALL_VARINTS = [bytes((i,)) for i in range(0x80)]


def _varint(value: int) -> bytes:
    """A non-negative integer as a protobuf varint (up to five bytes without a loop: lengths, timestamps)."""
    if value < 0x80:
        return _SMALL_VARINTS[value]
    if value < 0x4000:
        return bytes(((value & 0x7F) | 0x80, value >> 7))
    if value < 0x20_0000:
        return bytes(((value & 0x7F) | 0x80, ((value >> 7) & 0x7F) | 0x80, value >> 14))
    if value < 0x1000_0000:
        return bytes(((value & 0x7F) | 0x80, ((value >> 7) & 0x7F) | 0x80, ((value >> 14) & 0x7F) | 0x80,
                      value >> 21))
    if value < 0x8_0000_0000:  # five bytes: a timestamp's seconds and most of its nanoseconds
        return bytes(((value & 0x7F) | 0x80, ((value >> 7) & 0x7F) | 0x80, ((value >> 14) & 0x7F) | 0x80,
                      ((value >> 21) & 0x7F) | 0x80, value >> 28))
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


_LENGTH_TAGS = [bytes(((number << 3) | 2,)) for number in range(16)]  # one-byte tags of fields 0-15


def _field(number: int, data: bytes) -> bytes:
    """A length-delimited field (string, bytes or embedded message)."""
    size = len(data)
    return ((_LENGTH_TAGS[number] if number < 16 else _varint((number << 3) | 2))
            + (_SMALL_VARINTS[size] if size < 0x80 else _varint(size)) + data)


def _repeated(number: int, items: Iterable[bytes]) -> bytes:
    tag = _LENGTH_TAGS[number] if number < 16 else _varint((number << 3) | 2)
    small = _SMALL_VARINTS
    return b"".join([tag + (small[len(item)] if len(item) < 0x80 else _varint(len(item))) + item for item in items])


def past_events(events: Iterable[bytes]) -> bytes:
    """Events encoded as ``OrchestratorRequest.pastEvents``; encodings of consecutive slices concatenate."""
    return _repeated(_REQUEST_PAST, events)


def orchestrator_work_item(token: str, instance_id: str, execution_id: str | None, past: bytes,
                           new: Sequence[bytes], trace_context: bytes | None = None) -> bytes:
    """A serialized ``WorkItem`` with an ``OrchestratorRequest``; ``past`` comes from :func:`past_events`."""
    parts = [_field(_REQUEST_INSTANCE_ID, instance_id.encode())]
    if execution_id is not None:
        parts.append(_field(_REQUEST_EXECUTION_ID, _field(1, execution_id.encode()) if execution_id else b""))
    parts.append(past)
    parts.append(_repeated(_REQUEST_NEW, new))
    if trace_context is not None:
        parts.append(_field(_REQUEST_TRACE_CONTEXT, trace_context))
    request = b"".join(parts)
    return _field(_WORK_ITEM_ORCHESTRATOR, request) + _field(_WORK_ITEM_TOKEN, token.encode())


def activity_work_item(token: str, request: bytes) -> bytes:
    """A serialized ``WorkItem`` with an ``ActivityRequest`` (given serialized)."""
    return _field(_WORK_ITEM_ACTIVITY, request) + _field(_WORK_ITEM_TOKEN, token.encode())


def history_chunk(events: Sequence[bytes]) -> bytes:
    """A serialized ``HistoryChunk``."""
    return _repeated(_CHUNK_EVENTS, events)


# -- history events


def event_bytes(seconds_: float, event_id: int = -1, **kind: object) -> bytes:
    """Serialize a ``HistoryEvent`` with the given timestamp, id and oneof field."""
    event = pb.HistoryEvent(eventId=event_id, timestamp=timestamp(seconds_), **kind)  # type: ignore[arg-type]
    return event.SerializeToString()


# The two events of every episode, assembled by hand: eventId -1 (a negative int32 is a 10-byte
# varint), the timestamp, and the empty message of the event's kind (field 14 or 15).
_NO_EVENT_ID = b"\x08" + b"\xff" * 9 + b"\x01"
_ORCHESTRATOR_STARTED = b"\x72\x00"
_ORCHESTRATOR_COMPLETED = b"\x7a\x00"


# The events of one commit share its time: the last timestamp field encoded, and for which time.
_last_timestamp: tuple[float, bytes | None] = (-1.0, None)


def _timestamp_field(at: float) -> bytes | None:
    """``HistoryEvent.timestamp`` (field 2) for ``at``; None before 1970 (let protobuf encode that)."""
    global _last_timestamp
    last = _last_timestamp
    if last[0] == at:
        return last[1]
    whole, nanos = divmod(int(at * 1e9), 1_000_000_000)
    if whole < 0:  # pragma: no cover - a clock before 1970
        return None
    when = (b"\x08" + _varint(whole) if whole else b"") + (b"\x10" + _varint(nanos) if nanos else b"")
    field = b"\x12" + _varint(len(when)) + when
    _last_timestamp = (at, field)
    return field


def _marker_event(at: float, kind: bytes) -> bytes:
    when = _timestamp_field(at)
    if when is None:  # pragma: no cover - a clock before 1970: let protobuf encode it
        if kind == _ORCHESTRATOR_STARTED:
            return event_bytes(at, orchestratorStarted=pb.OrchestratorStartedEvent())
        return event_bytes(at, orchestratorCompleted=pb.OrchestratorCompletedEvent())
    return _NO_EVENT_ID + when + kind


# The events of an activity's round trip, assembled by hand like the markers above: per
# orchestration of N activities they are 2N of its history events.
_TASK_SCHEDULED = 6
_TASK_COMPLETED = 7
_ACTIVITY_INSTANCE = 4
_ACTIVITY_TASK_ID = 5


def _int32(number: int, value: int) -> bytes:
    """A varint field (proto3: absent when 0); a negative int32 is the 10-byte varint of its 64-bit form."""
    if not value:
        return b""
    return _varint(number << 3) + _varint(value & 0xFFFF_FFFF_FFFF_FFFF)


def _string_value(number: int, value: str) -> bytes:
    """A present ``StringValue`` field (its ``value`` is absent when empty, as protobuf writes it)."""
    return _field(number, _field(1, value.encode()) if value else b"")


def _event(at: float, event_id: int, kind: int, body: bytes) -> bytes | None:
    """A ``HistoryEvent`` of field ``kind`` with ``body``; None before 1970 (let protobuf encode that)."""
    when = _timestamp_field(at)
    if when is None:  # pragma: no cover - a clock before 1970
        return None
    ident = _NO_EVENT_ID if event_id == -1 else _int32(1, event_id)
    return ident + when + _field(kind, body)


def task_scheduled(at: float, action_id: int, task: pb.ScheduleTaskAction, instance_id: str,
                   execution_id: str | None) -> tuple[bytes, bytes]:
    """The ``taskScheduled`` event confirming a ``scheduleTask`` action, and the ``ActivityRequest`` it sends.

    The action's name, version and input are fields 1-3 of both messages; an action with tags or a
    trace context goes through protobuf instead.
    """
    if not task.tags and not task.HasField("parentTraceContext"):
        common = _field(1, task.name.encode()) if task.name else b""
        if task.HasField("version"):
            common += _string_value(2, task.version.value)
        if task.HasField("input"):
            common += _string_value(3, task.input.value)
        event = _event(at, action_id, _TASK_SCHEDULED, common)
        if event is not None:
            instance = _field(1, instance_id.encode()) if instance_id else b""
            if execution_id is not None:
                instance += _string_value(2, execution_id)
            return event, common + _field(_ACTIVITY_INSTANCE, instance) + _int32(_ACTIVITY_TASK_ID, action_id)
    version = task.version if task.HasField("version") else None
    given = task.input if task.HasField("input") else None
    trace = task.parentTraceContext if task.HasField("parentTraceContext") else None
    request = pb.ActivityRequest(
        name=task.name, version=version, input=given,
        orchestrationInstance=pb.OrchestrationInstance(instanceId=instance_id, executionId=string_value(execution_id)),
        taskId=action_id, parentTraceContext=trace, tags=task.tags)
    return event_bytes(at, action_id, taskScheduled=pb.TaskScheduledEvent(
        name=task.name, version=version, input=given, parentTraceContext=trace, tags=task.tags)), \
        request.SerializeToString()


def task_completed(at: float, task_id: int, result: str | None) -> bytes:
    """The ``taskCompleted`` event that passes an activity's result (None: no result) to its orchestration."""
    event = _event(at, -1, _TASK_COMPLETED,
                   _int32(1, task_id) + (_string_value(2, result) if result is not None else b""))
    if event is None:  # pragma: no cover - a clock before 1970
        return event_bytes(at, taskCompleted=pb.TaskCompletedEvent(taskScheduledId=task_id,
                                                                   result=string_value(result)))
    return event


def orchestrator_started(at: float) -> bytes:
    return _marker_event(at, _ORCHESTRATOR_STARTED)


def orchestrator_completed(at: float) -> bytes:
    return _marker_event(at, _ORCHESTRATOR_COMPLETED)


def parse_event(data: bytes) -> pb.HistoryEvent:
    return pb.HistoryEvent.FromString(data)


def failure(error_type: str, message: str) -> pb.TaskFailureDetails:
    return pb.TaskFailureDetails(errorType=error_type, errorMessage=message)
