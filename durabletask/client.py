"""Clients for starting and managing orchestrations: `TaskHubGrpcClient` and `AsyncTaskHubGrpcClient`.

Both have the official SDK's methods and argument names. They share all request building and
response parsing (`durabletask.internal.client.ops`); only the transport call differs.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, TypeVar

import grpc
import grpc.aio

from durabletask import history
from durabletask.entities import EntityInstanceId, EntityMetadata
from durabletask.grpc_options import GrpcChannelOptions, GrpcClientResiliencyOptions
from durabletask.internal import orchestrator_service_pb2 as pb
from durabletask.internal.client import ops
from durabletask.internal.client.models import (
    CleanEntityStorageResult,
    EntityQuery,
    OrchestrationFailedError,
    OrchestrationQuery,
    OrchestrationState,
    OrchestrationStatus,
    Page,
    PurgeInstancesResult,
    new_orchestration_state,
    parse_orchestration_state,
)
from durabletask.internal.grpc.channels import async_channel, sidecar_stub, sync_channel
from durabletask.serialization import DEFAULT_DATA_CONVERTER, DataConverter

__all__ = [
    "AsyncTaskHubGrpcClient",
    "CleanEntityStorageResult",
    "DurableTaskClient",
    "EntityQuery",
    "OrchestrationFailedError",
    "OrchestrationQuery",
    "OrchestrationState",
    "OrchestrationStatus",
    "Page",
    "PurgeInstancesResult",
    "TaskHubGrpcClient",
    "new_orchestration_state",
    "parse_orchestration_state",
]

logger = logging.getLogger("durabletask.client")
T = TypeVar("T")


def _history(events: list[pb.HistoryEvent]) -> list[history.HistoryEvent]:
    return [history.from_protobuf(e) for e in events]


class _ClientBase:
    """Settings common to both clients."""

    def __init__(self, *, host_address: str | None, metadata: Sequence[tuple[str, str]] | None,
                 secure_channel: bool, interceptors: Sequence[Any] | None,
                 channel_options: GrpcChannelOptions | None, default_version: str | None,
                 data_converter: DataConverter | None) -> None:
        self._host_address = host_address
        self._metadata = list(metadata or ())
        self._secure_channel = secure_channel
        self._interceptors = list(interceptors or ())
        self._channel_options = channel_options
        self.default_version = default_version
        self._converter = data_converter or DEFAULT_DATA_CONVERTER


class TaskHubGrpcClient(_ClientBase):
    """A blocking client for a Durable Task backend (DTS, its emulator, or ours).

    Args:
        host_address: ``host:port``, or a URL whose scheme picks TLS (``https://``) or not
            (``http://``). Default ``localhost:4001``.
        metadata: Extra ``(key, value)`` metadata sent with every call.
        log_handler: Accepted for compatibility; logging goes through the ``durabletask.client``
            logger, configure it with the standard logging module.
        log_formatter: Accepted for compatibility, as ``log_handler``.
        logger: Accepted for compatibility, as ``log_handler``.
        channel: Use this channel instead of creating one (it is not closed by `close`).
        secure_channel: Use TLS for an address without a scheme.
        interceptors: gRPC client interceptors, applied after the metadata one.
        channel_options: Channel arguments (message sizes, keepalive, retries).
        resiliency_options: Accepted for compatibility.
        default_version: The version given to orchestrations started without one.
        payload_store: Accepted for compatibility; large-payload storage is not supported yet.
        data_converter: How payloads are encoded and decoded.
        emit_trace_spans: Accepted for compatibility.
    """

    def __init__(self, *, host_address: str | None = None, metadata: Sequence[tuple[str, str]] | None = None,
                 log_handler: logging.Handler | None = None, log_formatter: logging.Formatter | None = None,
                 logger: logging.Logger | None = None, channel: grpc.Channel | None = None,
                 secure_channel: bool = False, interceptors: Sequence[Any] | None = None,
                 channel_options: GrpcChannelOptions | None = None,
                 resiliency_options: GrpcClientResiliencyOptions | None = None,
                 default_version: str | None = None, payload_store: Any = None,
                 data_converter: DataConverter | None = None, emit_trace_spans: bool = True) -> None:
        super().__init__(host_address=host_address, metadata=metadata, secure_channel=secure_channel,
                         interceptors=interceptors, channel_options=channel_options,
                         default_version=default_version, data_converter=data_converter)
        self._owns_channel = channel is None
        if channel is None:
            channel = sync_channel(host_address, secure_channel, self._interceptors, channel_options,
                                   metadata=self._metadata)
        self._channel = channel
        self._stub = sidecar_stub(channel)

    def _run(self, op: ops.Op[T]) -> T:
        return ops.run_sync(self._stub, op)

    def close(self) -> None:
        """Close the channel, if this client created it."""
        if self._owns_channel:
            self._channel.close()

    def __enter__(self) -> TaskHubGrpcClient:
        return self

    def __exit__(self, *args: object) -> None:
        self.close()

    def schedule_new_orchestration(self, orchestrator: Any, *, input: Any = None, instance_id: str | None = None,
                                   start_at: datetime | None = None,
                                   reuse_id_policy: pb.OrchestrationIdReusePolicy | None = None,
                                   tags: dict[str, str] | None = None, version: str | None = None) -> str:
        """Start an orchestration and return its instance ID.

        Args:
            orchestrator: The orchestrator function or its registered name.
            input: The input (encoded by the data converter).
            instance_id: The instance ID; a random one by default.
            start_at: Do not run before this time (UTC).
            reuse_id_policy: Which existing instances with the same ID may be replaced.
            tags: Key/value tags stored with the instance.
            version: The orchestration's version (default: the client's ``default_version``).
        """
        return self._run(ops.schedule_new_orchestration(
            self._converter, self.default_version, orchestrator, input=input, instance_id=instance_id,
            start_at=start_at, reuse_id_policy=reuse_id_policy, tags=tags, version=version))

    def get_orchestration_state(self, instance_id: str, *, fetch_payloads: bool = True) -> OrchestrationState | None:
        """The instance's current state, or None if it does not exist."""
        return self._run(ops.get_orchestration_state(self._converter, instance_id, fetch_payloads))

    def get_orchestration_history(self, instance_id: str, *, execution_id: str | None = None,
                                  for_work_item_processing: bool = False) -> list[history.HistoryEvent]:
        """The instance's history events, oldest first."""
        events = self._run(ops.get_orchestration_history(instance_id, execution_id, for_work_item_processing))
        return _history(events)

    def list_instance_ids(self, runtime_status: list[OrchestrationStatus] | None = None,
                          completed_time_from: datetime | None = None, completed_time_to: datetime | None = None,
                          page_size: int | None = None, continuation_token: str | None = None) -> Page[str]:
        """One page of IDs of completed (terminal) instances, ordered by completion time."""
        return self._run(ops.list_instance_ids(runtime_status, completed_time_from, completed_time_to,
                                               page_size, continuation_token))

    def get_all_orchestration_states(self, orchestration_query: OrchestrationQuery | None = None
                                     ) -> list[OrchestrationState]:
        """Every instance matching the query (all pages)."""
        return self._run(ops.query_all(self._converter, orchestration_query or OrchestrationQuery()))

    def query_orchestrations(self, orchestration_query: OrchestrationQuery | None = None, *,
                             continuation_token: str | None = None) -> Page[OrchestrationState]:
        """One page of instances matching the query; pass the page's token back for the next."""
        return self._run(ops.query_page(self._converter, orchestration_query or OrchestrationQuery(),
                                        continuation_token))

    def wait_for_orchestration_start(self, instance_id: str, *, fetch_payloads: bool = False,
                                     timeout: float = 60) -> OrchestrationState | None:
        """Wait until the instance has started (is no longer pending).

        Raises:
            TimeoutError: It did not start within ``timeout`` seconds.
        """
        return self._run(ops.wait_for_orchestration(self._converter, instance_id, fetch_payloads, timeout,
                                                    until="start"))

    def wait_for_orchestration_completion(self, instance_id: str, *, fetch_payloads: bool = True,
                                          timeout: float = 60) -> OrchestrationState | None:
        """Wait until the instance completes, fails or is terminated.

        Raises:
            TimeoutError: It did not finish within ``timeout`` seconds.
        """
        return self._run(ops.wait_for_orchestration(self._converter, instance_id, fetch_payloads, timeout,
                                                    until="completion"))

    def raise_orchestration_event(self, instance_id: str, event_name: str, *, data: Any = None) -> None:
        """Send an external event to the instance."""
        self._run(ops.raise_orchestration_event(self._converter, instance_id, event_name, data))

    def terminate_orchestration(self, instance_id: str, *, output: Any = None, recursive: bool = True) -> None:
        """Terminate the instance (and, if ``recursive``, its sub-orchestrations)."""
        self._run(ops.terminate_orchestration(self._converter, instance_id, output, recursive))

    def suspend_orchestration(self, instance_id: str, *, reason: str | None = None) -> None:
        """Suspend the instance: it processes nothing until resumed."""
        self._run(ops.suspend_orchestration(instance_id, reason))

    def resume_orchestration(self, instance_id: str, *, reason: str | None = None) -> None:
        """Resume a suspended instance."""
        self._run(ops.resume_orchestration(instance_id, reason))

    def rewind_orchestration(self, instance_id: str, *, reason: str | None = None) -> None:
        """Rewind a failed instance so that its failed work runs again."""
        self._run(ops.rewind_orchestration(instance_id, reason))

    def restart_orchestration(self, instance_id: str, *, restart_with_new_instance_id: bool = False) -> str:
        """Start a finished instance again with its original input; return the instance ID used."""
        return self._run(ops.restart_orchestration(instance_id, restart_with_new_instance_id))

    def purge_orchestration(self, instance_id: str, recursive: bool = True) -> PurgeInstancesResult:
        """Delete a finished instance's state (and its sub-orchestrations', if ``recursive``)."""
        return self._run(ops.purge_orchestration(instance_id, recursive))

    def purge_orchestrations_by(self, created_time_from: datetime | None = None,
                                created_time_to: datetime | None = None,
                                runtime_status: list[OrchestrationStatus] | None = None,
                                recursive: bool = False, timeout: timedelta | None = None) -> PurgeInstancesResult:
        """Delete the state of finished instances matching the filter."""
        return self._run(ops.purge_orchestrations_by(created_time_from, created_time_to, runtime_status,
                                                     recursive, timeout))

    # ----------------------------------------------------------------- entities

    def signal_entity(self, entity_instance_id: EntityInstanceId, operation_name: str, input: Any | None = None,
                      signal_time: datetime | None = None) -> None:
        """Send a one-way operation to an entity (it is created if it does not exist).

        Args:
            entity_instance_id: The entity (an `EntityInstanceId`, or its ``@name@key`` string).
            operation_name: The operation to run.
            input: The operation's input.
            signal_time: Run no earlier than this (UTC; naive means UTC).
        """
        self._run(ops.signal_entity(self._converter, entity_instance_id, operation_name, input, signal_time))

    def get_entity(self, entity_instance_id: EntityInstanceId, include_state: bool = True) -> EntityMetadata | None:
        """The entity's metadata (and state, if ``include_state``), or None if it does not exist."""
        return self._run(ops.get_entity(self._converter, entity_instance_id, include_state))

    def get_all_entities(self, entity_query: EntityQuery | None = None) -> list[EntityMetadata]:
        """Every entity matching the query (all pages)."""
        return self._run(ops.query_all_entities(self._converter, entity_query or EntityQuery()))

    def query_entities(self, entity_query: EntityQuery | None = None, *,
                       continuation_token: str | None = None) -> Page[EntityMetadata]:
        """One page of entities matching the query; pass the page's token back for the next."""
        return self._run(ops.query_entities_page(self._converter, entity_query or EntityQuery(), continuation_token))

    def clean_entity_storage(self, remove_empty_entities: bool = True,
                             release_orphaned_locks: bool = True) -> CleanEntityStorageResult:
        """Remove entities that have no state, no queued operations and no lock, and release locks
        held by orchestrations that no longer run."""
        return self._run(ops.clean_entity_storage(remove_empty_entities, release_orphaned_locks))


DurableTaskClient = TaskHubGrpcClient


class AsyncTaskHubGrpcClient(_ClientBase):
    """The asyncio twin of `TaskHubGrpcClient`: the same methods, as coroutines.

    The channel is created on first use, inside the running event loop.
    """

    def __init__(self, *, host_address: str | None = None, metadata: Sequence[tuple[str, str]] | None = None,
                 log_handler: logging.Handler | None = None, log_formatter: logging.Formatter | None = None,
                 logger: logging.Logger | None = None, channel: grpc.aio.Channel | None = None,
                 secure_channel: bool = False, interceptors: Sequence[Any] | None = None,
                 channel_options: GrpcChannelOptions | None = None,
                 resiliency_options: GrpcClientResiliencyOptions | None = None,
                 default_version: str | None = None, payload_store: Any = None,
                 data_converter: DataConverter | None = None, emit_trace_spans: bool = True) -> None:
        super().__init__(host_address=host_address, metadata=metadata, secure_channel=secure_channel,
                         interceptors=interceptors, channel_options=channel_options,
                         default_version=default_version, data_converter=data_converter)
        self._owns_channel = channel is None
        self._channel = channel
        self._stub: Any = sidecar_stub(channel) if channel is not None else None

    async def _run(self, op: ops.Op[T]) -> T:
        if self._stub is None:
            self._channel = async_channel(self._host_address, self._secure_channel, self._interceptors,
                                          self._channel_options, metadata=self._metadata)
            self._stub = sidecar_stub(self._channel)
        return await ops.run_async(self._stub, op)

    async def close(self) -> None:
        """Close the channel, if this client created it."""
        if self._owns_channel and self._channel is not None:
            await self._channel.close()
            self._channel = None
            self._stub = None

    async def __aenter__(self) -> AsyncTaskHubGrpcClient:
        return self

    async def __aexit__(self, *args: object) -> None:
        await self.close()

    async def schedule_new_orchestration(self, orchestrator: Any, *, input: Any = None,
                                         instance_id: str | None = None, start_at: datetime | None = None,
                                         reuse_id_policy: pb.OrchestrationIdReusePolicy | None = None,
                                         tags: dict[str, str] | None = None, version: str | None = None) -> str:
        """See `TaskHubGrpcClient.schedule_new_orchestration`."""
        return await self._run(ops.schedule_new_orchestration(
            self._converter, self.default_version, orchestrator, input=input, instance_id=instance_id,
            start_at=start_at, reuse_id_policy=reuse_id_policy, tags=tags, version=version))

    async def get_orchestration_state(self, instance_id: str, *,
                                      fetch_payloads: bool = True) -> OrchestrationState | None:
        """See `TaskHubGrpcClient.get_orchestration_state`."""
        return await self._run(ops.get_orchestration_state(self._converter, instance_id, fetch_payloads))

    async def get_orchestration_history(self, instance_id: str, *, execution_id: str | None = None,
                                        for_work_item_processing: bool = False) -> list[history.HistoryEvent]:
        """See `TaskHubGrpcClient.get_orchestration_history`."""
        events = await self._run(ops.get_orchestration_history(instance_id, execution_id, for_work_item_processing))
        return _history(events)

    async def list_instance_ids(self, runtime_status: list[OrchestrationStatus] | None = None,
                                completed_time_from: datetime | None = None,
                                completed_time_to: datetime | None = None, page_size: int | None = None,
                                continuation_token: str | None = None) -> Page[str]:
        """See `TaskHubGrpcClient.list_instance_ids`."""
        return await self._run(ops.list_instance_ids(runtime_status, completed_time_from, completed_time_to,
                                                     page_size, continuation_token))

    async def get_all_orchestration_states(self, orchestration_query: OrchestrationQuery | None = None
                                           ) -> list[OrchestrationState]:
        """See `TaskHubGrpcClient.get_all_orchestration_states`."""
        return await self._run(ops.query_all(self._converter, orchestration_query or OrchestrationQuery()))

    async def query_orchestrations(self, orchestration_query: OrchestrationQuery | None = None, *,
                                   continuation_token: str | None = None) -> Page[OrchestrationState]:
        """See `TaskHubGrpcClient.query_orchestrations`."""
        return await self._run(ops.query_page(self._converter, orchestration_query or OrchestrationQuery(),
                                              continuation_token))

    async def wait_for_orchestration_start(self, instance_id: str, *, fetch_payloads: bool = False,
                                           timeout: float = 60) -> OrchestrationState | None:
        """See `TaskHubGrpcClient.wait_for_orchestration_start`."""
        return await self._run(ops.wait_for_orchestration(self._converter, instance_id, fetch_payloads, timeout,
                                                          until="start"))

    async def wait_for_orchestration_completion(self, instance_id: str, *, fetch_payloads: bool = True,
                                                timeout: float = 60) -> OrchestrationState | None:
        """See `TaskHubGrpcClient.wait_for_orchestration_completion`."""
        return await self._run(ops.wait_for_orchestration(self._converter, instance_id, fetch_payloads, timeout,
                                                          until="completion"))

    async def raise_orchestration_event(self, instance_id: str, event_name: str, *, data: Any = None) -> None:
        """See `TaskHubGrpcClient.raise_orchestration_event`."""
        await self._run(ops.raise_orchestration_event(self._converter, instance_id, event_name, data))

    async def terminate_orchestration(self, instance_id: str, *, output: Any = None,
                                      recursive: bool = True) -> None:
        """See `TaskHubGrpcClient.terminate_orchestration`."""
        await self._run(ops.terminate_orchestration(self._converter, instance_id, output, recursive))

    async def suspend_orchestration(self, instance_id: str, *, reason: str | None = None) -> None:
        """See `TaskHubGrpcClient.suspend_orchestration`."""
        await self._run(ops.suspend_orchestration(instance_id, reason))

    async def resume_orchestration(self, instance_id: str, *, reason: str | None = None) -> None:
        """See `TaskHubGrpcClient.resume_orchestration`."""
        await self._run(ops.resume_orchestration(instance_id, reason))

    async def rewind_orchestration(self, instance_id: str, *, reason: str | None = None) -> None:
        """See `TaskHubGrpcClient.rewind_orchestration`."""
        await self._run(ops.rewind_orchestration(instance_id, reason))

    async def restart_orchestration(self, instance_id: str, *, restart_with_new_instance_id: bool = False) -> str:
        """See `TaskHubGrpcClient.restart_orchestration`."""
        return await self._run(ops.restart_orchestration(instance_id, restart_with_new_instance_id))

    async def purge_orchestration(self, instance_id: str, recursive: bool = True) -> PurgeInstancesResult:
        """See `TaskHubGrpcClient.purge_orchestration`."""
        return await self._run(ops.purge_orchestration(instance_id, recursive))

    async def purge_orchestrations_by(self, created_time_from: datetime | None = None,
                                      created_time_to: datetime | None = None,
                                      runtime_status: list[OrchestrationStatus] | None = None,
                                      recursive: bool = False,
                                      timeout: timedelta | None = None) -> PurgeInstancesResult:
        """See `TaskHubGrpcClient.purge_orchestrations_by`."""
        return await self._run(ops.purge_orchestrations_by(created_time_from, created_time_to, runtime_status,
                                                           recursive, timeout))

    # ----------------------------------------------------------------- entities

    async def signal_entity(self, entity_instance_id: EntityInstanceId, operation_name: str,
                            input: Any | None = None, signal_time: datetime | None = None) -> None:
        """See `TaskHubGrpcClient.signal_entity`."""
        await self._run(ops.signal_entity(self._converter, entity_instance_id, operation_name, input, signal_time))

    async def get_entity(self, entity_instance_id: EntityInstanceId,
                         include_state: bool = True) -> EntityMetadata | None:
        """See `TaskHubGrpcClient.get_entity`."""
        return await self._run(ops.get_entity(self._converter, entity_instance_id, include_state))

    async def get_all_entities(self, entity_query: EntityQuery | None = None) -> list[EntityMetadata]:
        """See `TaskHubGrpcClient.get_all_entities`."""
        return await self._run(ops.query_all_entities(self._converter, entity_query or EntityQuery()))

    async def query_entities(self, entity_query: EntityQuery | None = None, *,
                             continuation_token: str | None = None) -> Page[EntityMetadata]:
        """See `TaskHubGrpcClient.query_entities`."""
        return await self._run(ops.query_entities_page(self._converter, entity_query or EntityQuery(),
                                                       continuation_token))

    async def clean_entity_storage(self, remove_empty_entities: bool = True,
                                   release_orphaned_locks: bool = True) -> CleanEntityStorageResult:
        """See `TaskHubGrpcClient.clean_entity_storage`."""
        return await self._run(ops.clean_entity_storage(remove_empty_entities, release_orphaned_locks))
