"""Work items read through the view that leaves past events encoded, and the lazily parsed `PastEvents`."""

from __future__ import annotations

from typing import Any

import pytest
from google.protobuf import duration_pb2, struct_pb2, wrappers_pb2
from google.protobuf.message import DecodeError

from durabletask import task
from durabletask.internal import orchestrator_service_pb2 as pb
from durabletask.internal.registry import Registry
from durabletask.internal.replay.engine import OrchestrationExecutor
from durabletask.internal.runtime.past_events import WORK_ITEM_VIEW, PastEvents, past_events
from tests.unit import histories as h
from tests.unit.replay_support import output


def _history() -> list[pb.HistoryEvent]:
    return [h.orchestrator_started(), h.execution_started("fan", 3), h.task_scheduled(1, "inc", 0),
            h.task_scheduled(2, "inc", 1), h.orchestrator_completed(), h.orchestrator_started(h.at(1)),
            h.task_completed(1, 1), h.task_failed(2, "no"), h.orchestrator_completed()]


def _request(past: list[pb.HistoryEvent]) -> pb.OrchestratorRequest:
    return pb.OrchestratorRequest(
        instanceId="abc", executionId=wrappers_pb2.StringValue(value="e1"), pastEvents=past,
        newEvents=[h.orchestrator_started(h.at(2)), h.event_raised("go", {"x": 1})],
        entityParameters=pb.OrchestratorEntityParameters(entityMessageReorderWindow=duration_pb2.Duration(seconds=30)),
        requiresHistoryStreaming=False, properties={"region": struct_pb2.Value(string_value="west")},
        orchestrationTraceContext=pb.OrchestrationTraceContext(spanID=wrappers_pb2.StringValue(value="s")))


def _view(request: pb.OrchestratorRequest, token: str = "7") -> Any:
    encoded = pb.WorkItem(orchestratorRequest=request, completionToken=token).SerializeToString()
    return WORK_ITEM_VIEW.FromString(encoded)


def test_the_view_reads_an_orchestrator_work_item_as_the_real_message_with_past_events_left_encoded() -> None:
    real = _request(_history())
    item = _view(real)
    assert item.WhichOneof("request") == "orchestratorRequest" and item.completionToken == "7"
    view = item.orchestratorRequest
    assert view.instanceId == "abc" and view.executionId.value == "e1" and view.HasField("executionId")
    assert list(view.newEvents) == list(real.newEvents)
    assert view.entityParameters == real.entityParameters
    assert view.orchestrationTraceContext == real.orchestrationTraceContext
    assert dict(view.properties) == dict(real.properties) and not view.requiresHistoryStreaming
    assert all(isinstance(encoded, bytes) for encoded in view.pastEvents)
    assert [pb.HistoryEvent.FromString(encoded) for encoded in view.pastEvents] == list(real.pastEvents)
    assert pb.OrchestratorRequest.FromString(view.SerializeToString()) == real  # nothing lost on the way


def test_other_work_items_read_through_the_view_are_the_real_messages() -> None:
    activity = pb.ActivityRequest(name="inc", taskId=4, input=wrappers_pb2.StringValue(value="1"),
                                  orchestrationInstance=pb.OrchestrationInstance(instanceId="abc"))
    item = WORK_ITEM_VIEW.FromString(pb.WorkItem(activityRequest=activity, completionToken="3").SerializeToString())
    assert item.WhichOneof("request") == "activityRequest" and isinstance(item.activityRequest, pb.ActivityRequest)
    assert item.activityRequest == activity and item.completionToken == "3"
    entity = pb.EntityRequest(instanceId="@counter@a")
    item = WORK_ITEM_VIEW.FromString(pb.WorkItem(entityRequestV2=entity).SerializeToString())
    assert item.WhichOneof("request") == "entityRequestV2" and item.entityRequestV2 == entity
    item = WORK_ITEM_VIEW.FromString(pb.WorkItem(healthPing=pb.HealthPing()).SerializeToString())
    assert item.WhichOneof("request") == "healthPing"


def test_past_events_parse_only_the_events_that_are_read() -> None:
    history = _history()
    view = _view(_request(history)).orchestratorRequest
    view.pastEvents[3] = b"\xff\xff\xff"  # not an event: reading it (or everything) fails, reading others does not
    past = past_events(view)
    assert isinstance(past, PastEvents) and len(past) == len(history)
    assert past[0] == history[0] and past[-1] == history[-1] and past[5] == history[5]
    assert list(past[6:]) == history[6:] and list(past[:3]) == history[:3] and list(past[0:3:2]) == history[0:3:2]
    with pytest.raises(IndexError):
        past[len(history)]
    with pytest.raises(DecodeError):
        past[3]
    with pytest.raises(DecodeError):
        list(past)


def test_iterating_past_events_parses_them_all_once() -> None:
    history = _history()
    past = past_events(_view(_request(history)).orchestratorRequest)
    assert list(past) == history
    first = past[0]
    assert past[0] is first and list(past) == history and past[2:4] == history[2:4]


def test_past_events_of_a_real_request_are_its_own() -> None:
    real = _request(_history())
    assert past_events(real) is real.pastEvents


def fan(ctx: Any, n: int) -> Any:
    results = yield task.when_all([ctx.call_activity("inc", input=i) for i in range(n)])
    return sum(results)


def test_an_executor_resumes_and_replays_orchestrations_from_viewed_work_items() -> None:
    """Episode by episode as a backend delivers them: the kept state resumes from the events it reads,
    and an executor without it replays everything, with the same outcome."""
    registry = Registry()
    registry.add_orchestrator(fan)
    outcomes = []
    for capacity in (10, 0):
        executor = OrchestrationExecutor(registry, maximum_cached_orchestrations=capacity)
        history: list[pb.HistoryEvent] = []
        new = [h.orchestrator_started(), h.execution_started("fan", 6)]
        for minute in range(1, 10):
            view = _view(pb.OrchestratorRequest(instanceId="abc", pastEvents=history, newEvents=new))
            request = view.orchestratorRequest
            result = executor.execute("abc", past_events(request), request.newEvents)
            history += new
            history += [h.task_scheduled(a.id, a.scheduleTask.name, i) for i, a in enumerate(result.actions)
                        if a.HasField("scheduleTask")]
            history.append(h.orchestrator_completed())
            if result.is_complete:
                break
            new = [h.orchestrator_started(h.at(minute)), h.task_completed(2 * minute - 1, 2 * minute - 2),
                   h.task_completed(2 * minute, 2 * minute - 1)]
        outcomes.append(output(result))
        if capacity:
            assert executor.sessions is not None and executor.sessions.resumed == 3
    assert outcomes == [sum(range(6)), sum(range(6))]
