"""The worker: hosts orchestrators and activities and runs the work a backend sends.

`TaskHubGrpcWorker` keeps the official SDK's constructor and methods. On top: decorators
(``@worker.orchestrator``, ``@worker.activity``, ``@worker.entity``) that register and return the function unchanged,
``async def`` activities (run on the worker's event loop), and ``stop(timeout)`` that drains.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any, TypeVar, overload

import grpc

from durabletask.grpc_options import GrpcChannelOptions, GrpcWorkerResiliencyOptions
from durabletask.internal import orchestrator_service_pb2 as pb
from durabletask.internal.entities.executor import EntityNotRegisteredError
from durabletask.internal.failures import OrchestratorNotRegisteredError
from durabletask.internal.registry import Registry
from durabletask.internal.replay.engine import DEFAULT_MAXIMUM_TIMER_INTERVAL, OrchestrationExecutor
from durabletask.internal.runtime.options import (
    ActivityWorkItemFilter,
    ConcurrencyOptions,
    EntityWorkItemFilter,
    OrchestrationWorkItemFilter,
    VersionFailureStrategy,
    VersioningOptions,
    VersionMatchStrategy,
    WorkItemFilters,
)
from durabletask.internal.runtime.stream import StreamSettings, WorkerRuntime
from durabletask.internal.runtime.work_items import ActivityNotRegisteredError
from durabletask.serialization import DEFAULT_DATA_CONVERTER, DataConverter

__all__ = [
    "ActivityNotRegisteredError",
    "ActivityWorkItemFilter",
    "ConcurrencyOptions",
    "DurableTaskWorker",
    "EntityNotRegisteredError",
    "EntityWorkItemFilter",
    "OrchestrationWorkItemFilter",
    "OrchestratorNotRegisteredError",
    "TaskHubGrpcWorker",
    "VersionFailureStrategy",
    "VersionMatchStrategy",
    "VersioningOptions",
    "WorkItemFilters",
]

F = TypeVar("F", bound=Callable[..., Any])
E = TypeVar("E", bound=Callable[..., Any] | type)
_AUTO_FILTERS: Any = object()
DEFAULT_MAXIMUM_CACHED_ORCHESTRATIONS = 1000
"""How many running orchestrations a worker keeps in memory between episodes, by default."""
DEFAULT_RESULT_BATCHING_WINDOW = timedelta(milliseconds=10)
"""How long a worker may hold an episode that sent nothing so that results share one episode, by default."""
_MAXIMUM_RESULT_BATCHING_WINDOW = timedelta(seconds=1)


class TaskHubGrpcWorker:
    """Runs registered orchestrators, activities and entities for a Durable Task backend.

    Args:
        host_address: ``host:port`` or a URL (``https://`` for TLS). Default ``localhost:4001``.
        metadata: Extra ``(key, value)`` metadata sent with every call.
        log_handler: Accepted for compatibility; configure the ``durabletask.worker`` logger instead.
        log_formatter: Accepted for compatibility, as ``log_handler``.
        logger: Accepted for compatibility, as ``log_handler``.
        channel: Not supported by this worker (it owns an asyncio channel); pass ``host_address``.
        secure_channel: Use TLS for an address without a scheme.
        interceptors: gRPC asyncio client interceptors.
        channel_options: Channel arguments.
        resiliency_options: Reconnect and watchdog settings.
        concurrency_options: How much work runs at once.
        maximum_timer_interval: Split longer durable timers into chunks (None: never).
        payload_store: Accepted for compatibility; large-payload storage is not supported yet.
        data_converter: How payloads are encoded and decoded.
        exception_properties_provider: Accepted for compatibility.
        emit_trace_spans: Accepted for compatibility.
        maximum_cached_orchestrations: Keep the state of up to this many running orchestrations in
            memory between episodes (least recently used dropped first), so that an episode resumes
            the orchestrator where it stopped instead of replaying its whole history. The history is
            still checked, and replayed from the start when it does not continue the kept state.
            0 replays every episode.
        result_batching_window: How long the completion of an episode that started nothing new may be
            held back while its orchestration still awaits two or more tasks, so that the results
            arriving meanwhile are delivered in one episode rather than one episode each (every
            episode carries the orchestration's whole history). It is sent sooner when this worker
            has completed every activity the orchestration awaits. A ``timedelta`` or seconds, at
            most 1 second; 0 turns holding off.
    """

    def __init__(self, *, host_address: str | None = None, metadata: Sequence[tuple[str, str]] | None = None,
                 log_handler: logging.Handler | None = None, log_formatter: logging.Formatter | None = None,
                 logger: logging.Logger | None = None, channel: grpc.Channel | None = None,
                 secure_channel: bool = False, interceptors: Sequence[Any] | None = None,
                 channel_options: GrpcChannelOptions | None = None,
                 resiliency_options: GrpcWorkerResiliencyOptions | None = None,
                 concurrency_options: ConcurrencyOptions | None = None,
                 maximum_timer_interval: timedelta | None = DEFAULT_MAXIMUM_TIMER_INTERVAL,
                 payload_store: Any = None, data_converter: DataConverter | None = None,
                 exception_properties_provider: Any = None, emit_trace_spans: bool = True,
                 maximum_cached_orchestrations: int = DEFAULT_MAXIMUM_CACHED_ORCHESTRATIONS,
                 result_batching_window: timedelta | float = DEFAULT_RESULT_BATCHING_WINDOW) -> None:
        if channel is not None:
            raise ValueError("TaskHubGrpcWorker creates its own asyncio channel: pass host_address "
                             "(and channel_options / interceptors) instead of channel=")
        self._registry = Registry()
        self._host_address = host_address
        self._metadata = list(metadata or ())
        self._secure_channel = secure_channel
        self._interceptors = list(interceptors or ())
        self._channel_options = channel_options
        self._resiliency = resiliency_options or GrpcWorkerResiliencyOptions()
        self._concurrency = concurrency_options or ConcurrencyOptions()
        self._maximum_timer_interval = maximum_timer_interval
        if (not isinstance(maximum_cached_orchestrations, int) or isinstance(maximum_cached_orchestrations, bool)
                or maximum_cached_orchestrations < 0):
            raise ValueError("maximum_cached_orchestrations must be a whole number, 0 (replay every episode) or "
                             f"more, got {maximum_cached_orchestrations!r}")
        self._maximum_cached_orchestrations = maximum_cached_orchestrations
        self._result_batching_window = _batching_window(result_batching_window)
        self._converter = data_converter or DEFAULT_DATA_CONVERTER
        self._versioning: VersioningOptions | None = None
        self._filters: WorkItemFilters | None = None
        self._auto_filters = False
        self._capabilities: list[int] = [pb.WORKER_CAPABILITY_HISTORY_STREAMING]
        self._runtime: WorkerRuntime | None = None

    # ----------------------------------------------------------------- registration

    def add_orchestrator(self, fn: Callable[..., Any], *, name: str | None = None) -> str:
        """Register an orchestrator (a generator function) and return its name."""
        self._check_not_running()
        return self._registry.add_orchestrator(fn, name)

    def add_named_orchestrator(self, name: str, fn: Callable[..., Any]) -> None:
        """Register an orchestrator under an explicit name."""
        self._check_not_running()
        self._registry.add_orchestrator(fn, name)

    def add_activity(self, fn: Callable[..., Any], *, name: str | None = None) -> str:
        """Register an activity (a plain or ``async def`` function) and return its name."""
        self._check_not_running()
        return self._registry.add_activity(fn, name)

    def add_named_activity(self, name: str, fn: Callable[..., Any]) -> None:
        """Register an activity under an explicit name."""
        self._check_not_running()
        self._registry.add_activity(fn, name)

    def add_entity(self, fn: Callable[..., Any] | type, name: str | None = None) -> str:
        """Register an entity and return its name (lower case).

        Args:
            fn: A function ``(ctx: EntityContext, input)`` that runs every operation, or a
                `DurableEntity` subclass with one method per operation.
            name: The entity name in entity IDs; by default the function's or class's name.
        """
        self._check_not_running()
        return self._registry.add_entity(fn, name)

    @overload
    def entity(self, fn: E) -> E: ...
    @overload
    def entity(self, *, name: str | None = None) -> Callable[[E], E]: ...
    def entity(self, fn: Any = None, *, name: str | None = None) -> Any:
        """Decorator registering an entity function or class; it is returned unchanged.

        Use as ``@worker.entity`` or ``@worker.entity(name="...")``.
        """
        def register(f: E) -> E:
            self.add_entity(f, name=name)
            return f
        return register(fn) if fn is not None else register

    @overload
    def orchestrator(self, fn: F) -> F: ...
    @overload
    def orchestrator(self, *, name: str | None = None) -> Callable[[F], F]: ...
    def orchestrator(self, fn: Any = None, *, name: str | None = None) -> Any:
        """Decorator registering an orchestrator; the function is returned unchanged.

        Use as ``@worker.orchestrator`` or ``@worker.orchestrator(name="...")``.
        """
        def register(f: F) -> F:
            self.add_orchestrator(f, name=name)
            return f
        return register(fn) if fn is not None else register

    @overload
    def activity(self, fn: F) -> F: ...
    @overload
    def activity(self, *, name: str | None = None) -> Callable[[F], F]: ...
    def activity(self, fn: Any = None, *, name: str | None = None) -> Any:
        """Decorator registering an activity; the function is returned unchanged.

        Use as ``@worker.activity`` or ``@worker.activity(name="...")``.
        """
        def register(f: F) -> F:
            self.add_activity(f, name=name)
            return f
        return register(fn) if fn is not None else register

    # ----------------------------------------------------------------- options

    def use_versioning(self, version: VersioningOptions) -> None:
        """Only run orchestrations whose version the options accept."""
        self._check_not_running()
        self._versioning = version

    def use_work_item_filters(self, filters: WorkItemFilters | None = _AUTO_FILTERS) -> None:
        """Ask the backend only for work this worker can run.

        With no argument the filters are built from what is registered when the worker starts
        (with the worker's version under the STRICT strategy); pass explicit `WorkItemFilters`,
        or None to remove filtering.
        """
        self._check_not_running()
        self._auto_filters = filters is _AUTO_FILTERS
        self._filters = None if self._auto_filters else filters

    def add_capability(self, capability: int) -> None:
        """Advertise a ``WorkerCapability`` to the backend."""
        if capability not in self._capabilities:
            self._capabilities.append(capability)

    @property
    def concurrency_options(self) -> ConcurrencyOptions:
        return self._concurrency

    @property
    def maximum_timer_interval(self) -> timedelta | None:
        return self._maximum_timer_interval

    @property
    def maximum_cached_orchestrations(self) -> int:
        return self._maximum_cached_orchestrations

    @property
    def result_batching_window(self) -> timedelta:
        return self._result_batching_window

    def _registry_filters(self) -> WorkItemFilters:
        versioning = self._versioning
        versions = []
        if versioning and versioning.match_strategy == VersionMatchStrategy.STRICT and versioning.version:
            versions = [versioning.version]
        return WorkItemFilters(
            orchestrations=[OrchestrationWorkItemFilter(n, list(versions)) for n in self._registry.orchestrators],
            activities=[ActivityWorkItemFilter(n, list(versions)) for n in self._registry.activities],
            entities=[EntityWorkItemFilter(n) for n in self._registry.entities],
        )

    # ----------------------------------------------------------------- lifecycle

    def start(self) -> None:
        """Connect and start processing work in a background thread. Returns at once."""
        if self._runtime is not None and self._runtime.is_running:
            raise RuntimeError("the worker is already running")
        executor = OrchestrationExecutor(self._registry, data_converter=self._converter,
                                         maximum_timer_interval=self._maximum_timer_interval,
                                         maximum_cached_orchestrations=self._maximum_cached_orchestrations,
                                         default_version=self._versioning.default_version if self._versioning else None)
        self._runtime = WorkerRuntime(StreamSettings(
            host_address=self._host_address, metadata=self._metadata, secure_channel=self._secure_channel,
            interceptors=self._interceptors, channel_options=self._channel_options, resiliency=self._resiliency,
            concurrency=self._concurrency, registry=self._registry, converter=self._converter, executor=executor,
            versioning=self._versioning, filters=self._registry_filters() if self._auto_filters else self._filters,
            capabilities=list(self._capabilities),
            result_batching_window=self._result_batching_window.total_seconds(),
        ))
        self._runtime.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop: let in-flight work finish for up to ``timeout`` seconds, give the rest back."""
        if self._runtime is not None:
            self._runtime.stop(timeout)

    @property
    def is_running(self) -> bool:
        return self._runtime is not None and self._runtime.is_running

    def wait_until_connected(self, timeout: float = 10.0) -> bool:
        """Block until the work-item stream is open (or ``timeout`` passes); True if it is."""
        return self._runtime is not None and self._runtime.connected.wait(timeout)

    def __enter__(self) -> TaskHubGrpcWorker:
        return self

    def __exit__(self, *args: object) -> None:
        self.stop()

    def _check_not_running(self) -> None:
        if self.is_running:
            raise RuntimeError("registrations and options cannot change while the worker runs; stop it first")


DurableTaskWorker = TaskHubGrpcWorker


def _batching_window(value: timedelta | float) -> timedelta:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        window = timedelta(seconds=value)
    elif isinstance(value, timedelta):
        window = value
    else:
        raise TypeError(f"result_batching_window must be a timedelta or a number of seconds, got {value!r}")
    if not timedelta(0) <= window <= _MAXIMUM_RESULT_BATCHING_WINDOW:
        raise ValueError("result_batching_window must be between 0 (no holding) and 1 second, got "
                         f"{window.total_seconds()} s")
    return window
