"""What a worker's completion does: committing an orchestrator episode, and an activity's result.

An episode commits in one transaction (see ``tx.py``): the processed new events and one
confirmation event per action go into the history, each action produces its outbound work
(activities, timers, messages to other instances, new instances), the consumed inbox messages are
deleted, and the record takes the outcome. Non-completing actions are applied first and the
completion last, whatever order the worker sent them in (the Go SDK's order is random).
"""

from __future__ import annotations

import logging
from typing import Any

from durabletask.emulator import delivery, entities, rewind, wire
from durabletask.emulator.errors import InvalidArgument
from durabletask.emulator.state import (
    EXECUTION_RESUMED,
    EXECUTION_STARTED,
    EXECUTION_SUSPENDED,
    EXECUTION_TERMINATED,
    ActivityLease,
    Instance,
    OrchestrationLease,
)
from durabletask.emulator.store.base import PENDING, RUNNING, SUSPENDED, TERMINATED, Message
from durabletask.emulator.tx import Tx
from durabletask.internal import orchestrator_service_pb2 as pb

logger = logging.getLogger("durabletask.emulator.engine")

_TERMINAL_ACTION_STATUSES = frozenset({
    pb.ORCHESTRATION_STATUS_COMPLETED, pb.ORCHESTRATION_STATUS_FAILED, pb.ORCHESTRATION_STATUS_TERMINATED,
    pb.ORCHESTRATION_STATUS_CANCELED,
})


def opt(message: Any, name: str) -> Any:
    """A singular message field, or None when absent (so it stays absent when copied)."""
    return getattr(message, name) if message.HasField(name) else None


def validate(instance_id: str, lease: OrchestrationLease, actions: list[pb.OrchestratorAction]) -> None:
    """Refuse a response that cannot be applied as a whole; nothing has changed yet."""
    if instance_id and instance_id != lease.instance.instance_id:
        raise InvalidArgument(
            f"the completion token belongs to instance '{lease.instance.instance_id}', not '{instance_id}'")
    completions = 0
    for action in actions:
        kind = action.WhichOneof("orchestratorActionType")
        where = f"action {action.id}"
        if kind is None:
            raise InvalidArgument(f"{where} has no action type set")
        if kind == "scheduleTask" and not action.scheduleTask.name:
            raise InvalidArgument(f"{where}: scheduleTask needs an activity name")
        elif kind == "createSubOrchestration" and not action.createSubOrchestration.name:
            raise InvalidArgument(f"{where}: createSubOrchestration needs an orchestrator name")
        elif kind == "createTimer" and not action.createTimer.HasField("fireAt"):
            raise InvalidArgument(f"{where}: createTimer needs fireAt")
        elif kind == "sendEvent" and not (action.sendEvent.instance.instanceId and action.sendEvent.name):
            raise InvalidArgument(f"{where}: sendEvent needs a target instance id and an event name")
        elif kind == "terminateOrchestration" and not action.terminateOrchestration.instanceId:
            raise InvalidArgument(f"{where}: terminateOrchestration needs an instance id")
        elif kind == "completeOrchestration":
            completions += 1
            status = action.completeOrchestration.orchestrationStatus
            if status not in _TERMINAL_ACTION_STATUSES and status != pb.ORCHESTRATION_STATUS_CONTINUED_AS_NEW:
                raise InvalidArgument(
                    f"{where}: completeOrchestration with status {pb.OrchestrationStatus.Name(status)}; expected "
                    "COMPLETED, FAILED, TERMINATED, CANCELED or CONTINUED_AS_NEW")
        elif kind == "sendEntityMessage":
            entities.validate_action(action)
        elif kind == "rewindOrchestration":
            completions += 1
            if not any(e.HasField("executionStarted") for e in action.rewindOrchestration.newHistory):
                raise InvalidArgument(f"{where}: rewindOrchestration's newHistory has no executionStarted event")
    if completions > 1:
        raise InvalidArgument("the response has more than one completeOrchestration/rewindOrchestration action")


def apply_episode(tx: Tx, lease: OrchestrationLease, actions: list[pb.OrchestratorAction],
                  custom_status: str | None, num_events_processed: int | None) -> None:
    """Commit one orchestrator episode (the caller validated it and owns the lease)."""
    instance = lease.instance
    record = instance.record
    now = tx.now

    # Which of the delivered events were processed; the rest go back to the inbox.
    processed_count = len(lease.new_events)
    if num_events_processed is not None:
        processed_count = max(1, min(processed_count, num_events_processed))
    processed, returned = _split_messages(lease, processed_count)
    instance.put_back(returned)
    tx.consume(processed)
    history = list(lease.new_events[:processed_count])

    terminate_event: pb.ExecutionTerminatedEvent | None = None
    for message in processed:
        if message.kind == EXECUTION_STARTED and record.status == PENDING:
            record.status = RUNNING
        elif message.kind == EXECUTION_SUSPENDED and record.status == RUNNING:
            record.status = SUSPENDED
        elif message.kind == EXECUTION_RESUMED and record.status == SUSPENDED:
            record.status = RUNNING
        elif message.kind == EXECUTION_TERMINATED:
            terminate_event = wire.parse_event(message.event).executionTerminated
    record.custom_status = custom_status

    completion: pb.OrchestratorAction | None = None
    ordinary: list[pb.OrchestratorAction] = []
    for action in actions:
        kind = action.WhichOneof("orchestratorActionType")
        if kind in ("completeOrchestration", "rewindOrchestration"):
            completion = action
        else:
            ordinary.append(action)

    continues = (completion is not None and completion.HasField("completeOrchestration")
                 and completion.completeOrchestration.orchestrationStatus == pb.ORCHESTRATION_STATUS_CONTINUED_AS_NEW)
    for action in ordinary:
        event = _apply_action(tx, instance, action, skip_outbound=continues)
        if event is not None:
            history.append(event)

    if completion is None:
        history.append(wire.orchestrator_completed(now))
        tx.append_history(instance, history)
        tx.save(instance)
    elif completion.HasField("rewindOrchestration"):
        rewind.apply_rewind_action(tx, instance, list(completion.rewindOrchestration.newHistory))
    elif continues:
        _continue_as_new(tx, instance, completion.completeOrchestration)
        if tx.hub.lock_owners:
            entities.release_locks_of(tx, instance.instance_id)
    else:
        complete = completion.completeOrchestration
        history.append(wire.event_bytes(now, completion.id, executionCompleted=pb.ExecutionCompletedEvent(
            orchestrationStatus=complete.orchestrationStatus, result=opt(complete, "result"),
            failureDetails=opt(complete, "failureDetails"))))
        history.append(wire.orchestrator_completed(now))
        tx.append_history(instance, history)
        output = complete.result.value if complete.HasField("result") else None
        delivery.finish(tx, instance, complete.orchestrationStatus, output, opt(complete, "failureDetails"))
        if tx.hub.lock_owners:
            entities.release_locks_of(tx, instance.instance_id)
        if complete.orchestrationStatus == TERMINATED and terminate_event is not None and terminate_event.recurse:
            _terminate_children(tx, instance, opt(terminate_event, "input"))


def _split_messages(lease: OrchestrationLease, processed_count: int) -> tuple[list[Message], list[Message]]:
    """Messages whose events fell within the first ``processed_count`` new events, and the others."""
    processed: list[Message] = []
    returned: list[Message] = []
    position = 1  # newEvents[0] is the orchestratorStarted added at dispatch
    for message in lease.messages:
        if not message.event:  # a wake-up: nothing to process
            processed.append(message)
            continue
        (processed if position < processed_count else returned).append(message)
        position += 1
    return processed, returned


def _apply_action(tx: Tx, instance: Instance, action: pb.OrchestratorAction, *, skip_outbound: bool) -> bytes | None:
    """Produce an action's outbound work; return its confirmation event (None if it has none)."""
    record = instance.record
    now = tx.now
    kind = action.WhichOneof("orchestratorActionType")
    if kind == "scheduleTask":
        task = action.scheduleTask
        event, request = wire.task_scheduled(now, action.id, task, record.instance_id, record.execution_id)
        if not skip_outbound:
            tx.add_activity(instance, action.id, task.name, task.version.value if task.HasField("version") else None,
                            request)
        return event
    if kind == "createTimer":
        fire_at = action.createTimer.fireAt
        if not skip_outbound:
            tx.send(instance, "timerFired", wire.event_bytes(
                max(now, wire.seconds(fire_at)), timerFired=pb.TimerFiredEvent(fireAt=fire_at, timerId=action.id)),
                visible_at=wire.seconds(fire_at), execution_id=record.execution_id)
        return wire.event_bytes(now, action.id, timerCreated=pb.TimerCreatedEvent(fireAt=fire_at))
    if kind == "createSubOrchestration":
        sub = action.createSubOrchestration
        child_id = sub.instanceId or f"{record.instance_id}:{action.id:04x}"
        if not skip_outbound:
            _start_child(tx, instance, action.id, child_id, sub)
        return wire.event_bytes(now, action.id, subOrchestrationInstanceCreated=pb.SubOrchestrationInstanceCreatedEvent(
            instanceId=child_id, name=sub.name, version=opt(sub, "version"), input=opt(sub, "input"),
            parentTraceContext=opt(sub, "parentTraceContext"), tags=sub.tags))
    if kind == "sendEvent":
        send = action.sendEvent
        target = send.instance.instanceId
        if target.startswith("@"):
            logger.warning("instance %r sent event %r to entity %r: the legacy (event-based) entity protocol is "
                           "not supported; dropped", record.instance_id, send.name, target)
        else:
            delivery.deliver(tx, target, "eventRaised", wire.event_bytes(now, eventRaised=pb.EventRaisedEvent(
                name=send.name, input=opt(send, "data"))))
        return wire.event_bytes(now, action.id, eventSent=pb.EventSentEvent(
            instanceId=target, name=send.name, input=opt(send, "data")))
    if kind == "terminateOrchestration":
        term = action.terminateOrchestration
        target_instance = tx.hub.instances.get(term.instanceId)
        if target_instance is not None:
            delivery.terminate(tx, target_instance, term.reason.value if term.HasField("reason") else None,
                               term.recurse)
        return None
    if kind == "sendEntityMessage":
        return entities.send_from_orchestration(tx, instance, action, skip_outbound=skip_outbound)
    raise InvalidArgument(f"action {action.id} has unsupported type {kind!r}")  # pragma: no cover


def _start_child(tx: Tx, parent: Instance, task_id: int, child_id: str,
                 sub: pb.CreateSubOrchestrationAction) -> None:
    record = parent.record
    if parent.children is not None:
        parent.children.append(child_id)
    existing = tx.hub.instances.get(child_id)
    if child_id == record.instance_id or (existing is not None and not existing.record.is_terminal):
        # Report the conflict to the parent instead of failing (and so retrying) its whole commit.
        state = "the orchestration itself" if existing is parent else "an instance that is still running"
        failure = wire.failure(
            "OrchestrationAlreadyExistsError",
            f"cannot start sub-orchestration '{child_id}': the instance id is used by {state}")
        tx.send(parent, "subOrchestrationInstanceFailed", wire.event_bytes(
            tx.now, subOrchestrationInstanceFailed=pb.SubOrchestrationInstanceFailedEvent(
                taskScheduledId=task_id, failureDetails=failure)), execution_id=record.execution_id)
        return
    if existing is not None:
        tx.delete(existing)  # a finished instance with this id is replaced
    delivery.create_instance(
        tx, instance_id=child_id, name=sub.name, version=sub.version.value if sub.HasField("version") else None,
        input=sub.input.value if sub.HasField("input") else None, tags=dict(sub.tags),
        parent=delivery.ParentRef(record.instance_id, record.execution_id, task_id, record.name, record.version),
        trace_context=opt(sub, "parentTraceContext"),
    )


def _continue_as_new(tx: Tx, instance: Instance, complete: pb.CompleteOrchestrationAction) -> None:
    """Start the next execution: new id, fresh history, input = result, carried-over events first."""
    record = instance.record
    old_execution = record.execution_id
    kept: list[Message] = []
    dropped: list[Message] = []
    for message in instance.inbox:
        (dropped if message.execution_id == old_execution else kept).append(message)
    tx.consume(dropped + kept)
    instance.inbox = []
    tx.drop_queued_activities(instance)
    record.execution_id = delivery.new_execution_id()
    record.input = complete.result.value if complete.HasField("result") else None
    if complete.HasField("newVersion"):
        record.version = complete.newVersion.value
    if complete.tags:
        record.tags = dict(complete.tags)
    record.status = RUNNING
    record.output = None
    record.failure = None
    instance.children = []
    instance.trace_context = None
    tx.replace_history(instance, [])
    tx.send(instance, EXECUTION_STARTED, delivery.start_event(tx, record))
    for event in complete.carryoverEvents:
        kind = event.WhichOneof("eventType")
        if kind != "eventRaised":  # only unconsumed events carry over; never pass bookkeeping events on
            logger.warning("instance %r carried over a %s event on continue-as-new; dropped", record.instance_id,
                           kind)
            continue
        tx.send(instance, kind, event.SerializeToString())
    # Messages that arrived during the episode follow the carried-over ones, in their order.
    for message in kept:
        tx.send(instance, message.kind, message.event, visible_at=message.visible_at)
    tx.save(instance)


def _terminate_children(tx: Tx, instance: Instance, output: Any) -> None:
    reason = output.value if output is not None else None
    for child_id in children_of(instance):
        child = tx.hub.instances.get(child_id)
        if child is not None and not child.record.is_terminal:
            delivery.terminate(tx, child, reason, True)


def children_of(instance: Instance) -> list[str]:
    """Sub-orchestrations created by the instance's current execution (from its history if needed)."""
    if instance.children is None:
        children: list[str] = []
        for data in instance.history or ():
            event = wire.parse_event(data)
            if event.HasField("subOrchestrationInstanceCreated"):
                children.append(event.subOrchestrationInstanceCreated.instanceId)
        instance.children = children
    return instance.children


def apply_activity_result(tx: Tx, lease: ActivityLease, response: pb.ActivityResponse) -> None:
    """Delete the finished activity and pass its result to its instance's execution, if still open."""
    record = lease.activity.record
    if not lease.activity.deleted:
        tx.remove_activity(lease.activity)
    if response.HasField("failureDetails"):
        kind = "taskFailed"
        event = wire.event_bytes(tx.now, taskFailed=pb.TaskFailedEvent(
            taskScheduledId=record.task_id, failureDetails=response.failureDetails))
    else:
        kind = "taskCompleted"
        event = wire.task_completed(tx.now, record.task_id,
                                    response.result.value if response.HasField("result") else None)
    delivery.deliver(tx, record.instance_id, kind, event, execution_id=record.execution_id)
