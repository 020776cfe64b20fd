"""The emulator over gRPC with raw stub calls: the protocol rules and the traps of protocol.md."""

from __future__ import annotations

import time

import grpc
import pytest
from google.protobuf import timestamp_pb2
from google.protobuf.wrappers_pb2 import Int32Value

from durabletask.internal import orchestrator_service_pb2 as pb
from tests.emulator.harness import (
    COMPLETED,
    FAILED,
    continue_as_new,
    finish,
    harness,
    kinds,
    schedule,
    sub,
    sv,
    timer,
)


def ts_in(seconds: float) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.FromNanoseconds(int((time.time() + seconds) * 1e9))
    return ts


def test_first_episode_and_history_layout() -> None:
    with harness() as h:
        items = h.stream()
        iid = h.start(input="1", tags={"t": "v"}, version=sv("2.0"))
        item = items.next()
        request = item.orchestratorRequest
        assert request.instanceId == iid and request.executionId.value
        assert list(request.pastEvents) == []
        assert kinds(request.newEvents) == ["orchestratorStarted", "executionStarted"]
        started = request.newEvents[1].executionStarted
        assert (started.name, started.input.value, started.version.value, dict(started.tags)) == \
            ("orch", "1", "2.0", {"t": "v"})
        assert started.orchestrationInstance.executionId.value == request.executionId.value
        h.complete(item, schedule(1, "act", "x"))
        activity = items.next()
        assert activity.activityRequest.name == "act" and activity.activityRequest.taskId == 1
        assert activity.activityRequest.orchestrationInstance.executionId.value == request.executionId.value
        h.finish_activity(activity, "y")
        item = items.next()
        assert kinds(item.orchestratorRequest.pastEvents) == [
            "orchestratorStarted", "executionStarted", "taskScheduled", "orchestratorCompleted"]
        assert kinds(item.orchestratorRequest.newEvents) == ["orchestratorStarted", "taskCompleted"]
        assert item.orchestratorRequest.newEvents[1].taskCompleted.result.value == "y"
        h.complete(item, finish(2, '"done"'), customStatus=sv('"cs"'))
        state = h.wait(iid)
        assert state.orchestrationStatus == COMPLETED and state.output.value == '"done"'
        assert state.customStatus.value == '"cs"' and state.version.value == "2.0" and dict(state.tags) == {"t": "v"}
        assert state.HasField("completedTimestamp")
        assert kinds(h.history(iid))[-2:] == ["executionCompleted", "orchestratorCompleted"]


def test_a_resume_is_never_delivered_to_an_instance_that_is_not_suspended() -> None:
    with harness() as h:
        items = h.stream()
        iid = h.start()
        h.complete(items.next())  # running, waiting for something
        h.stub.ResumeInstance(pb.ResumeRequest(instanceId=iid))
        items.none()
        h.stub.SuspendInstance(pb.SuspendRequest(instanceId=iid, reason=sv("hold")))
        h.stub.SuspendInstance(pb.SuspendRequest(instanceId=iid))  # duplicate: skipped
        item = items.next()
        assert kinds(item.orchestratorRequest.newEvents) == ["orchestratorStarted", "executionSuspended"]
        h.complete(item)
        assert h.state(iid).orchestrationStatus == pb.ORCHESTRATION_STATUS_SUSPENDED
        # while suspended, other messages wait for the resume
        h.stub.RaiseEvent(pb.RaiseEventRequest(instanceId=iid, name="e"))
        items.none()
        h.stub.ResumeInstance(pb.ResumeRequest(instanceId=iid))
        h.stub.ResumeInstance(pb.ResumeRequest(instanceId=iid))  # duplicate: skipped
        item = items.next()
        assert kinds(item.orchestratorRequest.newEvents) == ["orchestratorStarted", "eventRaised", "executionResumed"]
        h.complete(item)
        items.none()
        assert h.state(iid).orchestrationStatus == pb.ORCHESTRATION_STATUS_RUNNING


def test_a_terminate_reaches_a_suspended_instance() -> None:
    with harness() as h:
        items = h.stream()
        iid = h.start()
        h.complete(items.next())
        h.stub.SuspendInstance(pb.SuspendRequest(instanceId=iid))
        h.complete(items.next())
        h.stub.TerminateInstance(pb.TerminateRequest(instanceId=iid, output=sv('"bye"')))
        item = items.next()
        assert kinds(item.orchestratorRequest.newEvents)[-1] == "executionTerminated"
        h.complete(item, finish(-1, '"bye"', pb.ORCHESTRATION_STATUS_TERMINATED))
        assert h.wait(iid).orchestrationStatus == pb.ORCHESTRATION_STATUS_TERMINATED


def test_continue_as_new_starts_a_clean_execution_with_carried_events_first() -> None:
    with harness() as h:
        items = h.stream()
        iid = h.start(input="0")
        first = items.next()
        old_execution = first.orchestratorRequest.executionId.value
        h.complete(first, timer(1, ts_in(0.3)), schedule(2))
        activity = items.next()
        h.stub.RaiseEvent(pb.RaiseEventRequest(instanceId=iid, name="late", input=sv("1")))
        item = items.next()
        carried = pb.HistoryEvent(eventId=-1, eventRaised=pb.EventRaisedEvent(name="kept", input=sv("2")))
        h.complete(item, continue_as_new(3, "1", [carried]))
        h.finish_activity(activity, "stale")  # for the old execution: dropped
        item = items.next()
        request = item.orchestratorRequest
        assert request.executionId.value != old_execution
        assert list(request.pastEvents) == []
        assert kinds(request.newEvents) == ["orchestratorStarted", "executionStarted", "eventRaised"]
        assert request.newEvents[1].executionStarted.input.value == "1"
        assert request.newEvents[2].eventRaised.name == "kept"
        h.complete(item)
        items.none(0.6)  # the old execution's timer never fires into the new one, and no empty batch is sent
        events = h.history(iid)
        assert "continueAsNew" not in kinds(events) and "historyState" not in kinds(events)


def test_a_late_completion_after_the_lease_moved_on_is_ignored() -> None:
    with harness() as h:
        first = h.stream()
        iid = h.start()
        item = first.next()
        first.close()  # the worker's stream dies: its work item goes to another worker
        second = h.stream()
        again = second.next()
        assert again.orchestratorRequest.instanceId == iid and again.completionToken != item.completionToken
        assert kinds(again.orchestratorRequest.newEvents) == ["orchestratorStarted", "executionStarted"]
        h.complete(item, finish(1, '"stale"'))  # late: no effect
        assert h.state(iid).orchestrationStatus == pb.ORCHESTRATION_STATUS_PENDING
        h.complete(again, finish(1, '"fresh"'))
        assert h.wait(iid).output.value == '"fresh"'
        h.complete(again, finish(1, '"duplicate"'))  # duplicate: no effect
        assert h.state(iid).output.value == '"fresh"'
        assert kinds(h.history(iid)).count("executionCompleted") == 1


def test_a_duplicate_activity_result_is_applied_once() -> None:
    with harness() as h:
        items = h.stream()
        iid = h.start()
        h.complete(items.next(), schedule(1))
        activity = items.next()
        h.finish_activity(activity, "1")
        h.finish_activity(activity, "2")
        item = items.next()
        assert kinds(item.orchestratorRequest.newEvents) == ["orchestratorStarted", "taskCompleted"]
        h.complete(item, finish(2))
        h.wait(iid)
        assert kinds(h.history(iid)).count("taskCompleted") == 1


def test_activity_failure_is_detected_by_presence_of_failure_details() -> None:
    with harness() as h:
        items = h.stream()
        h.start()
        h.complete(items.next(), schedule(1))
        activity = items.next()
        h.finish_activity(activity, failureDetails=pb.TaskFailureDetails(errorType="E", errorMessage=""))
        new = items.next().orchestratorRequest.newEvents
        assert kinds(new)[-1] == "taskFailed" and new[-1].taskFailed.failureDetails.errorType == "E"


def test_chunked_completions_are_reassembled_and_committed_once() -> None:
    with harness() as h:
        items = h.stream()
        iid = h.start()
        item = items.next()
        h.complete(item, schedule(1, "a"), isPartial=True, chunkIndex=Int32Value(value=0))
        items.none(0.3)  # nothing is committed (no activity) before the last chunk
        assert h.state(iid).orchestrationStatus == pb.ORCHESTRATION_STATUS_PENDING
        h.complete(item, schedule(2, "b"), isPartial=True, chunkIndex=Int32Value(value=1),
                   numEventsProcessed=Int32Value(value=0))
        with pytest.raises(grpc.RpcError) as error:  # out of order
            h.complete(item, schedule(9, "z"), chunkIndex=Int32Value(value=5))
        assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        h.complete(item, schedule(3, "c"), customStatus=sv("final"), chunkIndex=Int32Value(value=2),
                   numEventsProcessed=Int32Value(value=0))
        names = sorted(items.next().activityRequest.name for _ in range(3))
        assert names == ["a", "b", "c"]
        assert h.state(iid).customStatus.value == "final"
        assert kinds(h.history(iid)).count("taskScheduled") == 3


def test_flow_control_follows_the_workers_limits() -> None:
    with harness() as h:
        items = h.stream(request=pb.GetWorkItemsRequest(maxConcurrentOrchestrationWorkItems=1,
                                                        maxConcurrentActivityWorkItems=1))
        h.start()
        h.start()
        first = items.next()
        items.none()  # the second orchestration waits for the first to finish
        h.complete(first, schedule(1), schedule(2))
        second = items.next()
        activity = items.next()
        assert second.HasField("orchestratorRequest") and activity.HasField("activityRequest")
        items.none()  # one activity at a time
        h.finish_activity(activity, "1")
        assert items.next().HasField("activityRequest")


def test_health_pings_are_sent_to_idle_streams() -> None:
    with harness(ping_interval=0.2) as h:
        items = h.stream(pings=True)
        assert items.next(timeout=3).HasField("healthPing")


def test_abandoned_work_comes_back_after_a_back_off() -> None:
    with harness() as h:
        items = h.stream()
        iid = h.start()
        item = items.next()
        h.stub.AbandonTaskOrchestratorWorkItem(pb.AbandonOrchestrationTaskRequest(completionToken=item.completionToken))
        again = items.next()
        assert again.orchestratorRequest.instanceId == iid
        assert kinds(again.orchestratorRequest.newEvents) == ["orchestratorStarted", "executionStarted"]
        h.complete(again, schedule(1))
        activity = items.next()
        h.stub.AbandonTaskActivityWorkItem(pb.AbandonActivityTaskRequest(completionToken=activity.completionToken))
        redelivered = items.next()
        assert redelivered.activityRequest.taskId == 1 and redelivered.completionToken != activity.completionToken
        h.finish_activity(activity, "old token")  # ignored
        h.finish_activity(redelivered, "new")
        assert items.next().orchestratorRequest.newEvents[1].taskCompleted.result.value == "new"


def test_expired_leases_are_redelivered() -> None:
    with harness(lease_timeout=0.5, ping_interval=0.3) as h:
        items = h.stream()
        iid = h.start()
        item = items.next()
        again = items.next(timeout=5)
        assert again.orchestratorRequest.instanceId == iid and again.completionToken != item.completionToken


def test_work_item_filters() -> None:
    with harness() as h:
        filters = pb.WorkItemFilters(orchestrations=[pb.OrchestrationFilter(name="mine", versions=["1"])])
        picky = h.stream(request=pb.GetWorkItemsRequest(workItemFilters=filters))
        h.start("other")
        h.start("mine", version=sv("2"))
        picky.none()
        iid = h.start("mine", version=sv("1"))
        assert picky.next().orchestratorRequest.instanceId == iid
        everything = h.stream()
        assert {everything.next().orchestratorRequest.instanceId for _ in range(2)}.isdisjoint({iid})


def test_num_events_processed_keeps_the_rest_for_the_next_episode() -> None:
    with harness() as h:
        items = h.stream()
        iid = h.start()
        first = items.next()
        h.stub.RaiseEvent(pb.RaiseEventRequest(instanceId=iid, name="a"))  # arrive during the episode
        h.stub.RaiseEvent(pb.RaiseEventRequest(instanceId=iid, name="b"))
        h.complete(first)
        item = items.next()
        assert [e.eventRaised.name for e in item.orchestratorRequest.newEvents[1:]] == ["a", "b"]
        h.complete(item, numEventsProcessed=Int32Value(value=2))  # orchestratorStarted and "a"
        again = items.next()
        assert [e.eventRaised.name for e in again.orchestratorRequest.newEvents[1:]] == ["b"]
        assert kinds(again.orchestratorRequest.pastEvents).count("eventRaised") == 1


def test_events_for_finished_instances_are_dropped() -> None:
    with harness() as h:
        items = h.stream()
        iid = h.start()
        h.complete(items.next(), finish(1))
        h.wait(iid)
        h.stub.RaiseEvent(pb.RaiseEventRequest(instanceId=iid, name="x"))
        h.stub.TerminateInstance(pb.TerminateRequest(instanceId=iid))
        h.stub.SuspendInstance(pb.SuspendRequest(instanceId=iid))
        h.stub.ResumeInstance(pb.ResumeRequest(instanceId=iid))
        items.none()
        assert h.state(iid).orchestrationStatus == COMPLETED


def test_sub_orchestration_outcomes_reach_the_parent_execution_only() -> None:
    with harness() as h:
        items = h.stream()
        pid = h.start("parent")
        h.complete(items.next(), sub(1, "kid", input="5"))
        child_item = items.next()
        child = child_item.orchestratorRequest
        assert child.instanceId == "kid"
        parent_info = child.newEvents[1].executionStarted.parentInstance
        assert (parent_info.taskScheduledId, parent_info.name.value, parent_info.orchestrationInstance.instanceId) \
            == (1, "parent", pid)
        assert h.state("kid").parentInstanceId.value == pid
        # the child fails: the parent learns it, with the details intact
        failure = pb.TaskFailureDetails(errorType="Boom", errorMessage="bad", stackTrace=sv("trace"),
                                        innerFailure=pb.TaskFailureDetails(errorType="Inner"))
        h.complete(child_item, finish(3, status=FAILED, failure=failure))
        new = items.next().orchestratorRequest.newEvents
        assert kinds(new)[-1] == "subOrchestrationInstanceFailed"
        assert new[-1].subOrchestrationInstanceFailed.failureDetails == failure
        assert new[-1].subOrchestrationInstanceFailed.taskScheduledId == 1


def test_bad_requests_get_clear_status_codes() -> None:
    with harness() as h:
        def code(call: object) -> tuple[grpc.StatusCode, str]:
            with pytest.raises(grpc.RpcError) as error:
                call()  # type: ignore[operator]
            return error.value.code(), error.value.details() or ""

        assert code(lambda: h.stub.StartInstance(pb.CreateInstanceRequest()))[0] == grpc.StatusCode.INVALID_ARGUMENT
        iid = h.start(instanceId="dup")
        status, message = code(lambda: h.start(instanceId="dup"))
        assert status == grpc.StatusCode.ALREADY_EXISTS and "dup" in message and "PENDING" in message
        assert code(lambda: h.stub.RaiseEvent(pb.RaiseEventRequest(instanceId="nope", name="x")))[0] == \
            grpc.StatusCode.NOT_FOUND
        assert code(lambda: h.stub.RewindInstance(pb.RewindInstanceRequest(instanceId=iid)))[0] == \
            grpc.StatusCode.FAILED_PRECONDITION
        assert code(lambda: h.stub.RestartInstance(pb.RestartInstanceRequest(instanceId=iid)))[0] == \
            grpc.StatusCode.FAILED_PRECONDITION
        assert code(lambda: h.stub.PurgeInstances(pb.PurgeInstancesRequest(instanceId=iid)))[0] == \
            grpc.StatusCode.FAILED_PRECONDITION
        assert code(lambda: h.stub.PurgeInstances(pb.PurgeInstancesRequest()))[0] == grpc.StatusCode.INVALID_ARGUMENT
        bad_token = pb.QueryInstancesRequest(query=pb.InstanceQuery(continuationToken=sv("garbage")))
        assert code(lambda: h.stub.QueryInstances(bad_token))[0] == grpc.StatusCode.INVALID_ARGUMENT
        assert code(lambda: h.stub.SignalEntity(pb.SignalEntityRequest(instanceId="@e@k")))[0] == \
            grpc.StatusCode.INVALID_ARGUMENT  # no operation name
        status, message = code(lambda: h.stub.SignalEntity(pb.SignalEntityRequest(instanceId="@nokey", name="x")))
        assert status == grpc.StatusCode.INVALID_ARGUMENT and "@nokey" in message and "@name@key" in message
        status, message = code(lambda: h.stub.GetInstance(pb.GetInstanceRequest(instanceId=iid),
                                                          metadata=[("taskhub", "elsewhere")]))
        assert status == grpc.StatusCode.NOT_FOUND and "elsewhere" in message and "--taskhubs" in message
        missing = pb.StreamInstanceHistoryRequest(instanceId="nope")
        assert code(lambda: list(h.stub.StreamInstanceHistory(missing)))[0] == grpc.StatusCode.NOT_FOUND


def test_a_malformed_completion_is_refused_and_the_work_item_redelivered() -> None:
    with harness() as h:
        items = h.stream()
        iid = h.start()
        item = items.next()
        with pytest.raises(grpc.RpcError) as error:
            h.complete(item, pb.OrchestratorAction(id=1))
        assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        with pytest.raises(grpc.RpcError):
            h.complete(items.next(), finish(1), finish(2))
        again = items.next()
        assert kinds(again.orchestratorRequest.newEvents) == ["orchestratorStarted", "executionStarted"]
        h.complete(again, finish(1, '"ok"'))
        assert h.wait(iid).output.value == '"ok"'


def test_a_rule_failing_half_way_reloads_the_hub_from_storage(monkeypatch: pytest.MonkeyPatch) -> None:
    from durabletask.emulator import engine as engine_module

    real = engine_module.episode.apply_episode

    def broken(tx, lease, *args):  # type: ignore[no-untyped-def]
        tx.send(lease.instance, "eventRaised", b"")  # a change in memory...
        raise RuntimeError("boom")  # ...then a bug

    with harness() as h:
        items = h.stream()
        iid = h.start()
        item = items.next()
        monkeypatch.setattr(engine_module.episode, "apply_episode", broken)
        with pytest.raises(grpc.RpcError) as error:
            h.complete(item, finish(1))
        assert error.value.code() == grpc.StatusCode.INTERNAL and "boom" in (error.value.details() or "")
        monkeypatch.setattr(engine_module.episode, "apply_episode", real)
        again = h.stream().next()  # the old stream was closed; the episode is delivered again, unchanged
        assert kinds(again.orchestratorRequest.newEvents) == ["orchestratorStarted", "executionStarted"]
        h.complete(again, finish(1, '"ok"'))
        assert h.wait(iid).output.value == '"ok"'


def test_only_raised_events_are_carried_over() -> None:
    with harness() as h:
        items = h.stream()
        h.start()
        odd = pb.HistoryEvent(eventId=-1, historyState=pb.HistoryStateEvent())
        kept = pb.HistoryEvent(eventId=-1, eventRaised=pb.EventRaisedEvent(name="e"))
        h.complete(items.next(), continue_as_new(1, "1", [odd, kept]))
        assert kinds(items.next().orchestratorRequest.newEvents) == [
            "orchestratorStarted", "executionStarted", "eventRaised"]


def test_start_instance_errors_keep_their_status_codes(monkeypatch: pytest.MonkeyPatch) -> None:
    from durabletask.emulator import engine as engine_module

    real = engine_module.commands.start_instance

    def broken(tx, request):  # type: ignore[no-untyped-def]
        real(tx, request)  # the instance exists in memory...
        raise RuntimeError("boom")  # ...then a bug

    with harness() as h:
        with pytest.raises(grpc.RpcError) as error:
            h.stub.StartInstance(pb.CreateInstanceRequest(name="o"), metadata=[("taskhub", "elsewhere")])
        assert error.value.code() == grpc.StatusCode.NOT_FOUND and "elsewhere" in (error.value.details() or "")
        monkeypatch.setattr(engine_module.commands, "start_instance", broken)
        with pytest.raises(grpc.RpcError) as error:
            h.start(instanceId="half")
        assert error.value.code() == grpc.StatusCode.INTERNAL and "boom" in (error.value.details() or "")
        monkeypatch.setattr(engine_module.commands, "start_instance", real)
        # the hub was reloaded from storage: no trace of the instance
        assert not h.stub.GetInstance(pb.GetInstanceRequest(instanceId="half")).exists
        assert h.start(instanceId="half") == "half"
        items = h.stream()
        assert items.next().orchestratorRequest.instanceId == "half"
