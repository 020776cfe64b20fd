"""Messages the emulator assembles by hand must be what the generated stubs read and write."""

from __future__ import annotations

import pytest

from durabletask.emulator import wire
from durabletask.internal import orchestrator_service_pb2 as pb


def stub_event(at: float, **kind: object) -> bytes:
    event = pb.HistoryEvent(eventId=-1, timestamp=wire.timestamp(at), **kind)  # type: ignore[arg-type]
    return event.SerializeToString()


@pytest.mark.parametrize("at", [1_790_000_000.123456, 1_790_000_000.0, 0.5, 0.0, 12.000000001])
def test_episode_marker_events_are_byte_for_byte_what_protobuf_writes(at: float) -> None:
    assert wire.orchestrator_started(at) == stub_event(at, orchestratorStarted=pb.OrchestratorStartedEvent())
    assert wire.orchestrator_completed(at) == stub_event(at, orchestratorCompleted=pb.OrchestratorCompletedEvent())
    parsed = wire.parse_event(wire.orchestrator_started(at))
    assert parsed.eventId == -1 and parsed.HasField("orchestratorStarted")
    assert parsed.timestamp.ToNanoseconds() == int(at * 1e9)


def test_timestamps_keep_sub_microsecond_precision() -> None:
    ts = wire.timestamp(1_790_000_000.25)
    assert ts.seconds == 1_790_000_000 and abs(ts.nanos - 250_000_000) < 1_000
    assert abs(wire.seconds(ts) - 1_790_000_000.25) < 1e-6
    assert (wire.timestamp(12.5).seconds, wire.timestamp(12.5).nanos) == (12, 500_000_000)


def test_an_orchestrator_work_item_reads_back_as_the_stubs_message() -> None:
    past = [wire.orchestrator_started(10.0),
            stub_event(10.0, executionStarted=pb.ExecutionStartedEvent(name="chain")),
            wire.orchestrator_completed(10.5)]
    new = [wire.orchestrator_started(11.0),
           stub_event(11.0, taskCompleted=pb.TaskCompletedEvent(taskScheduledId=0))]
    # past events encoded in two slices concatenate into one repeated field
    encoded_past = wire.past_events(past[:2]) + wire.past_events(past[2:])
    data = wire.orchestrator_work_item("tok-1", "i1", "e1", encoded_past, new, trace_context=None)
    item = pb.WorkItem.FromString(data)
    assert item.completionToken == "tok-1"
    request = item.orchestratorRequest
    assert request.instanceId == "i1" and request.executionId.value == "e1"
    assert [e.SerializeToString() for e in request.pastEvents] == past
    assert [e.SerializeToString() for e in request.newEvents] == new
    without_execution = pb.WorkItem.FromString(wire.orchestrator_work_item("t", "i2", None, b"", []))
    assert not without_execution.orchestratorRequest.HasField("executionId")


def test_activity_work_items_and_history_chunks_read_back() -> None:
    request = pb.ActivityRequest(name="inc", taskId=3)
    item = pb.WorkItem.FromString(wire.activity_work_item("tok-2", request.SerializeToString()))
    assert item.completionToken == "tok-2" and item.activityRequest == request
    events = [wire.orchestrator_started(1.0), wire.orchestrator_completed(2.0)]
    chunk = pb.HistoryChunk.FromString(wire.history_chunk(events))
    assert [e.SerializeToString() for e in chunk.events] == events


def _stub_activity_round(at: float, action_id: int, task: pb.ScheduleTaskAction, instance_id: str,
                         execution_id: str | None) -> tuple[bytes, bytes]:
    """What the emulator built with protobuf before these two messages were assembled by hand."""
    def opt(name: str) -> object:
        return getattr(task, name) if task.HasField(name) else None
    event = pb.HistoryEvent(eventId=action_id, timestamp=wire.timestamp(at), taskScheduled=pb.TaskScheduledEvent(
        name=task.name, version=opt("version"), input=opt("input"), parentTraceContext=opt("parentTraceContext"),
        tags=task.tags))
    request = pb.ActivityRequest(
        name=task.name, version=opt("version"), input=opt("input"),
        orchestrationInstance=pb.OrchestrationInstance(instanceId=instance_id,
                                                       executionId=wire.string_value(execution_id)),
        taskId=action_id, parentTraceContext=opt("parentTraceContext"), tags=task.tags)
    return event.SerializeToString(), request.SerializeToString()


@pytest.mark.parametrize("task", [
    pb.ScheduleTaskAction(name="inc"),
    pb.ScheduleTaskAction(name="inc", input=wire.string_value("41")),
    pb.ScheduleTaskAction(name="inc", input=wire.string_value("")),  # present but empty
    pb.ScheduleTaskAction(name="inc", version=wire.string_value("v2"), input=wire.string_value("é" * 200)),
])
@pytest.mark.parametrize(("action_id", "execution_id"), [(1, "e1"), (0, None), (300, ""), (-5, "e")])
def test_task_scheduled_and_its_activity_request_are_byte_for_byte_what_protobuf_writes(
        task: pb.ScheduleTaskAction, action_id: int, execution_id: str | None) -> None:
    for at in (1_790_000_000.123456, 0.0, 12.5):
        assert wire.task_scheduled(at, action_id, task, "inst-1", execution_id) == \
            _stub_activity_round(at, action_id, task, "inst-1", execution_id)


def test_task_scheduled_with_tags_or_a_trace_context_reads_back_whole() -> None:
    task = pb.ScheduleTaskAction(name="inc", input=wire.string_value("1"), tags={"a": "b"},
                                 parentTraceContext=pb.TraceContext(traceParent="00-abc-def-01"))
    event, request = wire.task_scheduled(5.0, 3, task, "inst-1", "e1")
    scheduled = wire.parse_event(event)
    assert scheduled.eventId == 3 and scheduled.taskScheduled.tags == {"a": "b"}
    assert scheduled.taskScheduled.parentTraceContext.traceParent == "00-abc-def-01"
    parsed = pb.ActivityRequest.FromString(request)
    assert (parsed.name, parsed.input.value, parsed.taskId, dict(parsed.tags)) == ("inc", "1", 3, {"a": "b"})
    instance = parsed.orchestrationInstance
    assert instance.instanceId == "inst-1" and instance.executionId.value == "e1"
    assert parsed.parentTraceContext.traceParent == "00-abc-def-01"


@pytest.mark.parametrize("result", [None, "", "42", "ü" * 300])
@pytest.mark.parametrize("task_id", [0, 7, 1000, -1])
def test_task_completed_is_byte_for_byte_what_protobuf_writes(result: str | None, task_id: int) -> None:
    for at in (1_790_000_000.123456, 0.0, 12.000000001):
        assert wire.task_completed(at, task_id, result) == stub_event(
            at, taskCompleted=pb.TaskCompletedEvent(taskScheduledId=task_id, result=wire.string_value(result)))


# Each varint width the hand encoder writes without a loop (1 to 5 bytes) and past it, at both edges:
# as task ids, as result lengths (the string's length prefix) and as timestamp nanoseconds.
_WIDTH_EDGES = [0, 1, 127, 128, 16_383, 16_384, 2_097_151, 2_097_152, 268_435_455, 268_435_456, 999_999_999,
                2**31 - 1]


@pytest.mark.parametrize("value", _WIDTH_EDGES)
def test_every_varint_width_is_written_as_protobuf_writes_it(value: int) -> None:
    at = 1_790_000_000 + min(value, 999_999_999) / 1e9
    result = "r" * min(value, 2_097_152)
    expected = stub_event(at, taskCompleted=pb.TaskCompletedEvent(taskScheduledId=value,
                                                                   result=wire.string_value(result)))
    assert wire.task_completed(at, value, result) == expected
    parsed = wire.parse_event(expected)
    assert parsed.taskCompleted.taskScheduledId == value and len(parsed.taskCompleted.result.value) == len(result)


def test_events_of_different_times_in_a_row_keep_their_own_timestamps() -> None:
    # The encoder remembers the last timestamp it wrote (a commit's events share one): each new time
    # must still get its own.
    times = [100.25, 100.25, 100.5, 7.0, 100.25, 0.0]
    for at in times:
        event = wire.parse_event(wire.orchestrator_started(at))
        assert event.timestamp.ToNanoseconds() == int(at * 1e9)
        completed = wire.parse_event(wire.task_completed(at, 1, "x"))
        assert completed.timestamp.ToNanoseconds() == int(at * 1e9)
