"""One handler per history event kind, found by table lookup on the event's oneof name.

Two families: *confirmations* (taskScheduled, timerCreated, ...) carry the sequence number of an
action the orchestrator must have created, and are checked for determinism; *arrivals*
(taskCompleted, timerFired, eventRaised, ...) complete the task waiting for them and resume the
orchestrator. Informational and unknown kinds are ignored, so new backends cannot break replay.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from durabletask.internal import orchestrator_service_pb2 as pb
from durabletask.internal.replay import entities, nondeterminism
from durabletask.internal.replay.actions import from_timestamp
from durabletask.internal.replay.context import Handler, ReplayContext
from durabletask.internal.tasks import TimerTask

logger = logging.getLogger("durabletask.orchestration")

def _orchestrator_started(ctx: ReplayContext, event: pb.HistoryEvent) -> None:
    ctx._clock_event = event  # the timestamp is decoded only if the orchestrator reads the time


def _execution_started(ctx: ReplayContext, event: pb.HistoryEvent) -> None:
    if ctx.started:
        return
    ctx.start(event.executionStarted)


def _confirm(ctx: ReplayContext, event: pb.HistoryEvent, kind: str, recorded: str, name: str | None) -> Any:
    seq = event.eventId
    action = ctx.pending_actions.pop(seq, None)
    if action is None:
        raise nondeterminism.missing_action(seq, recorded)
    if action.kind != kind or (name is not None and action.name != name):
        raise nondeterminism.mismatch(seq, recorded, action)
    return action


def _task_scheduled(ctx: ReplayContext, event: pb.HistoryEvent) -> None:
    # Inlined fast path of _confirm: this runs once per activity on every replay.
    seq = event.eventId
    action = ctx.pending_actions.pop(seq, None)
    name = event.taskScheduled.name
    if action is None or action.kind != "scheduleTask" or action.name != name:
        _confirm_failed(ctx, seq, f"call_activity('{name}')", action)


def _confirm_failed(ctx: ReplayContext, seq: int, recorded: str, action: Any) -> None:
    if action is None:
        raise nondeterminism.missing_action(seq, recorded)
    raise nondeterminism.mismatch(seq, recorded, action)


def _sub_orchestration_created(ctx: ReplayContext, event: pb.HistoryEvent) -> None:
    name = event.subOrchestrationInstanceCreated.name
    _confirm(ctx, event, "createSubOrchestration", f"call_sub_orchestrator('{name}')", name)


def _timer_created(ctx: ReplayContext, event: pb.HistoryEvent) -> None:
    _confirm(ctx, event, "createTimer", "create_timer()", None)


def _event_sent(ctx: ReplayContext, event: pb.HistoryEvent) -> None:
    sent = event.eventSent
    recorded = f"send_event('{sent.instanceId}', '{sent.name}')"
    action = ctx.pending_actions.get(event.eventId)
    if action is not None and action.kind in _ENTITY_ACTIONS:
        del ctx.pending_actions[event.eventId]
        entities.legacy_event_sent(ctx, event, action)
        return
    action = _confirm(ctx, event, "sendEvent", recorded, None)
    if action.instance_id != sent.instanceId or action.name.casefold() != sent.name.casefold():
        raise nondeterminism.mismatch(event.eventId, recorded, action)


def _result_arrived(ctx: ReplayContext, kind: str, seq: int, raw: str) -> None:
    """Complete task ``seq`` with an encoded result and resume the orchestrator if it was waiting."""
    task = ctx.pending_tasks.pop(seq, None)
    if task is None or task._is_complete:
        _unexpected(ctx, kind, seq)
        return
    # CompletableTask.complete(), inlined: this runs once per activity on every replay.
    task._result = ctx._deserialize(raw, task._expected_type) if raw else None
    task._is_complete = True
    parents = task._parents
    if parents:
        task._parents = None
        for parent in parents:
            parent.on_child_completed(task)
    waiting = ctx._waiting_on
    if waiting is not None and waiting._is_complete:
        ctx.resume()


def _failure_arrived(ctx: ReplayContext, kind: str, seq: int, details: pb.TaskFailureDetails, message: str) -> None:
    """Fail task ``seq`` (or retry it, if its policy says so)."""
    task = ctx.pending_tasks.pop(seq, None)
    if task is None or task._is_complete:
        _unexpected(ctx, kind, seq)
        return
    ctx.task_failed(task, message, details)


def _task_completed(ctx: ReplayContext, event: pb.HistoryEvent) -> None:
    done = event.taskCompleted
    _result_arrived(ctx, "taskCompleted", done.taskScheduledId, done.result.value)


def _task_failed(ctx: ReplayContext, event: pb.HistoryEvent) -> None:
    failed = event.taskFailed
    seq, details = failed.taskScheduledId, failed.failureDetails
    _failure_arrived(ctx, "taskFailed", seq, details,
                     f"{ctx.instance_id}: Activity task #{seq} failed: {details.errorMessage}")


def _sub_orchestration_completed(ctx: ReplayContext, event: pb.HistoryEvent) -> None:
    done = event.subOrchestrationInstanceCompleted
    _result_arrived(ctx, "subOrchestrationInstanceCompleted", done.taskScheduledId, done.result.value)


def _sub_orchestration_failed(ctx: ReplayContext, event: pb.HistoryEvent) -> None:
    failed = event.subOrchestrationInstanceFailed
    seq, details = failed.taskScheduledId, failed.failureDetails
    _failure_arrived(ctx, "subOrchestrationInstanceFailed", seq, details,
                     f"Sub-orchestration task #{seq} failed: {details.errorMessage}")


def _timer_fired(ctx: ReplayContext, event: pb.HistoryEvent) -> None:
    fired = event.timerFired
    seq = fired.timerId
    task = ctx.pending_tasks.pop(seq, None)
    if not isinstance(task, TimerTask) or task._is_complete:
        _unexpected(ctx, "timerFired", seq)
        return
    if ctx.status is not None:
        return  # the orchestration already ended in this episode: start nothing new
    ctx.timer_fired(task, from_timestamp(fired.fireAt))


def _event_raised(ctx: ReplayContext, event: pb.HistoryEvent) -> None:
    raised = event.eventRaised
    if ctx._entity_calls is not None and entities.legacy_event_raised(
            ctx, raised.name, raised.input.value if raised.HasField("input") else None):
        return
    ctx.event_raised(raised.name, raised.input.value if raised.HasField("input") else None)


def _execution_suspended(ctx: ReplayContext, event: pb.HistoryEvent) -> None:
    ctx.suspended = True


def _execution_resumed(ctx: ReplayContext, event: pb.HistoryEvent) -> None:
    if not ctx.suspended:
        # Some backends deliver a resume to a running instance; it means nothing here.
        if not ctx.is_replaying:
            logger.info("%s: ignoring a resume for an orchestration that is not suspended", ctx.instance_id)
        return
    ctx.suspended = False
    buffered, ctx.suspended_events = ctx.suspended_events, []
    apply_events(ctx, buffered)


def _execution_terminated(ctx: ReplayContext, event: pb.HistoryEvent) -> None:
    terminated = event.executionTerminated
    ctx.terminate(terminated.input.value if terminated.HasField("input") else None)


def _execution_completed(ctx: ReplayContext, event: pb.HistoryEvent) -> None:
    ctx.saw_execution_completed = True


def _execution_rewound(ctx: ReplayContext, event: pb.HistoryEvent) -> None:
    # A rewind marker in past events is informational. A new one over a finished history asks
    # this worker to rewrite the history (see rewind.py); otherwise it just wakes the instance.
    if not ctx.is_replaying and ctx.saw_execution_completed:
        ctx.rewind_requested = True


def _unknown(ctx: ReplayContext, event: pb.HistoryEvent) -> None:
    logger.debug("%s: ignoring history event of unknown kind %r", ctx.instance_id, event.WhichOneof("eventType"))


def _unexpected(ctx: ReplayContext, kind: str, seq: int) -> None:
    if not ctx.is_replaying:
        logger.warning("%s: ignoring %s for unknown or finished task #%d", ctx.instance_id, kind, seq)


HANDLERS: dict[str | None, Handler | None] = {
    "orchestratorStarted": _orchestrator_started,
    "executionStarted": _execution_started,
    "taskScheduled": _task_scheduled,
    "taskCompleted": _task_completed,
    "taskFailed": _task_failed,
    "subOrchestrationInstanceCreated": _sub_orchestration_created,
    "subOrchestrationInstanceCompleted": _sub_orchestration_completed,
    "subOrchestrationInstanceFailed": _sub_orchestration_failed,
    "timerCreated": _timer_created,
    "timerFired": _timer_fired,
    "eventSent": _event_sent,
    "eventRaised": _event_raised,
    "executionSuspended": _execution_suspended,
    "executionResumed": _execution_resumed,
    "executionTerminated": _execution_terminated,
    "orchestratorCompleted": None,
    "executionCompleted": _execution_completed,
    "executionRewound": _execution_rewound,
    "genericEvent": None,
    "historyState": None,
    "continueAsNew": None,
    **entities.HANDLERS,
}
"""Event kind -> handler. None marks informational kinds that need no action (the worker's own
completion markers, rewind markers, DTFx-internal state); kinds not listed at all (future kinds)
are ignored with a debug log."""

# While suspended, events that would run orchestrator code wait for the resume. Resume and terminate
# never wait, and neither do confirmations of actions already sent: holding those back would make
# the engine send the same actions again in every episode until the resume.
_NOT_SUSPENDABLE = frozenset({
    "executionResumed", "executionTerminated", "executionSuspended",  # a second suspend changes nothing
    "taskScheduled", "timerCreated", "subOrchestrationInstanceCreated", "eventSent",
    entities.CALLED, entities.SIGNALED, entities.LOCK_REQUESTED, entities.UNLOCK_SENT,
})
_ENTITY_ACTIONS = frozenset({entities.CALLED, entities.SIGNALED, entities.LOCK_REQUESTED, entities.UNLOCK_SENT})


def apply_events(ctx: ReplayContext, events: Iterable[pb.HistoryEvent]) -> None:
    """Feed events to the context in order, each through its handler.

    An exception from user code or from a determinism check fails the orchestration; the rest of
    the events are still applied, so that a termination in the same batch wins.
    """
    handlers = HANDLERS
    remaining = iter(events)
    while True:
        try:
            for event in remaining:
                kind = event.WhichOneof("eventType")
                if ctx.suspended and kind not in _NOT_SUSPENDABLE:
                    ctx.suspended_events.append(event)
                    continue
                handler = handlers.get(kind, _unknown)
                if handler is not None:
                    handler(ctx, event)
            return
        except Exception as ex:
            logger.debug("%s: orchestration failed", ctx.instance_id, exc_info=True)
            ctx.fail(ex)
