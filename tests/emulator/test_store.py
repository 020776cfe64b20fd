"""Both stores honour the same contract: atomic batches, ordered history, cascading deletes, reload."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from durabletask.emulator.store import (
    ActivityRecord,
    Batch,
    InstanceRecord,
    MemoryStore,
    Message,
    SqliteStore,
    Store,
    StoreRunner,
)
from durabletask.emulator.store.base import COMPLETED, FAILED, PENDING, RUNNING


@pytest.fixture(params=["memory", "sqlite", "sqlite-fold-every-commit"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    s: Store = MemoryStore() if request.param == "memory" else SqliteStore(
        tmp_path / "e.db", fold_commits=1 if request.param == "sqlite-fold-every-commit" else 256)
    s.open()
    yield s
    s.close()


def record(instance_id: str = "i1", hub: str = "default", status: int = RUNNING, **kw: object) -> InstanceRecord:
    fields: dict[str, object] = dict(
        hub=hub, instance_id=instance_id, execution_id="x1", name="orch", version=None, status=status,
        created_at=1.5, updated_at=2.5,
    )
    fields.update(kw)
    return InstanceRecord(**fields)  # type: ignore[arg-type]


def message(mid: int, instance_id: str = "i1", hub: str = "default", **kw: object) -> Message:
    fields: dict[str, object] = dict(id=mid, hub=hub, instance_id=instance_id, kind="eventRaised",
                                     event=b"\x01\x02", visible_at=3.0)
    fields.update(kw)
    return Message(**fields)  # type: ignore[arg-type]


def activity(aid: int, instance_id: str = "i1") -> ActivityRecord:
    return ActivityRecord(id=aid, hub="default", instance_id=instance_id, execution_id="x1", task_id=aid,
                          name="act", version="1", request=b"req")


def commit(store: Store, batch: Batch) -> None:
    assert store.apply([batch]) == [None]


def test_a_committed_batch_is_loaded_back_field_by_field(store: Store) -> None:
    full = record(
        "i1", version="2.0", completed_at=9.0, scheduled_start_at=4.0, input='"in"', output='"out"',
        custom_status='"cs"', failure=b"\x0a\x01x", parent_instance_id="p", parent_execution_id="px",
        parent_task_id=7, parent_name="parent", parent_version="1", tags={"a": "b"},
    )
    batch = Batch()
    batch.put_instance(full)
    batch.append_history("default", "i1", 0, [b"e0", b"e1"])
    batch.put_message(message(1, execution_id="x1"))
    batch.put_message(message(2, kind="", event=b""))
    batch.put_activity(activity(5))
    commit(store, batch)
    snap = store.load("default")
    assert snap.instances == [full]
    assert snap.histories == {"i1": [b"e0", b"e1"]}
    assert snap.messages == [message(1, execution_id="x1"), message(2, kind="", event=b"")]
    assert snap.activities == [activity(5)]
    assert store.max_ids() == (2, 5)
    assert store.load("other").instances == []


def test_a_record_is_snapshotted_when_the_change_is_made(store: Store) -> None:
    live = record("i1", tags={"k": "v"})
    batch = Batch()
    batch.put_instance(live)
    live.status = COMPLETED
    live.tags["k"] = "changed"
    commit(store, batch)
    (loaded,) = store.load("default").instances
    assert loaded.status == RUNNING and loaded.tags == {"k": "v"}


def test_history_appends_in_order_and_is_cleared(store: Store) -> None:
    batch = Batch()
    batch.put_instance(record())
    batch.append_history("default", "i1", 0, [b"a"])
    batch.append_history("default", "i1", 1, [b"b", b"c"])
    commit(store, batch)
    assert store.read_history("default", "i1") == [b"a", b"b", b"c"]
    batch = Batch()
    batch.clear_history("default", "i1")
    batch.append_history("default", "i1", 0, [b"new"])
    commit(store, batch)
    assert store.read_history("default", "i1") == [b"new"]


def test_finished_instances_are_loaded_without_history_except_failed_ones(store: Store) -> None:
    batch = Batch()
    batch.put_instance(record("done", status=COMPLETED))
    batch.append_history("default", "done", 0, [b"a"])
    batch.put_instance(record("failed", status=FAILED))
    batch.append_history("default", "failed", 0, [b"f"])
    batch.put_instance(record("pending", status=PENDING))
    commit(store, batch)
    snap = store.load("default")
    assert snap.histories == {"pending": [], "failed": [b"f"]}
    assert store.read_history("default", "done") == [b"a"]


def test_a_failing_batch_leaves_no_trace_and_others_commit(store: Store) -> None:
    first = Batch()
    first.put_instance(record("i1"))
    first.put_message(message(1))
    commit(store, first)
    good = Batch()
    good.put_message(message(2))
    bad = Batch()
    bad.put_instance(record("i2"))
    bad.put_message(message(1))  # duplicate id
    errors = store.apply([good, bad])
    assert errors[0] is None and errors[1] is not None
    snap = store.load("default")
    assert [r.instance_id for r in snap.instances] == ["i1"]
    assert [m.id for m in snap.messages] == [1, 2]


def test_deleting_an_instance_deletes_its_history_inbox_and_activities_only(store: Store) -> None:
    batch = Batch()
    for iid in ("a", "b"):
        batch.put_instance(record(iid))
        batch.append_history("default", iid, 0, [iid.encode()])
    batch.put_message(message(1, "a"))
    batch.put_message(message(2, "b"))
    batch.put_activity(activity(1, "a"))
    batch.put_activity(activity(2, "b"))
    commit(store, batch)
    batch = Batch()
    batch.delete_instance("default", "a")
    commit(store, batch)
    snap = store.load("default")
    assert [r.instance_id for r in snap.instances] == ["b"]
    assert [m.id for m in snap.messages] == [2]
    assert [a.id for a in snap.activities] == [2]
    assert store.read_history("default", "a") == []


def test_messages_and_activities_are_deleted_by_id(store: Store) -> None:
    batch = Batch()
    batch.put_instance(record())
    for i in (1, 2, 3):
        batch.put_message(message(i))
    batch.put_activity(activity(1))
    commit(store, batch)
    batch = Batch()
    batch.delete_messages([1, 3])
    batch.delete_activity(1)
    commit(store, batch)
    snap = store.load("default")
    assert [m.id for m in snap.messages] == [2] and snap.activities == []


def test_hubs_are_separate(store: Store) -> None:
    batch = Batch()
    batch.put_instance(record("same", hub="h1"))
    batch.put_instance(record("same", hub="h2", name="other"))
    batch.append_history("h1", "same", 0, [b"1"])
    batch.append_history("h2", "same", 0, [b"2"])
    commit(store, batch)
    assert [r.name for r in store.load("h2").instances] == ["other"]
    assert store.read_history("h1", "same") == [b"1"]


def test_sqlite_survives_reopening(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "e.db"
    s = SqliteStore(path)
    s.open()
    batch = Batch()
    batch.put_instance(record())
    batch.put_message(message(1))
    commit(s, batch)
    s.close()
    again = SqliteStore(path)
    again.open()
    assert [r.instance_id for r in again.load("default").instances] == ["i1"]
    assert again.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    again.close()


def test_sqlite_refuses_a_file_another_store_has_open(tmp_path: Path) -> None:
    first = SqliteStore(tmp_path / "e.db")
    first.open()
    try:
        with pytest.raises(RuntimeError, match="in use by another process"):
            SqliteStore(tmp_path / "e.db").open()
    finally:
        first.close()


def test_sqlite_rejects_an_unknown_schema_version(tmp_path: Path) -> None:
    s = SqliteStore(tmp_path / "e.db")
    s.open()
    s.db.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    s.close()
    with pytest.raises(RuntimeError, match="schema version 99"):
        SqliteStore(tmp_path / "e.db").open()


@pytest.mark.parametrize("kind", ["memory", "sqlite", "sqlite-thread", "sqlite-full"])
def test_runner_commits_in_order_and_groups_concurrent_batches(kind: str, tmp_path: Path) -> None:
    async def main() -> None:
        s: Store = MemoryStore() if kind == "memory" else SqliteStore(
            tmp_path / "e.db", synchronous="FULL" if kind == "sqlite-full" else "NORMAL")
        runner = StoreRunner(s, threaded=True if kind == "sqlite-thread" else None)
        assert runner.threaded == (kind in ("sqlite-thread", "sqlite-full"))  # FULL waits for fsync: own thread
        await runner.start()
        batch = Batch()
        batch.put_instance(record())
        futures = [runner.submit(batch)]
        for i in range(50):
            b = Batch()
            b.put_message(message(i + 1))
            futures.append(runner.submit(b))
        history = await runner.call(s.load, "default")  # submitted after all batches: sees them
        await asyncio.gather(*futures)
        assert len(history.messages) == 50
        await runner.flush()
        if kind != "memory":
            assert runner.commits < 51  # grouped
        bad = Batch()
        bad.put_message(message(1))
        with pytest.raises(Exception, match=r"(?i)unique|already exists"):
            await runner.submit(bad)
        await runner.stop()

    asyncio.run(main())
