"""Getting work to workers: streams, ready queues, leases, flow control, redelivery, health pings.

Each ``GetWorkItems`` call is a :class:`WorkerStream`. Ready instances and activities wait in a
hub's FIFO queues; :meth:`Dispatcher.pump` hands them out round-robin to streams that match the
item (work item filters) and have room (the worker's ``maxConcurrent*`` values). Handing out an
item creates a lease identified by the completion token. A lease ends when the worker completes
or abandons the item, when its stream closes, or when it expires; in the last three cases the item
is queued again (after a back-off if the worker abandoned it). A completion whose token no longer
names a lease is stale and has no effect.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TypeVar

from durabletask.emulator import wire
from durabletask.emulator.entity_dispatch import EntityDispatch
from durabletask.emulator.entity_state import EntityLease
from durabletask.emulator.state import (
    Activity,
    ActivityLease,
    HubState,
    Instance,
    OrchestrationLease,
)
from durabletask.emulator.store.base import Message
from durabletask.emulator.turn import turn_end
from durabletask.internal import orchestrator_service_pb2 as pb

logger = logging.getLogger("durabletask.emulator.dispatch")

ORCHESTRATION = "orchestration"
ACTIVITY = "activity"

_Item = TypeVar("_Item", Instance, Activity)

FilterTable = dict[str, frozenset[str]]


def backoff_delay(abandons: int) -> float:
    """Seconds to wait before redelivering an item its worker abandoned ``abandons`` times in a row."""
    if abandons <= 1:
        return 0.1
    return min(0.25 * 2.0 ** (abandons - 2), 30.0)


@dataclass(frozen=True, slots=True)
class WorkFilters:
    """What a stream accepts; None for a category means everything (no ``workItemFilters`` sent)."""

    orchestrations: FilterTable | None = None
    activities: FilterTable | None = None
    entities: frozenset[str] | None = None
    """Lower-cased entity names."""

    @classmethod
    def from_request(cls, request: pb.GetWorkItemsRequest) -> WorkFilters:
        if not request.HasField("workItemFilters"):
            return cls()
        filters = request.workItemFilters
        return cls(
            orchestrations={f.name: frozenset(f.versions) for f in filters.orchestrations},
            activities={f.name: frozenset(f.versions) for f in filters.activities},
            entities=frozenset(f.name.lower() for f in filters.entities),
        )

    @staticmethod
    def matches(table: FilterTable | None, name: str, version: str | None) -> bool:
        if table is None:
            return True
        versions = table.get(name)
        if versions is None:
            return False
        return not versions or (version or "") in versions


class WorkerStream:
    """One open ``GetWorkItems`` call: what it accepts, how much it may hold, what it holds."""

    def __init__(self, hub: HubState, stream_id: int, request: pb.GetWorkItemsRequest, peer: str = "") -> None:
        self.hub = hub
        self.id = stream_id
        self.peer = peer
        self.max_orchestrations = request.maxConcurrentOrchestrationWorkItems
        self.max_activities = request.maxConcurrentActivityWorkItems
        self.max_entities = request.maxConcurrentEntityWorkItems
        self.filters = WorkFilters.from_request(request)
        self.queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.orchestration_leases: dict[str, OrchestrationLease] = {}
        self.activity_leases: dict[str, ActivityLease] = {}
        self.entity_leases: dict[str, EntityLease] = {}
        self.last_sent = wire.now()
        self.closed = False
        self.sink: Callable[[bytes], bool] | None = None
        """Writes a work item to the call at once if the transport can (else it goes through ``queue``)."""

    def __repr__(self) -> str:
        return f"<stream {self.id} of hub {self.hub.name!r} from {self.peer or '?'}>"

    def room_for_orchestrations(self) -> bool:
        return self.max_orchestrations <= 0 or len(self.orchestration_leases) < self.max_orchestrations

    def room_for_activities(self) -> bool:
        return self.max_activities <= 0 or len(self.activity_leases) < self.max_activities

    def room_for_entities(self) -> bool:
        return self.max_entities <= 0 or len(self.entity_leases) < self.max_entities

    def send(self, item: bytes | None) -> None:
        self.last_sent = wire.now()
        sink = self.sink
        if item is not None and sink is not None and self.queue.empty() and sink(item):
            return  # written without waking the handler (items queued earlier would go first)
        self.queue.put_nowait(item)


class Dispatcher:
    """Queues, leases and streams of every hub (one per engine)."""

    def __init__(self, *, lease_timeout: float, discard: Callable[[HubState, list[Message]], None],
                 load_history: Callable[[HubState, Instance], None]) -> None:
        self.lease_timeout = lease_timeout
        self._discard = discard
        self._load_history = load_history
        self._boot = os.urandom(4).hex()
        self._counter = itertools.count(1)
        self._stream_ids = itertools.count(1)
        self.orchestration_leases: dict[str, OrchestrationLease] = {}
        self.activity_leases: dict[str, ActivityLease] = {}
        self.hubs: list[HubState] = []
        self._pump_scheduled = False
        self.dispatched = 0
        self.entities = EntityDispatch(self)

    def _token(self) -> str:
        return f"{self._boot}-{next(self._counter)}"

    new_token = _token

    # -- readiness

    def touch(self, hub: HubState, instance: Instance, now: float) -> None:
        """Queue the instance if it can run now, or set a wake-up for when it may."""
        if instance.queued:
            return
        ready, next_at = instance.readiness(now)
        if ready:
            instance.queued = True
            hub.ready.append(instance)
            self.schedule_pump()
            return
        if (instance.history is None and instance.inbox and not instance.deleted
                and not instance.record.is_terminal and instance.lease is None):
            self._load_history(hub, instance)
        if next_at is not None and (instance.wake_handle is None or next_at < instance.wake_at):
            if instance.wake_handle is not None:
                instance.wake_handle.cancel()
            loop = asyncio.get_running_loop()
            instance.wake_at = next_at
            instance.wake_handle = loop.call_later(max(0.0, next_at - now) + 0.001, self._wake, hub, instance)

    def _wake(self, hub: HubState, instance: Instance) -> None:
        instance.wake_handle = None
        if not instance.deleted:
            self.touch(hub, instance, wire.now())

    def queue_activity(self, hub: HubState, activity: Activity, *, front: bool = False) -> None:
        if activity.queued or activity.deleted or activity.lease is not None:
            return
        activity.queued = True
        if front:
            hub.ready_activities.appendleft(activity)
        else:
            hub.ready_activities.append(activity)
        self.schedule_pump()

    # -- handing out work

    def schedule_pump(self) -> None:
        if not self._pump_scheduled:
            self._pump_scheduled = True
            turn_end(asyncio.get_running_loop()).add(self.pump)

    def pump(self) -> None:
        self._pump_scheduled = False
        for hub in self.hubs:
            if hub.streams:
                now = wire.now()
                if hub.ready:
                    self._hand_out(hub, hub.ready, ORCHESTRATION, now)
                if hub.ready_activities:
                    self._hand_out(hub, hub.ready_activities, ACTIVITY, now)
                if hub.ready_entities:
                    self.entities.hand_out(hub, now)

    def _hand_out(self, hub: HubState, queue: deque[_Item], kind: str, now: float) -> None:
        skipped: list[_Item] = []
        while queue:
            streams = [s for s in hub.streams if not s.closed and (
                s.room_for_orchestrations() if kind == ORCHESTRATION else s.room_for_activities())]
            if not streams:
                break
            item = queue.popleft()
            item.queued = False
            if isinstance(item, Instance):
                name, version = item.record.name, item.record.version
                if item.lease is not None or item.deleted or not item.readiness(now)[0]:
                    self.touch(hub, item, now)
                    continue
            else:
                if item.lease is not None or item.deleted:
                    continue
                if item.not_before > now:
                    skipped.append(item)
                    continue
                name, version = item.record.name, item.record.version
            stream = self._pick(hub, streams, kind, name, version)
            if stream is None:
                skipped.append(item)
                continue
            if isinstance(item, Instance):
                self._lease_orchestration(hub, item, stream, now)
            else:
                self._lease_activity(hub, item, stream, now)
        for item in reversed(skipped):
            item.queued = True
            queue.appendleft(item)
        if skipped and kind == ACTIVITY:
            # Activities in back-off: look again when the first may go.
            soonest = min((a.not_before for a in skipped if isinstance(a, Activity)), default=0.0)
            if soonest > now:
                asyncio.get_running_loop().call_later(soonest - now + 0.001, self.schedule_pump)

    def _pick(self, hub: HubState, streams: list[WorkerStream], kind: str, name: str,
              version: str | None) -> WorkerStream | None:
        count = len(streams)
        start = hub.round_robin % count
        for offset in range(count):
            stream = streams[(start + offset) % count]
            table = stream.filters.orchestrations if kind == ORCHESTRATION else stream.filters.activities
            if WorkFilters.matches(table, name, version):
                hub.round_robin = start + offset + 1
                return stream
        return None

    def _lease_orchestration(self, hub: HubState, instance: Instance, stream: WorkerStream, now: float) -> None:
        messages, stale = instance.take_batch(now)
        if stale:
            self._discard(hub, stale)
        if not messages:  # never dispatch an empty newEvents
            self.touch(hub, instance, now)
            return
        record = instance.record
        new_events = [wire.orchestrator_started(now)]
        new_events.extend(m.event for m in messages if m.event)
        token = self._token()
        lease = OrchestrationLease(token=token, hub=hub, instance=instance, execution_id=record.execution_id,
                                   messages=messages, new_events=new_events, stream=stream,
                                   deadline=now + self.lease_timeout)
        instance.lease = lease
        self.orchestration_leases[token] = lease
        stream.orchestration_leases[token] = lease
        self.dispatched += 1
        stream.send(wire.orchestrator_work_item(
            token, record.instance_id, record.execution_id, instance.encoded_history(), new_events,
            instance.trace_context))

    def _lease_activity(self, activity_hub: HubState, activity: Activity, stream: WorkerStream, now: float) -> None:
        token = self._token()
        lease = ActivityLease(token=token, hub=activity_hub, activity=activity, stream=stream,
                              deadline=now + self.lease_timeout)
        activity.lease = lease
        self.activity_leases[token] = lease
        stream.activity_leases[token] = lease
        self.dispatched += 1
        stream.send(wire.activity_work_item(token, activity.record.request))

    # -- ending leases

    def find_orchestration(self, token: str, instance_id: str) -> OrchestrationLease | None:
        if token:
            return self.orchestration_leases.get(token)
        # Workers that send no token (the Go SDK): the instance's lease, if it has one.
        return next((lease for lease in self.orchestration_leases.values()
                     if lease.instance.instance_id == instance_id), None)

    def find_activity(self, token: str, instance_id: str, task_id: int) -> ActivityLease | None:
        if token:
            return self.activity_leases.get(token)
        matches = [lease for lease in self.activity_leases.values()
                   if lease.activity.record.instance_id == instance_id and lease.activity.record.task_id == task_id]
        return matches[0] if len(matches) == 1 else None

    def forget_orchestration(self, lease: OrchestrationLease) -> None:
        """End a lease without giving anything back (it completed, or its instance is gone)."""
        self.orchestration_leases.pop(lease.token, None)
        if lease.stream is not None:
            lease.stream.orchestration_leases.pop(lease.token, None)
            self.schedule_pump()
        if lease.instance.lease is lease:
            lease.instance.lease = None

    def forget_activity(self, lease: ActivityLease) -> None:
        self.activity_leases.pop(lease.token, None)
        if lease.stream is not None:
            lease.stream.activity_leases.pop(lease.token, None)
            self.schedule_pump()
        if lease.activity.lease is lease:
            lease.activity.lease = None

    def release_orchestration(self, hub: HubState, lease: OrchestrationLease, *, backoff: bool) -> None:
        """Give an orchestrator work item back: its messages return to the front of the inbox."""
        self.forget_orchestration(lease)
        instance = lease.instance
        if instance.deleted:
            return
        instance.put_back(lease.messages)
        now = wire.now()
        if backoff:
            instance.abandons += 1
            instance.not_before = now + backoff_delay(instance.abandons)
        self.touch(hub, instance, now)

    def release_activity(self, hub: HubState, lease: ActivityLease, *, backoff: bool) -> None:
        self.forget_activity(lease)
        activity = lease.activity
        if backoff:
            activity.abandons += 1
            activity.not_before = wire.now() + backoff_delay(activity.abandons)
        self.queue_activity(hub, activity, front=True)

    # -- streams

    def open_stream(self, hub: HubState, request: pb.GetWorkItemsRequest, peer: str = "") -> WorkerStream:
        stream = WorkerStream(hub, next(self._stream_ids), request, peer)
        hub.streams.append(stream)
        logger.info("worker connected: %r (max %s orchestrations, %s activities)", stream,
                    stream.max_orchestrations or "unlimited", stream.max_activities or "unlimited")
        self.schedule_pump()
        return stream

    def close_stream(self, stream: WorkerStream) -> None:
        """The stream ended: everything it held goes back to the queues at once."""
        if stream.closed:
            return
        stream.closed = True
        hub = stream.hub
        if stream in hub.streams:
            hub.streams.remove(stream)
        held = len(stream.orchestration_leases) + len(stream.activity_leases)
        for orchestration in list(stream.orchestration_leases.values()):
            self.release_orchestration(hub, orchestration, backoff=False)
        for activity in list(stream.activity_leases.values()):
            self.release_activity(hub, activity, backoff=False)
        held += self.entities.close_stream(stream)
        logger.info("worker disconnected: %r; %d work item(s) it held are queued again", stream, held)

    def expire(self, now: float) -> None:
        """Take back work items whose lease ran out (a worker that hangs without disconnecting)."""
        for orchestration in [o for o in self.orchestration_leases.values() if o.deadline <= now]:
            logger.warning("lease on orchestration %r expired; redelivering", orchestration.instance.instance_id)
            self.release_orchestration(orchestration.hub, orchestration, backoff=False)
        for activity in [a for a in self.activity_leases.values() if a.deadline <= now]:
            logger.warning("lease on activity %r of %r expired; redelivering", activity.activity.record.name,
                           activity.activity.record.instance_id)
            self.release_activity(activity.hub, activity, backoff=False)
        self.entities.expire(now)

    def ping(self, interval: float, now: float) -> None:
        """Send a health ping on every stream that has been quiet for ``interval`` seconds."""
        for hub in self.hubs:
            for stream in hub.streams:
                if now - stream.last_sent >= interval:
                    stream.send(wire.HEALTH_PING)

    def close_all(self, streams: Iterable[WorkerStream]) -> None:
        for stream in list(streams):
            stream.send(None)
