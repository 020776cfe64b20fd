"""The worker's connection: one asyncio loop that owns the GetWorkItems stream.

The loop runs in a background thread. It opens the stream (after a ``Hello`` probe), dispatches
work items to tasks bounded by the concurrency options, sends completions (retrying transient
failures, then giving the item back), reconnects with full-jitter back-off when the stream breaks
or goes silent, and on stop drains in-flight work for a while before giving the rest back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import socket
import threading
import uuid
from collections.abc import Awaitable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, cast

import grpc
import grpc.aio
from google.protobuf import empty_pb2

from durabletask.grpc_options import GrpcChannelOptions, GrpcWorkerResiliencyOptions
from durabletask.internal import orchestrator_service_pb2 as pb
from durabletask.internal.entities.executor import execute_batch
from durabletask.internal.grpc.channels import async_channel, sidecar_stub
from durabletask.internal.registry import Registry
from durabletask.internal.replay.engine import OrchestrationExecutor
from durabletask.internal.runtime.options import ConcurrencyOptions, VersioningOptions, WorkItemFilters
from durabletask.internal.runtime.work_items import Abandon, run_activity, run_orchestration
from durabletask.serialization import DataConverter

logger = logging.getLogger("durabletask.worker")

_TRANSIENT = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED,
                        grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.ABORTED})
_COMPLETION_ATTEMPTS = 5


@dataclass
class StreamSettings:
    """Everything the runtime needs to connect and to run work."""

    host_address: str | None
    metadata: Sequence[tuple[str, str]]
    secure_channel: bool
    interceptors: Sequence[Any]
    channel_options: GrpcChannelOptions | None
    resiliency: GrpcWorkerResiliencyOptions
    concurrency: ConcurrencyOptions
    registry: Registry
    converter: DataConverter
    executor: OrchestrationExecutor
    versioning: VersioningOptions | None = None
    filters: WorkItemFilters | None = None
    capabilities: list[int] = field(default_factory=list)


class WorkerRuntime:
    """Runs the work-item loop in a background thread until `stop`."""

    def __init__(self, settings: StreamSettings) -> None:
        self._settings = settings
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._ready = threading.Event()
        self._in_flight: dict[asyncio.Task[Any], tuple[str, str]] = {}
        self._stub: Any = None
        self._channel: grpc.aio.Channel | None = None
        self._pool = ThreadPoolExecutor(settings.concurrency.maximum_thread_pool_workers,
                                        thread_name_prefix="durabletask-activity")
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex}"
        self._md: tuple[tuple[str, str], ...] = (*settings.metadata, ("workerid", self.worker_id))
        self._last_message = 0.0
        self._cancel_reason: str | None = None
        self.connected = threading.Event()
        self._entity_slots: asyncio.Semaphore | None = None
        self._drain_timeout = 30.0

    # ----------------------------------------------------------------- lifecycle (caller's thread)

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("the worker is already running; call stop() before starting it again")
        self._thread = threading.Thread(target=self._thread_main, name="durabletask-worker", daemon=True)
        self._thread.start()
        self._ready.wait()

    def stop(self, timeout: float) -> None:
        thread, loop = self._thread, self._loop
        if thread is None or loop is None:
            return
        self._drain_timeout = timeout
        stopping = self._stopping
        if stopping is not None:
            loop.call_soon_threadsafe(stopping.set)
        thread.join(timeout + 10)
        self._thread = None
        self._pool.shutdown(wait=False, cancel_futures=True)

    @property
    def is_running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _thread_main(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._main())
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    # ----------------------------------------------------------------- the loop

    async def _main(self) -> None:
        self._stopping = asyncio.Event()
        self._ready.set()
        settings = self._settings
        resiliency = settings.resiliency
        failures = 0
        try:
            await self._new_channel()
            while not self._stopping.is_set():
                outcome = await self._run_stream()
                if self._stopping.is_set():
                    break
                if outcome == "received":
                    failures = 0
                    delay = random.uniform(0, 0.2)  # a stream that worked: reconnect quickly
                else:
                    failures += 1
                    threshold = resiliency.channel_recreate_failure_threshold
                    if threshold and failures % threshold == 0:
                        await self._new_channel()
                    ceiling = resiliency.reconnect_backoff_base_seconds * 2 ** min(failures - 1, 10)
                    delay = random.uniform(0, min(resiliency.reconnect_backoff_cap_seconds, ceiling))
                logger.info("work-item stream ended (%s); reconnecting in %.2f s", outcome, delay)
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), timeout=delay)
        finally:
            await self._drain()
            if self._channel is not None:
                await self._channel.close()
                self._channel = None

    async def _new_channel(self) -> None:
        if self._channel is not None:
            old = self._channel
            asyncio.get_running_loop().call_later(30, lambda: asyncio.ensure_future(old.close()))
        s = self._settings
        # Metadata goes on each call: an asyncio interceptor only for that costs ~10% of the worker's CPU.
        self._channel = async_channel(s.host_address, s.secure_channel, list(s.interceptors), s.channel_options)
        self._stub = sidecar_stub(self._channel)

    def _request(self) -> pb.GetWorkItemsRequest:
        s = self._settings
        return pb.GetWorkItemsRequest(
            maxConcurrentOrchestrationWorkItems=s.concurrency.maximum_concurrent_orchestration_work_items,
            maxConcurrentActivityWorkItems=s.concurrency.maximum_concurrent_activity_work_items,
            maxConcurrentEntityWorkItems=s.concurrency.maximum_concurrent_entity_work_items,
            capabilities=cast(Any, s.capabilities),
            workItemFilters=s.filters.to_proto() if s.filters is not None else None,
            worker_instance_id=self.worker_id,
        )

    async def _run_stream(self) -> str:
        """Open one stream and process it until it ends; say how it ended."""
        resiliency = self._settings.resiliency
        try:
            await self._stub.Hello(empty_pb2.Empty(), timeout=resiliency.hello_timeout_seconds, metadata=self._md)
        except grpc.aio.AioRpcError as error:
            logger.warning("cannot reach the backend at %s: %s", self._settings.host_address, error.details())
            return "unreachable"
        call = self._stub.GetWorkItems(self._request(), metadata=self._md)
        loop = asyncio.get_running_loop()
        self._last_message = loop.time()
        self._cancel_reason = None
        watchdog = asyncio.ensure_future(self._watch(call))
        received = False
        self.connected.set()
        try:
            while True:
                item = await call.read()
                if item is grpc.aio.EOF:
                    return "received" if received else "closed by the backend"
                self._last_message = loop.time()
                received = True
                self._dispatch(item)
        except asyncio.CancelledError:
            if self._cancel_reason is None:
                raise  # the loop itself is being cancelled
            return self._cancel_reason
        except grpc.aio.AioRpcError as error:
            if self._cancel_reason is not None:
                return self._cancel_reason
            logger.info("work-item stream broke: %s %s", error.code().name, error.details())
            return "received" if received else error.code().name
        finally:
            self.connected.clear()
            watchdog.cancel()
            call.cancel()

    async def _watch(self, call: Any) -> None:
        """Cancel the stream on stop, or when it has been silent for too long (health pings count)."""
        stopping = self._stopping
        assert stopping is not None
        silence = self._settings.resiliency.silent_disconnect_timeout_seconds or None
        loop = asyncio.get_running_loop()
        while True:
            wait = None if silence is None else max(0.05, self._last_message + silence - loop.time())
            try:
                await asyncio.wait_for(stopping.wait(), timeout=wait)
                self._cancel_reason = "stopping"
                break
            except asyncio.TimeoutError:
                if silence is not None and loop.time() - self._last_message >= silence:
                    logger.warning("no message from the backend for %s s; reopening the stream", silence)
                    self._cancel_reason = "silent"
                    break
        call.cancel()

    # ----------------------------------------------------------------- work items

    def _dispatch(self, item: pb.WorkItem) -> None:
        kind = item.WhichOneof("request")
        token = item.completionToken
        if kind == "orchestratorRequest":
            self._spawn(self._orchestration(item.orchestratorRequest, token), "orchestration", token)
        elif kind == "activityRequest":
            self._spawn(self._activity(item.activityRequest, token), "activity", token)
        elif kind == "entityRequestV2":
            self._spawn(self._entity(item.entityRequestV2, token), "entity", token)
        elif kind == "entityRequest":
            self._spawn(self._entity(item.entityRequest, token), "entity", token)
        # healthPing and unknown kinds only keep the stream alive.

    def _spawn(self, work: Awaitable[None], kind: str, token: str) -> None:
        task = asyncio.ensure_future(work)
        self._in_flight[task] = (kind, token)
        task.add_done_callback(self._in_flight_done)

    def _in_flight_done(self, task: asyncio.Task[Any]) -> None:
        self._in_flight.pop(task, None)
        if not task.cancelled() and task.exception() is not None:
            logger.error("unexpected error while processing a work item", exc_info=task.exception())

    async def _orchestration(self, request: pb.OrchestratorRequest, token: str) -> None:
        s = self._settings
        past: Sequence[pb.HistoryEvent] = request.pastEvents
        try:
            if request.requiresHistoryStreaming:
                past = await self._stream_history(request)
            response = run_orchestration(s.executor, s.versioning, request, past, token)
        except Abandon as reason:
            logger.info("giving back the work item of %s: %s", request.instanceId, reason)
            await self._abandon("orchestration", token)
            return
        await self._complete("CompleteOrchestratorTask", response, "orchestration", token)

    async def _stream_history(self, request: pb.OrchestratorRequest) -> list[pb.HistoryEvent]:
        chunks = self._stub.StreamInstanceHistory(pb.StreamInstanceHistoryRequest(
            instanceId=request.instanceId, executionId=request.executionId if request.HasField("executionId") else None,
            forWorkItemProcessing=True), metadata=self._md)
        return [event async for chunk in chunks for event in chunk.events]

    async def _activity(self, request: pb.ActivityRequest, token: str) -> None:
        s = self._settings
        response = await run_activity(s.registry, s.converter, request, token, self._pool)
        await self._complete("CompleteActivityTask", response, "activity", token)

    async def _entity(self, request: pb.EntityBatchRequest | pb.EntityRequest, token: str) -> None:
        """Run an entity batch on the thread pool (entity code is plain, possibly blocking, code)."""
        s = self._settings
        if self._entity_slots is None:
            self._entity_slots = asyncio.Semaphore(s.concurrency.maximum_concurrent_entity_work_items)
        async with self._entity_slots:
            try:
                result = await asyncio.get_running_loop().run_in_executor(
                    self._pool, execute_batch, s.registry, s.converter, request, token)
            except Exception:
                logger.exception("entity batch for %s failed unexpectedly; giving it back", request.instanceId)
                await self._abandon("entity", token)
                return
        await self._complete("CompleteEntityTask", result, "entity", token)

    async def _complete(self, method: str, response: Any, kind: str, token: str) -> None:
        """Send a completion, retrying transient failures; give the item back if it never lands."""
        for attempt in range(_COMPLETION_ATTEMPTS):
            try:
                await getattr(self._stub, method)(response, timeout=30, metadata=self._md)
                return
            except grpc.aio.AioRpcError as error:
                if error.code() not in _TRANSIENT:
                    logger.warning("%s rejected (%s: %s); the backend will redeliver the work item",
                                   method, error.code().name, error.details())
                    return
                await asyncio.sleep(min(2.0, 0.1 * 2 ** attempt))
        logger.warning("%s failed %d times; giving the work item back", method, _COMPLETION_ATTEMPTS)
        await self._abandon(kind, token)

    async def _abandon(self, kind: str, token: str) -> None:
        method, request = {
            "orchestration": ("AbandonTaskOrchestratorWorkItem", pb.AbandonOrchestrationTaskRequest),
            "activity": ("AbandonTaskActivityWorkItem", pb.AbandonActivityTaskRequest),
            "entity": ("AbandonTaskEntityWorkItem", pb.AbandonEntityTaskRequest),
        }[kind]
        try:
            await getattr(self._stub, method)(request(completionToken=token), timeout=10, metadata=self._md)
        except grpc.aio.AioRpcError as error:
            logger.info("could not give back a %s work item (%s); its lease will expire", kind, error.code().name)

    async def _drain(self) -> None:
        """Let in-flight work finish for the drain timeout, then give the rest back."""
        if not self._in_flight:
            return
        pending = set(self._in_flight)
        _, still_running = await asyncio.wait(pending, timeout=self._drain_timeout)
        leftovers = [self._in_flight.get(t) for t in still_running]
        for task in still_running:
            task.cancel()
        await asyncio.gather(*still_running, return_exceptions=True)
        await asyncio.gather(*(self._abandon(kind, token) for kind, token in filter(None, leftovers)),
                             return_exceptions=True)

