"""Durable entity rules: messages in, batch results applied, locks granted and released, housekeeping.

Every function here runs inside a rule transaction (``Tx``), so a batch result commits its state,
the removal of the operations it executed, the replies to calling orchestrations, the signals and
orchestrations it started, and any lock hand-over in one store transaction.

Lock protocol (the DTFx design the wire protocol follows): a lock request travels along its sorted
lock set. An entity that is free (no lock, nothing queued before the request) records the
orchestration as its owner and forwards the request to the next entity; the last one sends
``entityLockGranted`` to the orchestration. While locked, only the owner's operations run (see
``entity_state``). The owner's unlock releases the lock; so does the owner finishing or continuing
as new, so a lock is never left with nobody to release it. A lock request from an orchestration
(execution) that has finished in the meantime is dropped instead of granted.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from google.protobuf import wrappers_pb2

from durabletask.emulator import delivery, wire
from durabletask.emulator.dispatch import backoff_delay
from durabletask.emulator.entity_state import (
    CALLED,
    LOCK_REQUESTED,
    OPERATIONS,
    SIGNALED,
    UNLOCK_SENT,
    Entity,
    EntityLease,
    lock_sender,
    new_entity,
    parse_entity_id,
)
from durabletask.emulator.errors import InvalidArgument
from durabletask.emulator.state import HubState, Instance
from durabletask.emulator.store.base import Message
from durabletask.emulator.tx import Tx
from durabletask.internal import orchestrator_service_pb2 as pb

logger = logging.getLogger("durabletask.emulator.entities")


def opt(message: Any, name: str) -> Any:
    """A singular message field, or None when absent (so it stays absent when copied)."""
    return getattr(message, name) if message.HasField(name) else None


# -- the queue


def enqueue(tx: Tx, entity_id: str, kind: str, event: pb.HistoryEvent, *, visible_at: float | None = None,
            execution_id: str | None = None) -> Entity:
    """Add a message to an entity's queue (creating the entity in memory) and act on it if possible."""
    hub = tx.hub
    entity = hub.entities.get(entity_id)
    if entity is None:
        entity = new_entity(hub.name, entity_id, tx.now)
        hub.entities[entity_id] = entity
    data = event.SerializeToString()
    message = Message(id=tx.engine.next_message_id(), hub=hub.name, instance_id=entity_id, kind=kind, event=data,
                      visible_at=tx.now if visible_at is None else visible_at, execution_id=execution_id)
    entity.add(message, lock_sender(data))
    tx.batch.put_message(message)
    advance(tx, entity)
    tx.touch_entity(entity)
    return entity


def signal(tx: Tx, entity_id: str, operation: str, input: wrappers_pb2.StringValue | None,
           scheduled_time: Any = None, request_id: str = "") -> None:
    """Queue a one-way operation; a ``scheduled_time`` (Timestamp) in the future delays it until then."""
    parse_entity_id(entity_id)
    event = pb.HistoryEvent(eventId=-1, timestamp=wire.timestamp(tx.now), entityOperationSignaled=(
        pb.EntityOperationSignaledEvent(requestId=request_id or str(uuid.uuid4()), operation=operation, input=input,
                                        scheduledTime=scheduled_time)))
    enqueue(tx, entity_id, SIGNALED, event, visible_at=_due(tx, scheduled_time))


def signal_entity(tx: Tx, request: pb.SignalEntityRequest) -> None:
    """The ``SignalEntity`` RPC."""
    parse_entity_id(request.instanceId)
    if not request.name:
        raise InvalidArgument("name (the operation to signal) is required")
    signal(tx, request.instanceId, request.name, opt(request, "input"), opt(request, "scheduledTime"),
           request.requestId)


def _due(tx: Tx, scheduled_time: Any) -> float | None:
    if scheduled_time is None:
        return None
    at = wire.seconds(scheduled_time)
    return at if at > tx.now else None


def _consume(tx: Tx, entity: Entity, message: Message) -> None:
    entity.remove(message)
    tx.consume([message])


# -- the rules that run without a worker: locks


def advance(tx: Tx, entity: Entity) -> None:
    """Handle the lock requests and unlocks that have reached the front of the entity's queue."""
    if entity.lease is not None:
        return  # the batch in flight comes first; its completion calls this again
    while True:
        message = _front(entity, tx.now)
        if message is None or message.kind in OPERATIONS:
            break
        if message.kind == LOCK_REQUESTED:
            _consume(tx, entity, message)
            _grant(tx, entity, message)
        elif message.kind == UNLOCK_SENT:
            _consume(tx, entity, message)
            section = wire.parse_event(message.event).entityUnlockSent.criticalSectionId
            if entity.record.locked_by is not None and section == entity.record.critical_section_id:
                _release(tx, entity)
            else:
                logger.debug("entity %r: dropped an unlock for critical section %r it does not hold",
                             entity.instance_id, section)
        else:  # pragma: no cover - only entity kinds are queued
            _consume(tx, entity, message)
    tidy(tx, entity)


def _front(entity: Entity, now: float) -> Message | None:
    """The first message the entity may act on: any due one, or, while locked, the owner's first."""
    owner = entity.record.locked_by
    for message in entity.queue:
        if message.visible_at > now:
            continue
        if owner is None or entity.sender(message) == owner:
            return message
    return None


def _grant(tx: Tx, entity: Entity, message: Message) -> None:
    request = wire.parse_event(message.event).entityLockRequested
    owner_id = request.parentInstanceId.value
    owner = tx.hub.instances.get(owner_id)
    if owner is None or owner.record.is_terminal or (
            message.execution_id is not None and owner.record.execution_id != message.execution_id):
        logger.info("entity %r: dropped a lock request of %r, which has finished", entity.instance_id, owner_id)
        return
    record = entity.record
    if record.locked_by is not None and record.locked_by != owner_id:  # pragma: no cover - _front prevents it
        raise RuntimeError(f"entity {entity.instance_id!r} is locked by {record.locked_by!r}")
    record.locked_by = owner_id
    record.lock_execution_id = message.execution_id
    record.critical_section_id = request.criticalSectionId
    tx.hub.lock_owners.setdefault(owner_id, set()).add(entity.instance_id)
    save(tx, entity)
    position = request.position + 1
    if position < len(request.lockSet):
        forwarded = pb.EntityLockRequestedEvent()
        forwarded.CopyFrom(request)
        forwarded.position = position
        enqueue(tx, request.lockSet[position], LOCK_REQUESTED, pb.HistoryEvent(
            eventId=-1, timestamp=wire.timestamp(tx.now), entityLockRequested=forwarded),
            execution_id=message.execution_id)
        return
    granted = wire.event_bytes(tx.now, entityLockGranted=pb.EntityLockGrantedEvent(
        criticalSectionId=request.criticalSectionId))
    delivery.deliver(tx, owner_id, "entityLockGranted", granted, execution_id=message.execution_id)


def _release(tx: Tx, entity: Entity) -> None:
    record = entity.record
    owner = record.locked_by
    if owner is not None:
        held = tx.hub.lock_owners.get(owner)
        if held is not None:
            held.discard(entity.instance_id)
            if not held:
                del tx.hub.lock_owners[owner]
    record.locked_by = None
    record.lock_execution_id = None
    record.critical_section_id = None
    save(tx, entity)
    tx.touch_entity(entity)


def release_locks_of(tx: Tx, owner_id: str) -> int:
    """Release every lock an orchestration holds (it finished or continued as new)."""
    held = tx.hub.lock_owners.get(owner_id)
    if not held:
        return 0
    count = 0
    for entity_id in sorted(held):
        entity = tx.hub.entities.get(entity_id)
        if entity is not None and entity.record.locked_by == owner_id:
            logger.info("entity %r: lock of %r released (the orchestration finished)", entity_id, owner_id)
            _release(tx, entity)
            advance(tx, entity)
            count += 1
    tx.hub.lock_owners.pop(owner_id, None)
    return count


# -- persistence


def save(tx: Tx, entity: Entity) -> None:
    """Write the entity's row, or delete it once the entity has neither state nor lock."""
    record = entity.record
    record.last_modified = tx.now
    if record.state is None and record.locked_by is None:
        if entity.stored:
            tx.batch.delete_entity(record.hub, record.instance_id)
            entity.stored = False
    else:
        tx.batch.put_entity(record)
        entity.stored = True


def tidy(tx: Tx, entity: Entity) -> None:
    """Forget an entity that no longer exists (no state, no lock, nothing queued or running)."""
    if entity.empty and not entity.deleted:
        entity.deleted = True
        if entity.wake_handle is not None:
            entity.wake_handle.cancel()
            entity.wake_handle = None
        if tx.hub.entities.get(entity.instance_id) is entity:
            del tx.hub.entities[entity.instance_id]


# -- worker results


def validate_result(lease: EntityLease, result: pb.EntityBatchResult) -> None:
    """Refuse a batch result that cannot be applied; nothing has changed yet."""
    count = len(lease.messages)
    if len(result.results) > count:
        raise InvalidArgument(f"the batch for entity '{lease.entity.instance_id}' had {count} operation(s) but "
                              f"the result has {len(result.results)} results")
    for index, info in enumerate(result.operationInfos[:len(result.results)]):
        expected = _request_id(lease.messages[index])
        if info.requestId and info.requestId != expected:
            raise InvalidArgument(f"operationInfos[{index}] names request '{info.requestId}', but operation {index} "
                                  f"of the batch for entity '{lease.entity.instance_id}' is request '{expected}'")
    for action in result.actions:
        kind = action.WhichOneof("operationActionType")
        if kind is None:
            raise InvalidArgument(f"entity action {action.id} has no action type set")
        if kind == "sendSignal":
            parse_entity_id(action.sendSignal.instanceId, f"entity action {action.id}: sendSignal target")
            if not action.sendSignal.name:
                raise InvalidArgument(f"entity action {action.id}: sendSignal needs an operation name")
        elif kind == "startNewOrchestration" and not action.startNewOrchestration.name:
            raise InvalidArgument(f"entity action {action.id}: startNewOrchestration needs an orchestrator name")


def _request_id(message: Message) -> str:
    event = wire.parse_event(message.event)
    return str(getattr(event, message.kind).requestId)


def apply_batch(tx: Tx, lease: EntityLease, result: pb.EntityBatchResult) -> None:
    """Commit a batch (the caller validated it and ended the lease)."""
    entity = lease.entity
    executed = lease.messages[:len(result.results)]
    entity.put_back(lease.messages[len(executed):])
    for message in executed:
        entity.senders.pop(message.id, None)
    tx.consume(executed)
    if not executed and lease.messages:  # no progress at all: do not hand it straight back
        entity.abandons += 1
        entity.not_before = tx.now + backoff_delay(entity.abandons)
    else:
        entity.abandons = 0
    for message, outcome in zip(executed, result.results, strict=False):
        if message.kind == CALLED:
            _reply(tx, message, outcome)
    for action in result.actions:
        _apply_entity_action(tx, entity, action)
    entity.record.state = result.entityState.value if result.HasField("entityState") else None
    save(tx, entity)
    advance(tx, entity)
    tx.touch_entity(entity)


def _reply(tx: Tx, message: Message, outcome: pb.OperationResult) -> None:
    call = wire.parse_event(message.event).entityOperationCalled
    if not call.HasField("parentInstanceId"):
        return
    execution_id = call.parentExecutionId.value if call.HasField("parentExecutionId") else None
    if outcome.HasField("failure"):
        kind = "entityOperationFailed"
        event = wire.event_bytes(tx.now, entityOperationFailed=pb.EntityOperationFailedEvent(
            requestId=call.requestId, failureDetails=outcome.failure.failureDetails))
    else:
        kind = "entityOperationCompleted"
        event = wire.event_bytes(tx.now, entityOperationCompleted=pb.EntityOperationCompletedEvent(
            requestId=call.requestId, output=opt(outcome.success, "result")))
    delivery.deliver(tx, call.parentInstanceId.value, kind, event, execution_id=execution_id or None)


def _apply_entity_action(tx: Tx, entity: Entity, action: pb.OperationAction) -> None:
    if action.HasField("sendSignal"):
        send = action.sendSignal
        signal(tx, send.instanceId, send.name, opt(send, "input"), opt(send, "scheduledTime"))
        return
    start = action.startNewOrchestration
    instance_id = start.instanceId or uuid.uuid4().hex
    if instance_id.startswith("@"):
        logger.warning("entity %r tried to start an orchestration with the entity ID %r; ignored",
                       entity.instance_id, instance_id)
        return
    existing = tx.hub.instances.get(instance_id)
    if existing is not None:
        if not existing.record.is_terminal:
            logger.warning("entity %r tried to start orchestration %r, which is still running; ignored",
                           entity.instance_id, instance_id)
            return
        tx.delete(existing)
    scheduled = wire.seconds(start.scheduledTime) if start.HasField("scheduledTime") else None
    delivery.create_instance(
        tx, instance_id=instance_id, name=start.name,
        version=start.version.value if start.HasField("version") else None,
        input=start.input.value if start.HasField("input") else None,
        scheduled_start_at=scheduled,
        trace_context=start.parentTraceContext if start.HasField("parentTraceContext") else None)


# -- orchestrations sending entity messages


def validate_action(action: pb.OrchestratorAction) -> None:
    """Refuse a malformed ``sendEntityMessage`` action (called before anything changes)."""
    message = action.sendEntityMessage
    kind = message.WhichOneof("EntityMessageType")
    where = f"action {action.id}: sendEntityMessage"
    if kind is None:
        raise InvalidArgument(f"{where} has no message set")
    if kind == "entityLockRequested":
        lock = message.entityLockRequested
        if not lock.lockSet or not 0 <= lock.position < len(lock.lockSet):
            raise InvalidArgument(f"{where}: entityLockRequested needs a lockSet and a position inside it")
        for entity_id in lock.lockSet:
            parse_entity_id(entity_id, f"{where}: lockSet entry")
        if not lock.criticalSectionId:
            raise InvalidArgument(f"{where}: entityLockRequested needs a criticalSectionId")
        return
    inner = getattr(message, kind)
    parse_entity_id(inner.targetInstanceId.value, f"{where}: {kind}.targetInstanceId")
    if kind in (SIGNALED, CALLED) and not inner.operation:
        raise InvalidArgument(f"{where}: {kind} needs an operation name")


def send_from_orchestration(tx: Tx, instance: Instance, action: pb.OrchestratorAction, *,
                            skip_outbound: bool) -> bytes:
    """Route an orchestration's entity message; return the history event that confirms the action.

    With ``skip_outbound`` (the same response continues as new) calls and lock requests of the
    ending execution are dropped; signals and unlocks are still delivered.
    """
    record = instance.record
    message = action.sendEntityMessage
    kind = message.WhichOneof("EntityMessageType")
    assert kind is not None
    inner = getattr(message, kind)
    confirmation = pb.HistoryEvent(eventId=action.id, timestamp=wire.timestamp(tx.now))
    getattr(confirmation, kind).CopyFrom(inner)
    if skip_outbound and kind in (CALLED, LOCK_REQUESTED):
        return confirmation.SerializeToString()
    outbound = pb.HistoryEvent(eventId=-1, timestamp=wire.timestamp(tx.now))
    getattr(outbound, kind).CopyFrom(inner)
    if kind != SIGNALED and not inner.HasField("parentInstanceId"):
        getattr(outbound, kind).parentInstanceId.value = record.instance_id
    if kind == CALLED:
        # Replies go to this execution only (the Python SDK leaves parentExecutionId empty).
        outbound.entityOperationCalled.parentExecutionId.value = record.execution_id
        enqueue(tx, inner.targetInstanceId.value, kind, outbound,
                visible_at=_due(tx, opt(inner, "scheduledTime")))
    elif kind == SIGNALED:
        enqueue(tx, inner.targetInstanceId.value, kind, outbound, visible_at=_due(tx, opt(inner, "scheduledTime")))
    elif kind == LOCK_REQUESTED:
        enqueue(tx, inner.lockSet[inner.position], kind, outbound, execution_id=record.execution_id)
    else:
        enqueue(tx, inner.targetInstanceId.value, kind, outbound)
    return confirmation.SerializeToString()


# -- housekeeping


def clean_storage(tx: Tx, request: pb.CleanEntityStorageRequest) -> tuple[int, int]:
    """``CleanEntityStorage``: (empty entities removed, orphaned locks released)."""
    hub = tx.hub
    released = 0
    removed = 0
    for entity in sorted(hub.entities.values(), key=lambda e: e.instance_id):
        record = entity.record
        if request.releaseOrphanedLocks and record.locked_by is not None and _orphaned(hub, entity):
            logger.info("entity %r: released the orphaned lock of %r", entity.instance_id, record.locked_by)
            _release(tx, entity)
            advance(tx, entity)
            released += 1
        if request.removeEmptyEntities and not entity.deleted and entity.empty:
            save(tx, entity)
            tidy(tx, entity)
            removed += 1
    return removed, released


def _orphaned(hub: HubState, entity: Entity) -> bool:
    record = entity.record
    owner = hub.instances.get(record.locked_by or "")
    if owner is None or owner.record.is_terminal:
        return True
    return record.lock_execution_id is not None and owner.record.execution_id != record.lock_execution_id
