"""The worker for Azure Durable Task Scheduler (DTS) and its emulators: `DurableTaskSchedulerWorker`."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any

import grpc
from azure.core.credentials import TokenCredential
from azure.core.credentials_async import AsyncTokenCredential
from typing_extensions import Self

from durabletask.azuremanaged.connection import ConnectionString
from durabletask.azuremanaged.internal import setup
from durabletask.azuremanaged.internal.tokens import AccessTokenSource
from durabletask.grpc_options import GrpcChannelOptions, GrpcWorkerResiliencyOptions
from durabletask.serialization import DataConverter
from durabletask.worker import (
    DEFAULT_MAXIMUM_CACHED_ORCHESTRATIONS,
    DEFAULT_RESULT_BATCHING_WINDOW,
    ConcurrencyOptions,
    TaskHubGrpcWorker,
)

__all__ = ["DurableTaskSchedulerWorker"]


class DurableTaskSchedulerWorker(TaskHubGrpcWorker):
    """A `TaskHubGrpcWorker` for Azure Durable Task Scheduler or an emulator.

    Every call carries ``taskhub``, ``x-user-agent``, ``workerid`` and, with a credential,
    ``authorization: Bearer <token>``. Durable timers are not split into chunks
    (``maximum_timer_interval=None``): the scheduler handles any fire time.

    Args:
        host_address: The scheduler endpoint, e.g. ``https://myscheduler.westus2.durabletask.io``, or
            ``http://localhost:8080`` for an emulator.
        taskhub: The task hub name. Must not be empty.
        token_credential: An azure-identity credential, synchronous (run in a thread, so the worker's event
            loop never blocks) or asynchronous (``azure.identity.aio``, used on the worker's own loop: do
            not share it with code on another loop), or None for no token. A credential error makes the
            worker back off and reconnect, as for an ``UNAUTHENTICATED`` reply.
        resource_id: The token audience (see `DurableTaskSchedulerClient`).
        channel: Not supported (the worker owns an asyncio channel), as for `TaskHubGrpcWorker`.
        secure_channel: Use TLS for an address without a scheme (default True).
        interceptors: Extra ``grpc.aio`` client interceptors.
        metadata: Extra ``(key, value)`` metadata sent with every call.
        maximum_timer_interval: Split longer timers into chunks (default None: never).
        Other arguments: as `TaskHubGrpcWorker`.

    Raises:
        ValueError: ``taskhub`` or ``host_address`` is empty, ``resource_id`` is invalid, or a token would
            travel in clear text to another machine.
    """

    _owned_credential: Any = None

    def __init__(self, *, host_address: str, taskhub: str,
                 token_credential: TokenCredential | AsyncTokenCredential | None, resource_id: str | None = None,
                 channel: grpc.Channel | None = None, secure_channel: bool = True,
                 interceptors: Sequence[Any] | None = None, channel_options: GrpcChannelOptions | None = None,
                 resiliency_options: GrpcWorkerResiliencyOptions | None = None,
                 concurrency_options: ConcurrencyOptions | None = None, payload_store: Any = None,
                 data_converter: DataConverter | None = None, log_handler: logging.Handler | None = None,
                 log_formatter: logging.Formatter | None = None, logger: logging.Logger | None = None,
                 exception_properties_provider: Any = None, metadata: Sequence[tuple[str, str]] | None = None,
                 maximum_timer_interval: timedelta | None = None, emit_trace_spans: bool = True,
                 maximum_cached_orchestrations: int = DEFAULT_MAXIMUM_CACHED_ORCHESTRATIONS,
                 result_batching_window: timedelta | float = DEFAULT_RESULT_BATCHING_WINDOW) -> None:
        wiring = setup.wire(host_address=host_address, taskhub=taskhub, token_credential=token_credential,
                            resource_id=resource_id, secure_channel=secure_channel, channel=channel,
                            metadata=metadata, interceptors=interceptors, kind="worker")
        self.taskhub = taskhub
        self._token_source = wiring.source
        super().__init__(host_address=host_address, metadata=wiring.metadata, log_handler=log_handler,
                         log_formatter=log_formatter, logger=logger, channel=channel, secure_channel=secure_channel,
                         interceptors=wiring.interceptors, channel_options=channel_options,
                         resiliency_options=resiliency_options, concurrency_options=concurrency_options,
                         maximum_timer_interval=maximum_timer_interval, payload_store=payload_store,
                         data_converter=data_converter, exception_properties_provider=exception_properties_provider,
                         emit_trace_spans=emit_trace_spans, maximum_cached_orchestrations=maximum_cached_orchestrations,
                         result_batching_window=result_batching_window)

    @property
    def token_source(self) -> AccessTokenSource | None:
        """Where the bearer token comes from (None without a credential)."""
        return self._token_source

    @classmethod
    def from_connection_string(cls, connection_string: str | ConnectionString, **kwargs: Any) -> Self:
        """A worker for ``Endpoint=...;Authentication=...;TaskHub=...`` (see `durabletask.azuremanaged.connection`).

        The credential that ``Authentication`` names is created here (a synchronous one, run in a thread)
        and kept for the worker's lifetime, so that it can be started again after `stop`. Other keyword
        arguments go to the constructor.

        Raises:
            ValueError: The connection string is invalid (the message says why and what is valid).
        """
        return setup.from_connection_string(cls, connection_string, kwargs)

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None, **kwargs: Any) -> Self:
        """A worker configured by environment variables (see `DurableTaskSchedulerClient.from_environment`)."""
        return setup.from_environment(cls, environ, kwargs)
