"""Instance lifecycle over raw stubs: delayed start, rewind, recovery, purge, history, waits, old workers."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import grpc
import pytest
from google.protobuf import timestamp_pb2

from durabletask.emulator import Emulator
from durabletask.emulator.store import MemoryStore
from durabletask.internal import orchestrator_service_pb2 as pb
from tests.emulator.harness import COMPLETED, FAILED, Harness, finish, harness, kinds, schedule, sub, sv, timer


def ts_in(seconds: float) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.FromNanoseconds(int((time.time() + seconds) * 1e9))
    return ts


def test_delayed_start_runs_when_due_with_the_dispatch_time_as_now() -> None:
    with harness() as h:
        items = h.stream()
        at = ts_in(0.6)
        iid = h.start(scheduledStartTimestamp=at)
        state = h.state(iid)
        assert state.orchestrationStatus == pb.ORCHESTRATION_STATUS_PENDING
        assert state.scheduledStartTimestamp == at
        items.none(0.3)
        request = items.next().orchestratorRequest
        assert request.newEvents[0].timestamp.ToNanoseconds() >= at.ToNanoseconds()
        assert request.newEvents[1].executionStarted.scheduledStartTimestamp == at


def test_wait_for_start_and_completion_are_woken_by_the_change() -> None:
    with harness() as h:
        items = h.stream()
        iid = h.start()
        results: dict[str, float] = {}

        def wait(kind: str) -> None:
            call = h.stub.WaitForInstanceStart if kind == "start" else h.stub.WaitForInstanceCompletion
            call(pb.GetInstanceRequest(instanceId=iid), timeout=30)
            results[kind] = time.monotonic()

        waiters = [threading.Thread(target=wait, args=(k,)) for k in ("start", "done")]
        for w in waiters:
            w.start()
        time.sleep(0.3)
        assert results == {}
        item = items.next()
        h.complete(item, schedule(1))
        began = time.monotonic()
        waiters[0].join(5)
        assert "start" in results and "done" not in results
        h.finish_activity(items.next(), "1")
        h.complete(items.next(), finish(2))
        waiters[1].join(5)
        assert results["done"] - began < 2.0
        with pytest.raises(grpc.RpcError) as error:
            h.stub.WaitForInstanceCompletion(pb.GetInstanceRequest(instanceId=h.start()), timeout=0.3)
        assert error.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        missing = h.stub.WaitForInstanceCompletion(pb.GetInstanceRequest(instanceId="nope"), timeout=5)
        assert not missing.exists


@pytest.mark.parametrize("transport", ["h2", "grpcio"])
def test_waits_answer_at_once_when_there_and_time_out_with_a_clear_message(transport: str) -> None:
    with harness(transport=transport) as h:
        items = h.stream()
        iid = h.start(input='"in"')
        with pytest.raises(grpc.RpcError) as error:
            h.stub.WaitForInstanceCompletion(pb.GetInstanceRequest(instanceId=iid), timeout=0.4)
        assert error.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert error.value.details() == f"instance '{iid}' did not complete before the deadline"
        item = items.next()
        h.complete(item, finish(1, '"out"'))
        began = time.monotonic()
        bare = h.stub.WaitForInstanceCompletion(pb.GetInstanceRequest(instanceId=iid), timeout=5)
        full = h.stub.WaitForInstanceStart(pb.GetInstanceRequest(instanceId=iid, getInputsAndOutputs=True), timeout=5)
        assert time.monotonic() - began < 1.0  # already there: answered at once, not at the deadline
        assert bare.exists and bare.orchestrationState.orchestrationStatus == COMPLETED
        assert not bare.orchestrationState.HasField("input") and not bare.orchestrationState.HasField("output")
        assert full.orchestrationState.input.value == '"in"' and full.orchestrationState.output.value == '"out"'


@pytest.mark.parametrize("transport", ["h2", "grpcio"])
def test_a_wait_the_caller_gives_up_on_leaves_nothing_behind(transport: str) -> None:
    with harness(transport=transport) as h:
        items = h.stream()
        iid = h.start()
        hub = h.emulator.engine.hub(None)
        calls = [h.stub.WaitForInstanceCompletion.future(pb.GetInstanceRequest(instanceId=iid), timeout=30)
                 for _ in range(3)]
        deadline = time.monotonic() + 5
        while len(hub.waiters.get(iid, [])) < 3:
            assert time.monotonic() < deadline, "the waits were not registered"
            time.sleep(0.01)
        calls[0].cancel()
        calls[1].cancel()
        while len(hub.waiters.get(iid, [])) != 1:
            assert time.monotonic() < deadline, "a cancelled wait stayed registered"
            time.sleep(0.01)
        h.complete(items.next(), finish(1))
        assert calls[2].result(5).orchestrationState.orchestrationStatus == COMPLETED
        assert iid not in hub.waiters


def _failed_with_child(h: Harness) -> tuple[str, str]:
    """A parent whose sub-orchestration failed after one good activity; both FAILED."""
    items = h.stream()
    pid = h.start("parent")
    h.complete(items.next(), sub(1, "kid"))
    child = items.next()
    h.complete(child, schedule(1, "good"))
    h.finish_activity(items.next(), "g")
    h.complete(items.next(), schedule(2, "bad"))
    h.finish_activity(items.next(), failureDetails=pb.TaskFailureDetails(errorType="E", errorMessage="bad"))
    h.complete(items.next(), finish(3, status=FAILED, failure=pb.TaskFailureDetails(errorMessage="child")))
    h.complete(items.next(), finish(2, status=FAILED, failure=pb.TaskFailureDetails(errorMessage="parent")))
    assert h.wait(pid).orchestrationStatus == FAILED
    items.close()
    return pid, "kid"


def test_server_side_rewind_rewrites_history_and_rewinds_failed_children() -> None:
    with harness() as h:
        pid, kid = _failed_with_child(h)
        items = h.stream()
        h.stub.RewindInstance(pb.RewindInstanceRequest(instanceId=pid, reason=sv("again")))
        assert h.state(pid).orchestrationStatus == pb.ORCHESTRATION_STATUS_RUNNING
        seen = {}
        for _ in range(2):
            item = items.next()
            seen[item.orchestratorRequest.instanceId] = item
        parent, child = seen[pid].orchestratorRequest, seen[kid].orchestratorRequest
        for request in (parent, child):
            assert kinds(request.newEvents) == ["orchestratorStarted", "executionRewound"]
            past = kinds(request.pastEvents)
            assert not {"taskFailed", "subOrchestrationInstanceFailed", "executionCompleted"} & set(past), past
        assert kinds(child.pastEvents).count("taskScheduled") == 1  # the failed activity's is gone
        assert child.newEvents[1].executionRewound.parentExecutionId.value == parent.executionId.value
        started = child.pastEvents[1].executionStarted
        assert started.orchestrationInstance.executionId.value == child.executionId.value
        assert started.parentInstance.orchestrationInstance.executionId.value == parent.executionId.value
        # the child re-runs the failed activity and completes; the parent hears of it
        h.complete(seen[pid])
        h.complete(seen[kid], schedule(2, "bad"))
        h.finish_activity(items.next(), "fine now")
        h.complete(items.next(), finish(3, '"child ok"'))
        new = items.next().orchestratorRequest.newEvents
        assert kinds(new)[-1] == "subOrchestrationInstanceCompleted"
        assert new[-1].subOrchestrationInstanceCompleted.result.value == '"child ok"'


def test_a_rewind_action_from_the_worker_replaces_the_history() -> None:
    with harness(rewind_mode="worker") as h:
        items = h.stream()
        iid = h.start()
        h.complete(items.next(), schedule(1, "bad"))
        h.finish_activity(items.next(), failureDetails=pb.TaskFailureDetails(errorMessage="x"))
        h.complete(items.next(), finish(2, status=FAILED))
        h.wait(iid)
        h.stub.RewindInstance(pb.RewindInstanceRequest(instanceId=iid))
        item = items.next()
        request = item.orchestratorRequest
        assert "executionCompleted" in kinds(request.pastEvents)  # the worker rewrites
        assert kinds(request.newEvents) == ["orchestratorStarted", "executionRewound"]
        cleaned = [e for e in list(request.pastEvents) + list(request.newEvents)
                   if e.WhichOneof("eventType") not in ("taskFailed", "taskScheduled", "executionCompleted")]
        cleaned[1].executionStarted.orchestrationInstance.executionId.value = "new-execution"
        h.complete(item, pb.OrchestratorAction(id=-1, rewindOrchestration=pb.RewindOrchestrationAction(
            newHistory=cleaned)))
        replay = items.next().orchestratorRequest
        assert replay.executionId.value == "new-execution"
        assert kinds(replay.newEvents) == ["orchestratorStarted"]
        assert kinds(replay.pastEvents) == kinds(cleaned)
        assert h.state(iid).orchestrationStatus == pb.ORCHESTRATION_STATUS_RUNNING


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
def test_state_survives_a_restart_of_the_emulator(kind: str, tmp_path: Path) -> None:
    store = MemoryStore()
    options = {"store": store} if kind == "memory" else {"db_path": tmp_path / "e.db"}
    with Emulator(**options) as emulator:  # type: ignore[arg-type]
        h = Harness(emulator)
        items = h.stream()
        iid = h.start(input='"x"')
        h.complete(items.next(), schedule(1), timer(2, ts_in(0.5)))
        items.next()  # the activity, never completed: lost with the worker
        h.close()
    with Emulator(**options) as emulator:  # type: ignore[arg-type]
        h = Harness(emulator)
        items = h.stream()
        activity = items.next()
        assert activity.activityRequest.taskId == 1
        h.finish_activity(activity, "1")
        item = items.next()
        assert kinds(item.orchestratorRequest.pastEvents) == [
            "orchestratorStarted", "executionStarted", "taskScheduled", "timerCreated", "orchestratorCompleted"]
        h.complete(item)
        fired = items.next(timeout=3).orchestratorRequest.newEvents
        assert kinds(fired) == ["orchestratorStarted", "timerFired"]
        assert h.state(iid).input.value == '"x"'
        h.close()


def test_history_is_streamed_in_chunks() -> None:
    with harness() as h:
        items = h.stream()
        iid = h.start()
        h.complete(items.next(), *[schedule(i) for i in range(1, 301)])
        chunks = list(h.stub.StreamInstanceHistory(pb.StreamInstanceHistoryRequest(instanceId=iid)))
        assert len(chunks) == 2 and sum(len(c.events) for c in chunks) == 303
        with pytest.raises(grpc.RpcError) as error:
            list(h.stub.StreamInstanceHistory(pb.StreamInstanceHistoryRequest(instanceId=iid,
                                                                              executionId=sv("other"))))
        assert error.value.code() == grpc.StatusCode.NOT_FOUND


def test_workers_without_completion_tokens_are_matched_by_instance_and_task() -> None:
    with harness() as h:
        items = h.stream()
        iid = h.start()
        items.next()
        h.stub.CompleteOrchestratorTask(pb.OrchestratorResponse(instanceId=iid, actions=[schedule(1)]))
        activity = items.next()
        h.stub.CompleteActivityTask(pb.ActivityResponse(instanceId=iid, taskId=1, result=sv("1")))
        assert kinds(items.next().orchestratorRequest.newEvents) == ["orchestratorStarted", "taskCompleted"]
        assert activity.completionToken


def test_purge_by_batch_and_recursively() -> None:
    with harness() as h:
        items = h.stream()
        done = []
        for _ in range(3):
            iid = h.start()
            h.complete(items.next(), finish(1))
            done.append(iid)
        running = h.start()
        batch = pb.PurgeInstancesRequest(instanceBatch=pb.InstanceBatch(instanceIds=[*done[:2], running, "nope"]))
        assert h.stub.PurgeInstances(batch).deletedInstanceCount == 2
        assert h.stub.GetInstance(pb.GetInstanceRequest(instanceId=done[0])).exists is False
        # recursive: parent and child, the child found through the parent's history
        pid = h.start("parent")
        items.next()  # the `running` one
        h.complete(items.next(), sub(1, "kid1"))
        h.complete(items.next(), finish(1))
        h.complete(items.next(), finish(2))
        assert h.wait(pid).orchestrationStatus == COMPLETED
        response = h.stub.PurgeInstances(pb.PurgeInstancesRequest(instanceId=pid, recursive=True))
        assert response.deletedInstanceCount == 2 and response.isComplete.value
        assert not h.stub.GetInstance(pb.GetInstanceRequest(instanceId="kid1")).exists


def test_a_message_to_a_missing_instance_is_dropped_and_an_id_conflict_reported() -> None:
    with harness() as h:
        items = h.stream()
        busy = h.start(instanceId="busy")
        items.next()
        pid = h.start("parent")
        h.complete(items.next(),
                   pb.OrchestratorAction(id=1, sendEvent=pb.SendEventAction(
                       instance=pb.OrchestrationInstance(instanceId="ghost"), name="e")),
                   sub(2, busy))
        new = items.next().orchestratorRequest
        assert new.instanceId == pid
        assert kinds(new.newEvents) == ["orchestratorStarted", "subOrchestrationInstanceFailed"]
        assert "busy" in new.newEvents[1].subOrchestrationInstanceFailed.failureDetails.errorMessage
        assert kinds(new.pastEvents).count("eventSent") == 1
