"""The engine: one in-memory, authoritative view per task hub, persisted through a store.

Every request runs as a synchronous rule on the event loop (``commands``, ``episode``,
``rewind``) that changes the hub through a :class:`~durabletask.emulator.tx.Tx`; the engine then
commits the transaction's batch, re-evaluates what became ready, and answers once the batch is
durable. Because rules never await halfway, no two of them interleave, and the durable state is
always a prefix of the changes the engine made. Work reaches workers through the
:class:`~durabletask.emulator.dispatch.Dispatcher`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Callable, Sequence
from typing import Any, TypeVar, cast

from durabletask.emulator import commands, entities, entity_queries, episode, queries, rewind, wire
from durabletask.emulator.dispatch import Dispatcher, WorkerStream
from durabletask.emulator.entity_state import load_entities
from durabletask.emulator.errors import EmulatorError, InvalidArgument, NotFound, Unavailable
from durabletask.emulator.state import Activity, HubState, Instance
from durabletask.emulator.store.base import Message, Store, history_in_memory
from durabletask.emulator.store.runner import Durable, StoreRunner
from durabletask.emulator.tx import Tx
from durabletask.emulator.waits import InstanceWait
from durabletask.internal import orchestrator_service_pb2 as pb

logger = logging.getLogger("durabletask.emulator.engine")

T = TypeVar("T")

DEFAULT_LEASE_TIMEOUT = 600.0
DEFAULT_PING_INTERVAL = 30.0


def normalize_hub(name: str) -> str:
    return name.strip().lower()


class Engine:
    """The emulator's rules and state. All methods run on one event loop."""

    def __init__(self, store: Store, hubs: Sequence[str] = ("default",), *,
                 lease_timeout: float = DEFAULT_LEASE_TIMEOUT, ping_interval: float = DEFAULT_PING_INTERVAL,
                 rewind_mode: str = rewind.SERVER) -> None:
        names = [normalize_hub(h) for h in hubs if h.strip()]
        if not names:
            raise ValueError("at least one task hub name is required")
        if rewind_mode not in rewind.MODES:
            raise ValueError(f"rewind_mode must be one of {rewind.MODES}, not {rewind_mode!r}")
        self.hub_names = list(dict.fromkeys(names))
        self.runner = StoreRunner(store)
        self.rewind_mode = rewind_mode
        self.ping_interval = ping_interval
        self.hubs: dict[str, HubState] = {}
        self.dispatcher = Dispatcher(lease_timeout=lease_timeout, discard=self._discard,
                                     load_history=self._load_history)
        self._message_ids = itertools.count(1)
        self._activity_ids = itertools.count(1)
        self._tasks: list[asyncio.Task[None]] = []
        self._loading: set[Instance] = set()
        self.broken: str | None = None

    # -- lifecycle

    async def start(self) -> None:
        await self.runner.start()
        max_message, max_activity = await self.runner.call(self.runner.store.max_ids)
        self._message_ids = itertools.count(max_message + 1)
        self._activity_ids = itertools.count(max_activity + 1)
        now = wire.now()
        for name in self.hub_names:
            snapshot = await self.runner.call(self.runner.store.load, name)
            hub = HubState(name)
            for record in snapshot.instances:
                history = snapshot.histories.get(record.instance_id)
                hub.instances[record.instance_id] = Instance(
                    record=record, history=history if history_in_memory(record.status) else None)
            for message in snapshot.messages:
                owner = hub.instances.get(message.instance_id)
                if owner is not None:
                    owner.inbox.append(message)
            for activity_record in snapshot.activities:
                activity = Activity(record=activity_record)
                hub.activities[activity_record.id] = activity
                owner = hub.instances.get(activity_record.instance_id)
                if owner is not None:
                    owner.activity_ids.add(activity_record.id)
            load_entities(hub, snapshot.entities, snapshot.messages)
            self.hubs[name] = hub
            self.dispatcher.hubs.append(hub)
            for instance in hub.instances.values():
                self.dispatcher.touch(hub, instance, now)
            for activity in hub.activities.values():
                self.dispatcher.queue_activity(hub, activity)
            for entity in hub.entities.values():
                self.dispatcher.entities.touch(hub, entity, now)
            logger.info("task hub %r: %d instance(s), %d pending message(s), %d activit(ies) loaded", name,
                        len(hub.instances), len(snapshot.messages), len(hub.activities))
        self._tasks.append(asyncio.create_task(self._housekeeping()))

    async def stop(self) -> None:
        for hub in self.hubs.values():
            self.dispatcher.close_all(hub.streams)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        await self.runner.flush()
        await self.runner.stop()

    async def _housekeeping(self) -> None:
        tick = max(0.05, min(1.0, self.ping_interval / 3))
        while True:
            await asyncio.sleep(tick)
            now = wire.now()
            try:
                self.dispatcher.ping(self.ping_interval, now)
                self.dispatcher.expire(now)
            except Exception:  # pragma: no cover - keep the loop alive whatever happens
                logger.exception("housekeeping failed")

    # -- helpers

    def hub(self, name: str | None) -> HubState:
        """The hub a request names (``None``: no ``taskhub`` header, meaning ``default``)."""
        if self.broken is not None:
            raise Unavailable(f"the emulator's storage failed ({self.broken}); restart the emulator")
        key = normalize_hub(name) if name else "default"
        hub = self.hubs.get(key)
        if hub is None:
            configured = ", ".join(self.hub_names)
            asked = f"task hub '{name}'" if name else "no 'taskhub' header, so task hub 'default'"
            raise NotFound(
                f"{asked} is not served by this emulator (configured: {configured}); set the 'taskhub' metadata "
                "to one of those, or add the hub with --taskhubs or DTS_TASK_HUB_NAMES (comma-separated)")
        return hub

    def next_message_id(self) -> int:
        return next(self._message_ids)

    def next_activity_id(self) -> int:
        return next(self._activity_ids)

    async def _run(self, hub: HubState, rule: Callable[..., T], *args: Any) -> T:
        """Run a rule in a transaction, commit it and wait until it is durable."""
        result, durable = self._start(hub, rule, *args)
        await durable
        return result

    def _start(self, hub: HubState, rule: Callable[..., T], *args: Any) -> tuple[T, Durable]:
        """Run a rule in a transaction and commit it; the Durable settles once the changes are durable.

        A rule that breaks an emulator rule raises before changing anything. One that fails half-way
        gets a future that fails once the hub has been reloaded from storage.
        """
        tx = Tx(self, hub, wire.now())
        try:
            result = rule(tx, *args)
        except EmulatorError as error:
            if tx.batch or tx.touched:  # pragma: no cover - rules raise before they change anything
                return cast(T, None), Durable.of(self._recover_and_raise(hub, error))
            raise
        except Exception as error:
            logger.exception("a rule failed half-way; reloading task hub %r from storage", hub.name)
            return cast(T, None), Durable.of(self._recover_and_raise(hub, error))
        return result, self.commit(tx)

    async def _recover_and_raise(self, hub: HubState, error: Exception) -> None:
        await self._recover(hub)
        raise error

    def commit(self, tx: Tx) -> Durable:
        """Make a transaction's changes take effect; the result settles once they are durable."""
        hub = tx.hub
        dispatcher = self.dispatcher
        for instance in tx.touched:
            if instance.history is not None and not history_in_memory(instance.record.status):
                instance.history = None  # the store has it; read back on demand
                instance.children = None
                instance.past_wire, instance.past_count = b"", 0
            dispatcher.touch(hub, instance, tx.now)
        for activity in tx.activities:
            dispatcher.queue_activity(hub, activity)
        if tx.entities:
            for entity in tx.entities:
                dispatcher.entities.touch(hub, entity, tx.now)
        if not tx.batch:
            nothing = Durable()
            nothing.settle()
            self._notify(hub, tx.changed)
            return nothing
        durable = self.runner.submit(tx.batch)
        changed = tx.changed
        durable.add_done_callback(lambda done: self._committed(done, hub, changed))
        return durable

    def _committed(self, durable: Durable, hub: HubState, changed: set[str]) -> None:
        error = durable.exception()
        if error is not None:
            self._fail(error)
        else:
            self._notify(hub, changed)

    def _fail(self, error: BaseException) -> None:
        if self.broken is None:
            self.broken = str(error) or type(error).__name__
            logger.critical("storage failed: %s. The emulator stops accepting requests; restart it to continue "
                            "from the last committed state", error)
            for hub in self.hubs.values():
                self.dispatcher.close_all(hub.streams)

    async def _recover(self, hub: HubState) -> None:
        """Throw away the hub's memory and reload it from storage (after a rule failed half-way)."""
        await self.runner.flush()
        self.dispatcher.close_all(hub.streams)
        for stream in list(hub.streams):
            self.dispatcher.close_stream(stream)
        snapshot = await self.runner.call(self.runner.store.load, hub.name)
        for stale in hub.entities.values():  # pending wake-ups must not bring the old objects back
            stale.deleted = True
        hub.reset()
        for record in snapshot.instances:
            hub.instances[record.instance_id] = Instance(record=record,
                                                         history=snapshot.histories.get(record.instance_id))
        for message in snapshot.messages:
            if message.instance_id in hub.instances:
                hub.instances[message.instance_id].inbox.append(message)
        for activity_record in snapshot.activities:
            hub.activities[activity_record.id] = Activity(record=activity_record)
            if activity_record.instance_id in hub.instances:
                hub.instances[activity_record.instance_id].activity_ids.add(activity_record.id)
        load_entities(hub, snapshot.entities, snapshot.messages)
        now = wire.now()
        for instance in hub.instances.values():
            self.dispatcher.touch(hub, instance, now)
        for activity in hub.activities.values():
            self.dispatcher.queue_activity(hub, activity)
        for entity in hub.entities.values():
            self.dispatcher.entities.touch(hub, entity, now)

    def _discard(self, hub: HubState, messages: list[Message]) -> None:
        tx = Tx(self, hub, wire.now())
        tx.consume(messages)
        self.commit(tx)

    def _load_history(self, hub: HubState, instance: Instance) -> None:
        if instance in self._loading:
            return
        self._loading.add(instance)

        async def load() -> None:
            try:
                history = await self.runner.call(self.runner.store.read_history, hub.name, instance.instance_id)
                if instance.history is None and not instance.deleted:
                    instance.history = history
                    self.dispatcher.touch(hub, instance, wire.now())
            except Exception as error:  # pragma: no cover - storage failure
                self._fail(error)
            finally:
                self._loading.discard(instance)

        self._tasks.append(asyncio.create_task(load()))
        self._tasks = [t for t in self._tasks if not t.done()]

    # -- waiting for instances

    def _notify(self, hub: HubState, changed: set[str]) -> None:
        if not hub.waiters:
            return
        for instance_id in changed:
            waiters = hub.waiters.get(instance_id)
            if not waiters:
                continue
            instance = hub.instances.get(instance_id)
            record = instance.record if instance is not None else None
            reached = [waiter for waiter in waiters if waiter.predicate(record)]
            if not reached:
                continue
            remaining = [waiter for waiter in waiters if waiter not in reached]
            if remaining:
                hub.waiters[instance_id] = remaining
            else:
                del hub.waiters[instance_id]
            for waiter in reached:
                waiter.settle(record)

    def wait_now(self, hub: HubState, instance_id: str, *, started: bool, timeout: float | None) -> InstanceWait:
        """A wait, without a task, until the instance has started (or finished); see `InstanceWait`."""
        return InstanceWait(self.runner, hub, instance_id, until_started=started, timeout=timeout)

    # -- client requests

    async def start_instance(self, hub: HubState, request: pb.CreateInstanceRequest) -> str:
        return await self._run(hub, commands.start_instance, request)

    def start_instance_now(self, hub: HubState, request: pb.CreateInstanceRequest) -> tuple[str, Durable]:
        """`start_instance` without a task: the instance ID now, and the Durable that settles once it is stored."""
        return self._start(hub, commands.start_instance, request)

    async def raise_event(self, hub: HubState, request: pb.RaiseEventRequest) -> None:
        await self._run(hub, commands.raise_event, request)

    async def terminate(self, hub: HubState, request: pb.TerminateRequest) -> None:
        await self._run(hub, commands.terminate, request)

    async def suspend(self, hub: HubState, request: pb.SuspendRequest) -> None:
        await self._run(hub, commands.suspend, request)

    async def resume(self, hub: HubState, request: pb.ResumeRequest) -> None:
        await self._run(hub, commands.resume, request)

    async def restart(self, hub: HubState, request: pb.RestartInstanceRequest) -> str:
        return await self._run(hub, commands.restart, request)

    async def rewind(self, hub: HubState, request: pb.RewindInstanceRequest) -> None:
        await self._run(hub, commands.rewind_instance, request)

    async def purge(self, hub: HubState, request: pb.PurgeInstancesRequest) -> int:
        roots, _ = commands.purge_targets(hub, request)
        targets = roots
        if request.recursive:
            while True:
                targets, unknown = commands.with_descendants(hub, roots)
                if not unknown:
                    break
                for instance in unknown:  # read their histories to find their children
                    events = await self.runner.call(self.runner.store.read_history, hub.name, instance.instance_id)
                    if instance.children is None and instance.history is None:
                        instance.children = [
                            e.subOrchestrationInstanceCreated.instanceId
                            for e in map(wire.parse_event, events) if e.HasField("subOrchestrationInstanceCreated")
                        ]
        strict = request.recursive and request.WhichOneof("request") == "instanceId"
        return await self._run(hub, lambda tx: commands.purge(tx, targets, strict=strict))

    # -- reads

    async def get_instance(self, hub: HubState, instance_id: str, *,
                           include_payloads: bool) -> pb.OrchestrationState | None:
        await self.runner.flush()
        instance = hub.instances.get(instance_id)
        if instance is None:
            return None
        return queries.orchestration_state(instance.record, include_payloads=include_payloads)

    async def query_instances(self, hub: HubState, query: pb.InstanceQuery) -> pb.QueryInstancesResponse:
        await self.runner.flush()
        return queries.query_instances(hub, query)

    async def list_instance_ids(self, hub: HubState, request: pb.ListInstanceIdsRequest) -> pb.ListInstanceIdsResponse:
        await self.runner.flush()
        return queries.list_instance_ids(hub, request)

    async def history(self, hub: HubState, instance_id: str, execution_id: str | None) -> list[bytes]:
        await self.runner.flush()
        instance = commands.get(hub, instance_id)
        if execution_id and execution_id != instance.record.execution_id:
            raise NotFound(
                f"instance '{instance_id}' has no execution '{execution_id}' (the emulator keeps the history of the "
                f"current execution, '{instance.record.execution_id}', only)")
        if instance.history is not None:
            return list(instance.history)
        return await self.runner.call(self.runner.store.read_history, hub.name, instance_id)

    # -- workers

    def open_stream(self, hub: HubState, request: pb.GetWorkItemsRequest, peer: str = "") -> WorkerStream:
        return self.dispatcher.open_stream(hub, request, peer)

    def close_stream(self, stream: WorkerStream) -> None:
        self.dispatcher.close_stream(stream)

    async def complete_orchestration(self, hub: HubState, response: pb.OrchestratorResponse) -> None:
        durable = self.complete_orchestration_now(hub, response)
        if durable is not None:
            await durable

    def complete_orchestration_now(self, hub: HubState,
                                   response: pb.OrchestratorResponse) -> Durable | None:
        """Apply an orchestrator's response; the result (if any) settles once the episode is durable."""
        lease = self.dispatcher.find_orchestration(response.completionToken, response.instanceId)
        if lease is None or lease.hub is not hub:
            logger.info("ignored a completion for instance %r: its work item is no longer leased (token %r)",
                        response.instanceId, response.completionToken)
            return None
        chunked = response.isPartial or lease.chunk_count > 0
        if response.HasField("chunkIndex") and response.chunkIndex.value != lease.chunk_count:
            raise InvalidArgument(f"expected chunk {lease.chunk_count} of the completion for "
                                  f"'{lease.instance.instance_id}', got chunk {response.chunkIndex.value}")
        if lease.chunk_count == 0 and response.HasField("numEventsProcessed"):
            lease.num_events_processed = response.numEventsProcessed.value
        if response.isPartial:
            lease.chunks.extend(response.actions)
            lease.chunk_count += 1
            lease.deadline = wire.now() + self.dispatcher.lease_timeout
            return None
        actions = lease.chunks + list(response.actions) if chunked else list(response.actions)
        if response.requiresHistory:
            self.dispatcher.release_orchestration(hub, lease, backoff=False)
            return None
        try:
            episode.validate(response.instanceId, lease, actions)
        except InvalidArgument:
            self.dispatcher.release_orchestration(hub, lease, backoff=True)
            raise
        self.dispatcher.forget_orchestration(lease)
        lease.instance.abandons = 0
        if response.HasField("orchestrationTraceContext"):
            lease.instance.trace_context = response.orchestrationTraceContext.SerializeToString()
        custom_status = response.customStatus.value if response.HasField("customStatus") else None
        return self._start(hub, episode.apply_episode, lease, actions, custom_status, lease.num_events_processed)[1]

    async def complete_activity(self, hub: HubState, response: pb.ActivityResponse) -> None:
        durable = self.complete_activity_now(hub, response)
        if durable is not None:
            await durable

    def complete_activity_now(self, hub: HubState, response: pb.ActivityResponse) -> Durable | None:
        """Apply an activity's result; the result (if any) settles once it is durable."""
        lease = self.dispatcher.find_activity(response.completionToken, response.instanceId, response.taskId)
        if lease is None or lease.hub is not hub:
            logger.info("ignored a result for activity %d of %r: its work item is no longer leased (token %r)",
                        response.taskId, response.instanceId, response.completionToken)
            return None
        self.dispatcher.forget_activity(lease)
        return self._start(hub, episode.apply_activity_result, lease, response)[1]

    def abandon_orchestration(self, hub: HubState, token: str) -> None:
        lease = self.dispatcher.find_orchestration(token, "") if token else None
        if lease is not None and lease.hub is hub:
            self.dispatcher.release_orchestration(hub, lease, backoff=True)

    def abandon_activity(self, hub: HubState, token: str) -> None:
        lease = self.dispatcher.find_activity(token, "", 0) if token else None
        if lease is not None and lease.hub is hub:
            self.dispatcher.release_activity(hub, lease, backoff=True)

    async def skip_graceful_terminations(self, hub: HubState,
                                         request: pb.SkipGracefulOrchestrationTerminationsRequest) -> list[str]:
        return await self._run(hub, commands.skip_graceful_terminations, request)

    # -- entities

    async def signal_entity(self, hub: HubState, request: pb.SignalEntityRequest) -> None:
        await self._run(hub, entities.signal_entity, request)

    async def get_entity(self, hub: HubState, request: pb.GetEntityRequest) -> pb.GetEntityResponse:
        await self.runner.flush()
        return entity_queries.get_entity(hub, request)

    async def query_entities(self, hub: HubState, query: pb.EntityQuery) -> pb.QueryEntitiesResponse:
        await self.runner.flush()
        return entity_queries.query_entities(hub, query)

    async def clean_entity_storage(self, hub: HubState,
                                   request: pb.CleanEntityStorageRequest) -> pb.CleanEntityStorageResponse:
        removed, released = await self._run(hub, entities.clean_storage, request)
        return pb.CleanEntityStorageResponse(emptyEntitiesRemoved=removed, orphanedLocksReleased=released)

    async def complete_entity(self, hub: HubState, result: pb.EntityBatchResult) -> None:
        dispatch = self.dispatcher.entities
        lease = dispatch.find(result.completionToken)
        if lease is None or lease.hub is not hub:
            logger.info("ignored an entity batch result: its work item is no longer leased (token %r)",
                        result.completionToken)
            return
        if result.HasField("failureDetails"):
            # The worker could not run the batch at all: nothing changes, the batch runs again later.
            logger.warning("the batch for entity %r failed in the worker (%s: %s); retrying it later",
                           lease.entity.instance_id, result.failureDetails.errorType,
                           result.failureDetails.errorMessage)
            dispatch.release(hub, lease, backoff=True)
            return
        if result.requiresState:
            dispatch.release(hub, lease, backoff=False)
            return
        try:
            entities.validate_result(lease, result)
        except InvalidArgument:
            dispatch.release(hub, lease, backoff=True)
            raise
        dispatch.forget(lease)
        await self._run(hub, entities.apply_batch, lease, result)

    def abandon_entity(self, hub: HubState, token: str) -> None:
        lease = self.dispatcher.entities.find(token)
        if lease is not None and lease.hub is hub:
            self.dispatcher.entities.release(hub, lease, backoff=True)
