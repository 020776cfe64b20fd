"""The engine's live, in-memory view of a task hub, and when an instance is ready to run.

The engine is the only writer of a hub, so it keeps the hub in memory and answers reads from here;
the store holds the durable copy (see ``store/base.py``). Everything in this module is plain data
and pure decisions: no I/O, no asyncio.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from durabletask.emulator import wire
from durabletask.emulator.store.base import SUSPENDED, ActivityRecord, InstanceRecord, Message

if TYPE_CHECKING:
    from durabletask.emulator.dispatch import WorkerStream
    from durabletask.emulator.entity_state import Entity
    from durabletask.internal import orchestrator_service_pb2 as pb

# Message kinds with special dispatch rules.
EXECUTION_STARTED = "executionStarted"
EXECUTION_TERMINATED = "executionTerminated"
EXECUTION_SUSPENDED = "executionSuspended"
EXECUTION_RESUMED = "executionResumed"
EXECUTION_REWOUND = "executionRewound"
WAKE_UP = ""

_UNSUSPENDING = frozenset({EXECUTION_RESUMED, EXECUTION_TERMINATED})


@dataclass(eq=False, slots=True)
class OrchestrationLease:
    """An orchestrator work item handed to a worker and not yet completed."""

    token: str
    hub: HubState
    instance: Instance
    execution_id: str
    messages: list[Message]
    """The inbox messages delivered as ``newEvents`` (after the leading ``orchestratorStarted``)."""
    new_events: list[bytes]
    """The serialized ``newEvents`` exactly as sent."""
    stream: WorkerStream | None
    deadline: float
    chunks: list[pb.OrchestratorAction] = field(default_factory=list)
    """Actions of the partial (``isPartial``) chunks received so far."""
    chunk_count: int = 0
    num_events_processed: int | None = None


@dataclass(eq=False, slots=True)
class ActivityLease:
    token: str
    hub: HubState
    activity: Activity
    stream: WorkerStream | None
    deadline: float


@dataclass(eq=False, slots=True)
class Instance:
    """One orchestration instance: its record, current history and pending inbox."""

    record: InstanceRecord
    history: list[bytes] | None
    """Serialized events of the current execution; None when not in memory (finished instances)."""
    inbox: list[Message] = field(default_factory=list)
    """Pending messages ordered by id; messages of an in-flight work item are in its lease."""
    lease: OrchestrationLease | None = None
    activity_ids: set[int] = field(default_factory=set)
    children: list[str] | None = None
    """Ids of sub-orchestrations created by the current execution (None: not known yet)."""
    trace_context: bytes | None = None
    """The ``orchestrationTraceContext`` the worker last returned, echoed in the next work item."""
    not_before: float = 0.0
    """Back-off after an abandon: not dispatched before this time."""
    abandons: int = 0
    queued: bool = False
    wake_at: float = 0.0
    wake_handle: asyncio.TimerHandle | None = None
    deleted: bool = False
    past_wire: bytes = b""
    """``history[:past_count]`` encoded as a work item's ``pastEvents`` (extended as the history grows)."""
    past_count: int = 0

    @property
    def instance_id(self) -> str:
        return self.record.instance_id

    @property
    def started(self) -> bool:
        """Whether the current execution's ``executionStarted`` was processed (assumed if not loaded)."""
        return self.history is None or len(self.history) > 0

    def readiness(self, now: float) -> tuple[bool, float | None]:
        """Whether the instance can be dispatched now, and else when it may become so."""
        if self.lease is not None or self.deleted or self.record.is_terminal or not self.inbox:
            return False, None
        if self.history is None:  # the engine loads it first
            return False, None
        ready = False
        next_at: float | None = None
        if not self.started:
            # The first episode of an execution must start with its executionStarted event.
            start = next((m for m in self.inbox if m.kind == EXECUTION_STARTED), None)
            if start is None:
                return False, None
            ready = start.visible_at <= now
            next_at = None if ready else start.visible_at
        elif self.record.status == SUSPENDED:
            # Workers buffer everything but resume and terminate while suspended: hold the rest back.
            ready = any(m.kind in _UNSUSPENDING and m.visible_at <= now for m in self.inbox)
        else:
            for message in self.inbox:
                if message.visible_at <= now:
                    ready = True
                    break
                if next_at is None or message.visible_at < next_at:
                    next_at = message.visible_at
        if ready and self.not_before > now:
            return False, self.not_before
        return ready, next_at

    def take_batch(self, now: float) -> tuple[list[Message], list[Message]]:
        """Remove and return (messages to deliver in order, stale messages to delete)."""
        execution_id = self.record.execution_id
        batch: list[Message] = []
        stale: list[Message] = []
        keep: list[Message] = []
        start: Message | None = None
        for message in self.inbox:
            if message.execution_id is not None and message.execution_id != execution_id:
                stale.append(message)
            elif message.visible_at > now:
                keep.append(message)
            elif message.kind == EXECUTION_STARTED and start is None:
                start = message
            else:
                batch.append(message)
        if start is not None:
            batch.insert(0, start)
        # A rewind is delivered on its own (the Python worker insists on exactly two new events).
        for index, message in enumerate(batch):
            if message.kind == EXECUTION_REWOUND:
                if index == 0:
                    keep.extend(batch[1:])
                    batch = batch[:1]
                else:
                    keep.extend(batch[index:])
                    batch = batch[:index]
                break
        keep.sort(key=_message_id)
        self.inbox = keep
        return batch, stale

    def encoded_history(self) -> bytes:
        """The history as a work item's ``pastEvents`` field, encoded incrementally."""
        history = self.history or []
        if self.past_count > len(history):  # replaced: start over
            self.past_wire, self.past_count = b"", 0
        if self.past_count < len(history):
            self.past_wire += wire.past_events(history[self.past_count:])
            self.past_count = len(history)
        return self.past_wire

    def put_back(self, messages: list[Message]) -> None:
        """Return delivered messages to the front of the inbox (after an abandon)."""
        if messages:
            self.inbox = sorted(messages + self.inbox, key=_message_id)

    def effectively_suspended(self) -> bool:
        """Whether the instance will be suspended once everything queued so far is processed."""
        suspended = self.record.status == SUSPENDED
        in_flight = self.lease.messages if self.lease is not None else []
        for message in itertools.chain(in_flight, self.inbox):
            if message.kind == EXECUTION_SUSPENDED:
                suspended = True
            elif message.kind == EXECUTION_RESUMED:
                suspended = False
        return suspended


@dataclass(eq=False, slots=True)
class Activity:
    record: ActivityRecord
    lease: ActivityLease | None = None
    queued: bool = False
    not_before: float = 0.0
    abandons: int = 0
    deleted: bool = False


@dataclass(eq=False, slots=True)
class Waiter:
    """Someone waiting for an instance's record to pass ``predicate``; ``settle`` is called once, with the
    record (None: the instance is gone), and the waiter is dropped."""

    predicate: Callable[[InstanceRecord | None], bool]
    settle: Callable[[InstanceRecord | None], object]


class HubState:
    """Everything the engine knows about one task hub."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.waiters: dict[str, list[Waiter]] = {}
        self.reset()

    def reset(self) -> None:
        """Forget everything but the name and the waiters (before a reload from storage)."""
        self.instances: dict[str, Instance] = {}
        self.activities: dict[int, Activity] = {}
        self.ready: deque[Instance] = deque()
        self.ready_activities: deque[Activity] = deque()
        self.entities: dict[str, Entity] = {}
        """Entities with state, a lock, queued messages or a batch in flight."""
        self.ready_entities: deque[Entity] = deque()
        self.lock_owners: dict[str, set[str]] = {}
        """Orchestration instance id -> ids of the entities it holds locked."""
        self.streams: list[WorkerStream] = []
        self.round_robin = 0


def _message_id(message: Message) -> int:
    return message.id
