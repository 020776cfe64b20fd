"""Turning one work item into its completion: orchestration episodes and activity runs.

No gRPC here: these functions take requests and return responses (or say the item must be
given back), so they can be tested without a backend.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Sequence
from concurrent.futures import Executor
from typing import Any, NamedTuple

from google.protobuf import wrappers_pb2

from durabletask.internal import orchestrator_service_pb2 as pb
from durabletask.internal import type_discovery
from durabletask.internal.contexts import ActivityContext
from durabletask.internal.failures import OrchestrationStateError, failure_details_to_proto
from durabletask.internal.registry import Registry, not_registered_message
from durabletask.internal.replay.actions import complete_orchestration
from durabletask.internal.replay.engine import OrchestrationExecutor
from durabletask.internal.runtime.options import VersionFailureStrategy, VersioningOptions, version_mismatch
from durabletask.serialization import DataConverter

logger = logging.getLogger("durabletask.worker")


class ActivityNotRegisteredError(Exception):
    """The backend sent an activity this worker does not have."""


class Abandon(Exception):
    """The work item must be given back to the backend (it will be redelivered)."""


def _started_version(past: Sequence[pb.HistoryEvent], new: Sequence[pb.HistoryEvent]) -> str | None:
    for events in (past, new):
        for index in range(len(events)):  # by index: the start is near the front, parse no further
            event = events[index]
            if event.HasField("executionStarted"):
                started = event.executionStarted
                return started.version.value if started.HasField("version") else None
    return None


class Episode(NamedTuple):
    """An orchestration episode's completion, and the tasks the orchestration still awaits after it.

    ``awaiting``: see `ExecutionResult.awaiting` (it decides whether the completion may be held
    back for a moment, `HeldEpisodes`).
    """

    response: pb.OrchestratorResponse
    awaiting: tuple[int, ...] = ()


def run_orchestration(executor: OrchestrationExecutor, versioning: VersioningOptions | None,
                      request: pb.OrchestratorRequest, past: Sequence[pb.HistoryEvent],
                      completion_token: str) -> Episode:
    """Run one orchestration episode and build its completion.

    Raises:
        Abandon: The item must go back to the backend (version rejected, malformed work item).
    """
    instance_id = request.instanceId
    new = request.newEvents
    if versioning is not None:
        mismatch = version_mismatch(versioning, _started_version(past, new))
        if mismatch is not None:
            if versioning.failure_strategy == VersionFailureStrategy.FAIL:
                return Episode(pb.OrchestratorResponse(
                    instanceId=instance_id, completionToken=completion_token,
                    actions=[complete_orchestration(-1, pb.ORCHESTRATION_STATUS_FAILED, failure=mismatch)]))
            raise Abandon(mismatch.errorMessage)
    try:
        result = executor.execute(instance_id, past, new)
    except OrchestrationStateError as error:
        raise Abandon(str(error)) from error
    status = result.encoded_custom_status
    return Episode(pb.OrchestratorResponse(
        instanceId=instance_id,
        actions=result.actions,
        customStatus=None if status is None else wrappers_pb2.StringValue(value=status),
        completionToken=completion_token,
    ), result.awaiting)


def _is_async(fn: Any) -> bool:
    if inspect.iscoroutinefunction(fn):
        return True
    call = type(fn).__call__ if not inspect.isfunction(fn) and not inspect.ismethod(fn) else None
    return call is not None and inspect.iscoroutinefunction(call)


_async_checked: dict[Any, bool] = {}


def is_async_activity(fn: Any) -> bool:
    """Whether an activity runs on the loop (``async def``) rather than on a thread; remembered per function."""
    try:
        return _async_checked[fn]
    except KeyError:
        answer = _async_checked[fn] = _is_async(fn)
        return answer
    except TypeError:  # an unhashable callable object
        return _is_async(fn)


def _response(request: pb.ActivityRequest, completion_token: str) -> pb.ActivityResponse:
    return pb.ActivityResponse(instanceId=request.orchestrationInstance.instanceId, taskId=request.taskId,
                               completionToken=completion_token)


def _input_of(fn: Any, converter: DataConverter, request: pb.ActivityRequest) -> Any:
    raw = request.input.value
    return converter.deserialize(raw, type_discovery.activity_input_type(fn, converter)) if raw else None


def _succeeded(response: pb.ActivityResponse, converter: DataConverter, output: Any) -> pb.ActivityResponse:
    encoded = converter.serialize(output) if output is not None else None
    if encoded is not None:
        response.result.value = encoded
    return response


def _failed(response: pb.ActivityResponse, request: pb.ActivityRequest, error: Exception) -> pb.ActivityResponse:
    logger.info("activity '%s' (#%d of %s) failed: %s", request.name, request.taskId,
                response.instanceId, error)
    response.failureDetails.CopyFrom(failure_details_to_proto(error))
    return response


def unregistered_activity(registry: Registry, request: pb.ActivityRequest,
                          completion_token: str) -> pb.ActivityResponse:
    """The failed completion of an activity this worker does not have."""
    error = ActivityNotRegisteredError(not_registered_message("activity", request.name, registry.activities))
    return _failed(_response(request, completion_token), request, error)


def call_activity(fn: Any, converter: DataConverter, request: pb.ActivityRequest,
                  completion_token: str) -> tuple[pb.ActivityResponse, Awaitable[Any] | None]:
    """Run a plain activity in the calling thread (a pool thread) and build its completion.

    Returns the response, and the awaitable the function returned if it returned one instead of a
    value: that must be awaited on the loop (`finish_activity`) before the response is complete.
    """
    response = _response(request, completion_token)
    try:
        output = fn(ActivityContext(response.instanceId, request.taskId), _input_of(fn, converter, request))
        if inspect.isawaitable(output):
            return response, output
        return _succeeded(response, converter, output), None
    except Exception as error:
        return _failed(response, request, error), None


async def finish_activity(converter: DataConverter, request: pb.ActivityRequest, response: pb.ActivityResponse,
                          pending: Awaitable[Any]) -> pb.ActivityResponse:
    """Complete the response of a plain activity that returned an awaitable."""
    try:
        return _succeeded(response, converter, await pending)
    except Exception as error:
        return _failed(response, request, error)


async def run_activity(registry: Registry, converter: DataConverter, request: pb.ActivityRequest,
                       completion_token: str, pool: Executor) -> pb.ActivityResponse:
    """Run one activity: ``async def`` ones on the running loop, others on ``pool``."""
    fn = registry.get_activity(request.name)
    if fn is None:
        return unregistered_activity(registry, request, completion_token)
    if not is_async_activity(fn):
        response, pending = await asyncio.get_running_loop().run_in_executor(
            pool, call_activity, fn, converter, request, completion_token)
        return response if pending is None else await finish_activity(converter, request, response, pending)
    response = _response(request, completion_token)
    try:
        output = await fn(ActivityContext(response.instanceId, request.taskId), _input_of(fn, converter, request))
        return _succeeded(response, converter, output)
    except Exception as error:
        return _failed(response, request, error)
