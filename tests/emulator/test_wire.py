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
