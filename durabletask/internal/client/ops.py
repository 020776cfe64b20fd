"""Client operations without I/O, shared by the sync and the async client.

Each operation is a generator: it yields the gRPC `Call`s it needs, receives each response (or
has the call's `grpc.RpcError` thrown into it), and returns the result. `run_sync` and `run_async`
are the only code that touches a transport, so both clients build requests and read responses
in exactly one way.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Generator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, TypeVar

import grpc
from google.protobuf import duration_pb2, wrappers_pb2
from google.protobuf.message import Message

from durabletask.entities.entity_instance_id import EntityInstanceId, as_entity_id
from durabletask.entities.entity_metadata import EntityMetadata
from durabletask.internal import orchestrator_service_pb2 as pb
from durabletask.internal.client.models import (
    CleanEntityStorageResult,
    EntityQuery,
    OrchestrationQuery,
    OrchestrationState,
    OrchestrationStatus,
    Page,
    PurgeInstancesResult,
    new_orchestration_state,
    parse_orchestration_state,
)
from durabletask.internal.contexts import get_name
from durabletask.internal.replay.actions import to_timestamp
from durabletask.serialization import DataConverter

T = TypeVar("T")


@dataclass(frozen=True)
class Call:
    """One RPC: the stub method name, the request, a deadline, and whether it streams back."""

    method: str
    request: Message
    timeout: float | None = None
    streaming: bool = False


Op = Generator[Call, Any, T]


def run_sync(stub: Any, op: Op[T]) -> T:
    """Drive an operation with a blocking stub."""
    try:
        call = next(op)
        while True:
            method = getattr(stub, call.method)
            try:
                response = method(call.request, timeout=call.timeout)
                if call.streaming:
                    response = list(response)
            except grpc.RpcError as error:
                call = op.throw(error)
                continue
            call = op.send(response)
    except StopIteration as done:
        result: T = done.value
        return result


async def run_async(stub: Any, op: Op[T]) -> T:
    """Drive an operation with an asyncio stub."""
    try:
        call = next(op)
        while True:
            method = getattr(stub, call.method)
            try:
                if call.streaming:
                    stream: AsyncIterator[Any] = method(call.request, timeout=call.timeout)
                    response: Any = [chunk async for chunk in stream]
                else:
                    response = await method(call.request, timeout=call.timeout)
            except grpc.RpcError as error:
                call = op.throw(error)
                continue
            call = op.send(response)
    except StopIteration as done:
        result: T = done.value
        return result


def _sv(value: str | None) -> wrappers_pb2.StringValue | None:
    return None if value is None else wrappers_pb2.StringValue(value=value)


def _ts(value: datetime | None) -> Any:
    return None if value is None else to_timestamp(value)


def _encode(converter: DataConverter, value: Any) -> wrappers_pb2.StringValue | None:
    return _sv(converter.serialize(value)) if value is not None else None


def _require_id(instance_id: str) -> None:
    if not isinstance(instance_id, str) or not instance_id:
        raise ValueError(f"instance_id must be a non-empty string, got {instance_id!r}")


# ----------------------------------------------------------------------------- orchestrations

def schedule_new_orchestration(converter: DataConverter, default_version: str | None, orchestrator: Any, *,
                               input: Any, instance_id: str | None, start_at: datetime | None,
                               reuse_id_policy: pb.OrchestrationIdReusePolicy | None,
                               tags: dict[str, str] | None, version: str | None) -> Op[str]:
    name = orchestrator if isinstance(orchestrator, str) else get_name(orchestrator)
    request = pb.CreateInstanceRequest(
        instanceId=instance_id or uuid.uuid4().hex,
        name=name,
        version=_sv(version or default_version),
        input=_encode(converter, input),
        scheduledStartTimestamp=_ts(start_at),
        orchestrationIdReusePolicy=reuse_id_policy,
        tags=tags,
    )
    response = yield Call("StartInstance", request)
    instance: str = response.instanceId
    return instance


def get_orchestration_state(converter: DataConverter, instance_id: str,
                            fetch_payloads: bool) -> Op[OrchestrationState | None]:
    _require_id(instance_id)
    request = pb.GetInstanceRequest(instanceId=instance_id, getInputsAndOutputs=fetch_payloads)
    response = yield Call("GetInstance", request)
    return new_orchestration_state(instance_id, response, converter)


def wait_for_orchestration(converter: DataConverter, instance_id: str, fetch_payloads: bool,
                           timeout: float | None, *, until: str) -> Op[OrchestrationState | None]:
    """Long-poll until the instance starts (``until="start"``) or completes (``"completion"``)."""
    _require_id(instance_id)
    request = pb.GetInstanceRequest(instanceId=instance_id, getInputsAndOutputs=fetch_payloads)
    method = "WaitForInstanceStart" if until == "start" else "WaitForInstanceCompletion"
    try:
        response = yield Call(method, request, timeout=timeout)
    except grpc.RpcError as error:
        if error.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
            raise TimeoutError(
                f"Timed-out waiting for the orchestration '{instance_id}' to "
                f"{'start' if until == 'start' else 'complete'} (waited {timeout} s)"
            ) from None
        raise
    return new_orchestration_state(instance_id, response, converter)


def query_page(converter: DataConverter, query: OrchestrationQuery,
               continuation_token: str | None) -> Op[Page[OrchestrationState]]:
    request = pb.QueryInstancesRequest(query=pb.InstanceQuery(
        runtimeStatus=[s.value for s in query.runtime_status or ()],
        createdTimeFrom=_ts(query.created_time_from),
        createdTimeTo=_ts(query.created_time_to),
        maxInstanceCount=query.max_instance_count or 0,
        continuationToken=_sv(continuation_token),
        instanceIdPrefix=_sv(query.instance_id_prefix),
        fetchInputsAndOutputs=query.fetch_inputs_and_outputs,
    ))
    response = yield Call("QueryInstances", request)
    states = [parse_orchestration_state(s, converter) for s in response.orchestrationState]
    token = response.continuationToken.value if response.HasField("continuationToken") else None
    return Page(states, token or None)


def query_all(converter: DataConverter, query: OrchestrationQuery) -> Op[list[OrchestrationState]]:
    states: list[OrchestrationState] = []
    token: str | None = None
    while True:
        page = yield from query_page(converter, query, token)
        states += page.items
        if page.continuation_token is None or page.continuation_token == token:
            return states
        token = page.continuation_token


def list_instance_ids(runtime_status: list[OrchestrationStatus] | None, completed_time_from: datetime | None,
                      completed_time_to: datetime | None, page_size: int | None,
                      continuation_token: str | None) -> Op[Page[str]]:
    request = pb.ListInstanceIdsRequest(
        runtimeStatus=[s.value for s in runtime_status or ()],
        completedTimeFrom=_ts(completed_time_from),
        completedTimeTo=_ts(completed_time_to),
        pageSize=page_size or 0,
        lastInstanceKey=_sv(continuation_token),
    )
    response = yield Call("ListInstanceIds", request)
    token = response.lastInstanceKey.value if response.HasField("lastInstanceKey") else None
    return Page(list(response.instanceIds), token or None)


def get_orchestration_history(instance_id: str, execution_id: str | None,
                              for_work_item_processing: bool) -> Op[list[pb.HistoryEvent]]:
    _require_id(instance_id)
    request = pb.StreamInstanceHistoryRequest(instanceId=instance_id, executionId=_sv(execution_id),
                                              forWorkItemProcessing=for_work_item_processing)
    chunks = yield Call("StreamInstanceHistory", request, streaming=True)
    return [event for chunk in chunks for event in chunk.events]


def _no_result(method: str, request: Message) -> Op[None]:
    yield Call(method, request)
    return None


def raise_orchestration_event(converter: DataConverter, instance_id: str, event_name: str, data: Any) -> Op[None]:
    _require_id(instance_id)
    if not event_name:
        raise ValueError("event_name must be a non-empty string")
    return _no_result("RaiseEvent", pb.RaiseEventRequest(instanceId=instance_id, name=event_name,
                                                          input=_encode(converter, data)))


def terminate_orchestration(converter: DataConverter, instance_id: str, output: Any, recursive: bool) -> Op[None]:
    _require_id(instance_id)
    return _no_result("TerminateInstance", pb.TerminateRequest(
        instanceId=instance_id, output=_encode(converter, output), recursive=recursive))


def suspend_orchestration(instance_id: str, reason: str | None) -> Op[None]:
    _require_id(instance_id)
    return _no_result("SuspendInstance", pb.SuspendRequest(instanceId=instance_id, reason=_sv(reason)))


def resume_orchestration(instance_id: str, reason: str | None) -> Op[None]:
    _require_id(instance_id)
    return _no_result("ResumeInstance", pb.ResumeRequest(instanceId=instance_id, reason=_sv(reason)))


def rewind_orchestration(instance_id: str, reason: str | None) -> Op[None]:
    _require_id(instance_id)
    return _no_result("RewindInstance", pb.RewindInstanceRequest(instanceId=instance_id, reason=_sv(reason)))


def restart_orchestration(instance_id: str, restart_with_new_instance_id: bool) -> Op[str]:
    _require_id(instance_id)
    response = yield Call("RestartInstance", pb.RestartInstanceRequest(
        instanceId=instance_id, restartWithNewInstanceId=restart_with_new_instance_id))
    new_id: str = response.instanceId
    return new_id


def _purge_result(response: pb.PurgeInstancesResponse) -> PurgeInstancesResult:
    complete = response.isComplete.value if response.HasField("isComplete") else None
    return PurgeInstancesResult(response.deletedInstanceCount, complete)


def purge_orchestration(instance_id: str, recursive: bool) -> Op[PurgeInstancesResult]:
    _require_id(instance_id)
    response = yield Call("PurgeInstances", pb.PurgeInstancesRequest(
        instanceId=instance_id, recursive=recursive, isOrchestration=True))
    return _purge_result(response)


def purge_orchestrations_by(created_time_from: datetime | None, created_time_to: datetime | None,
                            runtime_status: list[OrchestrationStatus] | None, recursive: bool,
                            timeout: timedelta | None) -> Op[PurgeInstancesResult]:
    duration = None
    if timeout is not None:
        duration = duration_pb2.Duration()
        duration.FromTimedelta(timeout)
    response = yield Call("PurgeInstances", pb.PurgeInstancesRequest(
        purgeInstanceFilter=pb.PurgeInstanceFilter(
            createdTimeFrom=_ts(created_time_from), createdTimeTo=_ts(created_time_to),
            runtimeStatus=[s.value for s in runtime_status or ()], timeout=duration),
        recursive=recursive))
    return _purge_result(response)


# ----------------------------------------------------------------------------- entities


def signal_entity(converter: DataConverter, entity_instance_id: EntityInstanceId | str, operation_name: str,
                  input: Any, signal_time: datetime | None) -> Op[None]:
    target = as_entity_id(entity_instance_id, "entity_instance_id")
    if not operation_name:
        raise ValueError("operation_name must be a non-empty string")
    return _no_result("SignalEntity", pb.SignalEntityRequest(
        instanceId=str(target),
        name=operation_name,
        input=_encode(converter, input),
        requestId=str(uuid.uuid4()),
        scheduledTime=_ts(signal_time),
        requestTime=_ts(datetime.now(timezone.utc)),
    ))


def get_entity(converter: DataConverter, entity_instance_id: EntityInstanceId | str,
               include_state: bool) -> Op[EntityMetadata | None]:
    target = as_entity_id(entity_instance_id, "entity_instance_id")
    response = yield Call("GetEntity", pb.GetEntityRequest(instanceId=str(target), includeState=include_state))
    if not response.exists:
        return None
    return EntityMetadata.from_entity_metadata(response.entity, include_state, converter)


def _entity_prefix(prefix: str | None) -> str | None:
    # Entity IDs start with '@': a bare name prefix ("counter") means the IDs "@counter...".
    if prefix is None or prefix.startswith("@"):
        return prefix
    return f"@{prefix}"


def query_entities_page(converter: DataConverter, query: EntityQuery,
                        continuation_token: str | None) -> Op[Page[EntityMetadata]]:
    if query.page_size is not None and query.page_size <= 0:
        raise ValueError(f"page_size must be positive (or None), got {query.page_size}")
    request = pb.QueryEntitiesRequest(query=pb.EntityQuery(
        instanceIdStartsWith=_sv(_entity_prefix(query.instance_id_starts_with)),
        lastModifiedFrom=_ts(query.last_modified_from),
        lastModifiedTo=_ts(query.last_modified_to),
        includeState=query.include_state,
        includeTransient=query.include_transient,
        pageSize=None if query.page_size is None else wrappers_pb2.Int32Value(value=query.page_size),
        continuationToken=_sv(continuation_token),
    ))
    response = yield Call("QueryEntities", request)
    items = [EntityMetadata.from_entity_metadata(e, query.include_state, converter) for e in response.entities]
    return Page(items, _next_token(response, continuation_token))


def _next_token(response: Any, previous: str | None) -> str | None:
    """The token of the next page; None at the end ("0", empty, or the same token again)."""
    token = response.continuationToken.value if response.HasField("continuationToken") else None
    if not token or token == "0" or token == previous:
        return None
    return str(token)


def query_all_entities(converter: DataConverter, query: EntityQuery) -> Op[list[EntityMetadata]]:
    found: list[EntityMetadata] = []
    token: str | None = None
    while True:
        page = yield from query_entities_page(converter, query, token)
        found += page.items
        if page.continuation_token is None:
            return found
        token = page.continuation_token


def clean_entity_storage(remove_empty_entities: bool, release_orphaned_locks: bool) -> Op[CleanEntityStorageResult]:
    removed = released = 0
    token: str | None = None
    while True:
        response = yield Call("CleanEntityStorage", pb.CleanEntityStorageRequest(
            continuationToken=_sv(token), removeEmptyEntities=remove_empty_entities,
            releaseOrphanedLocks=release_orphaned_locks))
        removed += response.emptyEntitiesRemoved
        released += response.orphanedLocksReleased
        token = _next_token(response, token)
        if token is None:
            return CleanEntityStorageResult(removed, released)
