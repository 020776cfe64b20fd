"""Getting entity batches to workers: the entity ready queue, leases, flow control and redelivery.

The entity half of :class:`~durabletask.emulator.dispatch.Dispatcher`, with the same rules as
orchestrations: a ready entity goes to a stream whose work item filters list its name and that
holds fewer than ``maxConcurrentEntityWorkItems`` entity work items; handing out a batch creates a
lease named by the completion token; a lease ends on completion, abandon (with back-off), stream
close or expiry, and in the last three cases the batch's operations return to the front of the
queue. An entity has at most one batch in flight.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from durabletask.emulator import wire
from durabletask.emulator.entity_state import Entity, EntityLease
from durabletask.emulator.state import HubState
from durabletask.internal import orchestrator_service_pb2 as pb

if TYPE_CHECKING:
    from durabletask.emulator.dispatch import Dispatcher, WorkerStream

logger = logging.getLogger("durabletask.emulator.dispatch")


def entity_work_item(token: str, entity: Entity, lease: EntityLease) -> bytes:
    """A serialized ``WorkItem`` with an ``EntityRequest`` (``entityRequestV2``)."""
    request = pb.EntityRequest(instanceId=entity.instance_id)
    if entity.record.state is not None:
        request.entityState.value = entity.record.state
    for message in lease.messages:
        request.operationRequests.add().ParseFromString(message.event)
    return pb.WorkItem(entityRequestV2=request, completionToken=token).SerializeToString()


class EntityDispatch:
    """Entity queues and leases of every hub (one per dispatcher)."""

    def __init__(self, dispatcher: Dispatcher) -> None:
        self.dispatcher = dispatcher
        self.leases: dict[str, EntityLease] = {}

    # -- readiness

    def touch(self, hub: HubState, entity: Entity, now: float) -> None:
        """Queue the entity if a batch can go now, or set a wake-up for when one may."""
        if entity.queued or entity.deleted:
            return
        ready, next_at = entity.readiness(now)
        if ready:
            entity.queued = True
            hub.ready_entities.append(entity)
            self.dispatcher.schedule_pump()
            return
        if next_at is not None and (entity.wake_handle is None or next_at < entity.wake_at):
            if entity.wake_handle is not None:
                entity.wake_handle.cancel()
            entity.wake_at = next_at
            entity.wake_handle = asyncio.get_running_loop().call_later(
                max(0.0, next_at - now) + 0.001, self._wake, hub, entity)

    def _wake(self, hub: HubState, entity: Entity) -> None:
        entity.wake_handle = None
        self.touch(hub, entity, wire.now())

    # -- handing out

    def hand_out(self, hub: HubState, now: float) -> None:
        queue = hub.ready_entities
        skipped: list[Entity] = []
        while queue:
            streams = [s for s in hub.streams if not s.closed and s.room_for_entities()]
            if not streams:
                break
            entity = queue.popleft()
            entity.queued = False
            if entity.lease is not None or entity.deleted or not entity.readiness(now)[0]:
                self.touch(hub, entity, now)
                continue
            stream = self._pick(hub, streams, entity.name)
            if stream is None:
                skipped.append(entity)
                continue
            self._lease(hub, entity, stream, now)
        for entity in reversed(skipped):
            entity.queued = True
            queue.appendleft(entity)

    @staticmethod
    def _pick(hub: HubState, streams: list[WorkerStream], name: str) -> WorkerStream | None:
        count = len(streams)
        start = hub.round_robin % count
        for offset in range(count):
            stream = streams[(start + offset) % count]
            names = stream.filters.entities
            if names is None or name in names:
                hub.round_robin = start + offset + 1
                return stream
        return None

    def _lease(self, hub: HubState, entity: Entity, stream: WorkerStream, now: float) -> None:
        messages = entity.take_batch(now)
        if not messages:  # pragma: no cover - readiness said there was one
            return
        dispatcher = self.dispatcher
        token = dispatcher.new_token()
        lease = EntityLease(token=token, hub=hub, entity=entity, messages=messages, stream=stream,
                            deadline=now + dispatcher.lease_timeout)
        entity.lease = lease
        self.leases[token] = lease
        stream.entity_leases[token] = lease
        dispatcher.dispatched += 1
        stream.send(entity_work_item(token, entity, lease))

    # -- ending leases

    def find(self, token: str) -> EntityLease | None:
        return self.leases.get(token) if token else None

    def forget(self, lease: EntityLease) -> None:
        """End a lease without giving anything back (the batch completed)."""
        self.leases.pop(lease.token, None)
        if lease.stream is not None:
            lease.stream.entity_leases.pop(lease.token, None)
            self.dispatcher.schedule_pump()
        if lease.entity.lease is lease:
            lease.entity.lease = None

    def release(self, hub: HubState, lease: EntityLease, *, backoff: bool) -> None:
        """Give a batch back: its operations return to the front of the entity's queue."""
        from durabletask.emulator.dispatch import backoff_delay

        self.forget(lease)
        entity = lease.entity
        entity.put_back(lease.messages)
        now = wire.now()
        if backoff:
            entity.abandons += 1
            entity.not_before = now + backoff_delay(entity.abandons)
        self.touch(hub, entity, now)

    def close_stream(self, stream: WorkerStream) -> int:
        held = len(stream.entity_leases)
        for lease in list(stream.entity_leases.values()):
            self.release(stream.hub, lease, backoff=False)
        return held

    def expire(self, now: float) -> None:
        for lease in [lease for lease in self.leases.values() if lease.deadline <= now]:
            logger.warning("lease on entity %r expired; redelivering its batch", lease.entity.instance_id)
            self.release(lease.hub, lease, backoff=False)
