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
    if value < 0x80:
        return _SMALL_VARINTS[value]
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _field(number: int, data: bytes) -> bytes:
    """A length-delimited field (string, bytes or embedded message)."""
    return _varint((number << 3) | 2) + _varint(len(data)) + data


def _repeated(number: int, items: Iterable[bytes]) -> bytes:
    tag = _varint((number << 3) | 2)
    return b"".join([tag + _varint(len(item)) + item for item in items])


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


def _marker_event(at: float, kind: bytes) -> bytes:
    whole, nanos = divmod(int(at * 1e9), 1_000_000_000)
    if whole < 0:  # pragma: no cover - a clock before 1970: let protobuf encode it
        if kind == _ORCHESTRATOR_STARTED:
            return event_bytes(at, orchestratorStarted=pb.OrchestratorStartedEvent())
        return event_bytes(at, orchestratorCompleted=pb.OrchestratorCompletedEvent())
    body = (b"\x08" + _varint(whole) if whole else b"") + (b"\x10" + _varint(nanos) if nanos else b"")
    return _NO_EVENT_ID + b"\x12" + _varint(len(body)) + body + kind


def orchestrator_started(at: float) -> bytes:
    return _marker_event(at, _ORCHESTRATOR_STARTED)


def orchestrator_completed(at: float) -> bytes:
    return _marker_event(at, _ORCHESTRATOR_COMPLETED)


def parse_event(data: bytes) -> pb.HistoryEvent:
    return pb.HistoryEvent.FromString(data)


def failure(error_type: str, message: str) -> pb.TaskFailureDetails:
    return pb.TaskFailureDetails(errorType=error_type, errorMessage=message)
