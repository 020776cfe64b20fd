"""The SQLite store's journal: batches written as one encoded row per commit, folded into the tables later.

Writing every row operation of an orchestration into its table costs about a dozen page writes per
commit, and most of those rows are short-lived: an inbox message or an activity is deleted a few
milliseconds after it is created, and an instance row is rewritten at every episode. So a commit
only appends one row to the ``journal`` table: the batch's operations, encoded (:func:`encode`).
:class:`Pending` keeps their net effect in memory: a message created and deleted since the last
fold disappears, an instance row keeps only its last version. Every few hundred commits the store
*folds*: it writes the net effect into the tables and deletes the journal rows, in one transaction.
After a crash the journal is read back and folded when the store opens, so nothing committed is
lost.

The encoding is :mod:`marshal` (tuples of ints, floats, strings, bytes and None): a few microseconds
per commit, where JSON with base64 takes ten times as long. Its data is written and read back by
this module only, with a leading format byte.
"""

from __future__ import annotations

import marshal
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from durabletask.emulator.store.base import (
    ActivityRecord,
    AppendHistory,
    ClearHistory,
    DeleteActivity,
    DeleteEntity,
    DeleteInstance,
    DeleteMessages,
    EntityRecord,
    InstanceRecord,
    Message,
    Op,
    PutActivity,
    PutEntity,
    PutInstance,
    PutMessage,
)

Key = tuple[str, str]
Row = tuple[Any, ...]

FORMAT = 1
_MARSHAL_VERSION = 4

# Operation tags in the encoding (stable: they are on disk).
_PUT_INSTANCE, _DELETE_INSTANCE, _APPEND_HISTORY, _CLEAR_HISTORY = 0, 1, 2, 3
_PUT_MESSAGE, _DELETE_MESSAGES, _PUT_ACTIVITY, _DELETE_ACTIVITY, _PUT_ENTITY, _DELETE_ENTITY = 4, 5, 6, 7, 8, 9


class JournalError(Exception):
    """A journal row cannot be read back."""


def encode(ops: Iterable[Op]) -> bytes:
    """The operations of one commit as one journal row."""
    out: list[tuple[Any, ...]] = []
    for op in ops:
        if isinstance(op, AppendHistory):
            out.append((_APPEND_HISTORY, op.hub, op.instance_id, op.first_seq, op.events))
        elif isinstance(op, PutMessage):
            out.append((_PUT_MESSAGE, op.message.row()))
        elif isinstance(op, DeleteMessages):
            out.append((_DELETE_MESSAGES, op.ids))
        elif isinstance(op, PutInstance):
            out.append((_PUT_INSTANCE, op.record.row()))
        elif isinstance(op, PutActivity):
            out.append((_PUT_ACTIVITY, op.activity.row()))
        elif isinstance(op, DeleteActivity):
            out.append((_DELETE_ACTIVITY, op.activity_id))
        elif isinstance(op, ClearHistory):
            out.append((_CLEAR_HISTORY, op.hub, op.instance_id))
        elif isinstance(op, DeleteInstance):
            out.append((_DELETE_INSTANCE, op.hub, op.instance_id))
        elif isinstance(op, PutEntity):
            out.append((_PUT_ENTITY, op.record.row()))
        elif isinstance(op, DeleteEntity):
            out.append((_DELETE_ENTITY, op.hub, op.instance_id))
        else:  # pragma: no cover - a programming error in the engine
            raise TypeError(f"unknown store operation {op!r}")
    return bytes((FORMAT,)) + marshal.dumps(out, _MARSHAL_VERSION)


def decode(data: bytes) -> list[Op]:
    """The operations of a journal row.

    Raises:
        JournalError: the row is not in a format this version writes.
    """
    if not data or data[0] != FORMAT:
        raise JournalError(f"unknown journal format {data[:1]!r}")
    try:
        items = marshal.loads(data[1:])
        return [_op(item) for item in items]
    except (ValueError, EOFError, TypeError, IndexError, KeyError) as error:
        raise JournalError(f"a journal row is damaged: {error}") from error


def _op(item: Sequence[Any]) -> Op:
    tag = item[0]
    if tag == _APPEND_HISTORY:
        return AppendHistory(item[1], item[2], item[3], list(item[4]))
    if tag == _PUT_MESSAGE:
        return PutMessage(Message.from_row(item[1]))
    if tag == _DELETE_MESSAGES:
        return DeleteMessages(list(item[1]))
    if tag == _PUT_INSTANCE:
        return PutInstance(InstanceRecord.from_row(item[1]))
    if tag == _PUT_ACTIVITY:
        return PutActivity(ActivityRecord.from_row(item[1]))
    if tag == _DELETE_ACTIVITY:
        return DeleteActivity(item[1])
    if tag == _CLEAR_HISTORY:
        return ClearHistory(item[1], item[2])
    if tag == _DELETE_INSTANCE:
        return DeleteInstance(item[1], item[2])
    if tag == _PUT_ENTITY:
        return PutEntity(EntityRecord.from_row(item[1]))
    if tag == _DELETE_ENTITY:
        return DeleteEntity(item[1], item[2])
    raise ValueError(f"unknown operation tag {tag!r}")


@dataclass
class HistoryTail:
    """What happened to one instance's history since the last fold."""

    cleared: bool
    """The stored rows are gone (cleared, or the instance deleted); ``events`` replace them."""
    first_seq: int
    """Position of ``events[0]``."""
    events: list[bytes]


@dataclass
class Pending:
    """The net effect of the journal rows not folded yet: what the tables still lack.

    Operations are applied in commit order. A row created and deleted within the same fold window
    never reaches its table; deletions of rows that are in the tables are kept as deletions.
    """

    instances: dict[Key, Row | None] = field(default_factory=dict)
    """Instance rows to write (None: deleted, with the cascade in ``cascades``)."""
    cascades: set[Key] = field(default_factory=set)
    """Instances whose stored rows (instance, history, inbox, activities) are to be deleted first."""
    history: dict[Key, HistoryTail] = field(default_factory=dict)
    messages: dict[int, Row] = field(default_factory=dict)
    message_deletes: set[int] = field(default_factory=set)
    activities: dict[int, Row] = field(default_factory=dict)
    activity_deletes: set[int] = field(default_factory=set)
    entities: dict[Key, Row | None] = field(default_factory=dict)
    commits: int = 0
    """Journal rows behind this state."""
    size: int = 0
    """Their total size in bytes."""

    def __bool__(self) -> bool:
        return self.commits > 0

    def add(self, ops: Iterable[Op]) -> None:
        for op in ops:
            if isinstance(op, AppendHistory):
                key = (op.hub, op.instance_id)
                tail = self.history.get(key)
                if tail is None:
                    self.history[key] = HistoryTail(False, op.first_seq, list(op.events))
                else:
                    tail.events.extend(op.events)
            elif isinstance(op, PutMessage):
                self.messages[op.message.id] = op.message.row()
            elif isinstance(op, DeleteMessages):
                for message_id in op.ids:
                    if self.messages.pop(message_id, None) is None:
                        self.message_deletes.add(message_id)
            elif isinstance(op, PutInstance):
                self.instances[(op.record.hub, op.record.instance_id)] = op.record.row()
            elif isinstance(op, PutActivity):
                self.activities[op.activity.id] = op.activity.row()
            elif isinstance(op, DeleteActivity):
                if self.activities.pop(op.activity_id, None) is None:
                    self.activity_deletes.add(op.activity_id)
            elif isinstance(op, ClearHistory):
                self.history[(op.hub, op.instance_id)] = HistoryTail(True, 0, [])
            elif isinstance(op, DeleteInstance):
                self._delete_instance((op.hub, op.instance_id))
            elif isinstance(op, PutEntity):
                self.entities[(op.record.hub, op.record.instance_id)] = op.record.row()
            elif isinstance(op, DeleteEntity):
                self.entities[(op.hub, op.instance_id)] = None
            else:  # pragma: no cover - a programming error in the engine
                raise TypeError(f"unknown store operation {op!r}")

    def _delete_instance(self, key: Key) -> None:
        self.instances[key] = None
        self.cascades.add(key)
        self.history[key] = HistoryTail(True, 0, [])
        hub, instance_id = key
        # Rows of the instance created in this window go with it (rows row[1:3] = hub, instance id).
        for message_id in [i for i, row in self.messages.items() if row[1] == hub and row[2] == instance_id]:
            del self.messages[message_id]
        for activity_id in [i for i, row in self.activities.items() if row[1] == hub and row[2] == instance_id]:
            del self.activities[activity_id]

    def history_of(self, key: Key, stored: list[bytes]) -> list[bytes]:
        """An instance's full history, given the rows the table holds."""
        tail = self.history.get(key)
        if tail is None:
            return stored
        return list(tail.events) if tail.cleared else stored + tail.events
