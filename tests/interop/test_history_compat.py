"""``durabletask.history`` converts wire events exactly as the official SDK (1.12.0) does.

A corpus of ``HistoryEvent`` protobufs -- every kind with every field set (``wire_corpus``), every
kind bare, every kind with every sub-message present but empty, and hand-written edge cases -- is
serialized and converted by the official SDK (``_from_protobuf`` + ``to_dict``, in a subprocess
running ``official_history.py``) and by ours (``from_protobuf`` + ``to_dict``). For each event the
class name, the type of every field's value, the exact JSON text of ``to_dict`` and the order of
every record's keys must be equal. The one normalization, sorting the keys inside the JSON text, is
justified in ``official_history.describe``: protobuf map iteration order differs between processes.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import struct_pb2, timestamp_pb2, wrappers_pb2
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from durabletask import history
from durabletask.internal import orchestrator_service_pb2 as pb
from tests.interop import official_history, wire_corpus
from tests.support.official import run_official

pytestmark = pytest.mark.interop

SCRIPT = Path(official_history.__file__).resolve()
KINDS = [f.name for f in pb.HistoryEvent.DESCRIPTOR.oneofs_by_name["eventType"].fields]


def _official(events: Sequence[pb.HistoryEvent]) -> list[dict[str, Any]]:
    blobs = [base64.b64encode(e.SerializeToString()).decode() for e in events]
    out = run_official(SCRIPT, input_bytes=json.dumps(blobs).encode()).stdout
    result: list[dict[str, Any]] = json.loads(out)
    assert len(result) == len(events)
    return result


def _ours(events: Sequence[pb.HistoryEvent]) -> list[dict[str, Any]]:
    return [official_history.describe(history.from_protobuf(e)) for e in events]


# --- corpus -------------------------------------------------------------------------------------

def _full() -> dict[str, pb.HistoryEvent]:
    events: dict[str, pb.HistoryEvent] = {}
    for event in wire_corpus.build_instances(pb.HistoryEvent.DESCRIPTOR):
        kind = event.WhichOneof("eventType")
        assert kind is not None
        events[f"full/{kind}"] = event  # type: ignore[assignment]
    return events


def _bare() -> dict[str, pb.HistoryEvent]:
    events = {}
    for kind in KINDS:
        event = pb.HistoryEvent(eventId=-1)
        getattr(event, kind).SetInParent()
        events[f"bare/{kind}"] = event
    return events


def _make_present(msg: Message, depth: int) -> None:
    """Mark every singular sub-message present, with nothing in it, down to ``depth`` levels."""
    for field in msg.DESCRIPTOR.fields:
        is_map_or_list = wire_corpus._is_repeated(field)
        if field.type != FieldDescriptor.TYPE_MESSAGE or is_map_or_list or field.containing_oneof:
            continue
        sub = getattr(msg, field.name)
        sub.SetInParent()
        if depth > 0 and not field.message_type.file.name.startswith("google/protobuf/"):
            _make_present(sub, depth - 1)


def _empty() -> dict[str, pb.HistoryEvent]:
    events = {}
    for kind in KINDS:
        event = pb.HistoryEvent(eventId=0)
        _make_present(event, 0)
        payload = getattr(event, kind)
        payload.SetInParent()
        _make_present(payload, 3)
        events[f"empty/{kind}"] = event
    return events


def _ts(seconds: int, nanos: int = 0) -> timestamp_pb2.Timestamp:
    return timestamp_pb2.Timestamp(seconds=seconds, nanos=nanos)


def _sv(value: str) -> wrappers_pb2.StringValue:
    return wrappers_pb2.StringValue(value=value)


def _properties() -> dict[str, struct_pb2.Value]:
    nested = struct_pb2.Struct()
    nested.update({"a": [1, 2.5, None, True, "x", {"deep": 0}], "empty": {}, "list": []})
    return {
        "null": struct_pb2.Value(null_value=struct_pb2.NULL_VALUE),
        "true": struct_pb2.Value(bool_value=True),
        "integral": struct_pb2.Value(number_value=3.0),
        "negative": struct_pb2.Value(number_value=-0.5),
        "big": struct_pb2.Value(number_value=2.0**60),
        "text": struct_pb2.Value(string_value="h\u00e9llo \u2603"),
        "empty_text": struct_pb2.Value(string_value=""),
        "struct": struct_pb2.Value(struct_value=nested),
        "list": struct_pb2.Value(list_value=struct_pb2.ListValue(values=[struct_pb2.Value(number_value=1)])),
    }


def _edge_cases() -> dict[str, pb.HistoryEvent]:
    failure = pb.TaskFailureDetails(
        errorType="builtins.ValueError", errorMessage="outer", stackTrace=_sv(""),
        isNonRetriable=True, properties=_properties(),
        innerFailure=pb.TaskFailureDetails(
            errorType="T1", errorMessage="", innerFailure=pb.TaskFailureDetails(errorType="T2",
                                                                                stackTrace=_sv("st"))),
    )
    return {
        "edge/max-timestamp": pb.HistoryEvent(
            eventId=2**31 - 1, timestamp=_ts(253402300799, 999_999_999),
            timerFired=pb.TimerFiredEvent(fireAt=_ts(0, 1), timerId=-(2**31))),
        "edge/pre-epoch": pb.HistoryEvent(
            eventId=-(2**31), timestamp=_ts(-62135596800),
            timerCreated=pb.TimerCreatedEvent(fireAt=_ts(-1, 999_999_999))),
        "edge/nested-failure": pb.HistoryEvent(
            eventId=7, timestamp=_ts(1_700_000_000, 1_000),
            taskFailed=pb.TaskFailedEvent(taskScheduledId=3, failureDetails=failure)),
        "edge/completed-failed": pb.HistoryEvent(
            executionCompleted=pb.ExecutionCompletedEvent(
                orchestrationStatus=pb.ORCHESTRATION_STATUS_FAILED, failureDetails=failure)),
        "edge/unknown-status": pb.HistoryEvent(
            executionCompleted=pb.ExecutionCompletedEvent(orchestrationStatus=42, result=_sv("null"))),
        "edge/tags": pb.HistoryEvent(
            executionStarted=pb.ExecutionStartedEvent(
                name="", tags={"": "", "k\u00e9y": "v\u2603", "a": "b"},
                parentInstance=pb.ParentInstanceInfo(taskScheduledId=-1))),
        "edge/lock-set-empty": pb.HistoryEvent(
            entityLockRequested=pb.EntityLockRequestedEvent(criticalSectionId="c", position=-1)),
        "edge/lock-set-many": pb.HistoryEvent(
            entityLockRequested=pb.EntityLockRequestedEvent(
                criticalSectionId="c", lockSet=["@a@x", "@b@y", "@a@x", ""], position=2)),
        "edge/history-state": pb.HistoryEvent(
            historyState=pb.HistoryStateEvent(
                orchestrationState=wire_corpus.build_instances(pb.OrchestrationState.DESCRIPTOR)[0])),
        "edge/history-state-unset": pb.HistoryEvent(historyState=pb.HistoryStateEvent()),
        "edge/control-characters": pb.HistoryEvent(
            eventRaised=pb.EventRaisedEvent(name="a\x00b\n\"\\", input=_sv("\U0001f600 \x7f"))),
    }


# --- tests --------------------------------------------------------------------------------------

def test_corpus_sets_every_field_of_every_kind() -> None:
    full = _full()
    assert sorted(full) == sorted(f"full/{k}" for k in KINDS)
    for label, event in full.items():
        payload = getattr(event, event.WhichOneof("eventType"))
        unset = {f.name for f in payload.DESCRIPTOR.fields} - {f.name for f, _ in payload.ListFields()}
        assert not unset, f"{label}: {unset}"
        converted = history.from_protobuf(event)
        assert type(converted) is not history.HistoryEvent
        nones = [name for name, value in history.to_dict(converted).items() if value is None]
        assert not nones, f"{label}: {nones}"


def test_conversion_matches_the_official_sdk() -> None:
    corpus = {**_full(), **_bare(), **_empty(), **_edge_cases()}
    labels = list(corpus)
    official = _official(list(corpus.values()))
    ours = _ours(list(corpus.values()))
    mismatches = {label: {"official": o, "ours": u}
                  for label, o, u in zip(labels, official, ours, strict=True) if o != u}
    assert mismatches == {}
    assert all(o["method_matches_function"] for o in official)


def test_event_without_a_kind_is_a_base_event_here_where_the_official_sdk_raises() -> None:
    # A deliberate difference: an event whose kind is unset (or of a kind newer than the protocol,
    # which parses to an unknown field) would make the official SDK's whole history fetch fail.
    unset = pb.HistoryEvent(eventId=5, timestamp=_ts(1_600_000_000, 5_000))
    newer = pb.HistoryEvent()
    newer.ParseFromString(unset.SerializeToString() + b"\x9a\x06\x02\x08\x01")  # field 99: {1: 1}
    assert newer.WhichOneof("eventType") is None

    assert _official([unset, newer]) == [{"error": "ValueError"}, {"error": "ValueError"}]
    for description in _ours([unset, newer]):
        assert description["class"] == "HistoryEvent"
        assert json.loads(description["to_dict"]) == {"event_id": 5, "timestamp": "2020-09-13T12:26:40.000005+00:00"}


def test_failure_property_without_a_kind() -> None:
    event = pb.HistoryEvent(taskFailed=pb.TaskFailedEvent(failureDetails=pb.TaskFailureDetails(
        properties={"unset": struct_pb2.Value()})))
    assert _ours([event]) == _official([event])
