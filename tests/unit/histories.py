"""Builders for protobuf history events, as a backend would record them, for engine tests."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

from google.protobuf import timestamp_pb2, wrappers_pb2

from durabletask.internal import orchestrator_service_pb2 as pb

T0 = datetime(2026, 1, 1, 12, 0, 0)


def _ts(when: datetime) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(when)
    return ts


def _sv(value: str | None) -> wrappers_pb2.StringValue | None:
    return None if value is None else wrappers_pb2.StringValue(value=value)


def enc(value: Any) -> str | None:
    return None if value is None else json.dumps(value)


def orchestrator_started(when: datetime = T0) -> pb.HistoryEvent:
    return pb.HistoryEvent(eventId=-1, timestamp=_ts(when), orchestratorStarted=pb.OrchestratorStartedEvent())


def orchestrator_completed() -> pb.HistoryEvent:
    return pb.HistoryEvent(eventId=-1, orchestratorCompleted=pb.OrchestratorCompletedEvent())


def execution_started(name: str, input: Any = None, *, instance_id: str = "abc", version: str | None = None,
                      parent_instance_id: str | None = None, raw_input: str | None = None) -> pb.HistoryEvent:
    parent = None
    if parent_instance_id is not None:
        parent = pb.ParentInstanceInfo(
            taskScheduledId=1, name=_sv("parent"),
            orchestrationInstance=pb.OrchestrationInstance(instanceId=parent_instance_id))
    return pb.HistoryEvent(eventId=-1, timestamp=_ts(T0), executionStarted=pb.ExecutionStartedEvent(
        name=name, version=_sv(version), input=_sv(raw_input if raw_input is not None else enc(input)),
        orchestrationInstance=pb.OrchestrationInstance(instanceId=instance_id), parentInstance=parent))


def task_scheduled(seq: int, name: str, input: Any = None) -> pb.HistoryEvent:
    return pb.HistoryEvent(eventId=seq, taskScheduled=pb.TaskScheduledEvent(name=name, input=_sv(enc(input))))


def task_completed(seq: int, result: Any = None) -> pb.HistoryEvent:
    return pb.HistoryEvent(eventId=-1, taskCompleted=pb.TaskCompletedEvent(
        taskScheduledId=seq, result=_sv(enc(result))))


def failure(message: str = "boom", error_type: str = "builtins.ValueError",
            non_retriable: bool = False) -> pb.TaskFailureDetails:
    return pb.TaskFailureDetails(errorType=error_type, errorMessage=message, isNonRetriable=non_retriable)


def task_failed(seq: int, message: str = "boom", error_type: str = "builtins.ValueError",
                non_retriable: bool = False) -> pb.HistoryEvent:
    return pb.HistoryEvent(eventId=-1, taskFailed=pb.TaskFailedEvent(
        taskScheduledId=seq, failureDetails=failure(message, error_type, non_retriable)))


def sub_created(seq: int, name: str, instance_id: str) -> pb.HistoryEvent:
    return pb.HistoryEvent(eventId=seq, subOrchestrationInstanceCreated=pb.SubOrchestrationInstanceCreatedEvent(
        name=name, instanceId=instance_id))


def sub_completed(seq: int, result: Any = None) -> pb.HistoryEvent:
    return pb.HistoryEvent(eventId=-1, subOrchestrationInstanceCompleted=pb.SubOrchestrationInstanceCompletedEvent(
        taskScheduledId=seq, result=_sv(enc(result))))


def sub_failed(seq: int, message: str = "child failed") -> pb.HistoryEvent:
    return pb.HistoryEvent(eventId=-1, subOrchestrationInstanceFailed=pb.SubOrchestrationInstanceFailedEvent(
        taskScheduledId=seq, failureDetails=failure(message)))


def timer_created(seq: int, fire_at: datetime) -> pb.HistoryEvent:
    return pb.HistoryEvent(eventId=seq, timerCreated=pb.TimerCreatedEvent(fireAt=_ts(fire_at)))


def timer_fired(seq: int, fire_at: datetime) -> pb.HistoryEvent:
    return pb.HistoryEvent(eventId=-1, timerFired=pb.TimerFiredEvent(timerId=seq, fireAt=_ts(fire_at)))


def event_raised(name: str, data: Any = None) -> pb.HistoryEvent:
    return pb.HistoryEvent(eventId=-1, eventRaised=pb.EventRaisedEvent(name=name, input=_sv(enc(data))))


def event_sent(seq: int, instance_id: str, name: str, data: Any = None) -> pb.HistoryEvent:
    return pb.HistoryEvent(eventId=seq, eventSent=pb.EventSentEvent(instanceId=instance_id, name=name,
                                                                     input=_sv(enc(data))))


def suspended() -> pb.HistoryEvent:
    return pb.HistoryEvent(eventId=-1, executionSuspended=pb.ExecutionSuspendedEvent())


def resumed() -> pb.HistoryEvent:
    return pb.HistoryEvent(eventId=-1, executionResumed=pb.ExecutionResumedEvent())


def terminated(output: Any = None) -> pb.HistoryEvent:
    return pb.HistoryEvent(eventId=-1, executionTerminated=pb.ExecutionTerminatedEvent(input=_sv(enc(output))))


def execution_completed(status: int = pb.ORCHESTRATION_STATUS_FAILED) -> pb.HistoryEvent:
    return pb.HistoryEvent(eventId=99, executionCompleted=pb.ExecutionCompletedEvent(orchestrationStatus=status))


def rewound(reason: str = "try again") -> pb.HistoryEvent:
    return pb.HistoryEvent(eventId=-1, executionRewound=pb.ExecutionRewoundEvent(reason=_sv(reason)))


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)
