"""The gRPC face of the emulator: ``TaskHubSidecarService`` on ``grpc.aio``, protocol in and out only.

Each method picks the task hub from the ``taskhub`` metadata, calls the engine, and turns engine
errors into the status codes they name (unexpected ones into INTERNAL with the reason; the server
keeps running). Handlers are registered by hand rather than through the generated servicer so that
work items and history chunks, which the engine assembles from stored bytes, go out unchanged.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from google.protobuf import empty_pb2

from durabletask.emulator import queries
from durabletask.emulator.engine import Engine
from durabletask.emulator.errors import EmulatorError
from durabletask.emulator.h2.call import Call
from durabletask.emulator.h2.server import Outcome, Route
from durabletask.emulator.state import HubState
from durabletask.emulator.store.base import InstanceRecord
from durabletask.emulator.store.runner import Durable
from durabletask.emulator.waits import InstanceWait
from durabletask.emulator.wire import history_chunk
from durabletask.internal import orchestrator_service_pb2 as pb

logger = logging.getLogger("durabletask.emulator.service")

SERVICE_NAME = "TaskHubSidecarService"
HISTORY_CHUNK_EVENTS = 200
_COMPLETED = pb.CompleteTaskResponse().SerializeToString()


def _serialize(message: Any) -> bytes:
    return message if isinstance(message, bytes) else message.SerializeToString()


def _hub_header(context: grpc.aio.ServicerContext[Any, Any] | Call) -> str | None:
    for key, value in context.invocation_metadata() or ():
        if key == "taskhub":
            return value if isinstance(value, str) else value.decode()
    return None


class Service:
    """The servicer. ``handler()`` gives the generic handler to add to a ``grpc.aio`` server."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    async def _unary(self, context: grpc.aio.ServicerContext[Any, Any],
                     call: Callable[[HubState], Awaitable[Any]]) -> Any:
        try:
            return await call(self.engine.hub(_hub_header(context)))
        except (asyncio.CancelledError, grpc.aio.AbortError):
            raise
        except Exception as error:
            if not isinstance(error, EmulatorError) and context.done():  # the caller is gone: nobody to answer
                raise asyncio.CancelledError from error
            await _abort(context, *_status_of(error))

    def _now(self, context: Call, start: Callable[[HubState], Durable | None],
             response: Any) -> tuple[Durable | None, Any]:
        """`_unary` for calls that need no task (the own HTTP/2 server's ``Route.immediate``): start the
        change now; the server answers ``response`` once the returned future says it is durable."""
        context.error_status = _status_of
        try:
            return start(self.engine.hub(_hub_header(context))), response
        except Exception as error:
            context.fail(*_status_of(error))

    # -- connectivity

    async def Hello(self, request: empty_pb2.Empty, context: Any) -> empty_pb2.Empty:
        return empty_pb2.Empty()

    # -- orchestration management

    async def StartInstance(self, request: pb.CreateInstanceRequest, context: Any) -> pb.CreateInstanceResponse:
        async def call(hub: HubState) -> pb.CreateInstanceResponse:
            return pb.CreateInstanceResponse(instanceId=await self.engine.start_instance(hub, request))
        return await self._unary(context, call)  # type: ignore[no-any-return]

    async def GetInstance(self, request: pb.GetInstanceRequest, context: Any) -> pb.GetInstanceResponse:
        async def call(hub: HubState) -> pb.GetInstanceResponse:
            state = await self.engine.get_instance(hub, request.instanceId,
                                                   include_payloads=request.getInputsAndOutputs)
            return pb.GetInstanceResponse(exists=state is not None, orchestrationState=state)
        return await self._unary(context, call)  # type: ignore[no-any-return]

    async def _wait(self, request: pb.GetInstanceRequest, context: Any, *, started: bool) -> pb.GetInstanceResponse:
        async def call(hub: HubState) -> pb.GetInstanceResponse:
            try:
                record = await self.engine.wait_now(hub, request.instanceId, started=started,
                                                    timeout=_wait_time(context))
            except TimeoutError:
                await _abort(context, *_timed_out(request, started))
            return _wait_answer(request, record)
        return await self._unary(context, call)  # type: ignore[no-any-return]

    def _wait_now(self, request: pb.GetInstanceRequest, context: Call, *,
                  started: bool) -> tuple[InstanceWait, Callable[[], pb.GetInstanceResponse]]:
        """`_wait` without a task (the own HTTP/2 server's ``Route.immediate``): answered from the commit
        that gets the instance there, in the same pass of the loop."""
        def status(error: BaseException) -> tuple[grpc.StatusCode, str]:
            return _timed_out(request, started) if isinstance(error, TimeoutError) else _status_of(error)

        context.error_status = status
        try:
            wait = self.engine.wait_now(self.engine.hub(_hub_header(context)), request.instanceId, started=started,
                                        timeout=_wait_time(context))
        except Exception as error:
            context.fail(*_status_of(error))
        return wait, lambda: _wait_answer(request, wait.record)

    async def WaitForInstanceStart(self, request: pb.GetInstanceRequest, context: Any) -> pb.GetInstanceResponse:
        return await self._wait(request, context, started=True)

    async def WaitForInstanceCompletion(self, request: pb.GetInstanceRequest, context: Any) -> pb.GetInstanceResponse:
        return await self._wait(request, context, started=False)

    async def RaiseEvent(self, request: pb.RaiseEventRequest, context: Any) -> pb.RaiseEventResponse:
        await self._unary(context, lambda hub: self.engine.raise_event(hub, request))
        return pb.RaiseEventResponse()

    async def TerminateInstance(self, request: pb.TerminateRequest, context: Any) -> pb.TerminateResponse:
        await self._unary(context, lambda hub: self.engine.terminate(hub, request))
        return pb.TerminateResponse()

    async def SuspendInstance(self, request: pb.SuspendRequest, context: Any) -> pb.SuspendResponse:
        await self._unary(context, lambda hub: self.engine.suspend(hub, request))
        return pb.SuspendResponse()

    async def ResumeInstance(self, request: pb.ResumeRequest, context: Any) -> pb.ResumeResponse:
        await self._unary(context, lambda hub: self.engine.resume(hub, request))
        return pb.ResumeResponse()

    async def RewindInstance(self, request: pb.RewindInstanceRequest, context: Any) -> pb.RewindInstanceResponse:
        await self._unary(context, lambda hub: self.engine.rewind(hub, request))
        return pb.RewindInstanceResponse()

    async def RestartInstance(self, request: pb.RestartInstanceRequest, context: Any) -> pb.RestartInstanceResponse:
        async def call(hub: HubState) -> pb.RestartInstanceResponse:
            return pb.RestartInstanceResponse(instanceId=await self.engine.restart(hub, request))
        return await self._unary(context, call)  # type: ignore[no-any-return]

    async def QueryInstances(self, request: pb.QueryInstancesRequest, context: Any) -> pb.QueryInstancesResponse:
        return await self._unary(  # type: ignore[no-any-return]
            context, lambda hub: self.engine.query_instances(hub, request.query))

    async def ListInstanceIds(self, request: pb.ListInstanceIdsRequest, context: Any) -> pb.ListInstanceIdsResponse:
        return await self._unary(  # type: ignore[no-any-return]
            context, lambda hub: self.engine.list_instance_ids(hub, request))

    async def PurgeInstances(self, request: pb.PurgeInstancesRequest, context: Any) -> pb.PurgeInstancesResponse:
        async def call(hub: HubState) -> pb.PurgeInstancesResponse:
            count = await self.engine.purge(hub, request)
            response = pb.PurgeInstancesResponse(deletedInstanceCount=count)
            response.isComplete.value = True
            return response
        return await self._unary(context, call)  # type: ignore[no-any-return]

    async def StreamInstanceHistory(self, request: pb.StreamInstanceHistoryRequest,
                                    context: Any) -> AsyncIterator[bytes]:
        execution_id = request.executionId.value if request.HasField("executionId") else None
        events: list[bytes] = await self._unary(
            context, lambda hub: self.engine.history(hub, request.instanceId, execution_id))
        for start in range(0, len(events), HISTORY_CHUNK_EVENTS):
            yield history_chunk(events[start:start + HISTORY_CHUNK_EVENTS])

    async def CreateTaskHub(self, request: pb.CreateTaskHubRequest, context: Any) -> pb.CreateTaskHubResponse:
        await self._unary(context, _noop)
        return pb.CreateTaskHubResponse()

    async def DeleteTaskHub(self, request: pb.DeleteTaskHubRequest, context: Any) -> pb.DeleteTaskHubResponse:
        await self._unary(context, _noop)
        return pb.DeleteTaskHubResponse()

    # -- workers

    async def GetWorkItems(self, request: pb.GetWorkItemsRequest, context: Any) -> AsyncIterator[bytes]:
        hub: HubState = await self._unary(context, _same)
        stream = self.engine.open_stream(hub, request, context.peer())
        stream.sink = getattr(context, "send_now", None)  # the own HTTP/2 server writes items directly
        try:
            while True:
                item = await stream.queue.get()
                if item is None:  # the server is closing the stream
                    return
                yield item
        finally:
            self.engine.close_stream(stream)

    async def CompleteOrchestratorTask(self, request: pb.OrchestratorResponse, context: Any) -> pb.CompleteTaskResponse:
        await self._unary(context, lambda hub: self.engine.complete_orchestration(hub, request))
        return pb.CompleteTaskResponse()

    async def CompleteActivityTask(self, request: pb.ActivityResponse, context: Any) -> pb.CompleteTaskResponse:
        await self._unary(context, lambda hub: self.engine.complete_activity(hub, request))
        return pb.CompleteTaskResponse()

    def _start_instance_now(self, request: pb.CreateInstanceRequest, context: Call) -> tuple[Durable | None, Any]:
        context.error_status = _status_of
        try:
            instance_id, durable = self.engine.start_instance_now(self.engine.hub(_hub_header(context)), request)
        except Exception as error:
            context.fail(*_status_of(error))
        return durable, pb.CreateInstanceResponse(instanceId=instance_id)

    def _complete_orchestration_now(self, request: pb.OrchestratorResponse,
                                    context: Any) -> tuple[Durable | None, Any]:
        return self._now(context, lambda hub: self.engine.complete_orchestration_now(hub, request), _COMPLETED)

    def _complete_activity_now(self, request: pb.ActivityResponse,
                               context: Any) -> tuple[Durable | None, Any]:
        return self._now(context, lambda hub: self.engine.complete_activity_now(hub, request), _COMPLETED)

    async def AbandonTaskOrchestratorWorkItem(self, request: pb.AbandonOrchestrationTaskRequest,
                                              context: Any) -> pb.AbandonOrchestrationTaskResponse:
        await self._unary(context, lambda hub: _sync(self.engine.abandon_orchestration, hub, request.completionToken))
        return pb.AbandonOrchestrationTaskResponse()

    async def AbandonTaskActivityWorkItem(self, request: pb.AbandonActivityTaskRequest,
                                          context: Any) -> pb.AbandonActivityTaskResponse:
        await self._unary(context, lambda hub: _sync(self.engine.abandon_activity, hub, request.completionToken))
        return pb.AbandonActivityTaskResponse()

    async def GetTombstonedPayloads(self, request: pb.GetTombstonedPayloadsRequest,
                                    context: Any) -> pb.GetTombstonedPayloadsResponse:
        await self._unary(context, _noop)
        return pb.GetTombstonedPayloadsResponse()

    async def AckPurgedPayloads(self, request: pb.AckPurgedPayloadsRequest,
                                context: Any) -> pb.AckPurgedPayloadsResponse:
        await self._unary(context, _noop)
        return pb.AckPurgedPayloadsResponse()

    # -- entities

    async def SignalEntity(self, request: pb.SignalEntityRequest, context: Any) -> pb.SignalEntityResponse:
        await self._unary(context, lambda hub: self.engine.signal_entity(hub, request))
        return pb.SignalEntityResponse()

    async def GetEntity(self, request: pb.GetEntityRequest, context: Any) -> pb.GetEntityResponse:
        return await self._unary(context, lambda hub: self.engine.get_entity(hub, request))  # type: ignore[no-any-return]

    async def QueryEntities(self, request: pb.QueryEntitiesRequest, context: Any) -> pb.QueryEntitiesResponse:
        return await self._unary(  # type: ignore[no-any-return]
            context, lambda hub: self.engine.query_entities(hub, request.query))

    async def CleanEntityStorage(self, request: pb.CleanEntityStorageRequest,
                                 context: Any) -> pb.CleanEntityStorageResponse:
        return await self._unary(  # type: ignore[no-any-return]
            context, lambda hub: self.engine.clean_entity_storage(hub, request))

    async def CompleteEntityTask(self, request: pb.EntityBatchResult, context: Any) -> pb.CompleteTaskResponse:
        await self._unary(context, lambda hub: self.engine.complete_entity(hub, request))
        return pb.CompleteTaskResponse()

    async def AbandonTaskEntityWorkItem(self, request: pb.AbandonEntityTaskRequest,
                                        context: Any) -> pb.AbandonEntityTaskResponse:
        await self._unary(context, lambda hub: _sync(self.engine.abandon_entity, hub, request.completionToken))
        return pb.AbandonEntityTaskResponse()

    async def SkipGracefulOrchestrationTerminations(
            self, request: pb.SkipGracefulOrchestrationTerminationsRequest,
            context: Any) -> pb.SkipGracefulOrchestrationTerminationsResponse:
        async def call(hub: HubState) -> pb.SkipGracefulOrchestrationTerminationsResponse:
            left = await self.engine.skip_graceful_terminations(hub, request)
            return pb.SkipGracefulOrchestrationTerminationsResponse(unterminatedInstanceIds=left)
        return await self._unary(context, call)  # type: ignore[no-any-return]

    def routes(self) -> list[Route]:
        """Every method of the service, for the emulator's own HTTP/2 server."""
        routes = []
        immediate: dict[str, Callable[[Any, Any], tuple[Outcome | None, Any]]] = {
            "StartInstance": self._start_instance_now,
            "CompleteOrchestratorTask": self._complete_orchestration_now,
            "CompleteActivityTask": self._complete_activity_now,
            "WaitForInstanceStart": lambda request, context: self._wait_now(request, context, started=True),
            "WaitForInstanceCompletion": lambda request, context: self._wait_now(request, context, started=False),
        }
        for method in pb.DESCRIPTOR.services_by_name[SERVICE_NAME].methods:
            request_type = _message_class(method.input_type.full_name)
            routes.append(Route(path=f"/{SERVICE_NAME}/{method.name}", behaviour=getattr(self, method.name),
                                deserialize=request_type.FromString, serialize=_serialize,
                                streaming=method.server_streaming, request_name=method.input_type.full_name,
                                immediate=immediate.get(method.name)))
        return routes

    def handler(self) -> grpc.GenericRpcHandler:
        """Every method of the service, as a generic handler for a ``grpc.aio`` server."""
        handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {}
        for route in self.routes():
            make = grpc.unary_stream_rpc_method_handler if route.streaming else grpc.unary_unary_rpc_method_handler
            handlers[route.path.rsplit("/", 1)[1]] = make(
                route.behaviour, request_deserializer=route.deserialize, response_serializer=route.serialize)
        return grpc.method_handlers_generic_handler(SERVICE_NAME, handlers)


def _wait_time(context: Any) -> float | None:
    """How long a wait may last: until just before the caller's deadline, so that it gets a clear answer."""
    remaining = context.time_remaining()
    return None if remaining is None else max(0.0, remaining - 0.05)


def _timed_out(request: pb.GetInstanceRequest, started: bool) -> tuple[grpc.StatusCode, str]:
    what = "start" if started else "complete"
    return grpc.StatusCode.DEADLINE_EXCEEDED, f"instance '{request.instanceId}' did not {what} before the deadline"


def _wait_answer(request: pb.GetInstanceRequest, record: InstanceRecord | None) -> pb.GetInstanceResponse:
    if record is None:
        return pb.GetInstanceResponse(exists=False)
    state = queries.orchestration_state(record, include_payloads=request.getInputsAndOutputs)
    return pb.GetInstanceResponse(exists=True, orchestrationState=state)


def _status_of(error: BaseException) -> tuple[grpc.StatusCode, str]:
    """The status a request ends with when the engine raised ``error`` (as `Service._unary` does)."""
    if isinstance(error, EmulatorError):
        return getattr(grpc.StatusCode, error.code), error.message
    logger.error("request failed", exc_info=error)
    return grpc.StatusCode.INTERNAL, f"the emulator failed to handle the request: {error!r}"


async def _abort(context: Any, code: grpc.StatusCode, message: str) -> None:
    if context.done():
        raise asyncio.CancelledError(message)
    await context.abort(code, message)


def _message_class(full_name: str) -> Any:
    if full_name == "google.protobuf.Empty":
        return empty_pb2.Empty
    return getattr(pb, full_name)


async def _noop(hub: HubState) -> None:
    return None


async def _same(hub: HubState) -> HubState:
    return hub


async def _sync(function: Callable[..., None], *args: Any) -> None:
    function(*args)
