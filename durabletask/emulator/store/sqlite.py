"""The default store: one SQLite file in WAL mode, written by a single connection.

Writes go through a journal (:mod:`durabletask.emulator.store.journal`): a commit appends one record
holding the batches' operations to the journal file next to the database
(:mod:`durabletask.emulator.store.journal_file`), and every few thousand commits their net effect is
folded into the tables (``instances``, ``history``, ``messages``, ``activities``, ``entities``) in
one transaction. Reads see the journaled changes too; opening the store folds whatever a crash left
in the journal, and a clean close folds it and removes the file.

Durability: a batch is acknowledged only after its record is written. With the default
``synchronous=NORMAL`` a commit survives the process being killed (SIGKILL, a crash); only a power
cut or an OS crash can lose the last commits, never leave the database inconsistent.
``synchronous="FULL"`` also survives those, at the cost of an fsync per commit.

Speed: several batches are committed together when they arrive together (group commit), as one
journal record, one ``write``; short-lived rows (inbox messages, activities, superseded
instance rows) mostly never reach their tables; statements are prepared once (sqlite3 caches them
by text); the only indexes are the ones the engine's deletes need, because queries are answered
from the engine's memory.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
from collections.abc import Sequence
from pathlib import Path

from durabletask.emulator.store import journal
from durabletask.emulator.store.base import (
    ENTITY_COLUMNS,
    INSTANCE_COLUMNS,
    ActivityRecord,
    Batch,
    EntityRecord,
    HubSnapshot,
    InstanceRecord,
    Message,
    Store,
    history_in_memory,
)
from durabletask.emulator.store.journal import Entry, JournalError, Key, Pending
from durabletask.emulator.store.journal_file import JournalFile

logger = logging.getLogger("durabletask.emulator.store")

SCHEMA_VERSION = 3
"""1: the tables, one history row per event; 2: a journal table, and history rows holding a run of events
each (``count`` events from position ``seq``, packed by :func:`pack_events`); 3: the journal is a file
next to the database, and ``meta`` names its generation. Older files are upgraded when opened."""
FOLD_COMMITS = 2048
"""Journal records after which their net effect is folded into the tables."""
FOLD_BYTES = 8 << 20
"""Journal size (bytes) after which it is folded, whatever the number of records."""
_LENGTHS_KEPT = 100_000

_HISTORY_TABLE = """
CREATE TABLE IF NOT EXISTS history (
    hub TEXT NOT NULL,
    instance_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    count INTEGER NOT NULL,
    events BLOB NOT NULL,
    PRIMARY KEY (hub, instance_id, seq)
) WITHOUT ROWID;
"""

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS instances (
    hub TEXT NOT NULL,
    instance_id TEXT NOT NULL,
    execution_id TEXT NOT NULL,
    name TEXT NOT NULL,
    version TEXT,
    status INTEGER NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    completed_at REAL,
    scheduled_start_at REAL,
    input TEXT,
    output TEXT,
    custom_status TEXT,
    failure BLOB,
    parent_instance_id TEXT,
    parent_execution_id TEXT,
    parent_task_id INTEGER,
    parent_name TEXT,
    parent_version TEXT,
    tags TEXT,
    UNIQUE (hub, instance_id)
);
{_HISTORY_TABLE}
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY,
    hub TEXT NOT NULL,
    instance_id TEXT NOT NULL,
    execution_id TEXT,
    kind TEXT NOT NULL,
    visible_at REAL NOT NULL,
    event BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS messages_by_instance ON messages (hub, instance_id);
CREATE TABLE IF NOT EXISTS activities (
    id INTEGER PRIMARY KEY,
    hub TEXT NOT NULL,
    instance_id TEXT NOT NULL,
    execution_id TEXT NOT NULL,
    task_id INTEGER NOT NULL,
    name TEXT NOT NULL,
    version TEXT,
    request BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS activities_by_instance ON activities (hub, instance_id);
CREATE TABLE IF NOT EXISTS entities (
    hub TEXT NOT NULL,
    instance_id TEXT NOT NULL,
    state TEXT,
    last_modified REAL NOT NULL,
    locked_by TEXT,
    lock_execution_id TEXT,
    critical_section_id TEXT,
    PRIMARY KEY (hub, instance_id)
) WITHOUT ROWID;
INSERT OR IGNORE INTO meta (key, value) VALUES ('schema_version', '{SCHEMA_VERSION}');
INSERT OR IGNORE INTO meta (key, value) VALUES ('journal_generation', '0');
"""

_PUT_INSTANCE = (
    f"INSERT OR REPLACE INTO instances ({', '.join(INSTANCE_COLUMNS)}) "
    f"VALUES ({', '.join('?' for _ in INSTANCE_COLUMNS)})"
)
_APPEND_HISTORY = "INSERT INTO history (hub, instance_id, seq, count, events) VALUES (?, ?, ?, ?, ?)"
_CLEAR_HISTORY = "DELETE FROM history WHERE hub = ? AND instance_id = ?"
_PUT_MESSAGE = (
    "INSERT INTO messages (id, hub, instance_id, execution_id, kind, visible_at, event) VALUES (?, ?, ?, ?, ?, ?, ?)"
)
_DELETE_MESSAGE = "DELETE FROM messages WHERE id = ?"
_PUT_ACTIVITY = (
    "INSERT INTO activities (id, hub, instance_id, execution_id, task_id, name, version, request) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)
_DELETE_ACTIVITY = "DELETE FROM activities WHERE id = ?"
_PUT_ENTITY = (
    f"INSERT OR REPLACE INTO entities ({', '.join(ENTITY_COLUMNS)}) VALUES ({', '.join('?' for _ in ENTITY_COLUMNS)})"
)
_DELETE_ENTITY = "DELETE FROM entities WHERE hub = ? AND instance_id = ?"
_DELETE_INSTANCE = (
    "DELETE FROM instances WHERE hub = ?1 AND instance_id = ?2",
    "DELETE FROM history WHERE hub = ?1 AND instance_id = ?2",
    "DELETE FROM messages WHERE hub = ?1 AND instance_id = ?2",
    "DELETE FROM activities WHERE hub = ?1 AND instance_id = ?2",
)


class SqliteStore(Store):
    """See the module docstring. All methods must be called from one thread at a time."""

    blocking = True

    def __init__(self, path: str | Path, *, synchronous: str = "NORMAL", fold_commits: int = FOLD_COMMITS,
                 fold_bytes: int = FOLD_BYTES) -> None:
        if synchronous.upper() not in ("OFF", "NORMAL", "FULL", "EXTRA"):
            raise ValueError(f"synchronous must be OFF, NORMAL, FULL or EXTRA, not {synchronous!r}")
        self.path = Path(path)
        self._synchronous = synchronous.upper()
        self.waits_for_disk = self._synchronous in ("FULL", "EXTRA")
        self.fold_commits = fold_commits
        self.fold_bytes = fold_bytes
        self.folds = 0
        """Number of folds so far (tests, benchmarks)."""
        self._db: sqlite3.Connection | None = None
        self.journal = JournalFile(self.path.with_name(self.path.name + ".journal"), sync=self.waits_for_disk)
        """The journal file, ``<database>.journal``."""
        self._pending = Pending()
        self._fold_at = (fold_commits, fold_bytes)  # fold when the journal has this many records or bytes
        self._lengths: dict[Key, int] = {}  # known history lengths, to check appends without a query
        self._stored_message_ids = 0  # no message id above this is in the messages table
        self._stored_activity_ids = 0

    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:
            raise RuntimeError("the SQLite store is not open")
        return self._db

    def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(str(self.path), timeout=1.0, isolation_level=None, check_same_thread=False,
                             cached_statements=64)
        try:
            # One process, one connection: exclusive locking spares the per-transaction file locking
            # and shared-memory index of WAL mode, and keeps a second emulator off the same file.
            db.execute("PRAGMA locking_mode=EXCLUSIVE")
            mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                logger.warning("SQLite database %s is not in WAL mode (%s); writes will be slower", self.path, mode)
            db.execute(f"PRAGMA synchronous={self._synchronous}")
            db.execute("PRAGMA temp_store=MEMORY")
            db.execute("PRAGMA cache_size=-32000")
            db.execute("PRAGMA wal_autocheckpoint=10000")
            version = _schema_version(db)
            if version == 1:
                _upgrade_from_1(db)
            elif version not in (None, 2, SCHEMA_VERSION):
                raise RuntimeError(
                    f"{self.path} has schema version {version}, this emulator understands {SCHEMA_VERSION}; "
                    "use another --db file or upgrade durabletask"
                )
            db.executescript(_SCHEMA)
            self._db = db
            self._recover()
        except sqlite3.OperationalError as error:
            self._db = None
            self.journal.close()
            db.close()
            if "locked" in str(error):
                raise RuntimeError(f"{self.path} is in use by another process (another emulator?); stop it or "
                                   "use another --db file") from error
            raise
        except BaseException:
            self._db = None
            self.journal.close()
            db.close()
            raise

    def _recover(self) -> None:
        """Fold what the journal holds (commits made since the last fold before a crash or a stop)."""
        db = self.db
        self._stored_message_ids = int(db.execute("SELECT COALESCE(MAX(id), 0) FROM messages").fetchone()[0])
        self._stored_activity_ids = int(db.execute("SELECT COALESCE(MAX(id), 0) FROM activities").fetchone()[0])
        pending = Pending()
        legacy = db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'journal'").fetchone()
        if legacy is not None:  # a version 2 file: its journal was a table
            for seq, data in db.execute("SELECT seq, ops FROM journal ORDER BY seq"):
                self._replay(pending, bytes(data), f"journal row {seq}")
        generation = int(db.execute("SELECT value FROM meta WHERE key = 'journal_generation'").fetchone()[0])
        for number, data in enumerate(self.journal.open(generation), 1):
            self._replay(pending, data, f"commit {number} of {self.journal.path}")
        if pending:
            logger.info("folding %d journaled commit(s) of %s into its tables", pending.commits, self.path)
            self._pending = pending
            self._fold()
        if legacy is not None:
            db.execute("BEGIN IMMEDIATE")
            db.execute("DROP TABLE journal")
            db.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION),))
            db.execute("COMMIT")
            logger.info("upgraded the emulator database to schema version %d", SCHEMA_VERSION)

    def _replay(self, pending: Pending, data: bytes, where: str) -> None:
        try:
            pending.add(journal.decode(data))
        except JournalError as error:
            raise RuntimeError(f"{self.path}: {where} cannot be read ({error}); it was written by another version "
                               "of durabletask or is damaged") from error
        pending.commits += 1

    def close(self) -> None:
        if self._db is not None:
            folded = True
            try:
                self._fold()
            except (sqlite3.Error, OSError) as error:  # the journal keeps the commits; the next open folds them
                logger.warning("could not fold the journal of %s on close: %s", self.path, error)
                folded = False
            self.journal.close(remove=folded)
            with contextlib.suppress(sqlite3.Error):
                self._db.execute("PRAGMA optimize")
            self._db.close()
            self._db = None

    def load(self, hub: str) -> HubSnapshot:
        self._fold()
        db = self.db
        snapshot = HubSnapshot()
        cursor = db.execute(f"SELECT {', '.join(INSTANCE_COLUMNS)} FROM instances WHERE hub = ?", (hub,))
        snapshot.instances = [InstanceRecord.from_row(row) for row in cursor]
        open_ids = {r.instance_id for r in snapshot.instances if history_in_memory(r.status)}
        for instance_id in open_ids:
            snapshot.histories[instance_id] = []
        for instance_id, packed in db.execute(
            "SELECT instance_id, events FROM history WHERE hub = ? ORDER BY instance_id, seq", (hub,)
        ):
            events = snapshot.histories.get(instance_id)
            if events is not None:
                events.extend(unpack_events(packed))
        snapshot.messages = [
            Message.from_row(row) for row in db.execute(
                "SELECT id, hub, instance_id, execution_id, kind, visible_at, event FROM messages "
                "WHERE hub = ? ORDER BY id", (hub,))
        ]
        snapshot.activities = [
            ActivityRecord.from_row(row) for row in db.execute(
                "SELECT id, hub, instance_id, execution_id, task_id, name, version, request FROM activities "
                "WHERE hub = ? ORDER BY id", (hub,))
        ]
        snapshot.entities = [
            EntityRecord.from_row(row) for row in db.execute(
                f"SELECT {', '.join(ENTITY_COLUMNS)} FROM entities WHERE hub = ? ORDER BY instance_id", (hub,))
        ]
        return snapshot

    def read_history(self, hub: str, instance_id: str) -> list[bytes]:
        cursor = self.db.execute(
            "SELECT events FROM history WHERE hub = ? AND instance_id = ? ORDER BY seq", (hub, instance_id)
        )
        stored = [event for (packed,) in cursor for event in unpack_events(packed)]
        return self._pending.history_of((hub, instance_id), stored)

    def max_ids(self) -> tuple[int, int]:
        self._fold()
        return self._stored_message_ids, self._stored_activity_ids

    # -- writes

    def apply(self, batches: Sequence[Batch]) -> list[BaseException | None]:
        """Journal all valid batches in one commit; a batch that breaks a rule fails alone and leaves no trace."""
        if not batches:
            return []
        lengths: dict[Key, int] = {}
        new_ids: tuple[set[int], set[int]] = (set(), set())
        entries: list[Entry] = []
        errors: list[BaseException | None] = [self._entries(batch, lengths, new_ids, entries) for batch in batches]
        if not entries:
            return errors
        data = journal.encode(entries)
        try:
            self.journal.append(data)
        except OSError as error:
            logger.error("a write to %s failed: %s", self.journal.path, error)
            return [error if e is None else e for e in errors]
        pending = self._pending
        pending.add(entries)
        pending.commits += 1
        pending.size += len(data)
        if len(self._lengths) > _LENGTHS_KEPT:
            self._lengths.clear()
        self._lengths.update(lengths)
        if pending.commits >= self._fold_at[0] or pending.size >= self._fold_at[1]:
            try:
                self._fold()
            except sqlite3.Error as error:  # the commits are safe in the journal; try again later
                logger.error("could not fold the journal of %s into its tables: %s", self.path, error)
                self._fold_at = (pending.commits + self.fold_commits, pending.size + self.fold_bytes)
            except OSError as error:  # folded, but the journal file could not be emptied: no more commits
                logger.error("could not empty %s after a fold: %s", self.journal.path, error)
        return errors

    def _entries(self, batch: Batch, lengths: dict[Key, int], new_ids: tuple[set[int], set[int]],
                 out: list[Entry]) -> ValueError | None:
        """Add a batch's journal entries to ``out`` if it keeps the rules (history appended in order, ids
        unused); otherwise add nothing and say what is wrong.

        ``lengths`` and ``new_ids`` carry the effect of the batches before it in the same commit.
        """
        mine: dict[Key, int] = {}
        messages: set[int] = set()
        activities: set[int] = set()
        entries: list[Entry] = []
        for op in batch.ops:
            e = journal.entry(op)
            tag = e[0]
            if tag == journal.APPEND_HISTORY:
                key = (e[1], e[2])
                have = mine[key] if key in mine else self._history_length(key, lengths)
                if e[3] != have:
                    return ValueError(f"history of {key} has {have} events; cannot append at {e[3]}")
                mine[key] = have + len(e[4])
            elif tag == journal.PUT_MESSAGE:
                message_id = e[1][0]
                if message_id in messages or message_id in new_ids[0] or self._message_exists(message_id):
                    return ValueError(f"message {message_id} already exists")
                messages.add(message_id)
            elif tag == journal.PUT_ACTIVITY:
                activity_id = e[1][0]
                if activity_id in activities or activity_id in new_ids[1] or self._activity_exists(activity_id):
                    return ValueError(f"activity {activity_id} already exists")
                activities.add(activity_id)
            elif tag == journal.CLEAR_HISTORY or tag == journal.DELETE_INSTANCE:
                mine[(e[1], e[2])] = 0
            entries.append(e)
        lengths.update(mine)
        new_ids[0].update(messages)
        new_ids[1].update(activities)
        out.extend(entries)
        return None

    def _history_length(self, key: Key, lengths: dict[Key, int]) -> int:
        if key in lengths:
            return lengths[key]
        known = self._lengths.get(key)
        if known is not None:
            return known
        tail = self._pending.history.get(key)
        if tail is not None:
            return tail.first_seq + len(tail.events)
        row = self.db.execute("SELECT seq + count FROM history WHERE hub = ? AND instance_id = ? "
                              "ORDER BY seq DESC LIMIT 1", key).fetchone()
        return int(row[0]) if row is not None else 0

    def _message_exists(self, message_id: int) -> bool:
        pending = self._pending
        if message_id in pending.messages:
            return True
        if message_id > self._stored_message_ids or message_id in pending.message_deletes:
            return False
        return self.db.execute("SELECT 1 FROM messages WHERE id = ?", (message_id,)).fetchone() is not None

    def _activity_exists(self, activity_id: int) -> bool:
        pending = self._pending
        if activity_id in pending.activities:
            return True
        if activity_id > self._stored_activity_ids or activity_id in pending.activity_deletes:
            return False
        return self.db.execute("SELECT 1 FROM activities WHERE id = ?", (activity_id,)).fetchone() is not None

    def _fold(self) -> None:
        """Write the journal's net effect into the tables and empty the journal, in one transaction."""
        pending = self._pending
        if not pending:
            return
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            for key in pending.cascades:
                for statement in _DELETE_INSTANCE:
                    db.execute(statement, key)
            for key, tail in pending.history.items():
                if tail.cleared and key not in pending.cascades:
                    db.execute(_CLEAR_HISTORY, key)
            db.executemany(_APPEND_HISTORY, [
                (hub, instance_id, tail.first_seq, len(tail.events), pack_events(tail.events))
                for (hub, instance_id), tail in pending.history.items() if tail.events
            ])
            db.executemany(_DELETE_MESSAGE, [(i,) for i in pending.message_deletes])
            db.executemany(_PUT_MESSAGE, pending.messages.values())
            db.executemany(_DELETE_ACTIVITY, [(i,) for i in pending.activity_deletes])
            db.executemany(_PUT_ACTIVITY, pending.activities.values())
            db.executemany(_PUT_INSTANCE, [row for row in pending.instances.values() if row is not None])
            db.executemany(_PUT_ENTITY, [row for row in pending.entities.values() if row is not None])
            db.executemany(_DELETE_ENTITY, [key for key, row in pending.entities.items() if row is None])
            generation = self.journal.generation + 1
            db.execute("UPDATE meta SET value = ? WHERE key = 'journal_generation'", (str(generation),))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        self._stored_message_ids = max(self._stored_message_ids, max(pending.messages, default=0))
        self._stored_activity_ids = max(self._stored_activity_ids, max(pending.activities, default=0))
        self._pending = Pending()
        self._fold_at = (self.fold_commits, self.fold_bytes)
        self.folds += 1
        # Folded: the file's records belong to an older generation now, ignored when it is opened again.
        self.journal.reset(generation)


def pack_events(events: Sequence[bytes]) -> bytes:
    """Serialized history events as one value: each is its length (4 bytes, big-endian), then its bytes."""
    return b"".join([len(event).to_bytes(4, "big") + event for event in events])


def unpack_events(packed: bytes) -> list[bytes]:
    """The events of :func:`pack_events`."""
    data = bytes(packed)
    events = []
    pos, end = 0, len(data)
    while pos < end:
        size = int.from_bytes(data[pos:pos + 4], "big")
        events.append(data[pos + 4:pos + 4 + size])
        pos += 4 + size
    return events


def _schema_version(db: sqlite3.Connection) -> int | None:
    """The file's schema version; None for a new (empty) file."""
    if db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'").fetchone() is None:
        return None
    row = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    return int(row[0]) if row is not None else None


def _upgrade_from_1(db: sqlite3.Connection) -> None:
    """Version 1 to 2: history rows of one event become one row per instance (the journal comes with the
    schema script)."""
    db.execute("BEGIN IMMEDIATE")
    try:
        db.execute("ALTER TABLE history RENAME TO history_v1")
        db.execute(_HISTORY_TABLE)
        runs: dict[tuple[str, str], list[bytes]] = {}
        for hub, instance_id, event in db.execute(
                "SELECT hub, instance_id, event FROM history_v1 ORDER BY hub, instance_id, seq"):
            runs.setdefault((hub, instance_id), []).append(bytes(event))
        db.executemany(_APPEND_HISTORY, [(hub, instance_id, 0, len(events), pack_events(events))
                                         for (hub, instance_id), events in runs.items()])
        db.execute("DROP TABLE history_v1")
        db.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION),))
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    logger.info("upgraded the emulator database to schema version %d", SCHEMA_VERSION)
