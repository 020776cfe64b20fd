"""The default store: one SQLite file in WAL mode, written by a single connection.

Durability: a batch is acknowledged only after its transaction committed. With the default
``synchronous=NORMAL`` in WAL mode a committed transaction survives the process being killed
(SIGKILL, a crash); only a power cut or an OS crash can lose the last commits, never corrupt the
file. ``synchronous="FULL"`` also survives those, at the cost of an fsync per commit.

Speed: several batches are committed in one transaction when they arrive together (group commit);
statements are prepared once (sqlite3 caches them by text); the only indexes are the ones the
engine's deletes need, because queries are answered from the engine's memory.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
from collections.abc import Sequence
from pathlib import Path

from durabletask.emulator.store.base import (
    ENTITY_COLUMNS,
    INSTANCE_COLUMNS,
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
    PutActivity,
    PutEntity,
    PutInstance,
    PutMessage,
    Store,
    history_in_memory,
)

logger = logging.getLogger("durabletask.emulator.store")

SCHEMA_VERSION = 1

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
CREATE TABLE IF NOT EXISTS history (
    hub TEXT NOT NULL,
    instance_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    event BLOB NOT NULL,
    PRIMARY KEY (hub, instance_id, seq)
) WITHOUT ROWID;
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
"""

_PUT_INSTANCE = (
    f"INSERT OR REPLACE INTO instances ({', '.join(INSTANCE_COLUMNS)}) "
    f"VALUES ({', '.join('?' for _ in INSTANCE_COLUMNS)})"
)
_APPEND_HISTORY = "INSERT INTO history (hub, instance_id, seq, event) VALUES (?, ?, ?, ?)"
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

    def __init__(self, path: str | Path, *, synchronous: str = "NORMAL") -> None:
        if synchronous.upper() not in ("OFF", "NORMAL", "FULL", "EXTRA"):
            raise ValueError(f"synchronous must be OFF, NORMAL, FULL or EXTRA, not {synchronous!r}")
        self.path = Path(path)
        self._synchronous = synchronous.upper()
        self.waits_for_disk = self._synchronous in ("FULL", "EXTRA")
        self._db: sqlite3.Connection | None = None

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
            db.executescript(_SCHEMA)
            version = int(db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0])
            if version != SCHEMA_VERSION:
                raise RuntimeError(
                    f"{self.path} has schema version {version}, this emulator understands {SCHEMA_VERSION}; "
                    "use another --db file or upgrade durabletask"
                )
        except sqlite3.OperationalError as error:
            db.close()
            if "locked" in str(error):
                raise RuntimeError(f"{self.path} is in use by another process (another emulator?); stop it or "
                                   "use another --db file") from error
            raise
        except BaseException:
            db.close()
            raise
        self._db = db

    def close(self) -> None:
        if self._db is not None:
            with contextlib.suppress(sqlite3.Error):
                self._db.execute("PRAGMA optimize")
            self._db.close()
            self._db = None

    def load(self, hub: str) -> HubSnapshot:
        db = self.db
        snapshot = HubSnapshot()
        cursor = db.execute(f"SELECT {', '.join(INSTANCE_COLUMNS)} FROM instances WHERE hub = ?", (hub,))
        snapshot.instances = [InstanceRecord.from_row(row) for row in cursor]
        open_ids = {r.instance_id for r in snapshot.instances if history_in_memory(r.status)}
        for instance_id in open_ids:
            snapshot.histories[instance_id] = []
        for instance_id, event in db.execute(
            "SELECT instance_id, event FROM history WHERE hub = ? ORDER BY instance_id, seq", (hub,)
        ):
            events = snapshot.histories.get(instance_id)
            if events is not None:
                events.append(bytes(event))
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
            "SELECT event FROM history WHERE hub = ? AND instance_id = ? ORDER BY seq", (hub, instance_id)
        )
        return [bytes(row[0]) for row in cursor]

    def max_ids(self) -> tuple[int, int]:
        message_id = self.db.execute("SELECT COALESCE(MAX(id), 0) FROM messages").fetchone()[0]
        activity_id = self.db.execute("SELECT COALESCE(MAX(id), 0) FROM activities").fetchone()[0]
        return int(message_id), int(activity_id)

    def apply(self, batches: Sequence[Batch]) -> list[BaseException | None]:
        """Commit all batches in one transaction; if that fails, commit them one by one."""
        if not batches:
            return []
        db = self.db
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                for batch in batches:
                    self._write(db, batch)
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            return [None] * len(batches)
        except sqlite3.Error as error:
            if len(batches) == 1:
                logger.error("a write to %s failed: %s", self.path, error)
                return [error]
        results: list[BaseException | None] = []
        for batch in batches:
            results.extend(self.apply([batch]))
        return results

    @staticmethod
    def _write(db: sqlite3.Connection, batch: Batch) -> None:
        for op in batch.ops:
            if isinstance(op, AppendHistory):
                db.executemany(_APPEND_HISTORY, [
                    (op.hub, op.instance_id, op.first_seq + i, event) for i, event in enumerate(op.events)
                ])
            elif isinstance(op, PutMessage):
                db.execute(_PUT_MESSAGE, op.message.row())
            elif isinstance(op, DeleteMessages):
                db.executemany(_DELETE_MESSAGE, [(i,) for i in op.ids])
            elif isinstance(op, PutInstance):
                db.execute(_PUT_INSTANCE, op.record.row())
            elif isinstance(op, PutActivity):
                db.execute(_PUT_ACTIVITY, op.activity.row())
            elif isinstance(op, DeleteActivity):
                db.execute(_DELETE_ACTIVITY, (op.activity_id,))
            elif isinstance(op, ClearHistory):
                db.execute(_CLEAR_HISTORY, (op.hub, op.instance_id))
            elif isinstance(op, DeleteInstance):
                for statement in _DELETE_INSTANCE:
                    db.execute(statement, (op.hub, op.instance_id))
            elif isinstance(op, PutEntity):
                db.execute(_PUT_ENTITY, op.record.row())
            elif isinstance(op, DeleteEntity):
                db.execute(_DELETE_ENTITY, (op.hub, op.instance_id))
            else:  # pragma: no cover - a programming error in the engine
                raise TypeError(f"unknown store operation {op!r}")
