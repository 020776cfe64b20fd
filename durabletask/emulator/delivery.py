"""Rules shared by client commands and worker completions: creating, messaging and finishing instances."""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass

from google.protobuf import wrappers_pb2

from durabletask.emulator import wire
from durabletask.emulator.state import EXECUTION_STARTED, EXECUTION_TERMINATED, Instance
from durabletask.emulator.store.base import COMPLETED, PENDING, TERMINATED, InstanceRecord
from durabletask.emulator.tx import Tx
from durabletask.internal import orchestrator_service_pb2 as pb

logger = logging.getLogger("durabletask.emulator.engine")


@dataclass(frozen=True, slots=True)
class ParentRef:
    """Where a sub-orchestration reports its outcome."""

    instance_id: str
    execution_id: str
    task_id: int
    name: str
    version: str | None


def new_execution_id() -> str:
    return uuid.uuid4().hex


def start_event(tx: Tx, record: InstanceRecord, *, trace_context: pb.TraceContext | None = None) -> bytes:
    """The ``executionStarted`` event of a record's current execution."""
    started = pb.ExecutionStartedEvent(
        name=record.name,
        version=wire.string_value(record.version),
        input=wire.string_value(record.input),
        orchestrationInstance=pb.OrchestrationInstance(
            instanceId=record.instance_id, executionId=wrappers_pb2.StringValue(value=record.execution_id)),
        tags=record.tags,
    )
    if record.parent_instance_id is not None:
        started.parentInstance.CopyFrom(pb.ParentInstanceInfo(
            taskScheduledId=record.parent_task_id or 0,
            name=wire.string_value(record.parent_name),
            version=wire.string_value(record.parent_version),
            orchestrationInstance=pb.OrchestrationInstance(
                instanceId=record.parent_instance_id,
                executionId=wire.string_value(record.parent_execution_id)),
        ))
    if record.scheduled_start_at is not None:
        started.scheduledStartTimestamp.CopyFrom(wire.timestamp(record.scheduled_start_at))
    if trace_context is not None:
        started.parentTraceContext.CopyFrom(trace_context)
    return wire.event_bytes(tx.now, executionStarted=started)


def create_instance(tx: Tx, *, instance_id: str, name: str, version: str | None, input: str | None,
                    tags: dict[str, str] | None = None, execution_id: str | None = None,
                    scheduled_start_at: float | None = None, parent: ParentRef | None = None,
                    trace_context: pb.TraceContext | None = None) -> Instance:
    """Create a PENDING instance and queue its ``executionStarted`` (visible at the scheduled start)."""
    record = InstanceRecord(
        hub=tx.hub.name, instance_id=instance_id, execution_id=execution_id or new_execution_id(), name=name,
        version=version, status=PENDING, created_at=tx.now, updated_at=tx.now,
        scheduled_start_at=scheduled_start_at, input=input, tags=dict(tags or {}),
    )
    if parent is not None:
        record.parent_instance_id = parent.instance_id
        record.parent_execution_id = parent.execution_id
        record.parent_task_id = parent.task_id
        record.parent_name = parent.name
        record.parent_version = parent.version
    instance = tx.create(record)
    visible_at = scheduled_start_at if scheduled_start_at is not None and scheduled_start_at > tx.now else tx.now
    tx.send(instance, EXECUTION_STARTED, start_event(tx, record, trace_context=trace_context), visible_at=visible_at)
    return instance


def deliver(tx: Tx, instance_id: str, kind: str, event: bytes, *, execution_id: str | None = None,
            visible_at: float | None = None) -> bool:
    """Queue a message for an open instance (and execution, if given); drop it otherwise."""
    target = tx.hub.instances.get(instance_id)
    if target is None or target.record.is_terminal:
        logger.debug("dropped %s for %s instance %r", kind, "finished" if target else "unknown", instance_id)
        return False
    if execution_id is not None and target.record.execution_id != execution_id:
        logger.debug("dropped %s for a past execution of %r", kind, instance_id)
        return False
    tx.send(target, kind, event, visible_at=visible_at, execution_id=execution_id)
    return True


def terminate(tx: Tx, instance: Instance, output: str | None, recurse: bool) -> None:
    """Terminate an instance: by message to its worker, or right here if it never ran."""
    if instance.record.is_terminal:
        return
    event = wire.event_bytes(tx.now, executionTerminated=pb.ExecutionTerminatedEvent(
        input=wire.string_value(output), recurse=recurse))
    if instance.started or instance.lease is not None:
        tx.send(instance, EXECUTION_TERMINATED, event)
        return
    # Never dispatched: no user code has run, so the backend can write the outcome itself.
    start = next((m for m in instance.inbox if m.kind == EXECUTION_STARTED), None)
    history = [wire.orchestrator_started(tx.now)]
    if start is not None:
        history.append(start.event)
    history.append(event)
    history.append(wire.event_bytes(tx.now, executionCompleted=pb.ExecutionCompletedEvent(
        orchestrationStatus=pb.ORCHESTRATION_STATUS_TERMINATED, result=wire.string_value(output))))
    tx.replace_history(instance, history)
    finish(tx, instance, TERMINATED, output, None)


def finish(tx: Tx, instance: Instance, status: int, output: str | None, failure: pb.TaskFailureDetails | None) -> None:
    """Make an instance terminal: record the outcome, drop pending work, tell the parent."""
    record = instance.record
    record.status = status
    record.output = output
    record.failure = failure.SerializeToString() if failure is not None else None
    record.completed_at = tx.now
    tx.drop_inbox(instance)
    tx.drop_queued_activities(instance)
    tx.save(instance)
    if record.parent_instance_id is None or record.parent_task_id is None:
        return
    task_id = record.parent_task_id
    if status == COMPLETED:
        kind = "subOrchestrationInstanceCompleted"
        event = wire.event_bytes(tx.now, subOrchestrationInstanceCompleted=pb.SubOrchestrationInstanceCompletedEvent(
            taskScheduledId=task_id, result=wire.string_value(output)))
    else:
        if failure is None:
            failure = wire.failure(
                "OrchestrationTerminated" if status == TERMINATED else "OrchestrationFailed",
                f"sub-orchestration '{record.instance_id}' ended with status "
                f"{pb.OrchestrationStatus.Name(status)}" + (f": {output}" if output else ""),
            )
        kind = "subOrchestrationInstanceFailed"
        event = wire.event_bytes(tx.now, subOrchestrationInstanceFailed=pb.SubOrchestrationInstanceFailedEvent(
            taskScheduledId=task_id, failureDetails=failure))
    deliver(tx, record.parent_instance_id, kind, event, execution_id=record.parent_execution_id)
