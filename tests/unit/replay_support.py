"""Running orchestrators through the replay engine from hand-built histories."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any

from durabletask.internal import orchestrator_service_pb2 as pb
from durabletask.internal.registry import Registry
from durabletask.internal.replay.engine import (
    DEFAULT_MAXIMUM_TIMER_INTERVAL,
    ExecutionResult,
    OrchestrationExecutor,
)
from tests.unit import histories as h

INSTANCE = "abc"


def run(
    orchestrators: Callable[..., Any] | Sequence[Callable[..., Any]],
    past: Sequence[pb.HistoryEvent],
    new: Sequence[pb.HistoryEvent],
    *,
    maximum_timer_interval: timedelta | None = DEFAULT_MAXIMUM_TIMER_INTERVAL,
    instance_id: str = INSTANCE,
) -> ExecutionResult:
    registry = Registry()
    for fn in orchestrators if isinstance(orchestrators, Sequence) else [orchestrators]:
        registry.add_orchestrator(fn)
    executor = OrchestrationExecutor(registry, maximum_timer_interval=maximum_timer_interval)
    return executor.execute(instance_id, list(past), list(new))


def start(fn: Callable[..., Any], input: Any = None, **kwargs: Any) -> ExecutionResult:
    """The first episode of ``fn``: no past events."""
    return run(fn, [], [h.orchestrator_started(), h.execution_started(fn.__name__, input)], **kwargs)


def kinds(result: ExecutionResult) -> list[str]:
    return [str(a.WhichOneof("orchestratorActionType")) for a in result.actions]


def completion(result: ExecutionResult) -> pb.CompleteOrchestrationAction:
    last = result.actions[-1]
    assert last.HasField("completeOrchestration"), f"no completion in {kinds(result)}"
    return last.completeOrchestration


def output(result: ExecutionResult) -> Any:
    c = completion(result)
    assert c.orchestrationStatus == pb.ORCHESTRATION_STATUS_COMPLETED, (
        f"status {pb.OrchestrationStatus.Name(c.orchestrationStatus)}: {c.failureDetails}"
    )
    return json.loads(c.result.value) if c.HasField("result") else None


def failure(result: ExecutionResult) -> pb.TaskFailureDetails:
    c = completion(result)
    assert c.orchestrationStatus == pb.ORCHESTRATION_STATUS_FAILED, pb.OrchestrationStatus.Name(c.orchestrationStatus)
    return c.failureDetails
