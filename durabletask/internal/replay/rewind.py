"""Client-side rewind: rewrite a failed orchestration's history so its failed work runs again.

Backends that follow the Python SDK's rewind flow deliver ``[OrchestratorStarted,
ExecutionRewound]`` to an instance whose history still ends in ``ExecutionCompleted``; the
worker answers with one ``rewindOrchestration`` action carrying the cleaned history. Backends
that rewrite history themselves send the same events over a history without
``ExecutionCompleted``; that is an ordinary replay and never reaches this module.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from itertools import chain

from google.protobuf import wrappers_pb2

from durabletask.internal import orchestrator_service_pb2 as pb
from durabletask.internal.failures import OrchestrationStateError


def rewind_action(past: Sequence[pb.HistoryEvent], new: Sequence[pb.HistoryEvent]) -> pb.OrchestratorAction:
    """Build the ``rewindOrchestration`` action with the cleaned history.

    Failed activities lose their ``TaskScheduled`` and ``TaskFailed`` events (so replay schedules
    them again), failed sub-orchestrations lose their failure (the backend rewinds the child),
    ``ExecutionCompleted`` goes, and the execution gets a new execution ID.

    Raises:
        OrchestrationStateError: ``new`` is not exactly ``[OrchestratorStarted, ExecutionRewound]``.
    """
    if len(new) != 2 or not new[1].HasField("executionRewound"):
        raise OrchestrationStateError(
            "a rewind must arrive as exactly two new events, orchestratorStarted then executionRewound; "
            f"got {[e.WhichOneof('eventType') for e in new]}"
        )
    rewound = new[1].executionRewound
    parent_execution_id = rewound.parentExecutionId.value or None
    history = clean_history(chain(past, new), uuid.uuid4().hex, parent_execution_id)
    return pb.OrchestratorAction(id=-1, rewindOrchestration=pb.RewindOrchestrationAction(newHistory=history))


def clean_history(events: Iterable[pb.HistoryEvent], execution_id: str,
                  parent_execution_id: str | None) -> list[pb.HistoryEvent]:
    """A failed execution's history with the failure removed, under a new execution ID.

    Failed activities lose their ``TaskScheduled`` and ``TaskFailed`` events, failed
    sub-orchestrations their failure, and ``ExecutionCompleted`` goes. Used by the worker's rewind
    action and by backends that rewrite the history themselves, so both follow one rule.
    """
    events = list(events)
    failed_ids = {e.taskFailed.taskScheduledId for e in events if e.HasField("taskFailed")}
    history: list[pb.HistoryEvent] = []
    for event in events:
        kind = event.WhichOneof("eventType")
        if kind in ("taskFailed", "subOrchestrationInstanceFailed", "executionCompleted"):
            continue
        if kind == "taskScheduled" and event.eventId in failed_ids:
            continue
        if kind == "executionStarted":
            copy = pb.HistoryEvent()
            copy.CopyFrom(event)
            started = copy.executionStarted
            started.orchestrationInstance.executionId.CopyFrom(wrappers_pb2.StringValue(value=execution_id))
            if parent_execution_id and started.HasField("parentInstance"):
                started.parentInstance.orchestrationInstance.executionId.CopyFrom(
                    wrappers_pb2.StringValue(value=parent_execution_id))
            event = copy
        history.append(event)
    return history
