"""The read side: orchestration state messages, instance queries and ID listings with paging."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TypeVar

from google.protobuf import wrappers_pb2

from durabletask.emulator import wire
from durabletask.emulator.errors import InvalidArgument
from durabletask.emulator.state import HubState
from durabletask.emulator.store.base import TERMINAL_STATUSES, InstanceRecord
from durabletask.internal import orchestrator_service_pb2 as pb

DEFAULT_PAGE_SIZE = 100
_SEPARATOR = "|"

T = TypeVar("T")


def orchestration_state(record: InstanceRecord, *, include_payloads: bool) -> pb.OrchestrationState:
    state = pb.OrchestrationState(
        instanceId=record.instance_id,
        name=record.name,
        orchestrationStatus=record.status,  # type: ignore[arg-type]
        createdTimestamp=wire.timestamp(record.created_at),
        lastUpdatedTimestamp=wire.timestamp(record.updated_at),
        executionId=wrappers_pb2.StringValue(value=record.execution_id),
        tags=record.tags,
    )
    if record.version is not None:
        state.version.value = record.version
    if record.scheduled_start_at is not None:
        state.scheduledStartTimestamp.CopyFrom(wire.timestamp(record.scheduled_start_at))
    if record.completed_at is not None:
        state.completedTimestamp.CopyFrom(wire.timestamp(record.completed_at))
    if record.custom_status is not None:
        state.customStatus.value = record.custom_status
    if record.failure is not None:
        state.failureDetails.ParseFromString(record.failure)
    if record.parent_instance_id is not None:
        state.parentInstanceId.value = record.parent_instance_id
    if include_payloads:
        if record.input is not None:
            state.input.value = record.input
        if record.output is not None:
            state.output.value = record.output
    return state


def _cursor(token: str, what: str) -> tuple[float, str]:
    at, sep, instance_id = token.partition(_SEPARATOR)
    try:
        if not sep:
            raise ValueError(token)
        return float(at), instance_id
    except ValueError:
        raise InvalidArgument(f"{what} {token!r} was not issued by this emulator; start again without it") from None


def _page(items: list[T], key: Callable[[T], tuple[float, str]], token: str | None, size: int,
          what: str) -> tuple[list[T], str | None]:
    items.sort(key=key)
    if token:
        after = _cursor(token, what)
        items = [i for i in items if key(i) > after]
    if size <= 0 or len(items) <= size:
        return items, None
    page = items[:size]
    last = key(page[-1])
    return page, f"{last[0]!r}{_SEPARATOR}{last[1]}"


def query_instances(hub: HubState, query: pb.InstanceQuery) -> pb.QueryInstancesResponse:
    if query.taskHubNames and not any(n.value.lower() == hub.name for n in query.taskHubNames):
        return pb.QueryInstancesResponse()
    statuses = set(query.runtimeStatus)
    low = wire.seconds(query.createdTimeFrom) if query.HasField("createdTimeFrom") else None
    high = wire.seconds(query.createdTimeTo) if query.HasField("createdTimeTo") else None
    prefix = query.instanceIdPrefix.value if query.HasField("instanceIdPrefix") else ""
    records = [
        r for r in _records(hub)
        if (not statuses or r.status in statuses)
        and (low is None or r.created_at >= low)
        and (high is None or r.created_at < high)
        and r.instance_id.startswith(prefix)
    ]
    token = query.continuationToken.value if query.HasField("continuationToken") else None
    page, next_token = _page(records, lambda r: (r.created_at, r.instance_id), token, query.maxInstanceCount,
                             "continuationToken")
    response = pb.QueryInstancesResponse(orchestrationState=[
        orchestration_state(r, include_payloads=query.fetchInputsAndOutputs) for r in page
    ])
    if next_token is not None:
        response.continuationToken.value = next_token
    return response


def list_instance_ids(hub: HubState, request: pb.ListInstanceIdsRequest) -> pb.ListInstanceIdsResponse:
    statuses = set(request.runtimeStatus) & TERMINAL_STATUSES if request.runtimeStatus else TERMINAL_STATUSES
    low = wire.seconds(request.completedTimeFrom) if request.HasField("completedTimeFrom") else None
    high = wire.seconds(request.completedTimeTo) if request.HasField("completedTimeTo") else None
    records = [
        r for r in _records(hub)
        if r.status in statuses and r.completed_at is not None
        and (low is None or r.completed_at >= low)
        and (high is None or r.completed_at < high)
    ]
    token = request.lastInstanceKey.value if request.HasField("lastInstanceKey") else None
    size = request.pageSize if request.pageSize > 0 else DEFAULT_PAGE_SIZE
    page, next_token = _page(records, lambda r: (r.completed_at or 0.0, r.instance_id), token, size,
                             "lastInstanceKey")
    response = pb.ListInstanceIdsResponse(instanceIds=[r.instance_id for r in page])
    if next_token is not None:
        response.lastInstanceKey.value = next_token
    return response


def _records(hub: HubState) -> Iterable[InstanceRecord]:
    return (instance.record for instance in hub.instances.values())
