"""What the client-side requests do: start, raise, terminate, suspend, resume, restart, rewind, purge.

Each function checks the request against the hub's state first (raising an ``EmulatorError`` that
names what is wrong and leaves everything untouched) and then makes its changes through the ``Tx``.
Requests aimed at a finished instance that cannot change it (raise, terminate, suspend, resume)
are accepted and ignored, so they cannot resurface after a rewind or restart.
"""

from __future__ import annotations

import json
import logging
import uuid

from durabletask.emulator import delivery, rewind, wire
from durabletask.emulator.episode import children_of
from durabletask.emulator.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from durabletask.emulator.state import EXECUTION_RESUMED, EXECUTION_SUSPENDED, HubState, Instance
from durabletask.emulator.store.base import FAILED, TERMINAL_STATUSES, TERMINATED
from durabletask.emulator.tx import Tx
from durabletask.internal import orchestrator_service_pb2 as pb

logger = logging.getLogger("durabletask.emulator.engine")


def status_name(status: int) -> str:
    return pb.OrchestrationStatus.Name(status).removeprefix("ORCHESTRATION_STATUS_")


def get(hub: HubState, instance_id: str) -> Instance:
    if not instance_id:
        raise InvalidArgument("instanceId is required")
    instance = hub.instances.get(instance_id)
    if instance is None:
        raise NotFound(f"no orchestration instance with ID '{instance_id}' in task hub '{hub.name}'")
    return instance


def start_instance(tx: Tx, request: pb.CreateInstanceRequest) -> str:
    if not request.name:
        raise InvalidArgument("name (the orchestrator to run) is required")
    instance_id = request.instanceId or uuid.uuid4().hex
    if instance_id.startswith("@"):
        raise InvalidArgument(f"instance ID '{instance_id}' starts with '@', which is reserved for entities")
    existing = tx.hub.instances.get(instance_id)
    if existing is not None:
        replaceable = set(request.orchestrationIdReusePolicy.replaceableStatus)
        if existing.record.status not in replaceable:
            raise AlreadyExists(
                f"an orchestration with instance ID '{instance_id}' already exists (status "
                f"{status_name(existing.record.status)}); to replace it, send an OrchestrationIdReusePolicy "
                "whose replaceableStatus lists that status")
        logger.info("replacing instance %r (status %s)", instance_id, status_name(existing.record.status))
        tx.delete(existing)
    scheduled = wire.seconds(request.scheduledStartTimestamp) if request.HasField("scheduledStartTimestamp") else None
    delivery.create_instance(
        tx, instance_id=instance_id, name=request.name,
        version=request.version.value if request.HasField("version") else None,
        input=request.input.value if request.HasField("input") else None, tags=dict(request.tags),
        execution_id=request.executionId.value if request.HasField("executionId") else None,
        scheduled_start_at=scheduled,
        trace_context=request.parentTraceContext if request.HasField("parentTraceContext") else None,
    )
    return instance_id


def raise_event(tx: Tx, request: pb.RaiseEventRequest) -> None:
    instance = get(tx.hub, request.instanceId)
    if not request.name:
        raise InvalidArgument("name (the event name) is required")
    delivery.deliver(tx, instance.instance_id, "eventRaised", wire.event_bytes(
        tx.now, eventRaised=pb.EventRaisedEvent(
            name=request.name, input=request.input if request.HasField("input") else None)))


def terminate(tx: Tx, request: pb.TerminateRequest) -> None:
    instance = get(tx.hub, request.instanceId)
    delivery.terminate(tx, instance, request.output.value if request.HasField("output") else None,
                       request.recursive)


def suspend(tx: Tx, request: pb.SuspendRequest) -> None:
    instance = get(tx.hub, request.instanceId)
    if instance.record.is_terminal or instance.effectively_suspended():
        return  # finished, or already suspended (or about to be): nothing to do
    tx.send(instance, EXECUTION_SUSPENDED, wire.event_bytes(tx.now, executionSuspended=pb.ExecutionSuspendedEvent(
        input=request.reason if request.HasField("reason") else None)))


def resume(tx: Tx, request: pb.ResumeRequest) -> None:
    instance = get(tx.hub, request.instanceId)
    # A resume that reaches a worker whose orchestration is not suspended fails it (Python SDK):
    # deliver it only if the instance is, or is about to be, suspended.
    if instance.record.is_terminal or not instance.effectively_suspended():
        return
    tx.send(instance, EXECUTION_RESUMED, wire.event_bytes(tx.now, executionResumed=pb.ExecutionResumedEvent(
        input=request.reason if request.HasField("reason") else None)))


def restart(tx: Tx, request: pb.RestartInstanceRequest) -> str:
    instance = get(tx.hub, request.instanceId)
    record = instance.record
    if not record.is_terminal:
        raise FailedPrecondition(
            f"instance '{record.instance_id}' is {status_name(record.status)}; only finished orchestrations "
            "(COMPLETED, FAILED, TERMINATED) can be restarted")
    new_id = uuid.uuid4().hex if request.restartWithNewInstanceId else record.instance_id
    if new_id == record.instance_id:
        tx.delete(instance)
    delivery.create_instance(tx, instance_id=new_id, name=record.name, version=record.version, input=record.input,
                             tags=record.tags)
    return new_id


def rewind_instance(tx: Tx, request: pb.RewindInstanceRequest) -> None:
    instance = get(tx.hub, request.instanceId)
    record = instance.record
    if record.status != FAILED:
        raise FailedPrecondition(
            f"instance '{record.instance_id}' is {status_name(record.status)}; only FAILED orchestrations can "
            "be rewound")
    if instance.history is None:  # pragma: no cover - failed instances keep their history in memory
        raise FailedPrecondition(f"the history of '{record.instance_id}' is not available")
    rewind.start_rewind(tx, instance, request.reason.value if request.HasField("reason") else None,
                        parent_execution_id=None)


def skip_graceful_terminations(tx: Tx, request: pb.SkipGracefulOrchestrationTerminationsRequest) -> list[str]:
    """Make running orchestrations TERMINATED in storage without running them; return those left alone.

    Left alone: unknown IDs, entity IDs, finished instances, and orchestrations that hold entity locks
    (terminating those here would leave the locks with nobody to release them; use TerminateInstance).
    The output is the reason as a JSON string. Work in flight for an instance is fenced: its worker's
    completion will be ignored.
    """
    ids = list(request.instanceBatch.instanceIds)
    if len(ids) > 500:
        raise InvalidArgument(f"instanceBatch has {len(ids)} instance IDs; the limit is 500")
    reason = request.reason.value if request.HasField("reason") else None
    output = json.dumps(reason) if reason is not None else None
    hub = tx.hub
    left: list[str] = []
    for instance_id in ids:
        instance = hub.instances.get(instance_id)
        if (instance is None or instance_id.startswith("@") or instance.record.is_terminal
                or instance_id in hub.lock_owners or instance.history is None):
            left.append(instance_id)
            continue
        lease = instance.lease
        if lease is not None:  # fence the worker's episode; its messages are dropped with the inbox
            tx.engine.dispatcher.forget_orchestration(lease)
            instance.put_back(lease.messages)
        if not instance.started:  # never ran: the usual path writes the start event too
            delivery.terminate(tx, instance, output, False)
            continue
        terminated = wire.event_bytes(tx.now, executionTerminated=pb.ExecutionTerminatedEvent(
            input=wire.string_value(output)))
        completed = wire.event_bytes(tx.now, executionCompleted=pb.ExecutionCompletedEvent(
            orchestrationStatus=pb.ORCHESTRATION_STATUS_TERMINATED, result=wire.string_value(output)))
        tx.append_history(instance, [wire.orchestrator_started(tx.now), terminated, completed,
                                     wire.orchestrator_completed(tx.now)])
        delivery.finish(tx, instance, TERMINATED, output, None)
    return left


# -- purge


def purge_targets(hub: HubState, request: pb.PurgeInstancesRequest) -> tuple[list[Instance], bool]:
    """The instances a purge request names (before recursion), and whether it named one by id."""
    which = request.WhichOneof("request")
    if which == "instanceId":
        instance = hub.instances.get(request.instanceId)
        if instance is None or request.instanceId.startswith("@"):
            return [], True
        if not instance.record.is_terminal:
            raise FailedPrecondition(
                f"instance '{instance.instance_id}' is {status_name(instance.record.status)}; only finished "
                "orchestrations can be purged (terminate it first)")
        return [instance], True
    if which == "instanceBatch":
        ids = list(request.instanceBatch.instanceIds)
        if len(ids) > 500:
            raise InvalidArgument(f"instanceBatch has {len(ids)} instance IDs; the limit is 500")
        found = (hub.instances.get(i) for i in ids)
        return [i for i in found if i is not None and i.record.is_terminal], False
    if which == "purgeInstanceFilter":
        return _filtered(hub, request.purgeInstanceFilter), False
    raise InvalidArgument("PurgeInstancesRequest needs an instanceId, a purgeInstanceFilter or an instanceBatch")


def _filtered(hub: HubState, filt: pb.PurgeInstanceFilter) -> list[Instance]:
    statuses = set(filt.runtimeStatus) & TERMINAL_STATUSES if filt.runtimeStatus else TERMINAL_STATUSES
    low = wire.seconds(filt.createdTimeFrom) if filt.HasField("createdTimeFrom") else None
    high = wire.seconds(filt.createdTimeTo) if filt.HasField("createdTimeTo") else None
    return [
        i for i in hub.instances.values()
        if i.record.status in statuses
        and (low is None or i.record.created_at >= low)
        and (high is None or i.record.created_at < high)
    ]


def with_descendants(hub: HubState, roots: list[Instance]) -> tuple[list[Instance], list[Instance]]:
    """The roots and every sub-orchestration below them; and those whose children are not known yet."""
    seen: dict[str, Instance] = {}
    unknown: list[Instance] = []
    pending = list(roots)
    while pending:
        instance = pending.pop()
        if instance.instance_id in seen:
            continue
        seen[instance.instance_id] = instance
        if instance.children is None and instance.history is None:
            unknown.append(instance)
            continue
        for child_id in children_of(instance):
            child = hub.instances.get(child_id)
            if child is not None and child.record.parent_instance_id == instance.instance_id:
                pending.append(child)
    return list(seen.values()), unknown


def purge(tx: Tx, instances: list[Instance], *, strict: bool) -> int:
    """Delete finished instances. With ``strict``, refuse if any of them is still running."""
    running = [i for i in instances if not i.record.is_terminal]
    if running and strict:
        first = running[0]
        raise FailedPrecondition(
            f"cannot purge recursively: sub-orchestration '{first.instance_id}' is "
            f"{status_name(first.record.status)}; terminate it first or purge without recursion")
    count = 0
    for instance in instances:
        if instance.record.is_terminal and not instance.deleted:
            tx.delete(instance)
            count += 1
    return count
