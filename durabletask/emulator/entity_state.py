"""The engine's live view of durable entities: identity, queue, lock, and which operations may run now.

An entity is ``@name@key``. Its queue holds every message sent to it (operations, lock requests,
unlocks) in arrival order; a scheduled signal joins the queue when it is due. Plain data and pure
decisions only, like ``state.py``: the rules that change entities are in ``entities.py``, handing
batches to workers is ``entity_dispatch.py``.

Which operations a batch may take (the lock rules):

* an unlocked entity runs its queue from the front and stops at the first lock request or unlock,
  which the engine handles itself once the operations before it are done;
* a locked entity runs only the operations of the orchestration that holds the lock; everything
  else stays queued, in order, until that orchestration unlocks it (or finishes).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from durabletask.emulator import wire
from durabletask.emulator.errors import InvalidArgument
from durabletask.emulator.store.base import EntityRecord, Message

if TYPE_CHECKING:
    from durabletask.emulator.dispatch import WorkerStream
    from durabletask.emulator.state import HubState

# Message kinds of an entity's queue (the HistoryEvent oneof names).
SIGNALED = "entityOperationSignaled"
CALLED = "entityOperationCalled"
LOCK_REQUESTED = "entityLockRequested"
UNLOCK_SENT = "entityUnlockSent"
OPERATIONS = frozenset({SIGNALED, CALLED})

MAX_BATCH = 100
"""The most operations one entity work item carries."""


def parse_entity_id(instance_id: str, what: str = "entity instance ID") -> tuple[str, str]:
    """Split ``@name@key`` into (name, key); raise ``InvalidArgument`` naming the problem."""
    if not instance_id.startswith("@"):
        raise InvalidArgument(f"{what} '{instance_id}' is not an entity ID; entity IDs look like '@name@key'")
    name, sep, key = instance_id[1:].partition("@")
    if not sep or not name:
        raise InvalidArgument(f"{what} '{instance_id}' is malformed; entity IDs look like '@name@key' "
                              "(a non-empty name without '@', then the key)")
    return name, key


def entity_name(instance_id: str) -> str:
    """The (lower-cased) name segment of a well-formed entity ID, as work item filters match it."""
    return instance_id[1:].partition("@")[0].lower()


@dataclass(eq=False, slots=True)
class EntityLease:
    """An entity work item handed to a worker and not yet completed: one batch of operations."""

    token: str
    hub: HubState
    entity: Entity
    messages: list[Message]
    """The operations sent, in order."""
    stream: WorkerStream | None
    deadline: float


@dataclass(eq=False, slots=True)
class Entity:
    """One entity: its record (state, lock), queue, and the batch in flight."""

    record: EntityRecord
    stored: bool = False
    """Whether the store has a row for it (it has state or a lock)."""
    queue: list[Message] = field(default_factory=list)
    """Pending messages ordered by id; the operations of the batch in flight are in its lease."""
    senders: dict[int, str] = field(default_factory=dict)
    """Message id -> the orchestration that sent it ('' for signals), for the lock rules."""
    lease: EntityLease | None = None
    queued: bool = False
    not_before: float = 0.0
    """Back-off after an abandon or a failed batch: not dispatched before this time."""
    abandons: int = 0
    wake_at: float = 0.0
    wake_handle: asyncio.TimerHandle | None = None
    deleted: bool = False

    @property
    def instance_id(self) -> str:
        return self.record.instance_id

    @property
    def name(self) -> str:
        return entity_name(self.record.instance_id)

    def backlog(self, now: float) -> int:
        """Operations and lock messages waiting, including the batch in flight; scheduled signals
        that are not due yet have not joined the queue and do not count."""
        due = sum(1 for message in self.queue if message.visible_at <= now)
        return due + (len(self.lease.messages) if self.lease is not None else 0)

    @property
    def empty(self) -> bool:
        """No state, no lock, nothing queued or running: the entity does not exist any more."""
        return (self.record.state is None and self.record.locked_by is None and not self.queue
                and self.lease is None)

    def add(self, message: Message, sender: str) -> None:
        self.senders[message.id] = sender
        if self.queue and self.queue[-1].id > message.id:  # pragma: no cover - ids only grow
            self.queue.append(message)
            self.queue.sort(key=_message_id)
        else:
            self.queue.append(message)

    def remove(self, message: Message) -> None:
        self.queue.remove(message)
        self.senders.pop(message.id, None)

    def sender(self, message: Message) -> str:
        return self.senders.get(message.id, "")

    def select(self, now: float, limit: int = MAX_BATCH) -> list[Message]:
        """The operations a batch may take now, in order (see the module docstring)."""
        owner = self.record.locked_by
        batch: list[Message] = []
        for message in self.queue:
            if message.visible_at > now:
                continue  # a scheduled signal that is not due yet has not joined the queue
            if owner is not None and self.senders.get(message.id, "") != owner:
                continue  # deferred until the lock is released
            if message.kind not in OPERATIONS:
                break  # a lock request or unlock: the engine handles it once the operations before it ran
            batch.append(message)
            if len(batch) >= limit:
                break
        return batch

    def readiness(self, now: float) -> tuple[bool, float | None]:
        """Whether a batch can be dispatched now, and else when that may change by itself."""
        if self.lease is not None or self.deleted or not self.queue:
            return False, None
        next_at: float | None = None
        for message in self.queue:
            if message.visible_at > now and (next_at is None or message.visible_at < next_at):
                next_at = message.visible_at
        ready = bool(self.select(now, 1))
        if ready and self.not_before > now:
            return False, self.not_before
        return ready, next_at

    def take_batch(self, now: float) -> list[Message]:
        batch = self.select(now)
        if batch:
            taken = {m.id for m in batch}
            self.queue = [m for m in self.queue if m.id not in taken]
        return batch

    def put_back(self, messages: list[Message]) -> None:
        """Return operations of a batch to the front of the queue (abandoned, or not executed)."""
        if messages:
            self.queue = sorted(messages + self.queue, key=_message_id)


def new_entity(hub: str, instance_id: str, now: float) -> Entity:
    return Entity(record=EntityRecord(hub=hub, instance_id=instance_id, state=None, last_modified=now))


def lock_sender(event: bytes) -> str:
    """The orchestration named by an entity message's ``parentInstanceId`` ('' for signals)."""
    parsed = wire.parse_event(event)
    kind = parsed.WhichOneof("eventType")
    if kind is None or kind == SIGNALED:
        return ""
    inner = getattr(parsed, kind)
    return str(inner.parentInstanceId.value) if inner.HasField("parentInstanceId") else ""


def _message_id(message: Message) -> int:
    return message.id


def load_entities(hub: HubState, rows: list[EntityRecord], messages: list[Message]) -> None:
    """Rebuild a hub's entities from storage: the rows, and the queued messages of ``@`` ids."""
    for record in rows:
        hub.entities[record.instance_id] = Entity(record=record, stored=True)
        if record.locked_by is not None:
            hub.lock_owners.setdefault(record.locked_by, set()).add(record.instance_id)
    for message in messages:
        if not message.instance_id.startswith("@"):
            continue
        entity = hub.entities.get(message.instance_id)
        if entity is None:
            entity = new_entity(hub.name, message.instance_id, message.visible_at)
            hub.entities[message.instance_id] = entity
        entity.add(message, lock_sender(message.event))
