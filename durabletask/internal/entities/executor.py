"""Running one entity batch: (registered entities, batch request) -> `EntityBatchResult`.

No I/O here. The worker runtime hands a work item's request to `execute_batch` and sends back
what it returns. Each operation commits or rolls back on its own (state and queued actions), and
gets its own result; a failing operation never fails the batch.
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from google.protobuf import wrappers_pb2

from durabletask.entities.durable_entity import DurableEntity
from durabletask.entities.entity_context import EntityContext
from durabletask.entities.entity_instance_id import EntityInstanceId
from durabletask.internal import orchestrator_service_pb2 as pb
from durabletask.internal import type_discovery
from durabletask.internal.entities.state import EntityState
from durabletask.internal.failures import failure_details_to_proto
from durabletask.internal.registry import Registry, not_registered_message
from durabletask.internal.replay.actions import to_timestamp
from durabletask.serialization import DataConverter

logger = logging.getLogger("durabletask.entities")


class EntityNotRegisteredError(ValueError):
    """A work item names an entity that this worker does not have."""


class EntityOperationNotFoundError(AttributeError):
    """A class-based entity has no method for the requested operation."""


@dataclass(frozen=True)
class Operation:
    """One operation of a batch, whichever work item shape it came in."""

    name: str
    request_id: str
    encoded_input: str | None


def _utc_now() -> datetime:
    return datetime.now(timezone.utc)


def operations_of(request: pb.EntityBatchRequest | pb.EntityRequest) -> tuple[list[Operation], list[pb.OperationInfo]]:
    """The operations of a work item, and (for the ``EntityRequest`` shape) their routing infos.

    ``EntityRequest`` (``entityRequestV2``) carries history events; the backend expects an
    `OperationInfo` per operation back, naming where a call's result goes (signals: nowhere).
    ``EntityBatchRequest`` (``entityRequest``) carries plain operations, and no infos are returned.
    """
    if isinstance(request, pb.EntityBatchRequest):
        return [Operation(op.operation, op.requestId, op.input.value if op.HasField("input") else None)
                for op in request.operations], []
    operations: list[Operation] = []
    infos: list[pb.OperationInfo] = []
    for event in request.operationRequests:
        kind = event.WhichOneof("eventType")
        if kind == "entityOperationSignaled":
            signal = event.entityOperationSignaled
            operations.append(Operation(signal.operation, signal.requestId,
                                        signal.input.value if signal.HasField("input") else None))
            infos.append(pb.OperationInfo(requestId=signal.requestId))
        elif kind == "entityOperationCalled":
            call = event.entityOperationCalled
            operations.append(Operation(call.operation, call.requestId,
                                        call.input.value if call.HasField("input") else None))
            infos.append(pb.OperationInfo(requestId=call.requestId, responseDestination=pb.OrchestrationInstance(
                instanceId=call.parentInstanceId.value,
                executionId=call.parentExecutionId if call.HasField("parentExecutionId") else None,
            )))
        else:
            logger.warning("entity %s: skipping a %s event that is not an operation", request.instanceId, kind)
    return operations, infos


def execute_batch(registry: Registry, converter: DataConverter, request: pb.EntityBatchRequest | pb.EntityRequest,
                  completion_token: str = "", *,
                  clock: Callable[[], datetime] = _utc_now) -> pb.EntityBatchResult:
    """Run every operation of a batch in order and build the batch result.

    Args:
        registry: Where the entity is looked up by the name in its instance ID.
        converter: Encodes and decodes inputs, outputs and state.
        request: The work item's request, in either shape.
        completion_token: Echoed in the result.
        clock: Operation start and end times (wall clock by default).
    """
    operations, infos = operations_of(request)
    raw_state = request.entityState.value if request.HasField("entityState") else None
    state = EntityState(raw_state or None, converter)
    instance_id = request.instanceId
    entity_id, fn, missing = _resolve(registry, instance_id)

    results: list[pb.OperationResult] = []
    for operation in operations:
        started = clock()
        try:
            if missing is not None:
                raise missing
            assert entity_id is not None
            output = run_operation(fn, entity_id, instance_id, operation, state, converter)
            encoded = converter.serialize(output)
        except Exception as error:
            state.rollback()
            details = failure_details_to_proto(error)
            if isinstance(error, EntityNotRegisteredError):
                details.isNonRetriable = True
            logger.info("entity %s: operation '%s' failed: %s", instance_id, operation.name, error)
            results.append(pb.OperationResult(failure=pb.OperationResultFailure(
                failureDetails=details, startTimeUtc=to_timestamp(started), endTimeUtc=to_timestamp(clock()))))
            continue
        state.commit()
        results.append(pb.OperationResult(success=pb.OperationResultSuccess(
            result=None if encoded is None else wrappers_pb2.StringValue(value=encoded),
            startTimeUtc=to_timestamp(started), endTimeUtc=to_timestamp(clock()))))

    final = state.encoded
    return pb.EntityBatchResult(
        results=results,
        actions=state.committed_actions(),
        entityState=None if final is None else wrappers_pb2.StringValue(value=final),
        completionToken=completion_token,
        operationInfos=infos,
    )


def _resolve(registry: Registry, instance_id: str) -> tuple[EntityInstanceId | None, Any, Exception | None]:
    """The entity ID and the registered entity, or the error every operation of the batch fails with."""
    try:
        entity_id = EntityInstanceId.parse(instance_id)
    except ValueError as error:
        return None, None, EntityNotRegisteredError(f"the work item's instance ID is not an entity ID: {error}")
    fn = registry.get_entity(entity_id.entity)
    if fn is None:
        return entity_id, None, EntityNotRegisteredError(
            not_registered_message("entity", entity_id.entity, registry.entities))
    return entity_id, fn, None


def run_operation(fn: Any, entity_id: EntityInstanceId, instance_id: str, operation: Operation, state: EntityState,
                  converter: DataConverter) -> Any:
    """Run one operation of a function or class entity and return its (not yet encoded) output."""
    raw = operation.encoded_input
    value = None
    if raw:
        value = converter.deserialize(raw, type_discovery.entity_input_type(fn, operation.name, converter))
    ctx = EntityContext(instance_id, operation.name, state, entity_id, converter)
    if isinstance(fn, type) and issubclass(fn, DurableEntity):
        cls: Any = fn
        method_name = _method_for(cls, operation.name)
        entity = fn()
        entity._initialize_entity_context(ctx)
        method = getattr(entity, method_name)
        output = method(value) if value is not None or _needs_input(cls, method_name) else method()
    else:
        output = fn(ctx, value)
    if inspect.isawaitable(output):
        close = getattr(output, "close", None)
        if close is not None:
            close()
        raise TypeError(f"entity '{entity_id.entity}' returned an awaitable for operation '{operation.name}': "
                        f"entity operations must be plain (not 'async def') functions")
    return output


@functools.lru_cache(maxsize=4096)
def _method_for(cls: type, operation: str) -> str:
    """The method of ``cls`` that runs ``operation``: same name, else the only case-insensitive match."""
    if not operation.startswith("_"):
        if callable(getattr(cls, operation, None)):
            return operation
        folded = operation.casefold()
        matches = [n for n in dir(cls) if not n.startswith("_") and n.casefold() == folded
                   and callable(getattr(cls, n, None))]
        if len(matches) == 1:
            return matches[0]
    public = sorted(n for n in dir(cls) if not n.startswith("_") and callable(getattr(cls, n, None))
                    and n not in _BASE_HELPERS)
    raise EntityOperationNotFoundError(
        f"entity class {cls.__name__} has no operation '{operation}' (operations: {', '.join(public) or 'none'})"
    )


_BASE_HELPERS = frozenset({"get_state", "set_state", "signal_entity", "schedule_new_orchestration"})


@functools.lru_cache(maxsize=4096)
def _needs_input(cls: type, method_name: str) -> bool:
    """True if the method has a required parameter besides ``self`` (so it gets None as input)."""
    try:
        signature = inspect.signature(getattr(cls, method_name))
    except (TypeError, ValueError):
        return True
    params = [p for p in signature.parameters.values()
              if p.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)]
    return any(p.default is inspect.Parameter.empty for p in params[1:])
