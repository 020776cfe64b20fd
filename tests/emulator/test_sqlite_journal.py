"""The SQLite store's journal: commits land in the journal file, fold into the tables, and survive a crash."""

from __future__ import annotations

import logging
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from durabletask.emulator.store import Batch, SqliteStore, journal
from durabletask.emulator.store.base import COMPLETED, RUNNING
from durabletask.emulator.store.journal_file import HEADER_SIZE
from tests.emulator.test_store import activity, commit, message, record


def table_counts(path: Path) -> dict[str, int]:
    db = sqlite3.connect(str(path))
    try:
        return {table: db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
                for table in ("instances", "history", "messages", "activities")}
    finally:
        db.close()


def journal_of(path: Path) -> Path:
    return path.with_name(path.name + ".journal")


def open_store(path: Path, **kw: int) -> SqliteStore:
    store = SqliteStore(path, **kw)  # type: ignore[arg-type]
    store.open()
    return store


def crash(store: SqliteStore) -> None:
    """Drop the connection and the journal without folding, as a killed process would."""
    store.db.close()
    store._db = None
    store.journal.close()


def commit_instances(store: SqliteStore, count: int, start: int = 0) -> None:
    for i in range(start, start + count):
        batch = Batch()
        batch.put_instance(record(f"i{i}"))
        batch.append_history("default", f"i{i}", 0, [b"e%d" % i])
        commit(store, batch)


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
    assert table_counts(path) == {"instances": 1, "history": 1, "messages": 0, "activities": 0}
    assert not journal_of(path).exists()  # a clean close folds the journal and removes it
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
        assert journal_of(store.path).stat().st_size > HEADER_SIZE or i == 3
    assert journal_of(store.path).stat().st_size == HEADER_SIZE  # emptied by the fold
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
    assert table_counts(path)["instances"] == 0 and journal_of(path).stat().st_size > HEADER_SIZE
    again = open_store(path)
    assert again.db.execute("SELECT COUNT(*) FROM instances").fetchone()[0] == 1  # folded on open
    assert journal_of(path).stat().st_size == HEADER_SIZE
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
    assert store.db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0] == "3"
    store.close()


V2_JOURNAL_TABLE = """
UPDATE meta SET value = '2' WHERE key = 'schema_version';
DELETE FROM meta WHERE key = 'journal_generation';
CREATE TABLE journal (seq INTEGER PRIMARY KEY, ops BLOB NOT NULL);
"""


def test_a_version_2_file_has_its_journal_table_folded_and_dropped(tmp_path: Path) -> None:
    path = tmp_path / "e.db"
    store = open_store(path)
    commit_instances(store, 1)
    store.close()
    db = sqlite3.connect(str(path))
    db.executescript(V2_JOURNAL_TABLE)
    rows = [[journal.entry(op) for op in batch.ops] for batch in _v2_batches()]
    db.executemany("INSERT INTO journal (ops) VALUES (?)", [(journal.encode(r),) for r in rows])
    db.commit()
    db.close()
    again = open_store(path)
    assert again.read_history("default", "i0") == [b"e0", b"more"]
    assert [r.instance_id for r in again.load("default").instances] == ["i0", "i1"]
    assert again.db.execute("SELECT 1 FROM sqlite_master WHERE name = 'journal'").fetchone() is None
    assert again.db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0] == "3"
    again.close()


def _v2_batches() -> list[Batch]:
    first = Batch()
    first.append_history("default", "i0", 1, [b"more"])
    second = Batch()
    second.put_instance(record("i1"))
    return [first, second]


@pytest.mark.parametrize("damage", ["cut", "flipped"])
def test_a_damaged_end_of_the_journal_is_dropped_with_a_warning_and_the_commits_before_it_are_kept(
        tmp_path: Path, damage: str, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "e.db"
    store = open_store(path)
    commit_instances(store, 3)
    crash(store)
    data = bytearray(journal_of(path).read_bytes())
    if damage == "cut":  # the last write was cut short (a power cut)
        del data[-3:]
    else:  # a byte of the last record is wrong
        data[-2] ^= 0xFF
    journal_of(path).write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING, logger="durabletask.emulator.store"):
        again = open_store(path)
    assert "dropped its last" in caplog.text and "after 2 complete commit(s)" in caplog.text
    assert [r.instance_id for r in again.load("default").instances] == ["i0", "i1"]
    commit_instances(again, 1, start=2)  # the file goes on after the cut: i2 is committed again
    assert again.read_history("default", "i2") == [b"e2"]
    again.close()


def test_records_of_a_generation_already_folded_are_ignored(tmp_path: Path) -> None:
    """The process died after a fold committed and before the journal file was emptied."""
    path = tmp_path / "e.db"
    store = open_store(path)
    commit_instances(store, 2)
    before_fold = journal_of(path).read_bytes()
    store.load("default")  # folds
    crash(store)
    journal_of(path).write_bytes(before_fold)
    again = open_store(path)  # replaying the two commits again would append their history twice
    assert again.read_history("default", "i0") == [b"e0"] and again.read_history("default", "i1") == [b"e1"]
    assert journal_of(path).stat().st_size == HEADER_SIZE
    again.close()


def test_a_damaged_record_in_the_journal_gives_a_clear_error_and_changes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "e.db"
    store = open_store(path)
    commit_instances(store, 1)
    store.journal.append(b"\x01not marshal")  # a valid record whose content is not a commit
    crash(store)
    with pytest.raises(RuntimeError, match=r"commit 2 of .*e\.db\.journal cannot be read"):
        open_store(path)
    assert table_counts(path)["instances"] == 0


def test_a_file_that_is_not_a_journal_is_not_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "e.db"
    journal_of(path).write_text("my notes, not a journal\n")
    with pytest.raises(RuntimeError, match=r"is not a durabletask journal; move it away"):
        open_store(path)
    assert journal_of(path).read_text() == "my notes, not a journal\n"
