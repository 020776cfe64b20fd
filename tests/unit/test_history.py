"""Unit tests of ``durabletask.history``: wire events to dataclasses, and dataclasses to dicts."""

from __future__ import annotations

import dataclasses
import json
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from google.protobuf import json_format, struct_pb2, timestamp_pb2, wrappers_pb2

from durabletask import history, task
from durabletask.history import (
    OrchestrationInstance,
    ParentInstanceInfo,
    TraceContext,
)
from durabletask.internal import orchestrator_service_pb2 as pb

UTC = timezone.utc
T0 = datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)
T1 = datetime(2024, 5, 6, 8, 0, 0, tzinfo=UTC)
KINDS = [f.name for f in pb.HistoryEvent.DESCRIPTOR.oneofs_by_name["eventType"].fields]

# Field names of every public record, in order, as in the official SDK 1.12.0.
FIELDS = {
    "OrchestrationInstance": "instance_id execution_id",
    "ParentInstanceInfo": "task_scheduled_id name version orchestration_instance",
    "TraceContext": "trace_parent span_id trace_state",
    "HistoryEvent": "",
    "ExecutionStartedEvent": "name version input orchestration_instance parent_instance scheduled_start_timestamp "
                             "parent_trace_context orchestration_span_id tags",
    "ExecutionCompletedEvent": "orchestration_status result failure_details",
    "ExecutionTerminatedEvent": "input recurse",
    "TaskScheduledEvent": "name version input parent_trace_context tags",
    "TaskCompletedEvent": "task_scheduled_id result",
    "TaskFailedEvent": "task_scheduled_id failure_details",
    "SubOrchestrationInstanceCreatedEvent": "instance_id name version input parent_trace_context tags",
    "SubOrchestrationInstanceCompletedEvent": "task_scheduled_id result",
    "SubOrchestrationInstanceFailedEvent": "task_scheduled_id failure_details",
    "TimerCreatedEvent": "fire_at",
    "TimerFiredEvent": "fire_at timer_id",
    "OrchestratorStartedEvent": "",
    "OrchestratorCompletedEvent": "",
    "EventSentEvent": "instance_id name input",
    "EventRaisedEvent": "name input",
    "GenericEvent": "data",
    "HistoryStateEvent": "orchestration_state",
    "ContinueAsNewEvent": "input",
    "ExecutionSuspendedEvent": "input",
    "ExecutionResumedEvent": "input",
    "EntityOperationSignaledEvent": "request_id operation scheduled_time input target_instance_id",
    "EntityOperationCalledEvent": "request_id operation scheduled_time input parent_instance_id "
                                  "parent_execution_id target_instance_id",
    "EntityOperationCompletedEvent": "request_id output",
    "EntityOperationFailedEvent": "request_id failure_details",
    "EntityLockRequestedEvent": "critical_section_id lock_set position parent_instance_id",
    "EntityLockGrantedEvent": "critical_section_id",
    "EntityUnlockSentEvent": "critical_section_id parent_instance_id target_instance_id",
    "ExecutionRewoundEvent": "reason parent_execution_id instance_id parent_trace_context name version input "
                             "parent_instance tags",
}


def _ts(dt: datetime) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(dt)
    return ts


def _sv(value: str) -> wrappers_pb2.StringValue:
    return wrappers_pb2.StringValue(value=value)


def _event(event_id: int = 4, **payload: Any) -> pb.HistoryEvent:
    return pb.HistoryEvent(eventId=event_id, timestamp=_ts(T0), **payload)


_PB_TRACE = pb.TraceContext(traceParent="00-abc-def-01", spanID="def", traceState=_sv("k=v"))
_TRACE = TraceContext("00-abc-def-01", "def", "k=v")
_PB_PARENT = pb.ParentInstanceInfo(
    taskScheduledId=3, name=_sv("parent"), version=_sv("1"),
    orchestrationInstance=pb.OrchestrationInstance(instanceId="p-id", executionId=_sv("p-ex")))
_PARENT = ParentInstanceInfo(3, "parent", "1", OrchestrationInstance("p-id", "p-ex"))
_PB_FAILURE = pb.TaskFailureDetails(
    errorType="builtins.ValueError", errorMessage="bad", stackTrace=_sv("trace"),
    innerFailure=pb.TaskFailureDetails(errorType="builtins.KeyError", errorMessage="k"),
    properties={"n": struct_pb2.Value(number_value=2.5)})
_FAILURE = task.FailureDetails("bad", "builtins.ValueError", "trace",
                               task.FailureDetails("k", "builtins.KeyError", None), {"n": 2.5})

# (kind, payload with every field set, the event expected from it)
CASES: list[tuple[str, Any, history.HistoryEvent]] = [
    ("executionStarted", pb.ExecutionStartedEvent(
        name="orch", version=_sv("2"), input=_sv('"in"'),
        orchestrationInstance=pb.OrchestrationInstance(instanceId="id", executionId=_sv("ex")),
        parentInstance=_PB_PARENT, scheduledStartTimestamp=_ts(T1), parentTraceContext=_PB_TRACE,
        orchestrationSpanID=_sv("span"), tags={"a": "b"}),
     history.ExecutionStartedEvent(4, T0, "orch", "2", '"in"', OrchestrationInstance("id", "ex"), _PARENT, T1,
                                   _TRACE, "span", {"a": "b"})),
    ("executionCompleted", pb.ExecutionCompletedEvent(
        orchestrationStatus=pb.ORCHESTRATION_STATUS_FAILED, result=_sv("r"), failureDetails=_PB_FAILURE),
     history.ExecutionCompletedEvent(4, T0, 3, "r", _FAILURE)),
    ("executionTerminated", pb.ExecutionTerminatedEvent(input=_sv("why"), recurse=True),
     history.ExecutionTerminatedEvent(4, T0, "why", True)),
    ("taskScheduled", pb.TaskScheduledEvent(
        name="act", version=_sv("v"), input=_sv("1"), parentTraceContext=_PB_TRACE, tags={"x": "y"}),
     history.TaskScheduledEvent(4, T0, "act", "v", "1", _TRACE, {"x": "y"})),
    ("taskCompleted", pb.TaskCompletedEvent(taskScheduledId=9, result=_sv("42")),
     history.TaskCompletedEvent(4, T0, 9, "42")),
    ("taskFailed", pb.TaskFailedEvent(taskScheduledId=9, failureDetails=_PB_FAILURE),
     history.TaskFailedEvent(4, T0, 9, _FAILURE)),
    ("subOrchestrationInstanceCreated", pb.SubOrchestrationInstanceCreatedEvent(
        instanceId="sub", name="child", version=_sv("v"), input=_sv("i"), parentTraceContext=_PB_TRACE,
        tags={"t": "u"}),
     history.SubOrchestrationInstanceCreatedEvent(4, T0, "sub", "child", "v", "i", _TRACE, {"t": "u"})),
    ("subOrchestrationInstanceCompleted", pb.SubOrchestrationInstanceCompletedEvent(
        taskScheduledId=2, result=_sv("ok")),
     history.SubOrchestrationInstanceCompletedEvent(4, T0, 2, "ok")),
    ("subOrchestrationInstanceFailed", pb.SubOrchestrationInstanceFailedEvent(
        taskScheduledId=2, failureDetails=_PB_FAILURE),
     history.SubOrchestrationInstanceFailedEvent(4, T0, 2, _FAILURE)),
    ("timerCreated", pb.TimerCreatedEvent(fireAt=_ts(T1)), history.TimerCreatedEvent(4, T0, T1)),
    ("timerFired", pb.TimerFiredEvent(fireAt=_ts(T1), timerId=6), history.TimerFiredEvent(4, T0, T1, 6)),
    ("orchestratorStarted", pb.OrchestratorStartedEvent(), history.OrchestratorStartedEvent(4, T0)),
    ("orchestratorCompleted", pb.OrchestratorCompletedEvent(), history.OrchestratorCompletedEvent(4, T0)),
    ("eventSent", pb.EventSentEvent(instanceId="other", name="ping", input=_sv("p")),
     history.EventSentEvent(4, T0, "other", "ping", "p")),
    ("eventRaised", pb.EventRaisedEvent(name="ping", input=_sv("p")),
     history.EventRaisedEvent(4, T0, "ping", "p")),
    ("genericEvent", pb.GenericEvent(data=_sv("d")), history.GenericEvent(4, T0, "d")),
    ("historyState", pb.HistoryStateEvent(orchestrationState=pb.OrchestrationState(
        instanceId="id", orchestrationStatus=pb.ORCHESTRATION_STATUS_COMPLETED, createdTimestamp=_ts(T1),
        input=_sv(""), tags={"a": "b"})),
     history.HistoryStateEvent(4, T0, {"instanceId": "id", "orchestrationStatus": "ORCHESTRATION_STATUS_COMPLETED",
                                       "createdTimestamp": "2024-05-06T08:00:00Z", "input": "", "tags": {"a": "b"}})),
    ("continueAsNew", pb.ContinueAsNewEvent(input=_sv("n")), history.ContinueAsNewEvent(4, T0, "n")),
    ("executionSuspended", pb.ExecutionSuspendedEvent(input=_sv("s")), history.ExecutionSuspendedEvent(4, T0, "s")),
    ("executionResumed", pb.ExecutionResumedEvent(input=_sv("r")), history.ExecutionResumedEvent(4, T0, "r")),
    ("entityOperationSignaled", pb.EntityOperationSignaledEvent(
        requestId="rq", operation="add", scheduledTime=_ts(T1), input=_sv("1"), targetInstanceId=_sv("@c@k")),
     history.EntityOperationSignaledEvent(4, T0, "rq", "add", T1, "1", "@c@k")),
    ("entityOperationCalled", pb.EntityOperationCalledEvent(
        requestId="rq", operation="get", scheduledTime=_ts(T1), input=_sv("i"), parentInstanceId=_sv("pi"),
        parentExecutionId=_sv("pe"), targetInstanceId=_sv("@c@k")),
     history.EntityOperationCalledEvent(4, T0, "rq", "get", T1, "i", "pi", "pe", "@c@k")),
    ("entityOperationCompleted", pb.EntityOperationCompletedEvent(requestId="rq", output=_sv("o")),
     history.EntityOperationCompletedEvent(4, T0, "rq", "o")),
    ("entityOperationFailed", pb.EntityOperationFailedEvent(requestId="rq", failureDetails=_PB_FAILURE),
     history.EntityOperationFailedEvent(4, T0, "rq", _FAILURE)),
    ("entityLockRequested", pb.EntityLockRequestedEvent(
        criticalSectionId="cs", lockSet=["@a@1", "@b@2"], position=1, parentInstanceId=_sv("pi")),
     history.EntityLockRequestedEvent(4, T0, "cs", ["@a@1", "@b@2"], 1, "pi")),
    ("entityLockGranted", pb.EntityLockGrantedEvent(criticalSectionId="cs"),
     history.EntityLockGrantedEvent(4, T0, "cs")),
    ("entityUnlockSent", pb.EntityUnlockSentEvent(
        criticalSectionId="cs", parentInstanceId=_sv("pi"), targetInstanceId=_sv("@a@1")),
     history.EntityUnlockSentEvent(4, T0, "cs", "pi", "@a@1")),
    ("executionRewound", pb.ExecutionRewoundEvent(
        reason=_sv("oops"), parentExecutionId=_sv("pe"), instanceId=_sv("id"), parentTraceContext=_PB_TRACE,
        name=_sv("orch"), version=_sv("v"), input=_sv("i"), parentInstance=_PB_PARENT, tags={"k": "v"}),
     history.ExecutionRewoundEvent(4, T0, "oops", "pe", "id", _TRACE, "orch", "v", "i", _PARENT, {"k": "v"})),
]


def test_cases_cover_every_kind_and_set_every_field() -> None:
    assert [kind for kind, _, _ in CASES] == KINDS
    for kind, payload, _ in CASES:
        unset = {f.name for f in payload.DESCRIPTOR.fields} - {f.name for f, _ in payload.ListFields()}
        assert not unset, f"{kind}: {unset}"


@pytest.mark.parametrize(("kind", "payload", "expected"), CASES, ids=[c[0] for c in CASES])
def test_every_kind_converts_with_all_its_fields(kind: str, payload: Any, expected: history.HistoryEvent) -> None:
    event = history.from_protobuf(_event(**{kind: payload}))
    assert type(event) is type(expected)
    assert event == expected


def test_records_have_the_official_names_and_fields() -> None:
    for name, field_names in FIELDS.items():
        cls = getattr(history, name)
        base = [] if name in ("OrchestrationInstance", "ParentInstanceInfo", "TraceContext") else [
            "event_id", "timestamp"]
        assert [f.name for f in dataclasses.fields(cls)] == base + field_names.split(), name
        assert "__slots__" in vars(cls), name
    events = {type(e).__name__ for _, _, e in CASES}
    assert set(history.__all__) == set(FIELDS) | {"from_protobuf", "to_dict"}
    assert events == set(FIELDS) - {"HistoryEvent", "OrchestrationInstance", "ParentInstanceInfo", "TraceContext"}


def test_private_official_name_is_kept() -> None:
    assert history._from_protobuf is history.from_protobuf


def test_failure_details_are_the_public_task_type() -> None:
    event = history.from_protobuf(_event(taskFailed=pb.TaskFailedEvent(failureDetails=_PB_FAILURE)))
    assert isinstance(event, history.TaskFailedEvent)
    assert isinstance(event.failure_details, task.FailureDetails)


@pytest.mark.parametrize("kind", KINDS)
def test_absent_and_empty_string_values_are_told_apart(kind: str) -> None:
    bare = _event()
    getattr(bare, kind).SetInParent()
    absent = history.from_protobuf(bare)
    wrappers = [f.name for f in getattr(bare, kind).DESCRIPTOR.fields
                if f.message_type is not None and f.message_type.full_name == "google.protobuf.StringValue"]
    for wrapper in wrappers:
        for value in ("", "x"):
            event = pb.HistoryEvent()
            event.CopyFrom(bare)
            getattr(getattr(event, kind), wrapper).value = value
            if value == "":
                getattr(getattr(event, kind), wrapper).SetInParent()
            converted = history.from_protobuf(event)
            changed = {f.name: getattr(converted, f.name) for f in dataclasses.fields(converted)
                       if getattr(converted, f.name) != getattr(absent, f.name)}
            assert len(changed) == 1, (wrapper, changed)
            ((name, got),) = changed.items()
            assert got == value and getattr(absent, name) is None, (wrapper, name)


def test_empty_string_values_in_nested_records() -> None:
    event = history.from_protobuf(_event(executionStarted=pb.ExecutionStartedEvent(
        orchestrationInstance=pb.OrchestrationInstance(executionId=_sv("")),
        parentInstance=pb.ParentInstanceInfo(name=_sv(""), orchestrationInstance=pb.OrchestrationInstance()),
        parentTraceContext=pb.TraceContext(traceState=_sv("")))))
    assert isinstance(event, history.ExecutionStartedEvent)
    assert event.orchestration_instance == OrchestrationInstance("", "")
    assert event.parent_instance == ParentInstanceInfo(0, "", None, OrchestrationInstance("", None))
    assert event.parent_trace_context == TraceContext("", "", "")
    failure = history.from_protobuf(_event(taskFailed=pb.TaskFailedEvent(
        failureDetails=pb.TaskFailureDetails(stackTrace=_sv("")))))
    assert isinstance(failure, history.TaskFailedEvent)
    assert failure.failure_details == task.FailureDetails("", "", "")


def test_unset_optionals_and_empty_collections() -> None:
    started = history.from_protobuf(_event(executionStarted=pb.ExecutionStartedEvent(name="n")))
    assert started == history.ExecutionStartedEvent(4, T0, "n")
    locks = history.from_protobuf(_event(entityLockRequested=pb.EntityLockRequestedEvent()))
    assert locks == history.EntityLockRequestedEvent(4, T0, "", [], 0)
    failed = history.from_protobuf(_event(taskFailed=pb.TaskFailedEvent()))
    assert failed == history.TaskFailedEvent(4, T0, 0, None)
    state = history.from_protobuf(_event(historyState=pb.HistoryStateEvent()))
    assert state == history.HistoryStateEvent(4, T0, {})


def test_timestamps_are_aware_utc_truncated_to_microseconds() -> None:
    event = history.from_protobuf(pb.HistoryEvent(
        timestamp=timestamp_pb2.Timestamp(seconds=-1, nanos=999_999_999),
        timerFired=pb.TimerFiredEvent(fireAt=timestamp_pb2.Timestamp(seconds=1, nanos=1_999))))
    assert isinstance(event, history.TimerFiredEvent)
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    assert event.timestamp == epoch - timedelta(microseconds=1)
    assert event.fire_at == epoch + timedelta(seconds=1, microseconds=1)
    assert event.timestamp.tzinfo is UTC and event.fire_at.tzinfo is UTC
    unset = history.from_protobuf(pb.HistoryEvent(orchestratorStarted=pb.OrchestratorStartedEvent()))
    assert unset.timestamp == epoch


def test_event_without_a_kind_becomes_a_base_event() -> None:
    assert history.from_protobuf(_event(7)) == history.HistoryEvent(7, T0)
    newer = pb.HistoryEvent()
    newer.ParseFromString(_event(7).SerializeToString() + b"\x9a\x06\x00")  # field 99, empty message
    converted = history.from_protobuf(newer)
    assert type(converted) is history.HistoryEvent
    assert history.to_dict(converted) == {"event_id": 7, "timestamp": T0.isoformat()}


def test_history_state_is_the_protobuf_json_mapping() -> None:
    state = pb.OrchestrationState(instanceId="i", failureDetails=_PB_FAILURE, completedTimestamp=_ts(T0))
    event = history.from_protobuf(_event(historyState=pb.HistoryStateEvent(orchestrationState=state)))
    assert isinstance(event, history.HistoryStateEvent)
    assert event.orchestration_state == json_format.MessageToDict(state, preserving_proto_field_name=True)
    assert event.orchestration_state["failureDetails"]["errorType"] == "builtins.ValueError"


# --- to_dict ------------------------------------------------------------------------------------

def test_to_dict_shape() -> None:
    event = dict((kind, e) for kind, _, e in CASES)["executionStarted"]
    assert history.to_dict(event) == {
        "event_id": 4,
        "timestamp": "2024-05-06T07:08:09.123456+00:00",
        "name": "orch",
        "version": "2",
        "input": '"in"',
        "orchestration_instance": {"instance_id": "id", "execution_id": "ex"},
        "parent_instance": {"task_scheduled_id": 3, "name": "parent", "version": "1",
                            "orchestration_instance": {"instance_id": "p-id", "execution_id": "p-ex"}},
        "scheduled_start_timestamp": "2024-05-06T08:00:00+00:00",
        "parent_trace_context": {"trace_parent": "00-abc-def-01", "span_id": "def", "trace_state": "k=v"},
        "orchestration_span_id": "span",
        "tags": {"a": "b"},
    }
    assert list(history.to_dict(event)) == [f.name for f in dataclasses.fields(event)]


def test_to_dict_of_failure_details_has_the_official_keys_only() -> None:
    failure = dataclasses.replace(_FAILURE, is_non_retriable=True)
    as_dict = history.to_dict(history.TaskFailedEvent(1, T0, 2, failure))
    assert as_dict["failure_details"] == {
        "message": "bad", "error_type": "builtins.ValueError", "stack_trace": "trace",
        "inner_failure": {"message": "k", "error_type": "builtins.KeyError", "stack_trace": None,
                          "inner_failure": None, "properties": None},
        "properties": {"n": 2.5},
    }


@pytest.mark.parametrize(("kind", "payload", "expected"), CASES, ids=[c[0] for c in CASES])
def test_to_dict_is_json_ready_and_detached(kind: str, payload: Any, expected: history.HistoryEvent) -> None:
    as_dict = history.to_dict(expected)
    assert as_dict == expected.to_dict()
    assert json.loads(json.dumps(as_dict)) == as_dict
    assert list(as_dict) == [f.name for f in dataclasses.fields(expected)]
    for value in as_dict.values():
        if isinstance(value, (dict, list)):
            value.clear()
    assert expected == dict((k, e) for k, _, e in CASES)[kind]


def test_to_dict_of_user_built_values() -> None:
    @dataclasses.dataclass
    class Extra:
        when: datetime

    event = history.HistoryStateEvent(1, T0, {"nested": [Extra(T1)], "when": T1, "pair": (1, T1), "n": None})
    assert history.to_dict(event)["orchestration_state"] == {
        "nested": [{"when": T1.isoformat()}], "when": T1.isoformat(), "pair": (1, T1.isoformat()), "n": None}
    naive = history.OrchestratorStartedEvent(0, datetime(2020, 1, 1))
    assert history.to_dict(naive) == {"event_id": 0, "timestamp": "2020-01-01T00:00:00"}
