"""A store that keeps everything in process memory (``--memory``): fast, gone when the process ends.

It keeps the same rows as the SQLite store, so an engine can be stopped and started again on the
same ``MemoryStore`` object and recover its state (tests use this to exercise recovery in-process).
"""

from __future__ import annotations

from collections.abc import Sequence

from durabletask.emulator.store.base import (
    ActivityRecord,
    AppendHistory,
    Batch,
    ClearHistory,
    DeleteActivity,
    DeleteEntity,
    DeleteInstance,
    DeleteMessages,
    EntityRecord,
    HubSnapshot,
    InstanceRecord,
    Message,
    Op,
    PutActivity,
    PutEntity,
    PutInstance,
    PutMessage,
    Store,
    history_in_memory,
)

Key = tuple[str, str]


class MemoryStore(Store):
    """Rows in dictionaries. A batch is checked before anything changes, so it applies all or nothing."""

    blocking = False
    waits_for_disk = False

    def __init__(self) -> None:
        self._instances: dict[Key, InstanceRecord] = {}
        self._histories: dict[Key, list[bytes]] = {}
        self._messages: dict[int, Message] = {}
        self._activities: dict[int, ActivityRecord] = {}
        self._entities: dict[Key, EntityRecord] = {}

    def open(self) -> None:
        pass

    def close(self) -> None:
        pass

    def load(self, hub: str) -> HubSnapshot:
        snapshot = HubSnapshot()
        for (row_hub, instance_id), record in self._instances.items():
            if row_hub != hub:
                continue
            snapshot.instances.append(record.snapshot())
            if history_in_memory(record.status):
                snapshot.histories[instance_id] = list(self._histories.get((hub, instance_id), ()))
        snapshot.messages = [m for _, m in sorted(self._messages.items()) if m.hub == hub]
        snapshot.activities = [a for _, a in sorted(self._activities.items()) if a.hub == hub]
        snapshot.entities = [e.snapshot() for (row_hub, _), e in sorted(self._entities.items()) if row_hub == hub]
        return snapshot

    def read_history(self, hub: str, instance_id: str) -> list[bytes]:
        return list(self._histories.get((hub, instance_id), ()))

    def max_ids(self) -> tuple[int, int]:
        return max(self._messages, default=0), max(self._activities, default=0)

    def apply(self, batches: Sequence[Batch]) -> list[BaseException | None]:
        results: list[BaseException | None] = []
        for batch in batches:
            try:
                self._check(batch.ops)
            except ValueError as error:
                results.append(error)
                continue
            for op in batch.ops:
                self._apply_op(op)
            results.append(None)
        return results

    def _check(self, ops: list[Op]) -> None:
        """Reject a batch that the SQLite store would reject, before touching anything."""
        lengths: dict[Key, int] = {}
        new_messages: set[int] = set()
        new_activities: set[int] = set()
        for op in ops:
            if isinstance(op, AppendHistory):
                key = (op.hub, op.instance_id)
                have = lengths[key] if key in lengths else len(self._histories.get(key, ()))
                if op.first_seq != have:
                    raise ValueError(f"history of {key} has {have} events; cannot append at {op.first_seq}")
                lengths[key] = have + len(op.events)
            elif isinstance(op, (ClearHistory, DeleteInstance)):
                lengths[(op.hub, op.instance_id)] = 0
            elif isinstance(op, PutMessage):
                if op.message.id in self._messages or op.message.id in new_messages:
                    raise ValueError(f"message {op.message.id} already exists")
                new_messages.add(op.message.id)
            elif isinstance(op, PutActivity):
                if op.activity.id in self._activities or op.activity.id in new_activities:
                    raise ValueError(f"activity {op.activity.id} already exists")
                new_activities.add(op.activity.id)

    def _apply_op(self, op: Op) -> None:
        if isinstance(op, PutInstance):
            self._instances[(op.record.hub, op.record.instance_id)] = op.record
        elif isinstance(op, AppendHistory):
            self._histories.setdefault((op.hub, op.instance_id), []).extend(op.events)
        elif isinstance(op, ClearHistory):
            self._histories.pop((op.hub, op.instance_id), None)
        elif isinstance(op, PutMessage):
            self._messages[op.message.id] = op.message
        elif isinstance(op, DeleteMessages):
            for message_id in op.ids:
                self._messages.pop(message_id, None)
        elif isinstance(op, PutActivity):
            self._activities[op.activity.id] = op.activity
        elif isinstance(op, DeleteActivity):
            self._activities.pop(op.activity_id, None)
        elif isinstance(op, PutEntity):
            self._entities[(op.record.hub, op.record.instance_id)] = op.record
        elif isinstance(op, DeleteEntity):
            self._entities.pop((op.hub, op.instance_id), None)
        else:
            key = (op.hub, op.instance_id)
            self._instances.pop(key, None)
            self._histories.pop(key, None)
            for message_id in [i for i, m in self._messages.items() if (m.hub, m.instance_id) == key]:
                del self._messages[message_id]
            for activity_id in [i for i, a in self._activities.items() if (a.hub, a.instance_id) == key]:
                del self._activities[activity_id]
