"""The SQLite store's journal: batches written as one encoded record per commit, folded into the tables later.

Writing every row operation of an orchestration into its table costs about a dozen page writes per
commit, and most of those rows are short-lived: an inbox message or an activity is deleted a few
milliseconds after it is created, and an instance row is rewritten at every episode. So a commit
only appends one record to the journal file (:mod:`durabletask.emulator.store.journal_file`): the
batch's operations, encoded (:func:`encode`).
:class:`Pending` keeps their net effect in memory: a message created and deleted since the last
fold disappears, an instance row keeps only its last version. Every few thousand commits the store
*folds*: it writes the net effect into the tables in one transaction and empties the journal.
After a crash the journal is read back and folded when the store opens, so nothing committed is
lost.

The encoding is :mod:`marshal` (tuples of ints, floats, strings, bytes and None): a few microseconds
per commit, where JSON with base64 takes ten times as long. Its data is written and read back by
this module only, with a leading format byte.
"""

from __future__ import annotations

import marshal
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from durabletask.emulator.store.base import (
    AppendHistory,
    ClearHistory,
    DeleteActivity,
    DeleteEntity,
    DeleteInstance,
    DeleteMessages,
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
PUT_INSTANCE, DELETE_INSTANCE, APPEND_HISTORY, CLEAR_HISTORY = 0, 1, 2, 3
PUT_MESSAGE, DELETE_MESSAGES, PUT_ACTIVITY, DELETE_ACTIVITY, PUT_ENTITY, DELETE_ENTITY = 4, 5, 6, 7, 8, 9

Entry = tuple[Any, ...]
"""One operation as it is journaled: its tag, then plain values (rows as tuples)."""


class JournalError(Exception):
    """A journal record cannot be read back."""


def entry(op: Op) -> Entry:
    """An operation in its journaled form (the most frequent kinds first)."""
    kind = type(op)
    o: Any = op  # narrowed by ``kind`` below, which mypy cannot follow
    if kind is PutInstance:
        return (PUT_INSTANCE, o.record.row())
    if kind is AppendHistory:
        return (APPEND_HISTORY, o.hub, o.instance_id, o.first_seq, o.events)
    if kind is PutMessage:
        return (PUT_MESSAGE, o.message.row())
    if kind is DeleteMessages:
        return (DELETE_MESSAGES, o.ids)
    if kind is PutActivity:
        return (PUT_ACTIVITY, o.activity.row())
    if kind is DeleteActivity:
        return (DELETE_ACTIVITY, o.activity_id)
    if kind is ClearHistory:
        return (CLEAR_HISTORY, o.hub, o.instance_id)
    if kind is DeleteInstance:
        return (DELETE_INSTANCE, o.hub, o.instance_id)
    if kind is PutEntity:
        return (PUT_ENTITY, o.record.row())
    if kind is DeleteEntity:
        return (DELETE_ENTITY, o.hub, o.instance_id)
    raise TypeError(f"unknown store operation {op!r}")  # pragma: no cover - a programming error in the engine


def encode(entries: list[Entry]) -> bytes:
    """The entries of one commit as one journal record."""
    return bytes((FORMAT,)) + marshal.dumps(entries, _MARSHAL_VERSION)


def decode(data: bytes) -> list[Entry]:
    """The entries of a journal record.

    Raises:
        JournalError: the record is not in a format this version writes, or is damaged.
    """
    if not data or data[0] != FORMAT:
        raise JournalError(f"unknown journal format {data[:1]!r}")
    try:
        entries = marshal.loads(data[1:])
    except (ValueError, EOFError, TypeError) as error:
        raise JournalError(f"a journal record is damaged: {error}") from error
    if not isinstance(entries, list) or not all(isinstance(e, tuple) and e and e[0] in _SIZES
                                                 and len(e) == _SIZES[e[0]] for e in entries):
        raise JournalError("a journal record holds something other than store operations")
    return entries


_SIZES = {PUT_INSTANCE: 2, DELETE_INSTANCE: 3, APPEND_HISTORY: 5, CLEAR_HISTORY: 3, PUT_MESSAGE: 2,
          DELETE_MESSAGES: 2, PUT_ACTIVITY: 2, DELETE_ACTIVITY: 2, PUT_ENTITY: 2, DELETE_ENTITY: 3}


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
    """Journal records behind this state."""
    size: int = 0
    """Their total size in bytes."""

    def __bool__(self) -> bool:
        return self.commits > 0

    def add(self, entries: Iterable[Entry]) -> None:
        """Apply journal entries, in order."""
        for e in entries:
            tag = e[0]
            if tag == PUT_INSTANCE:
                row = e[1]
                self.instances[(row[0], row[1])] = row
            elif tag == APPEND_HISTORY:
                key = (e[1], e[2])
                tail = self.history.get(key)
                if tail is None:
                    self.history[key] = HistoryTail(False, e[3], list(e[4]))
                else:
                    tail.events.extend(e[4])
            elif tag == PUT_MESSAGE:
                self.messages[e[1][0]] = e[1]
            elif tag == DELETE_MESSAGES:
                for message_id in e[1]:
                    if self.messages.pop(message_id, None) is None:
                        self.message_deletes.add(message_id)
            elif tag == PUT_ACTIVITY:
                self.activities[e[1][0]] = e[1]
            elif tag == DELETE_ACTIVITY:
                if self.activities.pop(e[1], None) is None:
                    self.activity_deletes.add(e[1])
            elif tag == CLEAR_HISTORY:
                self.history[(e[1], e[2])] = HistoryTail(True, 0, [])
            elif tag == DELETE_INSTANCE:
                self._delete_instance((e[1], e[2]))
            elif tag == PUT_ENTITY:
                row = e[1]
                self.entities[(row[0], row[1])] = row
            elif tag == DELETE_ENTITY:
                self.entities[(e[1], e[2])] = None

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
