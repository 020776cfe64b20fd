"""The SQLite store's journal: commits land as journal rows, fold into the tables, and survive a crash."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from durabletask.emulator.store import Batch, SqliteStore
from durabletask.emulator.store.base import COMPLETED, RUNNING
from tests.emulator.test_store import activity, commit, message, record


def table_counts(path: Path) -> dict[str, int]:
    db = sqlite3.connect(str(path))
    try:
        return {table: db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
                for table in ("instances", "history", "messages", "activities", "journal")}
    finally:
        db.close()


def open_store(path: Path, **kw: int) -> SqliteStore:
    store = SqliteStore(path, **kw)  # type: ignore[arg-type]
    store.open()
    return store


def crash(store: SqliteStore) -> None:
    """Drop the connection without folding, as a killed process would."""
    store.db.close()
    store._db = None


def test_a_fold_writes_the_net_effect_of_the_journaled_commits(tmp_path: Path) -> None:
    path = tmp_path / "e.db"
    store = open_store(path)
    batch = Batch()
    batch.put_instance(record("i1", status=RUNNING))
    batch.append_history("default", "i1", 0, [b"a", b"b"])
    batch.put_message(message(1))
    batch.put_activity(activity(1))
    commit(store, batch)
    batch = Batch()
    batch.delete_messages([1])
    batch.delete_activity(1)
    batch.put_instance(record("i1", status=COMPLETED))
    batch.append_history("default", "i1", 2, [b"c"])
    commit(store, batch)
    store.close()
    # The history written in one fold window is one row; the message and activity never reached their tables.
    assert table_counts(path) == {"instances": 1, "history": 1, "messages": 0, "activities": 0, "journal": 0}
    again = open_store(path)
    (loaded,) = again.load("default").instances
    assert loaded.status == COMPLETED
    assert again.read_history("default", "i1") == [b"a", b"b", b"c"]
    again.close()


def test_the_journal_is_folded_after_the_configured_number_of_commits(tmp_path: Path) -> None:
    path = tmp_path / "e.db"
    store = open_store(path, fold_commits=3)
    for i in range(1, 4):
        batch = Batch()
        batch.put_message(message(i))
        commit(store, batch)
        assert store.folds == (1 if i == 3 else 0)
    assert store.db.execute("SELECT COUNT(*) FROM journal").fetchone()[0] == 0
    assert store.db.execute("SELECT COUNT(*) FROM messages").fetchone()[0] == 3
    store.close()


def test_reads_see_journaled_history_on_top_of_the_folded_rows(tmp_path: Path) -> None:
    store = open_store(tmp_path / "e.db")
    batch = Batch()
    batch.put_instance(record())
    batch.append_history("default", "i1", 0, [b"a"])
    commit(store, batch)
    store.load("default")  # folds
    batch = Batch()
    batch.append_history("default", "i1", 1, [b"b", b"c"])
    commit(store, batch)
    assert store.read_history("default", "i1") == [b"a", b"b", b"c"]
    bad = Batch()
    bad.append_history("default", "i1", 1, [b"x"])  # position 1 is taken (two rows in the table, one journaled)
    assert store.apply([bad])[0] is not None
    batch = Batch()
    batch.clear_history("default", "i1")
    batch.append_history("default", "i1", 0, [b"new"])
    commit(store, batch)
    assert store.read_history("default", "i1") == [b"new"]
    store.close()
    assert table_counts(tmp_path / "e.db")["history"] == 1


def test_an_instance_deleted_and_started_again_within_one_fold_keeps_only_its_new_rows(tmp_path: Path) -> None:
    path = tmp_path / "e.db"
    store = open_store(path)
    batch = Batch()
    batch.put_instance(record("i1", name="old"))
    batch.append_history("default", "i1", 0, [b"old"])
    batch.put_message(message(1))
    batch.put_activity(activity(1))
    commit(store, batch)
    store.load("default")  # folds: the old rows are in the tables
    batch = Batch()
    batch.put_message(message(2))  # journaled, then deleted with its instance
    commit(store, batch)
    batch = Batch()
    batch.delete_instance("default", "i1")
    batch.put_instance(record("i1", name="new"))
    batch.append_history("default", "i1", 0, [b"new"])
    batch.put_message(message(3))
    commit(store, batch)
    store.close()
    again = open_store(path)
    snap = again.load("default")
    assert [r.name for r in snap.instances] == ["new"]
    assert snap.histories == {"i1": [b"new"]}
    assert [m.id for m in snap.messages] == [3] and snap.activities == []
    again.close()


def test_journaled_commits_survive_a_crash_and_are_folded_on_open(tmp_path: Path) -> None:
    path = tmp_path / "e.db"
    store = open_store(path)
    batch = Batch()
    batch.put_instance(record())
    batch.append_history("default", "i1", 0, [b"a"])
    batch.put_message(message(7))
    commit(store, batch)
    crash(store)
    assert table_counts(path)["journal"] == 1 and table_counts(path)["instances"] == 0
    again = open_store(path)
    assert again.db.execute("SELECT COUNT(*) FROM journal").fetchone()[0] == 0
    snap = again.load("default")
    assert [r.instance_id for r in snap.instances] == ["i1"] and snap.histories == {"i1": [b"a"]}
    assert again.max_ids() == (7, 0)
    again.close()


def test_commits_survive_sigkill_of_the_writing_process(tmp_path: Path) -> None:
    path = tmp_path / "e.db"
    script = textwrap.dedent(f"""
        import os, signal, sys
        sys.path.insert(0, {str(Path(__file__).resolve().parents[2])!r})
        from durabletask.emulator.store import Batch, SqliteStore
        from tests.emulator.test_store import message, record
        store = SqliteStore({str(path)!r}, fold_commits=40)
        store.open()
        for i in range(100):
            batch = Batch()
            batch.put_instance(record(f"i{{i}}"))
            batch.append_history("default", f"i{{i}}", 0, [b"e%d" % i])
            batch.put_message(message(i + 1, f"i{{i}}"))
            if i:
                batch.delete_messages([i])
            assert store.apply([batch]) == [None]
        print("committed", store.folds, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert result.returncode == -9, result.stderr
    assert result.stdout.split() == ["committed", "2"]  # 80 commits folded, 20 only in the journal
    store = open_store(path)
    snap = store.load("default")
    assert len(snap.instances) == 100
    assert [m.id for m in snap.messages] == [100]
    assert store.read_history("default", "i99") == [b"e99"]
    store.close()


V1_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE instances (hub TEXT NOT NULL, instance_id TEXT NOT NULL, execution_id TEXT NOT NULL, name TEXT NOT NULL,
    version TEXT, status INTEGER NOT NULL, created_at REAL NOT NULL, updated_at REAL NOT NULL, completed_at REAL,
    scheduled_start_at REAL, input TEXT, output TEXT, custom_status TEXT, failure BLOB, parent_instance_id TEXT,
    parent_execution_id TEXT, parent_task_id INTEGER, parent_name TEXT, parent_version TEXT, tags TEXT,
    UNIQUE (hub, instance_id));
CREATE TABLE history (hub TEXT NOT NULL, instance_id TEXT NOT NULL, seq INTEGER NOT NULL, event BLOB NOT NULL,
    PRIMARY KEY (hub, instance_id, seq)) WITHOUT ROWID;
CREATE TABLE messages (id INTEGER PRIMARY KEY, hub TEXT NOT NULL, instance_id TEXT NOT NULL, execution_id TEXT,
    kind TEXT NOT NULL, visible_at REAL NOT NULL, event BLOB NOT NULL);
CREATE TABLE activities (id INTEGER PRIMARY KEY, hub TEXT NOT NULL, instance_id TEXT NOT NULL,
    execution_id TEXT NOT NULL, task_id INTEGER NOT NULL, name TEXT NOT NULL, version TEXT, request BLOB NOT NULL);
CREATE TABLE entities (hub TEXT NOT NULL, instance_id TEXT NOT NULL, state TEXT, last_modified REAL NOT NULL,
    locked_by TEXT, lock_execution_id TEXT, critical_section_id TEXT, PRIMARY KEY (hub, instance_id)) WITHOUT ROWID;
INSERT INTO meta VALUES ('schema_version', '1');
INSERT INTO instances (hub, instance_id, execution_id, name, status, created_at, updated_at)
    VALUES ('default', 'i1', 'x1', 'orch', 0, 1.5, 2.5);
INSERT INTO history VALUES ('default', 'i1', 0, x'0a01'), ('default', 'i1', 1, x'0b02'), ('default', 'i2', 0, x'01');
"""


def test_a_version_1_file_is_upgraded(tmp_path: Path) -> None:
    path = tmp_path / "e.db"
    db = sqlite3.connect(str(path))
    db.executescript(V1_SCHEMA)
    db.close()
    store = open_store(path)
    assert store.load("default").histories == {"i1": [b"\x0a\x01", b"\x0b\x02"]}
    assert store.read_history("default", "i2") == [b"\x01"]
    batch = Batch()
    batch.append_history("default", "i1", 2, [b"next"])  # appends where version 1 left off
    commit(store, batch)
    assert store.read_history("default", "i1") == [b"\x0a\x01", b"\x0b\x02", b"next"]
    assert store.db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0] == "2"
    store.close()


def test_a_damaged_journal_row_is_reported_and_nothing_is_changed(tmp_path: Path) -> None:
    path = tmp_path / "e.db"
    store = open_store(path)
    batch = Batch()
    batch.put_instance(record())
    commit(store, batch)
    crash(store)
    db = sqlite3.connect(str(path))
    db.execute("INSERT INTO journal (ops) VALUES (?)", (b"\x01not marshal",))
    db.commit()
    db.close()
    with pytest.raises(RuntimeError, match=r"journal row 2 cannot be read"):
        open_store(path)
    assert table_counts(path)["journal"] == 2
