"""The read side of entities: ``GetEntity`` and ``QueryEntities`` with paging."""

from __future__ import annotations

from google.protobuf import wrappers_pb2

from durabletask.emulator import wire
from durabletask.emulator.entity_state import Entity, parse_entity_id
from durabletask.emulator.errors import InvalidArgument
from durabletask.emulator.state import HubState
from durabletask.internal import orchestrator_service_pb2 as pb

DEFAULT_PAGE_SIZE = 100


def metadata(entity: Entity, *, include_state: bool, now: float) -> pb.EntityMetadata:
    record = entity.record
    result = pb.EntityMetadata(instanceId=record.instance_id, lastModifiedTime=wire.timestamp(record.last_modified),
                               backlogQueueSize=entity.backlog(now))
    if record.locked_by is not None:
        result.lockedBy.value = record.locked_by
    if include_state and record.state is not None:
        result.serializedState.value = record.state
    return result


def get_entity(hub: HubState, request: pb.GetEntityRequest) -> pb.GetEntityResponse:
    """An entity exists while it has state (one that only has queued messages or a lock is transient)."""
    parse_entity_id(request.instanceId)
    entity = hub.entities.get(request.instanceId)
    if entity is None or entity.record.state is None:
        return pb.GetEntityResponse(exists=False)
    return pb.GetEntityResponse(exists=True, entity=metadata(entity, include_state=request.includeState,
                                                                  now=wire.now()))


def query_entities(hub: HubState, query: pb.EntityQuery) -> pb.QueryEntitiesResponse:
    """Entities by ID prefix and last-modified range, ordered by ID; the token is the last ID returned.

    A prefix that does not start with ``@`` is taken as a prefix of the entity name (``counter``
    matches ``@counter@...``), as the .NET client means it.
    """
    prefix = query.instanceIdStartsWith.value if query.HasField("instanceIdStartsWith") else ""
    if prefix and not prefix.startswith("@"):
        prefix = "@" + prefix
    low = wire.seconds(query.lastModifiedFrom) if query.HasField("lastModifiedFrom") else None
    high = wire.seconds(query.lastModifiedTo) if query.HasField("lastModifiedTo") else None
    after = query.continuationToken.value if query.HasField("continuationToken") else ""
    if after and not after.startswith("@"):
        raise InvalidArgument(f"continuationToken {after!r} was not issued by this emulator; start again without it")
    size = query.pageSize.value if query.HasField("pageSize") and query.pageSize.value > 0 else DEFAULT_PAGE_SIZE
    matching = sorted(
        (e for e in hub.entities.values()
         if not e.deleted and e.instance_id.startswith(prefix) and e.instance_id > after
         and (query.includeTransient or e.record.state is not None)
         and (low is None or e.record.last_modified >= low)
         and (high is None or e.record.last_modified < high)),
        key=lambda e: e.instance_id)
    page = matching[:size]
    now = wire.now()
    response = pb.QueryEntitiesResponse(entities=[metadata(e, include_state=query.includeState, now=now)
                                                  for e in page])
    if len(matching) > size:
        response.continuationToken.CopyFrom(wrappers_pb2.StringValue(value=page[-1].instance_id))
    return response
