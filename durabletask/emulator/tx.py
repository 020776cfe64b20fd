"""A unit of change to a hub: the in-memory state and the store batch, changed in step.

Every rule of the engine runs synchronously on the event loop and makes its changes through a
``Tx``. Each primitive here updates the live state *and* records the same change as a row
operation, so memory and the durable copy cannot drift apart. When the rule is done the engine
commits the batch (one store transaction), re-evaluates the instances touched, and once the batch
is durable wakes the waiters of the instances whose record changed.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING

from durabletask.emulator.state import Activity, HubState, Instance
from durabletask.emulator.store.base import ActivityRecord, Batch, InstanceRecord, Message

if TYPE_CHECKING:
    from durabletask.emulator.engine import Engine
    from durabletask.emulator.entity_state import Entity

logger = logging.getLogger("durabletask.emulator.engine")


class Tx:
    """Changes to one hub that commit together. See the module docstring."""

    __slots__ = ("activities", "batch", "changed", "engine", "entities", "hub", "now", "touched")

    def __init__(self, engine: Engine, hub: HubState, now: float) -> None:
        self.engine = engine
        self.hub = hub
        self.now = now
        self.batch = Batch()
        self.touched: set[Instance] = set()
        """Instances whose readiness may have changed."""
        self.activities: list[Activity] = []
        """New activities to queue for dispatch."""
        self.changed: set[str] = set()
        """Ids of instances whose record changed (their waiters are woken after the commit)."""
        self.entities: list[Entity] | None = None
        """Entities whose readiness may have changed (None until a rule touches one)."""

    # -- instances

    def save(self, instance: Instance) -> None:
        """Record the current state of an instance's record."""
        instance.record.updated_at = self.now
        self.batch.put_instance(instance.record)
        self.changed.add(instance.instance_id)
        self.touched.add(instance)

    def create(self, record: InstanceRecord) -> Instance:
        """Add a new instance (the caller queues its executionStarted message)."""
        instance = Instance(record=record, history=[], children=[])
        self.hub.instances[record.instance_id] = instance
        self.batch.put_instance(record)
        self.changed.add(record.instance_id)
        self.touched.add(instance)
        return instance

    def delete(self, instance: Instance) -> None:
        """Remove an instance with its history, inbox and activities; fence its work in flight."""
        hub = self.hub
        instance.deleted = True
        if hub.instances.get(instance.instance_id) is instance:
            del hub.instances[instance.instance_id]
        for activity_id in instance.activity_ids:
            activity = hub.activities.pop(activity_id, None)
            if activity is not None:
                activity.deleted = True
        instance.activity_ids = set()
        instance.inbox = []
        if instance.lease is not None:
            self.engine.dispatcher.forget_orchestration(instance.lease)
            instance.lease = None
        if instance.wake_handle is not None:
            instance.wake_handle.cancel()
            instance.wake_handle = None
        self.batch.delete_instance(hub.name, instance.instance_id)
        self.changed.add(instance.instance_id)

    # -- history

    def append_history(self, instance: Instance, events: list[bytes]) -> None:
        history = instance.history
        if history is None:  # pragma: no cover - only open instances get new history
            raise RuntimeError(f"history of {instance.instance_id!r} is not loaded")
        self.batch.append_history(self.hub.name, instance.instance_id, len(history), events)
        history.extend(events)

    def replace_history(self, instance: Instance, events: list[bytes]) -> None:
        self.batch.clear_history(self.hub.name, instance.instance_id)
        instance.history = []
        instance.past_wire, instance.past_count = b"", 0
        self.append_history(instance, events)

    # -- inbox

    def send(self, instance: Instance, kind: str, event: bytes, *, visible_at: float | None = None,
             execution_id: str | None = None) -> Message:
        """Put a message in an instance's inbox (no checks: see ``delivery.deliver`` for the rules)."""
        message = Message(
            id=self.engine.next_message_id(), hub=self.hub.name, instance_id=instance.instance_id, kind=kind,
            event=event, visible_at=self.now if visible_at is None else visible_at, execution_id=execution_id,
        )
        instance.inbox.append(message)
        self.batch.put_message(message)
        self.touched.add(instance)
        return message

    def consume(self, messages: Iterable[Message]) -> None:
        """Delete processed (or dropped) messages from the store; they are already out of any inbox."""
        self.batch.delete_messages([m.id for m in messages])

    def drop_inbox(self, instance: Instance) -> None:
        """Delete every pending message of an instance."""
        if instance.inbox:
            self.consume(instance.inbox)
            instance.inbox = []

    def touch_entity(self, entity: Entity) -> None:
        """Re-evaluate an entity's readiness after the commit."""
        if self.entities is None:
            self.entities = [entity]
        elif entity not in self.entities:
            self.entities.append(entity)

    # -- activities

    def add_activity(self, instance: Instance, task_id: int, name: str, version: str | None,
                     request: bytes) -> Activity:
        record = ActivityRecord(
            id=self.engine.next_activity_id(), hub=self.hub.name, instance_id=instance.instance_id,
            execution_id=instance.record.execution_id, task_id=task_id, name=name, version=version, request=request,
        )
        activity = Activity(record=record)
        self.hub.activities[record.id] = activity
        instance.activity_ids.add(record.id)
        self.batch.put_activity(record)
        self.activities.append(activity)
        return activity

    def remove_activity(self, activity: Activity) -> None:
        activity.deleted = True
        self.hub.activities.pop(activity.record.id, None)
        owner = self.hub.instances.get(activity.record.instance_id)
        if owner is not None:
            owner.activity_ids.discard(activity.record.id)
        self.batch.delete_activity(activity.record.id)

    def drop_queued_activities(self, instance: Instance) -> None:
        """Delete activities of an instance that no worker is running (their results would be dropped)."""
        for activity_id in list(instance.activity_ids):
            activity = self.hub.activities.get(activity_id)
            if activity is not None and activity.lease is None:
                self.remove_activity(activity)
