"""Run an orchestration through the replay engine by hand, playing the backend's part.

This shows what durable execution is underneath: the orchestrator never runs "for real". Each
episode, the engine replays the recorded history and returns the orchestrator's next actions;
the "backend" below runs those activities, records their results as history events, and asks the
engine again, until the orchestration completes.

Run it with ``python examples/replay_walkthrough.py``.
"""

from __future__ import annotations

import json
from collections.abc import Generator
from datetime import datetime, timedelta, timezone
from typing import Any

from google.protobuf import timestamp_pb2, wrappers_pb2

from durabletask import task
from durabletask.internal import orchestrator_service_pb2 as pb
from durabletask.internal.registry import Registry
from durabletask.internal.replay.engine import OrchestrationExecutor


def say_hello(ctx: task.ActivityContext, city: str) -> str:
    return f"Hello, {city}!"


def hello_cities(ctx: task.OrchestrationContext, cities: list[str]) -> Generator[task.Task[Any], Any, list[str]]:
    greetings = []
    for city in cities:
        greetings.append((yield ctx.call_activity(say_hello, input=city)))
    parallel = yield task.when_all([ctx.call_activity(say_hello, input=c.upper()) for c in cities])
    return greetings + parallel


def _timestamp(when: datetime) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(when)
    return ts


def main() -> None:
    registry = Registry()
    registry.add_orchestrator(hello_cities)
    registry.add_activity(say_hello)
    engine = OrchestrationExecutor(registry)

    clock = datetime(2026, 1, 1, tzinfo=timezone.utc)
    history: list[pb.HistoryEvent] = []
    inbox: list[pb.HistoryEvent] = [pb.HistoryEvent(eventId=-1, executionStarted=pb.ExecutionStartedEvent(
        name="hello_cities", input=wrappers_pb2.StringValue(value=json.dumps(["Tokyo", "Seattle", "London"])),
        orchestrationInstance=pb.OrchestrationInstance(instanceId="walkthrough")))]

    for episode in range(1, 100):
        clock += timedelta(seconds=1)
        new = [pb.HistoryEvent(eventId=-1, timestamp=_timestamp(clock),
                               orchestratorStarted=pb.OrchestratorStartedEvent()), *inbox]
        result = engine.execute("walkthrough", history, new)
        print(f"episode {episode}: replayed {len(history)} events, applied {len(new)}, "
              f"got {[a.WhichOneof('orchestratorActionType') for a in result.actions]}")
        history += new
        inbox = []
        for action in result.actions:
            if action.HasField("scheduleTask"):
                scheduled = action.scheduleTask
                history.append(pb.HistoryEvent(eventId=action.id, taskScheduled=pb.TaskScheduledEvent(
                    name=scheduled.name, input=scheduled.input)))
                activity = registry.get_activity(scheduled.name)
                assert activity is not None
                output = activity(task.ActivityContext("walkthrough", action.id), json.loads(scheduled.input.value))
                inbox.append(pb.HistoryEvent(eventId=-1, taskCompleted=pb.TaskCompletedEvent(
                    taskScheduledId=action.id, result=wrappers_pb2.StringValue(value=json.dumps(output)))))
            elif action.HasField("completeOrchestration"):
                done = action.completeOrchestration
                print("status:", pb.OrchestrationStatus.Name(done.orchestrationStatus))
                print("output:", json.loads(done.result.value))
                return
    raise SystemExit("the orchestration did not complete")


if __name__ == "__main__":
    main()
