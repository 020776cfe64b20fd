"""The storage interface of the emulator: records, write batches and the ``Store`` contract.

The engine keeps the live state of every task hub in memory and is the only writer. A store is
its durable copy: the engine loads a hub once at start-up (:meth:`Store.load`) and from then on
hands every state change over as a :class:`Batch`, an ordered list of row operations that the
store applies atomically (all or nothing). Besides that, a store only has to read back the history
of an instance whose history the engine dropped from memory (finished instances).

Keeping the interface this small keeps the rules out of the stores: a store never decides
anything, so the SQLite and the memory implementations cannot disagree on behaviour, and another
backend is a matter of a few more row types.

Every method of a store is called from one thread at a time (see
:mod:`durabletask.emulator.store.runner` for which).
"""

from __future__ import annotations

import abc
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Union

# Runtime status values of ``OrchestrationStatus`` (kept here as ints so that stores need no proto).
RUNNING = 0
COMPLETED = 1
CONTINUED_AS_NEW = 2
FAILED = 3
CANCELED = 4
TERMINATED = 5
PENDING = 6
SUSPENDED = 7

TERMINAL_STATUSES = frozenset({COMPLETED, FAILED, CANCELED, TERMINATED})


def history_in_memory(status: int) -> bool:
    """Whether the engine keeps an instance's history in memory: open instances, and failed ones
    (a rewind rewrites their history)."""
    return status not in TERMINAL_STATUSES or status == FAILED


@dataclass(slots=True)
class InstanceRecord:
    """The metadata row of one orchestration instance (its current execution)."""

    hub: str
    instance_id: str
    execution_id: str
    name: str
    version: str | None
    status: int
    created_at: float
    """Seconds since the epoch, as are all times in the store."""
    updated_at: float
    completed_at: float | None = None
    scheduled_start_at: float | None = None
    input: str | None = None
    output: str | None = None
    custom_status: str | None = None
    failure: bytes | None = None
    """A serialized ``TaskFailureDetails`` (kept as bytes so that nested details survive intact)."""
    parent_instance_id: str | None = None
    parent_execution_id: str | None = None
    parent_task_id: int | None = None
    """The parent's ``createSubOrchestration`` action id, echoed in the result sent to the parent."""
    parent_name: str | None = None
    parent_version: str | None = None
    tags: dict[str, str] = field(default_factory=dict)

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES

    def row(self) -> tuple[object, ...]:
        """A snapshot of the columns, taken when the change is made (the record itself stays mutable)."""
        return (
            self.hub, self.instance_id, self.execution_id, self.name, self.version, self.status,
            self.created_at, self.updated_at, self.completed_at, self.scheduled_start_at, self.input,
            self.output, self.custom_status, self.failure, self.parent_instance_id, self.parent_execution_id,
            self.parent_task_id, self.parent_name, self.parent_version,
            json.dumps(self.tags, separators=(",", ":")) if self.tags else None,
        )

    def snapshot(self) -> InstanceRecord:
        """A copy that later changes to this record do not affect (what a batch keeps)."""
        return InstanceRecord(
            self.hub, self.instance_id, self.execution_id, self.name, self.version, self.status, self.created_at,
            self.updated_at, self.completed_at, self.scheduled_start_at, self.input, self.output, self.custom_status,
            self.failure, self.parent_instance_id, self.parent_execution_id, self.parent_task_id, self.parent_name,
            self.parent_version, dict(self.tags) if self.tags else {},
        )

    @classmethod
    def from_row(cls, row: Sequence[Any]) -> InstanceRecord:
        return cls(
            hub=row[0], instance_id=row[1], execution_id=row[2], name=row[3], version=row[4], status=row[5],
            created_at=row[6], updated_at=row[7], completed_at=row[8], scheduled_start_at=row[9], input=row[10],
            output=row[11], custom_status=row[12], failure=bytes(row[13]) if row[13] is not None else None,
            parent_instance_id=row[14], parent_execution_id=row[15], parent_task_id=row[16], parent_name=row[17],
            parent_version=row[18], tags=json.loads(row[19]) if row[19] else {},
        )


INSTANCE_COLUMNS = (
    "hub", "instance_id", "execution_id", "name", "version", "status", "created_at", "updated_at",
    "completed_at", "scheduled_start_at", "input", "output", "custom_status", "failure",
    "parent_instance_id", "parent_execution_id", "parent_task_id", "parent_name", "parent_version", "tags",
)


@dataclass(slots=True)
class Message:
    """One message in an instance's inbox: a history event waiting to be processed.

    Timers are messages whose ``visible_at`` lies in the future. Messages that only make sense for
    one execution (timer firings, activity and sub-orchestration results) carry its
    ``execution_id``; they are dropped if the instance has moved on to another execution. An empty
    ``event`` is a wake-up: it makes the instance run an episode without adding an event.

    An entity's queue is made of messages too (``instance_id`` ``@name@key``, ``kind`` one of the
    ``entity*`` events); for those, ``execution_id`` is the execution of the orchestration that
    sent a lock request, and ``visible_at`` is when a scheduled signal is due.
    """

    id: int
    hub: str
    instance_id: str
    kind: str
    """The ``HistoryEvent`` oneof name (``"eventRaised"``, ...); ``""`` for a wake-up."""
    event: bytes
    visible_at: float
    execution_id: str | None = None

    def row(self) -> tuple[object, ...]:
        return (self.id, self.hub, self.instance_id, self.execution_id, self.kind, self.visible_at, self.event)

    @classmethod
    def from_row(cls, row: Sequence[Any]) -> Message:
        return cls(id=row[0], hub=row[1], instance_id=row[2], execution_id=row[3], kind=row[4], visible_at=row[5],
                   event=bytes(row[6]))


@dataclass(slots=True)
class ActivityRecord:
    """An activity to run: the ``ActivityRequest`` to send, and where its result goes."""

    id: int
    hub: str
    instance_id: str
    execution_id: str
    task_id: int
    name: str
    version: str | None
    request: bytes
    """A serialized ``ActivityRequest``."""

    def row(self) -> tuple[object, ...]:
        return (self.id, self.hub, self.instance_id, self.execution_id, self.task_id, self.name, self.version,
                self.request)

    @classmethod
    def from_row(cls, row: Sequence[Any]) -> ActivityRecord:
        return cls(id=row[0], hub=row[1], instance_id=row[2], execution_id=row[3], task_id=row[4], name=row[5],
                   version=row[6], request=bytes(row[7]))


@dataclass(slots=True)
class EntityRecord:
    """The row of one durable entity: its state and its lock. Its queued operations are messages.

    A row exists while the entity has state or is locked; an entity with neither (and nothing
    queued) does not exist.
    """

    hub: str
    instance_id: str
    """``@name@key``."""
    state: str | None
    """The serialized state; None when the entity has none."""
    last_modified: float
    locked_by: str | None = None
    """The instance id of the orchestration holding the entity's lock."""
    lock_execution_id: str | None = None
    """The execution of that orchestration that asked for the lock."""
    critical_section_id: str | None = None

    def row(self) -> tuple[object, ...]:
        return (self.hub, self.instance_id, self.state, self.last_modified, self.locked_by, self.lock_execution_id,
                self.critical_section_id)

    def snapshot(self) -> EntityRecord:
        return EntityRecord(*self.row())  # type: ignore[arg-type]

    @classmethod
    def from_row(cls, row: Sequence[Any]) -> EntityRecord:
        return cls(hub=row[0], instance_id=row[1], state=row[2], last_modified=row[3], locked_by=row[4],
                   lock_execution_id=row[5], critical_section_id=row[6])


ENTITY_COLUMNS = ("hub", "instance_id", "state", "last_modified", "locked_by", "lock_execution_id",
                  "critical_section_id")


# Row operations of a batch. Messages and activities are never changed once created, so a batch can
# keep them as they are; instance records are copied when the change is made.


class PutInstance(NamedTuple):
    record: InstanceRecord


class DeleteInstance(NamedTuple):
    """Delete an instance row together with its history, inbox and activities."""

    hub: str
    instance_id: str


class AppendHistory(NamedTuple):
    hub: str
    instance_id: str
    first_seq: int
    """Position of the first event; must equal the number of events already stored."""
    events: list[bytes]


class ClearHistory(NamedTuple):
    hub: str
    instance_id: str


class PutMessage(NamedTuple):
    message: Message


class DeleteMessages(NamedTuple):
    ids: list[int]


class PutActivity(NamedTuple):
    activity: ActivityRecord


class DeleteActivity(NamedTuple):
    activity_id: int


class PutEntity(NamedTuple):
    record: EntityRecord


class DeleteEntity(NamedTuple):
    """Delete an entity's row (its messages are deleted one by one, as they are consumed)."""

    hub: str
    instance_id: str


Op = Union[PutInstance, DeleteInstance, AppendHistory, ClearHistory, PutMessage, DeleteMessages, PutActivity,
           DeleteActivity, PutEntity, DeleteEntity]


class Batch:
    """An ordered list of row operations that a store applies in one transaction."""

    __slots__ = ("ops",)

    def __init__(self) -> None:
        self.ops: list[Op] = []

    def __bool__(self) -> bool:
        return bool(self.ops)

    def __len__(self) -> int:
        return len(self.ops)

    def put_instance(self, record: InstanceRecord) -> None:
        self.ops.append(PutInstance(record.snapshot()))

    def delete_instance(self, hub: str, instance_id: str) -> None:
        self.ops.append(DeleteInstance(hub, instance_id))

    def append_history(self, hub: str, instance_id: str, first_seq: int, events: Sequence[bytes]) -> None:
        if events:
            self.ops.append(AppendHistory(hub, instance_id, first_seq, list(events)))

    def clear_history(self, hub: str, instance_id: str) -> None:
        self.ops.append(ClearHistory(hub, instance_id))

    def put_message(self, message: Message) -> None:
        self.ops.append(PutMessage(message))

    def delete_messages(self, ids: Sequence[int]) -> None:
        if ids:
            self.ops.append(DeleteMessages(list(ids)))

    def put_activity(self, activity: ActivityRecord) -> None:
        self.ops.append(PutActivity(activity))

    def delete_activity(self, activity_id: int) -> None:
        self.ops.append(DeleteActivity(activity_id))

    def put_entity(self, record: EntityRecord) -> None:
        self.ops.append(PutEntity(record.snapshot()))

    def delete_entity(self, hub: str, instance_id: str) -> None:
        self.ops.append(DeleteEntity(hub, instance_id))


@dataclass
class HubSnapshot:
    """Everything the engine needs in memory to serve a hub after a (re)start."""

    instances: list[InstanceRecord] = field(default_factory=list)
    histories: dict[str, list[bytes]] = field(default_factory=dict)
    """Histories of the instances for which ``history_in_memory(status)``, by instance id."""
    messages: list[Message] = field(default_factory=list)
    """Every inbox message, ordered by id."""
    activities: list[ActivityRecord] = field(default_factory=list)
    """Every activity not yet completed, ordered by id."""
    entities: list[EntityRecord] = field(default_factory=list)
    """Every entity row (entities with state or a lock); their queues are among ``messages``."""


class Store(abc.ABC):
    """Durable storage of task hubs. See the module docstring for the contract."""

    #: Whether calls do I/O; if so the runner groups batches into one transaction per turn of the loop.
    blocking: bool = True
    #: Whether a commit waits for the disk (fsync); if so the runner runs the store on its own thread.
    waits_for_disk: bool = True

    @abc.abstractmethod
    def open(self) -> None:
        """Create or migrate the storage; called once before anything else."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release resources. Committed data stays."""

    @abc.abstractmethod
    def load(self, hub: str) -> HubSnapshot:
        """Read a hub's state (see :class:`HubSnapshot`)."""

    @abc.abstractmethod
    def read_history(self, hub: str, instance_id: str) -> list[bytes]:
        """The history of an instance's current execution, in order (empty if unknown)."""

    @abc.abstractmethod
    def max_ids(self) -> tuple[int, int]:
        """The largest message id and activity id used so far in any hub (0 if none)."""

    @abc.abstractmethod
    def apply(self, batches: Sequence[Batch]) -> list[BaseException | None]:
        """Apply batches in order, each atomically; return one error (or None) per batch.

        A store may commit several batches in one transaction (group commit) as long as a failing
        batch leaves no trace and does not make the others fail.
        """

