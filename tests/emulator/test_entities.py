"""Durable entities in the emulator, over gRPC with raw stub calls (the worker's and client's part by hand)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import timestamp_pb2
from google.protobuf.wrappers_pb2 import Int32Value

from durabletask.emulator import Emulator
from durabletask.emulator.store import MemoryStore
from durabletask.internal import orchestrator_service_pb2 as pb
from tests.emulator.harness import COMPLETED, Harness, WorkItems, finish, harness, kinds, sv

A, B = "@counter@a", "@counter@b"


def ts_in(seconds: float) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.FromNanoseconds(int((time.time() + seconds) * 1e9))
    return ts


def signal(h: Harness, entity: str, operation: str = "add", input: str | None = None, **kwargs: Any) -> None:
    h.stub.SignalEntity(pb.SignalEntityRequest(instanceId=entity, name=operation,
                                               input=sv(input) if input is not None else None, **kwargs))


def operations(item: pb.WorkItem) -> list[tuple[str, str]]:
    """(kind, operation name) of each operation of an entity work item."""
    assert item.HasField("entityRequestV2"), item
    result = []
    for event in item.entityRequestV2.operationRequests:
        kind = event.WhichOneof("eventType")
        result.append((kind, getattr(event, kind).operation))
    return result


def ok(result: str | None = None) -> pb.OperationResult:
    return pb.OperationResult(success=pb.OperationResultSuccess(result=sv(result) if result is not None else None))


def failed(message: str) -> pb.OperationResult:
    return pb.OperationResult(failure=pb.OperationResultFailure(
        failureDetails=pb.TaskFailureDetails(errorType="ValueError", errorMessage=message)))


def complete_batch(h: Harness, item: pb.WorkItem, results: list[pb.OperationResult], state: str | None,
                   **kwargs: Any) -> None:
    h.stub.CompleteEntityTask(pb.EntityBatchResult(
        results=results, entityState=sv(state) if state is not None else None,
        completionToken=item.completionToken, **kwargs))


def entity(h: Harness, entity_id: str) -> pb.GetEntityResponse:
    return h.stub.GetEntity(pb.GetEntityRequest(instanceId=entity_id, includeState=True))


def send(action_id: int, **message: Any) -> pb.OrchestratorAction:
    return pb.OrchestratorAction(id=action_id, sendEntityMessage=pb.SendEntityMessageAction(**message))


def call(action_id: int, target: str, operation: str, request_id: str, input: str | None = None,
         parent: str | None = None) -> pb.OrchestratorAction:
    return send(action_id, entityOperationCalled=pb.EntityOperationCalledEvent(
        requestId=request_id, operation=operation, input=sv(input) if input is not None else None,
        targetInstanceId=sv(target), parentInstanceId=sv(parent) if parent else None))


def lock(action_id: int, section: str, entities: list[str], parent: str) -> pb.OrchestratorAction:
    return send(action_id, entityLockRequested=pb.EntityLockRequestedEvent(
        criticalSectionId=section, lockSet=sorted(entities), position=0, parentInstanceId=sv(parent)))


def unlock(action_id: int, section: str, target: str, parent: str) -> pb.OrchestratorAction:
    return send(action_id, entityUnlockSent=pb.EntityUnlockSentEvent(
        criticalSectionId=section, targetInstanceId=sv(target), parentInstanceId=sv(parent)))


def start_running(h: Harness, items: WorkItems, instance_id: str,
                  *actions: pb.OrchestratorAction) -> pb.WorkItem:
    """Start an orchestration and complete its first episode with ``actions``."""
    h.start(instanceId=instance_id)
    item = items.next()
    assert item.orchestratorRequest.instanceId == instance_id, item
    h.complete(item, *actions)
    return item


def next_of(items: WorkItems, kind: str, timeout: float = 5.0) -> pb.WorkItem:
    item = items.next(timeout)
    assert item.WhichOneof("request") == kind, item
    return item


def with_state(h: Harness, items: WorkItems, entity_id: str, state: str) -> None:
    signal(h, entity_id, "set", state)
    complete_batch(h, next_of(items, "entityRequestV2"), [ok()], state)


# -- queue and batches


def test_a_signal_becomes_an_entity_work_item_and_its_result_the_state() -> None:
    with harness() as h:
        items = h.stream()
        assert not entity(h, A).exists
        signal(h, A, "add", "5", requestId="r1")
        item = next_of(items, "entityRequestV2")
        request = item.entityRequestV2
        assert request.instanceId == A and not request.HasField("entityState")
        assert operations(item) == [("entityOperationSignaled", "add")]
        op = request.operationRequests[0].entityOperationSignaled
        assert (op.requestId, op.input.value) == ("r1", "5")
        before = time.time()
        complete_batch(h, item, [ok()], "5")
        found = entity(h, A)
        assert found.exists and found.entity.serializedState.value == "5" and found.entity.backlogQueueSize == 0
        assert found.entity.lastModifiedTime.ToNanoseconds() / 1e9 >= before - 1
        assert not found.entity.HasField("lockedBy")
        without = h.stub.GetEntity(pb.GetEntityRequest(instanceId=A, includeState=False))
        assert without.exists and not without.entity.HasField("serializedState")
        signal(h, A, "add", "1")
        assert next_of(items, "entityRequestV2").entityRequestV2.entityState.value == "5"


def test_one_batch_in_flight_per_entity_and_the_rest_queued_in_order() -> None:
    with harness() as h:
        items = h.stream()
        signal(h, A, "first")
        first = next_of(items, "entityRequestV2")
        signal(h, A, "second")
        signal(h, A, "third")
        items.none()  # the entity is busy
        assert entity(h, A).exists is False  # no state yet
        query = pb.QueryEntitiesRequest(query=pb.EntityQuery(includeTransient=True))
        assert h.stub.QueryEntities(query).entities[0].backlogQueueSize == 3
        complete_batch(h, first, [ok()], "1")
        second = next_of(items, "entityRequestV2")
        assert operations(second) == [("entityOperationSignaled", "second"), ("entityOperationSignaled", "third")]
        assert second.entityRequestV2.entityState.value == "1"


def test_operations_without_a_result_stay_queued_for_the_next_batch() -> None:
    with harness() as h:
        items = h.stream(request=pb.GetWorkItemsRequest(maxConcurrentEntityWorkItems=1))
        signal(h, B, "hold")  # keeps the only slot busy while A's operations queue up
        holding = next_of(items, "entityRequestV2")
        for name in ("one", "two", "three"):
            signal(h, A, name)
        complete_batch(h, holding, [ok()], "0")
        batch = next_of(items, "entityRequestV2")
        assert [name for _, name in operations(batch)] == ["one", "two", "three"]
        complete_batch(h, batch, [ok()], "after-one")  # only the first one ran
        rest = next_of(items, "entityRequestV2")
        assert [name for _, name in operations(rest)] == ["two", "three"]
        assert rest.entityRequestV2.entityState.value == "after-one"
        complete_batch(h, rest, [ok(), ok()], "done")
        assert entity(h, A).entity.serializedState.value == "done"


def test_a_failed_batch_is_retried_with_no_state_lost() -> None:
    with harness() as h:
        items = h.stream()
        with_state(h, items, A, "10")
        signal(h, A, "add", "1")
        item = next_of(items, "entityRequestV2")
        complete_batch(h, item, [], None,
                       failureDetails=pb.TaskFailureDetails(errorType="Crash", errorMessage="framework failure"))
        assert entity(h, A).entity.serializedState.value == "10"
        again = next_of(items, "entityRequestV2")
        assert operations(again) == operations(item) and again.entityRequestV2.entityState.value == "10"
        assert again.completionToken != item.completionToken
        complete_batch(h, again, [ok()], "11")
        assert entity(h, A).entity.serializedState.value == "11"


def test_requires_state_redelivers_without_committing() -> None:
    with harness() as h:
        items = h.stream()
        with_state(h, items, A, "1")
        signal(h, A, "add")
        item = next_of(items, "entityRequestV2")
        complete_batch(h, item, [], None, requiresState=True)
        again = next_of(items, "entityRequestV2")
        assert again.entityRequestV2.entityState.value == "1" and operations(again) == operations(item)
        assert entity(h, A).entity.serializedState.value == "1"


def test_per_operation_failures_are_normal_results() -> None:
    with harness() as h:
        items = h.stream()
        signal(h, A, "bad")
        signal(h, A, "good")
        first = next_of(items, "entityRequestV2")
        complete_batch(h, first, [failed("nope")], None)
        second = next_of(items, "entityRequestV2")
        assert operations(second) == [("entityOperationSignaled", "good")]
        complete_batch(h, second, [ok()], "g")
        assert entity(h, A).entity.serializedState.value == "g"


def test_an_entity_with_no_state_and_nothing_queued_is_deleted() -> None:
    with harness() as h:
        items = h.stream()
        with_state(h, items, A, "1")
        signal(h, A, "delete")
        complete_batch(h, next_of(items, "entityRequestV2"), [ok()], None)
        assert not entity(h, A).exists
        query = pb.QueryEntitiesRequest(query=pb.EntityQuery(includeTransient=True))
        assert list(h.stub.QueryEntities(query).entities) == []


def test_scheduled_signals_wait_until_they_are_due() -> None:
    with harness() as h:
        items = h.stream()
        began = time.monotonic()
        signal(h, A, "later", scheduledTime=ts_in(0.6))
        signal(h, A, "now")
        first = next_of(items, "entityRequestV2")
        assert operations(first) == [("entityOperationSignaled", "now")]
        complete_batch(h, first, [ok()], "1")
        assert entity(h, A).entity.backlogQueueSize == 0  # "later" has not joined the queue yet
        items.none(0.2)
        due = next_of(items, "entityRequestV2", timeout=2)
        assert operations(due) == [("entityOperationSignaled", "later")]
        assert time.monotonic() - began >= 0.55
        assert entity(h, A).entity.backlogQueueSize == 1  # now it has: the batch in flight


def test_entity_actions_signal_other_entities_and_start_orchestrations() -> None:
    with harness() as h:
        items = h.stream()
        signal(h, A, "fan-out")
        item = next_of(items, "entityRequestV2")
        complete_batch(h, item, [ok()], "x", actions=[
            pb.OperationAction(id=0, sendSignal=pb.SendSignalAction(instanceId=B, name="hello", input=sv("1"))),
            pb.OperationAction(id=1, sendSignal=pb.SendSignalAction(instanceId="@counter@c", name="later",
                                                                    scheduledTime=ts_in(0.5))),
            pb.OperationAction(id=2, startNewOrchestration=pb.StartNewOrchestrationAction(
                instanceId="started-by-entity", name="orch", input=sv('"in"'))),
        ])
        seen: dict[str, list[tuple[pb.WorkItem, float]]] = {}
        began = time.monotonic()
        for _ in range(3):
            work = items.next()
            seen.setdefault(work.WhichOneof("request"), []).append((work, time.monotonic()))
        orchestrations = seen["orchestratorRequest"]
        assert orchestrations[0][0].orchestratorRequest.instanceId == "started-by-entity"
        assert orchestrations[0][0].orchestratorRequest.newEvents[1].executionStarted.input.value == '"in"'
        targets = {w.entityRequestV2.instanceId: at for w, at in seen["entityRequestV2"]}
        assert set(targets) == {B, "@counter@c"}
        assert targets["@counter@c"] - began >= 0.35  # the scheduled signal came later


# -- calls from orchestrations


def test_calls_from_an_orchestration_get_their_results_routed_back() -> None:
    with harness() as h:
        items = h.stream()
        start_running(h, items, "caller", call(1, A, "get", "req-1", input="7"), call(2, B, "boom", "req-2"))
        history = h.history("caller")
        called = [e for e in history if e.HasField("entityOperationCalled")]
        assert [e.eventId for e in called] == [1, 2]
        assert called[0].entityOperationCalled.targetInstanceId.value == A
        batches = {}
        for _ in range(2):
            work = next_of(items, "entityRequestV2")
            batches[work.entityRequestV2.instanceId] = work
        op = batches[A].entityRequestV2.operationRequests[0].entityOperationCalled
        assert op.parentInstanceId.value == "caller"
        assert op.parentExecutionId.value == h.state("caller").executionId.value  # filled in by the emulator
        assert (op.requestId, op.input.value) == ("req-1", "7")
        complete_batch(h, batches[A], [ok("42")], "s", operationInfos=[pb.OperationInfo(
            requestId="req-1", responseDestination=pb.OrchestrationInstance(instanceId="caller"))])
        complete_batch(h, batches[B], [failed("kaput")], None)
        received: list[pb.HistoryEvent] = []
        while len(received) < 2:
            work = next_of(items, "orchestratorRequest")
            received.extend(list(work.orchestratorRequest.newEvents)[1:])
            h.complete(work)
        by_kind = {e.WhichOneof("eventType"): e for e in received}
        assert by_kind["entityOperationCompleted"].entityOperationCompleted.requestId == "req-1"
        assert by_kind["entityOperationCompleted"].entityOperationCompleted.output.value == "42"
        assert by_kind["entityOperationFailed"].entityOperationFailed.requestId == "req-2"
        assert by_kind["entityOperationFailed"].entityOperationFailed.failureDetails.errorMessage == "kaput"


def test_signals_from_an_orchestration_are_confirmed_and_delivered_later_if_scheduled() -> None:
    with harness() as h:
        items = h.stream()
        signaled = pb.EntityOperationSignaledEvent(requestId="s1", operation="ping", targetInstanceId=sv(A),
                                                   scheduledTime=ts_in(0.5))
        began = time.monotonic()
        start_running(h, items, "signaller", send(3, entityOperationSignaled=signaled), finish(4, '"done"'))
        assert h.wait("signaller").orchestrationStatus == COMPLETED
        history = h.history("signaller")
        confirmed = [e for e in history if e.HasField("entityOperationSignaled")]
        assert confirmed[0].eventId == 3 and confirmed[0].entityOperationSignaled.targetInstanceId.value == A
        item = next_of(items, "entityRequestV2")
        assert time.monotonic() - began >= 0.4
        assert operations(item) == [("entityOperationSignaled", "ping")]


def test_a_result_for_a_finished_caller_is_dropped() -> None:
    with harness() as h:
        items = h.stream()
        start_running(h, items, "gone", call(1, A, "get", "r"), finish(2, '"bye"'))
        item = next_of(items, "entityRequestV2")
        complete_batch(h, item, [ok("1")], "s")
        items.none()
        assert h.state("gone").orchestrationStatus == COMPLETED


# -- locks


def _grant(items: WorkItems, h: Harness, instance_id: str) -> str:
    work = next_of(items, "orchestratorRequest")
    assert work.orchestratorRequest.instanceId == instance_id
    granted = work.orchestratorRequest.newEvents[1]
    assert granted.HasField("entityLockGranted"), work
    return work.completionToken


def _orchestration_item(items: WorkItems, instance_id: str) -> pb.WorkItem:
    work = next_of(items, "orchestratorRequest")
    assert work.orchestratorRequest.instanceId == instance_id, work
    return work


def test_a_lock_is_acquired_along_the_lock_set_and_defers_other_callers() -> None:
    with harness() as h:
        items = h.stream()
        with_state(h, items, A, "a")
        with_state(h, items, B, "b")
        start_running(h, items, "owner", lock(1, "cs1", [B, A], "owner"))
        history = h.history("owner")
        assert [e.eventId for e in history if e.HasField("entityLockRequested")] == [1]
        granted = _orchestration_item(items, "owner")
        assert granted.orchestratorRequest.newEvents[1].entityLockGranted.criticalSectionId == "cs1"
        assert entity(h, A).entity.lockedBy.value == "owner" and entity(h, B).entity.lockedBy.value == "owner"
        # other callers wait; the owner's calls run
        signal(h, A, "outsider")
        h.complete(granted, call(2, A, "inside", "r-in", parent="owner"))
        inside = next_of(items, "entityRequestV2")
        assert operations(inside) == [("entityOperationCalled", "inside")]
        complete_batch(h, inside, [ok("1")], "a2")
        result = _orchestration_item(items, "owner")
        assert result.orchestratorRequest.newEvents[1].entityOperationCompleted.requestId == "r-in"
        items.none()  # the outsider's signal is deferred
        assert entity(h, A).entity.backlogQueueSize == 1
        h.complete(result, unlock(3, "cs1", A, "owner"), unlock(4, "cs1", B, "owner"))
        outsider = next_of(items, "entityRequestV2")
        assert operations(outsider) == [("entityOperationSignaled", "outsider")]
        assert outsider.entityRequestV2.entityState.value == "a2"
        assert not entity(h, A).entity.HasField("lockedBy") and not entity(h, B).entity.HasField("lockedBy")


def test_a_second_lock_request_waits_for_the_first_and_keeps_its_order() -> None:
    with harness() as h:
        items = h.stream()
        start_running(h, items, "first", lock(1, "cs-1", [A], "first"))
        first_grant = _orchestration_item(items, "first")
        start_running(h, items, "second", lock(1, "cs-2", [A, B], "second"))
        items.none()  # A is taken, so the request has not reached B either
        signal(h, B, "free")  # B is not locked yet: its operations run
        complete_batch(h, next_of(items, "entityRequestV2"), [ok()], "b")
        h.complete(first_grant, unlock(2, "cs-1", A, "first"))
        second_grant = _orchestration_item(items, "second")
        assert second_grant.orchestratorRequest.newEvents[1].entityLockGranted.criticalSectionId == "cs-2"
        assert entity(h, B).entity.lockedBy.value == "second"


def test_locks_are_released_when_the_owner_completes_or_continues_as_new() -> None:
    with harness() as h:
        items = h.stream()
        with_state(h, items, A, "a")
        with_state(h, items, B, "b")
        start_running(h, items, "ends", lock(1, "cs", [A], "ends"))
        granted = _orchestration_item(items, "ends")
        signal(h, A, "waiting")
        items.none()
        h.complete(granted, finish(2, '"no unlock sent"'))  # a worker that forgot to unlock
        assert operations(next_of(items, "entityRequestV2")) == [("entityOperationSignaled", "waiting")]
        start_running(h, items, "loops", lock(1, "cs", [B], "loops"))
        granted = _orchestration_item(items, "loops")
        assert entity(h, B).entity.lockedBy.value == "loops"
        h.complete(granted, pb.OrchestratorAction(id=2, completeOrchestration=pb.CompleteOrchestrationAction(
            orchestrationStatus=pb.ORCHESTRATION_STATUS_CONTINUED_AS_NEW, result=sv("1"))))
        _orchestration_item(items, "loops")  # the new execution starts...
        assert not entity(h, B).entity.HasField("lockedBy")  # ...without the lock


def test_a_lock_request_of_a_finished_orchestration_is_not_granted() -> None:
    with harness() as h:
        items = h.stream()
        with_state(h, items, A, "a")
        start_running(h, items, "holder", lock(1, "h", [A], "holder"))
        holder = _orchestration_item(items, "holder")
        start_running(h, items, "quitter", lock(1, "q", [A], "quitter"))
        h.stub.TerminateInstance(pb.TerminateRequest(instanceId="quitter", output=sv('"stop"')))
        work = _orchestration_item(items, "quitter")
        h.complete(work, finish(2, '"stop"', pb.ORCHESTRATION_STATUS_TERMINATED))  # and no unlock sent
        h.complete(holder, unlock(2, "h", A, "holder"))
        items.none()
        assert not entity(h, A).entity.HasField("lockedBy")


def test_clean_entity_storage_releases_orphaned_locks() -> None:
    with harness() as h:
        items = h.stream()
        with_state(h, items, A, "a")
        start_running(h, items, "owner", lock(1, "cs", [A], "owner"))
        granted = _orchestration_item(items, "owner")
        h.complete(granted)
        # replacing the running owner deletes it without finishing it: its lock is orphaned
        policy = pb.OrchestrationIdReusePolicy(replaceableStatus=[pb.ORCHESTRATION_STATUS_RUNNING])
        h.start(instanceId="owner", orchestrationIdReusePolicy=policy)
        assert entity(h, A).entity.lockedBy.value == "owner"
        response = h.stub.CleanEntityStorage(pb.CleanEntityStorageRequest(releaseOrphanedLocks=True,
                                                                         removeEmptyEntities=True))
        assert (response.orphanedLocksReleased, response.emptyEntitiesRemoved) == (1, 0)
        assert not response.HasField("continuationToken")
        assert not entity(h, A).entity.HasField("lockedBy")
        again = h.stub.CleanEntityStorage(pb.CleanEntityStorageRequest(releaseOrphanedLocks=True))
        assert again.orphanedLocksReleased == 0


def test_a_locked_entity_without_state_is_transient() -> None:
    with harness() as h:
        items = h.stream()
        start_running(h, items, "owner", lock(1, "cs", [A], "owner"))
        granted = _orchestration_item(items, "owner")
        assert not entity(h, A).exists
        transient = h.stub.QueryEntities(pb.QueryEntitiesRequest(query=pb.EntityQuery(includeTransient=True)))
        assert [(e.instanceId, e.lockedBy.value) for e in transient.entities] == [(A, "owner")]
        h.complete(granted, unlock(2, "cs", A, "owner"))
        time.sleep(0.2)
        transient = h.stub.QueryEntities(pb.QueryEntitiesRequest(query=pb.EntityQuery(includeTransient=True)))
        assert list(transient.entities) == []


# -- queries


def test_entity_queries_filter_and_page() -> None:
    with harness() as h:
        items = h.stream()
        ids = [f"@counter@{i}" for i in range(5)]
        for entity_id in ids:
            with_state(h, items, entity_id, f'"{entity_id}"')
        with_state(h, items, "@other@x", "1")
        cut = time.time()
        time.sleep(0.05)
        with_state(h, items, "@counter@late", "2")
        items.close()
        signal(h, "@counter@zz", "queued-only")  # no worker: transient (queued, no state)

        def query(**kwargs: Any) -> list[pb.EntityMetadata]:
            found: list[pb.EntityMetadata] = []
            token = None
            while True:
                response = h.stub.QueryEntities(pb.QueryEntitiesRequest(query=pb.EntityQuery(
                    continuationToken=token, **kwargs)))
                assert len(response.entities) <= 2 or "pageSize" not in kwargs
                found.extend(response.entities)
                if not response.HasField("continuationToken"):
                    return found
                token = response.continuationToken

        paged = query(instanceIdStartsWith=sv("@counter@"), pageSize=Int32Value(value=2), includeState=True)
        assert [e.instanceId for e in paged] == sorted([*ids, "@counter@late"])
        assert paged[0].serializedState.value == '"@counter@0"'
        assert [e.instanceId for e in query(instanceIdStartsWith=sv("other"))] == ["@other@x"]
        assert all(not e.HasField("serializedState") for e in query())
        assert [e.instanceId for e in query(lastModifiedFrom=ts_in(cut - time.time()))] == ["@counter@late"]
        assert "@counter@late" not in [e.instanceId for e in query(lastModifiedTo=ts_in(cut - time.time()))]
        assert "@counter@zz" not in [e.instanceId for e in query()]
        transient = {e.instanceId: e for e in query(includeTransient=True)}
        assert transient["@counter@zz"].backlogQueueSize == 1 and not transient["@counter@zz"].HasField(
            "serializedState")
        with pytest.raises(grpc.RpcError) as error:
            h.stub.QueryEntities(pb.QueryEntitiesRequest(query=pb.EntityQuery(continuationToken=sv("junk"))))
        assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT


# -- leases, redelivery, flow control, filters


def test_abandoned_and_disconnected_batches_come_back() -> None:
    with harness() as h:
        items = h.stream()
        signal(h, A, "op")
        item = next_of(items, "entityRequestV2")
        h.stub.AbandonTaskEntityWorkItem(pb.AbandonEntityTaskRequest(completionToken=item.completionToken))
        again = next_of(items, "entityRequestV2")
        assert operations(again) == operations(item) and again.completionToken != item.completionToken
        complete_batch(h, item, [ok()], "stale token")  # fenced: ignored
        assert not entity(h, A).exists
        items.close()
        other = h.stream()
        moved = next_of(other, "entityRequestV2")  # the closed stream's batch goes to another worker
        assert operations(moved) == operations(item)
        complete_batch(h, moved, [ok()], "fresh")
        assert entity(h, A).entity.serializedState.value == "fresh"
        complete_batch(h, moved, [ok()], "duplicate")  # a second completion has no effect
        assert entity(h, A).entity.serializedState.value == "fresh"


def test_expired_entity_leases_are_redelivered() -> None:
    with harness(lease_timeout=0.5, ping_interval=0.3) as h:
        items = h.stream()
        signal(h, A, "slow")
        item = next_of(items, "entityRequestV2")
        again = next_of(items, "entityRequestV2")
        assert again.completionToken != item.completionToken and operations(again) == operations(item)


def test_entity_flow_control_and_filters() -> None:
    with harness() as h:
        filters = pb.WorkItemFilters(entities=[pb.EntityFilter(name="Counter")])
        picky = h.stream(request=pb.GetWorkItemsRequest(workItemFilters=filters, maxConcurrentEntityWorkItems=1))
        signal(h, "@other@x", "not-for-me")
        picky.none()
        signal(h, A, "one")
        signal(h, B, "two")
        first = next_of(picky, "entityRequestV2")
        picky.none()  # one entity work item at a time
        complete_batch(h, first, [ok()], "1")
        second = next_of(picky, "entityRequestV2")
        assert {first.entityRequestV2.instanceId, second.entityRequestV2.instanceId} == {A, B}
        everything = h.stream()
        assert next_of(everything, "entityRequestV2").entityRequestV2.instanceId == "@other@x"


# -- bad input


def test_bad_entity_requests_get_clear_status_codes() -> None:
    with harness() as h:
        def code(call_: Any) -> tuple[grpc.StatusCode, str]:
            with pytest.raises(grpc.RpcError) as error:
                call_()
            return error.value.code(), error.value.details() or ""

        status, message = code(lambda: h.stub.GetEntity(pb.GetEntityRequest(instanceId="counter")))
        assert status == grpc.StatusCode.INVALID_ARGUMENT and "'counter'" in message
        status, message = code(lambda: h.stub.SignalEntity(pb.SignalEntityRequest(instanceId="@@k", name="x")))
        assert status == grpc.StatusCode.INVALID_ARGUMENT and "@name@key" in message
        items = h.stream()
        h.start(instanceId="bad")
        item = items.next()
        status, message = code(lambda: h.complete(item, call(1, "@broken", "op", "r")))
        assert status == grpc.StatusCode.INVALID_ARGUMENT and "@broken" in message
        again = items.next()  # refused as a whole, and redelivered
        assert kinds(again.orchestratorRequest.newEvents) == ["orchestratorStarted", "executionStarted"]
        signal(h, A, "op")
        batch = next_of(items, "entityRequestV2")
        status, message = code(lambda: complete_batch(h, batch, [ok(), ok()], "x"))
        assert status == grpc.StatusCode.INVALID_ARGUMENT and "1 operation" in message
        too_many = pb.SkipGracefulOrchestrationTerminationsRequest(
            instanceBatch=pb.InstanceBatch(instanceIds=[str(i) for i in range(501)]))
        status, message = code(lambda: h.stub.SkipGracefulOrchestrationTerminations(too_many))
        assert status == grpc.StatusCode.INVALID_ARGUMENT and "500" in message


def test_skip_graceful_terminations_refuses_lock_holders() -> None:
    with harness() as h:
        items = h.stream()
        start_running(h, items, "holder", lock(1, "cs", [A], "holder"))
        h.complete(_orchestration_item(items, "holder"))
        start_running(h, items, "busy")
        h.stub.RaiseEvent(pb.RaiseEventRequest(instanceId="busy", name="e"))
        in_flight = _orchestration_item(items, "busy")  # its worker is running an episode
        h.start(instanceId="pending", scheduledStartTimestamp=ts_in(3600))
        start_running(h, items, "done", finish(1, '"ok"'))
        response = h.stub.SkipGracefulOrchestrationTerminations(pb.SkipGracefulOrchestrationTerminationsRequest(
            instanceBatch=pb.InstanceBatch(instanceIds=["holder", "busy", "pending", "done", "nope", A]),
            reason=sv("forced")))
        assert sorted(response.unterminatedInstanceIds) == sorted(["holder", "done", "nope", A])
        for instance_id in ("busy", "pending"):
            state = h.wait(instance_id)
            assert state.orchestrationStatus == pb.ORCHESTRATION_STATUS_TERMINATED
            assert state.output.value == '"forced"'
            assert "executionCompleted" in kinds(h.history(instance_id))
        h.complete(in_flight, finish(9, '"too late"'))  # fenced
        assert h.state("busy").output.value == '"forced"'
        assert h.state("holder").orchestrationStatus == pb.ORCHESTRATION_STATUS_RUNNING
        assert entity(h, A).exists is False and h.stub.QueryEntities(pb.QueryEntitiesRequest(
            query=pb.EntityQuery(includeTransient=True))).entities[0].lockedBy.value == "holder"


# -- persistence


@pytest.mark.parametrize("kind", ["sqlite", "memory"])
def test_entities_survive_a_restart(kind: str, tmp_path: Path) -> None:
    store = MemoryStore()
    options: dict[str, Any] = {"store": store} if kind == "memory" else {"db_path": tmp_path / "entities.db"}
    with harness(memory=False, **options) as h:
        items = h.stream()
        with_state(h, items, A, "persisted")
        start_running(h, items, "owner", lock(1, "cs", [B], "owner"))
        h.complete(_orchestration_item(items, "owner"))
        items.close()
        signal(h, A, "queued")
        signal(h, A, "scheduled", scheduledTime=ts_in(1.0))
        signal(h, B, "deferred")
    with Emulator(**options) as emulator:
        h = Harness(emulator)
        try:
            found = entity(h, A)
            assert found.entity.serializedState.value == "persisted"
            assert found.entity.backlogQueueSize == 1  # "queued"; "scheduled" is stored but not due yet
            transient = h.stub.QueryEntities(pb.QueryEntitiesRequest(query=pb.EntityQuery(includeTransient=True)))
            assert {e.instanceId: e.lockedBy.value for e in transient.entities}[B] == "owner"
            items = h.stream()
            batch = next_of(items, "entityRequestV2")
            assert operations(batch) == [("entityOperationSignaled", "queued")]
            assert batch.entityRequestV2.entityState.value == "persisted"
            complete_batch(h, batch, [ok()], "p2")
            assert operations(next_of(items, "entityRequestV2")) == [("entityOperationSignaled", "scheduled")]
            items.none()  # B is still locked by "owner": its signal waits
        finally:
            h.close()
