"""Client entity operations: the requests they build and how they read responses (no server)."""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone
from typing import Any

import pytest
from google.protobuf import wrappers_pb2

from durabletask.client import AsyncTaskHubGrpcClient, CleanEntityStorageResult, EntityQuery, TaskHubGrpcClient
from durabletask.entities import EntityInstanceId
from durabletask.internal import orchestrator_service_pb2 as pb

ID = EntityInstanceId("Counter", "k")


class Stub:
    """Answers each method from a queue of canned responses and records the requests."""

    def __init__(self, **responses: list[Any]) -> None:
        self.responses = responses
        self.requests: list[tuple[str, Any]] = []

    def __getattr__(self, method: str) -> Any:
        def call(request: Any, timeout: float | None = None) -> Any:
            self.requests.append((method, request))
            return self.responses[method].pop(0)
        return call


class AsyncStub(Stub):
    def __getattr__(self, method: str) -> Any:
        sync = Stub.__getattr__(self, method)

        async def call(request: Any, timeout: float | None = None) -> Any:
            return sync(request, timeout)
        return call


def _client(stub: Stub) -> TaskHubGrpcClient:
    client = TaskHubGrpcClient(host_address="localhost:1")
    client._stub = stub
    return client


def _sv(value: str) -> wrappers_pb2.StringValue:
    return wrappers_pb2.StringValue(value=value)


def _entity(instance_id: str, state: str | None = None) -> pb.EntityMetadata:
    return pb.EntityMetadata(instanceId=instance_id, serializedState=None if state is None else _sv(state))


def test_signal_entity_request() -> None:
    stub = Stub(SignalEntity=[pb.SignalEntityResponse()] * 2)
    client = _client(stub)
    client.signal_entity(ID, "add", 5, signal_time=datetime(2030, 1, 1, tzinfo=timezone.utc))
    client.signal_entity("@counter@k", "reset")
    (_, first), (_, second) = stub.requests
    assert (first.instanceId, first.name, first.input.value) == ("@counter@k", "add", "5")
    assert first.scheduledTime.ToDatetime() == datetime(2030, 1, 1)
    assert first.requestId and first.requestId != second.requestId and first.HasField("requestTime")
    assert not second.HasField("input") and not second.HasField("scheduledTime")
    with pytest.raises(ValueError, match="not an entity ID"):
        client.signal_entity("counter", "add")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="EntityInstanceId"):
        client.signal_entity(42, "add")  # type: ignore[arg-type]


def test_get_entity_with_and_without_state_and_missing() -> None:
    found = pb.GetEntityResponse(exists=True, entity=_entity("@counter@k", "7"))
    stub = Stub(GetEntity=[found, found, pb.GetEntityResponse(exists=False)])
    client = _client(stub)
    with_state = client.get_entity(ID)
    assert with_state is not None and with_state.get_typed_state(int) == 7 and with_state.id == ID
    without = client.get_entity(ID, include_state=False)
    assert without is not None and without.includes_state is False and without.get_typed_state() is None
    assert client.get_entity(ID) is None
    assert [r.includeState for _, r in stub.requests] == [True, False, True]


def test_entity_query_pages_follow_the_continuation_token() -> None:
    pages = [
        pb.QueryEntitiesResponse(entities=[_entity("@counter@1", "1"), _entity("@counter@2", "2")],
                                 continuationToken=_sv("next")),
        pb.QueryEntitiesResponse(entities=[_entity("@counter@3", "3")], continuationToken=_sv("0")),
    ]
    stub = Stub(QueryEntities=list(pages))
    found = _client(stub).get_all_entities(EntityQuery(instance_id_starts_with="counter", page_size=2))
    assert [e.id.key for e in found] == ["1", "2", "3"]
    (_, first), (_, second) = stub.requests
    assert first.query.instanceIdStartsWith.value == "@counter"  # a bare name prefix gets its '@'
    assert first.query.pageSize.value == 2 and first.query.includeState
    assert not first.query.HasField("continuationToken") and second.query.continuationToken.value == "next"

    stub = Stub(QueryEntities=list(pages))
    client = _client(stub)
    page = client.query_entities(EntityQuery(include_state=False))
    assert [e.id.key for e in page.items] == ["1", "2"] and page.continuation_token == "next"
    assert page.items[0].get_state() is None  # state not asked for
    last = client.query_entities(EntityQuery(), continuation_token=page.continuation_token)
    assert [e.id.key for e in last.items] == ["3"] and last.continuation_token is None


def test_a_repeated_continuation_token_ends_the_query() -> None:
    same = pb.QueryEntitiesResponse(entities=[_entity("@a@1")], continuationToken=_sv("t"))
    stub = Stub(QueryEntities=[same, same, same])
    assert len(_client(stub).get_all_entities()) == 2


def test_clean_entity_storage_adds_up_all_pages() -> None:
    stub = Stub(CleanEntityStorage=[
        pb.CleanEntityStorageResponse(emptyEntitiesRemoved=2, orphanedLocksReleased=1, continuationToken=_sv("x")),
        pb.CleanEntityStorageResponse(emptyEntitiesRemoved=3),
    ])
    result = _client(stub).clean_entity_storage(release_orphaned_locks=False)
    assert result == CleanEntityStorageResult(empty_entities_removed=5, orphaned_locks_released=1)
    assert [(r.removeEmptyEntities, r.releaseOrphanedLocks) for _, r in stub.requests] == [(True, False)] * 2


def test_the_async_client_builds_the_same_requests() -> None:
    async def main() -> Any:
        stub = AsyncStub(SignalEntity=[pb.SignalEntityResponse()],
                         GetEntity=[pb.GetEntityResponse(exists=True, entity=_entity("@counter@k", "1"))],
                         QueryEntities=[pb.QueryEntitiesResponse(entities=[_entity("@counter@k")])],
                         CleanEntityStorage=[pb.CleanEntityStorageResponse(emptyEntitiesRemoved=1)])
        client = AsyncTaskHubGrpcClient(host_address="localhost:1")
        client._stub = stub
        await client.signal_entity(ID, "add", 1)
        entity = await client.get_entity(ID)
        entities = await client.get_all_entities()
        cleaned = await client.clean_entity_storage()
        return stub, entity, entities, cleaned

    stub, entity, entities, cleaned = asyncio.run(main())
    assert [m for m, _ in stub.requests] == ["SignalEntity", "GetEntity", "QueryEntities", "CleanEntityStorage"]
    assert entity.get_typed_state() == 1 and len(entities) == 1 and cleaned.empty_entities_removed == 1
