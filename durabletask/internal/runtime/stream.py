"""The worker's connection: one asyncio loop that owns the GetWorkItems stream.

The loop runs in a background thread. It opens the stream (after a ``Hello`` probe), dispatches
work items (episodes inline, plain activities on `ActivityThreads`, the rest in tasks bounded by
the concurrency options), hands their results to `Completions` (sending, retrying, giving back),
reconnects with full-jitter back-off when the stream breaks or goes silent, and on stop drains
in-flight work for a while, with the stream still open, before giving the rest back.
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
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import grpc
import grpc.aio
from google.protobuf import empty_pb2

from durabletask.grpc_options import GrpcChannelOptions, GrpcWorkerResiliencyOptions
from durabletask.internal import orchestrator_service_pb2 as pb
from durabletask.internal.entities.executor import execute_batch
from durabletask.internal.grpc.channels import async_channel, sidecar_stub
from durabletask.internal.grpc.h2_channel import H2Channel
from durabletask.internal.registry import Registry
from durabletask.internal.replay.engine import OrchestrationExecutor
from durabletask.internal.runtime.activity_threads import ActivityThreads
from durabletask.internal.runtime.completions import Completions
from durabletask.internal.runtime.held_episodes import HeldEpisodes
from durabletask.internal.runtime.in_flight import InFlight, WorkItem
from durabletask.internal.runtime.options import ConcurrencyOptions, VersioningOptions, WorkItemFilters
from durabletask.internal.runtime.past_events import WORK_ITEM_VIEW, past_events
from durabletask.internal.runtime.work_items import (
    Abandon,
    Episode,
    call_activity,
    finish_activity,
    is_async_activity,
    run_activity,
    run_orchestration,
    unregistered_activity,
)
from durabletask.serialization import DataConverter

logger = logging.getLogger("durabletask.worker")

_COMPLETION_READ_PAUSE = 0.05  # seconds: how long completion responses may wait to be read
_STOP_GRACE = 0.05  # seconds the stream stays open after the drain, for items already on their way


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
    result_batching_window: float = 0.0
    """Seconds an episode that sent nothing may be held so results share one episode (`HeldEpisodes`)."""


class WorkerRuntime:
    """Runs the work-item loop in a background thread until `stop`."""

    def __init__(self, settings: StreamSettings) -> None:
        self._settings = settings
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._ready = threading.Event()
        self._in_flight = InFlight()
        self._results: deque[tuple[WorkItem, pb.ActivityRequest, pb.ActivityResponse, bytes | None,
                                   Awaitable[Any] | None]] = deque()  # from the activity threads
        self._collect_due = False
        self._stub: Any = None
        self._work_items: Any = None
        self._channel: grpc.aio.Channel | None = None
        self._completion_channel: H2Channel | None = None  # None: completions go on ``_channel``
        self._pool = ActivityThreads(settings.concurrency.maximum_thread_pool_workers, "durabletask-activity")
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex}"
        self._md: tuple[tuple[str, str], ...] = (*settings.metadata, ("workerid", self.worker_id))
        self._completions = Completions(self._in_flight, self._md)
        self._held = HeldEpisodes(settings.result_batching_window, self._send_episode)
        self._last_message = 0.0
        self._cancel_reason: str | None = None
        self.connected = threading.Event()
        self._entity_slots: asyncio.Semaphore | None = None
        self._drain_timeout = 30.0
        self._drain_deadline: float | None = None  # loop time; set when stopping begins
        self._refused: list[tuple[str, str]] = []  # (kind, token) of items that arrived while stopping

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
            await self._drain()  # (done already, with the stream open, unless there was none)
            await self._give_back_refused()
            for channel in (self._channel, self._completion_channel):
                if channel is not None:
                    await channel.close()
            self._channel = self._completion_channel = None

    async def _new_channel(self) -> None:
        for old in (self._channel, self._completion_channel):
            if old is not None:  # closed later: calls on it may still be finishing
                asyncio.get_running_loop().call_later(30, _close_later, old)
        s = self._settings
        # Metadata goes on each call: an asyncio interceptor only for that costs ~10% of the worker's CPU.
        self._channel = async_channel(s.host_address, s.secure_channel, list(s.interceptors), s.channel_options)
        self._stub = sidecar_stub(self._channel)
        self._completion_channel = None
        if isinstance(self._channel, H2Channel):
            # Completions get a connection of their own, read in batches (`H2Channel.read_pause`): on
            # the stream's connection the response to each completion would wake the loop once more
            # per work item, when a backend sends items one at a time.
            completion_channel = async_channel(s.host_address, s.secure_channel, list(s.interceptors),
                                               s.channel_options)
            if isinstance(completion_channel, H2Channel):
                completion_channel.read_pause = _COMPLETION_READ_PAUSE
                self._completion_channel = completion_channel
        self._completions.stub = sidecar_stub(self._completion_channel or self._channel)
        # The stream's items are read through the view that leaves past events encoded (`past_events`).
        self._work_items = self._channel.unary_stream(
            "/TaskHubSidecarService/GetWorkItems", request_serializer=pb.GetWorkItemsRequest.SerializeToString,
            response_deserializer=WORK_ITEM_VIEW.FromString)

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
        call = self._work_items(self._request(), metadata=self._md)
        loop = asyncio.get_running_loop()
        self._last_message = loop.time()
        self._cancel_reason = None
        watchdog = asyncio.ensure_future(self._watch(call))
        received = False

        def on_item(item: pb.WorkItem) -> None:
            nonlocal received
            self._last_message = loop.time()
            received = True
            try:
                self._dispatch(item)
            except Exception:  # the stream goes on; the backend redelivers the item when its lease expires
                logger.exception("unexpected error while dispatching a work item")

        self.connected.set()
        try:
            deliver = getattr(call, "deliver", None)
            if deliver is not None:  # the SDK's own transport: items are dispatched as they are parsed
                await deliver(on_item)
                return "received" if received else "closed by the backend"
            while True:
                item = await call.read()
                if item is grpc.aio.EOF:
                    return "received" if received else "closed by the backend"
                on_item(item)
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
            self._held.release_all()

    async def _watch(self, call: Any) -> None:
        """Cancel the stream on stop (once the work is finished), or when it has been silent for too long
        (health pings count)."""
        stopping = self._stopping
        assert stopping is not None
        silence = self._settings.resiliency.silent_disconnect_timeout_seconds or None
        loop = asyncio.get_running_loop()
        while True:
            wait = None if silence is None else max(0.05, self._last_message + silence - loop.time())
            try:
                await asyncio.wait_for(stopping.wait(), timeout=wait)
                await self._drain()
                # Items already on their way (a result the drain sent makes its orchestration ready)
                # are read and given back, rather than lost with the stream on a backend that does
                # not take back what a closed stream held (the official in-memory one).
                await asyncio.sleep(_STOP_GRACE)
                self._cancel_reason = "stopping"
                break
            except asyncio.TimeoutError:
                if silence is not None and loop.time() - self._last_message >= silence:
                    logger.warning("no message from the backend for %s s; reopening the stream", silence)
                    self._cancel_reason = "silent"
                    break
        call.cancel()

    def _begin_stopping(self) -> float:
        """Take no new work from now on, send the held episodes and read completion responses at once;
        the loop time by which the drain ends."""
        if self._drain_deadline is None:
            self._drain_deadline = asyncio.get_running_loop().time() + self._drain_timeout
            self._held.release_all()
            if self._completion_channel is not None:
                self._completion_channel.read_pause = 0  # stopping waits for the last completions
        return self._drain_deadline

    async def _drain(self) -> None:
        """Let in-flight work finish until the deadline, then give back what is left of it.

        On stop this runs while the stream is still open, so that the backend keeps the leases of the
        work being finished: a backend may take back everything it sent on a stream as soon as the
        stream closes (our emulator does), and then refuses the results sent later, and the work runs
        again. Items that arrive meanwhile are not run (`_dispatch`); `_give_back_refused` returns them
        once the stream is closed, when the backend can no longer send them straight back to it.
        """
        drain_deadline = self._begin_stopping()
        await self._completions.drain(max(0.0, drain_deadline - asyncio.get_running_loop().time()))

    async def _give_back_refused(self) -> None:
        refused, self._refused = self._refused, []
        await asyncio.gather(*(self._completions.abandon(kind, token) for kind, token in refused),
                             return_exceptions=True)

    # ----------------------------------------------------------------- work items
    #
    # The hot path has no task per item: an orchestration episode runs inline, a plain activity runs
    # on a thread that also builds and serializes its completion, and the completion call is started
    # with a done callback. Tasks remain for what must wait on the loop (``async def`` activities,
    # entity batches, history streaming) and for completions that have to be retried.

    def _dispatch(self, item: pb.WorkItem) -> None:
        kind = item.WhichOneof("request")
        token = item.completionToken
        if self._drain_deadline is not None:
            refused = _KINDS.get(kind or "")
            if refused is not None:
                logger.debug("stopping: a new %s work item will be given back, not run", refused)
                self._refused.append((refused, token))
            return
        if kind == "orchestratorRequest":
            self._orchestration(item.orchestratorRequest, token)
        elif kind == "activityRequest":
            self._activity(item.activityRequest, token)
        elif kind == "entityRequestV2":
            self._spawn(self._entity, item.entityRequestV2, self._in_flight.add("entity", token))
        elif kind == "entityRequest":
            self._spawn(self._entity, item.entityRequest, self._in_flight.add("entity", token))
        # healthPing and unknown kinds only keep the stream alive.

    def _spawn(self, work: Callable[[Any, WorkItem], Awaitable[None]], request: Any, item: WorkItem) -> None:
        self._in_flight.track(item, asyncio.ensure_future(work(request, item)))

    def _orchestration(self, request: pb.OrchestratorRequest, token: str) -> None:
        item = self._in_flight.add("orchestration", token)
        if request.instanceId in self._held:
            self._held.release(request.instanceId)
        if request.requiresHistoryStreaming:
            self._spawn(self._streamed_orchestration, request, item)
            return
        try:
            episode = self._episode(request, past_events(request), item)
        except Exception:
            logger.exception("unexpected error while processing a work item")
            self._in_flight.done(item)
            return
        if episode is not None:
            self._complete_episode(item, episode)

    def _complete_episode(self, item: WorkItem, episode: Episode) -> None:
        response, awaiting = episode
        if self._drain_deadline is not None or not self._held.hold(item, response, awaiting):
            self._send_episode(item, response)  # (nothing is held while stopping)

    def _send_episode(self, item: WorkItem, response: pb.OrchestratorResponse) -> None:
        self._completions.send(item, "CompleteOrchestratorTask", response)

    def _episode(self, request: pb.OrchestratorRequest, past: Sequence[pb.HistoryEvent],
                 item: WorkItem) -> Episode | None:
        """Run the episode; None if the item is being given back instead."""
        s = self._settings
        try:
            return run_orchestration(s.executor, s.versioning, request, past, item.token)
        except Abandon as reason:
            logger.info("giving back the work item of %s: %s", request.instanceId, reason)
            self._spawn(self._completions.give_back, None, item)
            return None

    async def _streamed_orchestration(self, request: pb.OrchestratorRequest, item: WorkItem) -> None:
        chunks = self._stub.StreamInstanceHistory(pb.StreamInstanceHistoryRequest(
            instanceId=request.instanceId, executionId=request.executionId if request.HasField("executionId") else None,
            forWorkItemProcessing=True), metadata=self._md)
        past = [event async for chunk in chunks for event in chunk.events]
        episode = self._episode(request, past, item)
        if episode is not None:
            self._complete_episode(item, episode)

    def _activity(self, request: pb.ActivityRequest, token: str) -> None:
        s = self._settings
        item = self._in_flight.add("activity", token)
        fn = s.registry.get_activity(request.name)
        if fn is None:
            self._send_activity(item, unregistered_activity(s.registry, request, token))
        elif is_async_activity(fn):
            self._spawn(self._async_activity, request, item)
        else:
            self._pool.post(lambda: self._activity_thread(fn, request, item))

    async def _async_activity(self, request: pb.ActivityRequest, item: WorkItem) -> None:
        s = self._settings
        self._send_activity(item, await run_activity(s.registry, s.converter, request, item.token, self._pool))

    def _activity_thread(self, fn: Any, request: pb.ActivityRequest, item: WorkItem) -> None:
        """On an activity thread: run the activity, build its completion and hand it to the loop."""
        response, pending = call_activity(fn, self._settings.converter, request, item.token)
        body = response.SerializeToString() if pending is None else None
        self._results.append((item, request, response, body, pending))
        if not self._collect_due:  # one wake-up of the loop for all results that arrive before it runs
            self._collect_due = True
            loop = self._loop
            if loop is not None:
                with contextlib.suppress(RuntimeError):  # the loop is closed: the item was given back
                    loop.call_soon_threadsafe(self._collect_results)

    def _collect_results(self) -> None:
        self._collect_due = False  # first: a result appended from now on wakes the loop again
        results = self._results
        channel = self._completion_channel
        if channel is not None:
            # In one send, and now: this callback often runs before the loop's own self-pipe reader,
            # which would otherwise hold the send back to the next turn of the loop.
            with channel.batch():
                self._send_results(results)
        else:
            self._send_results(results)

    def _send_results(self, results: deque[tuple[WorkItem, pb.ActivityRequest, pb.ActivityResponse, bytes | None,
                                                 Awaitable[Any] | None]]) -> None:
        while results:
            item, request, response, body, pending = results.popleft()
            if item.given_up:
                continue
            if pending is not None:
                self._spawn(self._finish_activity, (request, response, pending), item)
            else:
                self._send_activity(item, response, body)

    async def _finish_activity(self, parts: tuple[pb.ActivityRequest, pb.ActivityResponse, Awaitable[Any]],
                               item: WorkItem) -> None:
        request, response, pending = parts
        self._send_activity(item, await finish_activity(self._settings.converter, request, response, pending))

    def _send_activity(self, item: WorkItem, response: pb.ActivityResponse, body: bytes | None = None) -> None:
        self._completions.send(item, "CompleteActivityTask", response, body)
        self._held.activity_done(response.instanceId, response.taskId)

    async def _entity(self, request: pb.EntityBatchRequest | pb.EntityRequest, item: WorkItem) -> None:
        """Run an entity batch on the thread pool (entity code is plain, possibly blocking, code)."""
        s = self._settings
        if self._entity_slots is None:
            self._entity_slots = asyncio.Semaphore(s.concurrency.maximum_concurrent_entity_work_items)
        async with self._entity_slots:
            try:
                result = await asyncio.get_running_loop().run_in_executor(
                    self._pool, execute_batch, s.registry, s.converter, request, item.token)
            except Exception:
                logger.exception("entity batch for %s failed unexpectedly; giving it back", request.instanceId)
                await self._completions.give_back(None, item)
                return
        self._completions.send(item, "CompleteEntityTask", result)


_KINDS = {"orchestratorRequest": "orchestration", "activityRequest": "activity", "entityRequest": "entity",
          "entityRequestV2": "entity"}
"""Work item kinds (the ``request`` field of a work item) by the names `Completions.abandon` takes."""

_closing: set[asyncio.Future[None]] = set()  # channels being closed (a task without a reference may vanish)


def _close_later(channel: grpc.aio.Channel) -> None:
    closing = asyncio.ensure_future(channel.close())
    _closing.add(closing)
    closing.add_done_callback(_closing.discard)
