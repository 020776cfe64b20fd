"""Clients for Azure Durable Task Scheduler (DTS) and its emulators.

`DurableTaskSchedulerClient` and `AsyncDurableTaskSchedulerClient` are `TaskHubGrpcClient` and
`AsyncTaskHubGrpcClient` that send the ``taskhub``, ``x-user-agent`` and (with a credential)
``authorization: Bearer <token>`` headers on every call. Build them from arguments, from a connection
string (`from_connection_string`) or from environment variables (`from_environment`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import grpc
import grpc.aio
from azure.core.credentials import TokenCredential
from azure.core.credentials_async import AsyncTokenCredential
from typing_extensions import Self

from durabletask.azuremanaged.connection import ConnectionString
from durabletask.azuremanaged.internal import setup
from durabletask.azuremanaged.internal.tokens import AccessTokenSource
from durabletask.client import AsyncTaskHubGrpcClient, TaskHubGrpcClient
from durabletask.grpc_options import GrpcChannelOptions, GrpcClientResiliencyOptions
from durabletask.serialization import DataConverter

__all__ = ["AsyncDurableTaskSchedulerClient", "DurableTaskSchedulerClient"]


class DurableTaskSchedulerClient(TaskHubGrpcClient):
    """A blocking client for Azure Durable Task Scheduler or an emulator.

    Args:
        host_address: The scheduler endpoint, e.g. ``https://myscheduler.westus2.durabletask.io``, or
            ``http://localhost:8080`` for an emulator. ``https://`` means TLS and ``http://`` plaintext;
            without a scheme ``secure_channel`` decides.
        taskhub: The task hub name (sent as the ``taskhub`` header). Must not be empty.
        token_credential: A synchronous azure-identity credential (e.g. ``DefaultAzureCredential()``), or
            None to send no token (emulators). Its token is fetched on the first call and renewed before it
            expires. With a credential, a plaintext address must be on this machine (else ``ValueError``).
        resource_id: The token audience; default ``https://durabletask.io`` (``https://durabletask.azure.us``
            when ``REGION_NAME`` starts with ``usgov``/``usdod``). The scope asked for is ``<resource>/.default``.
        channel: Use this channel as it is (it must add the headers itself, as in the official SDK).
        secure_channel: Use TLS for an address without a scheme (default True).
        interceptors: Extra blocking gRPC client interceptors.
        metadata: Extra ``(key, value)`` metadata sent with every call.
        Other arguments: as `TaskHubGrpcClient`.

    Raises:
        ValueError: ``taskhub`` or ``host_address`` is empty, ``resource_id`` is invalid, or a token would
            travel in clear text to another machine.
        TypeError: ``token_credential`` is asynchronous (use `AsyncDurableTaskSchedulerClient`).
    """

    _owned_credential: Any = None

    def __init__(self, *, host_address: str, taskhub: str, token_credential: TokenCredential | None,
                 resource_id: str | None = None, channel: grpc.Channel | None = None, secure_channel: bool = True,
                 interceptors: Sequence[Any] | None = None, channel_options: GrpcChannelOptions | None = None,
                 resiliency_options: GrpcClientResiliencyOptions | None = None, default_version: str | None = None,
                 payload_store: Any = None, data_converter: DataConverter | None = None,
                 log_handler: logging.Handler | None = None, log_formatter: logging.Formatter | None = None,
                 logger: logging.Logger | None = None, metadata: Sequence[tuple[str, str]] | None = None,
                 emit_trace_spans: bool = True) -> None:
        wiring = setup.wire(host_address=host_address, taskhub=taskhub, token_credential=token_credential,
                            resource_id=resource_id, secure_channel=secure_channel, channel=channel,
                            metadata=metadata, interceptors=interceptors, kind="sync")
        self.taskhub = taskhub
        self._token_source = wiring.source
        super().__init__(host_address=host_address, metadata=wiring.metadata, log_handler=log_handler,
                         log_formatter=log_formatter, logger=logger, channel=channel, secure_channel=secure_channel,
                         interceptors=wiring.interceptors, channel_options=channel_options,
                         resiliency_options=resiliency_options, default_version=default_version,
                         payload_store=payload_store, data_converter=data_converter, emit_trace_spans=emit_trace_spans)

    @property
    def token_source(self) -> AccessTokenSource | None:
        """Where the bearer token comes from (None without a credential)."""
        return self._token_source

    @classmethod
    def from_connection_string(cls, connection_string: str | ConnectionString, **kwargs: Any) -> Self:
        """A client for ``Endpoint=...;Authentication=...;TaskHub=...`` (see `durabletask.azuremanaged.connection`).

        The credential that ``Authentication`` names is created here and closed by `close`. Other keyword
        arguments (``channel_options``, ``data_converter``, ...) go to the constructor.

        Raises:
            ValueError: The connection string is invalid (the message says why and what is valid).
        """
        return setup.from_connection_string(cls, connection_string, kwargs)

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None, **kwargs: Any) -> Self:
        """A client configured by environment variables.

        ``DURABLE_TASK_SCHEDULER_CONNECTION_STRING`` if set; otherwise ``ENDPOINT`` (default
        ``http://localhost:8080``) and ``TASKHUB`` (default ``default``), with ``DefaultAzureCredential``
        unless the endpoint is on this machine.
        """
        return setup.from_environment(cls, environ, kwargs)

    def close(self) -> None:
        """Close the channel (if this client created it) and the credential (if `from_connection_string` or
        `from_environment` created it)."""
        try:
            super().close()
        finally:
            credential, self._owned_credential = self._owned_credential, None
            setup.close_credential(credential)


class AsyncDurableTaskSchedulerClient(AsyncTaskHubGrpcClient):
    """An asyncio client for Azure Durable Task Scheduler or an emulator.

    Takes the same arguments as `DurableTaskSchedulerClient`, except that ``token_credential`` may be an
    asynchronous (``azure.identity.aio``) or a synchronous credential; a synchronous one runs in a thread
    so that the event loop never blocks. ``interceptors`` are ``grpc.aio`` interceptors and ``channel`` a
    ``grpc.aio.Channel``.
    """

    _owned_credential: Any = None

    def __init__(self, *, host_address: str, taskhub: str,
                 token_credential: AsyncTokenCredential | TokenCredential | None, resource_id: str | None = None,
                 channel: grpc.aio.Channel | None = None, secure_channel: bool = True,
                 interceptors: Sequence[Any] | None = None, channel_options: GrpcChannelOptions | None = None,
                 resiliency_options: GrpcClientResiliencyOptions | None = None, default_version: str | None = None,
                 payload_store: Any = None, data_converter: DataConverter | None = None,
                 log_handler: logging.Handler | None = None, log_formatter: logging.Formatter | None = None,
                 logger: logging.Logger | None = None, metadata: Sequence[tuple[str, str]] | None = None,
                 emit_trace_spans: bool = True) -> None:
        wiring = setup.wire(host_address=host_address, taskhub=taskhub, token_credential=token_credential,
                            resource_id=resource_id, secure_channel=secure_channel, channel=channel,
                            metadata=metadata, interceptors=interceptors, kind="async")
        self.taskhub = taskhub
        self._token_source = wiring.source
        super().__init__(host_address=host_address, metadata=wiring.metadata, log_handler=log_handler,
                         log_formatter=log_formatter, logger=logger, channel=channel, secure_channel=secure_channel,
                         interceptors=wiring.interceptors, channel_options=channel_options,
                         resiliency_options=resiliency_options, default_version=default_version,
                         payload_store=payload_store, data_converter=data_converter, emit_trace_spans=emit_trace_spans)

    @property
    def token_source(self) -> AccessTokenSource | None:
        """Where the bearer token comes from (None without a credential)."""
        return self._token_source

    @classmethod
    def from_connection_string(cls, connection_string: str | ConnectionString, **kwargs: Any) -> Self:
        """An asyncio client for ``Endpoint=...;Authentication=...;TaskHub=...``.

        The credential is a synchronous azure-identity one (run in a thread; no ``aiohttp`` needed),
        closed by `close`. See `DurableTaskSchedulerClient.from_connection_string`.
        """
        return setup.from_connection_string(cls, connection_string, kwargs)

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None, **kwargs: Any) -> Self:
        """An asyncio client configured by environment variables (see
        `DurableTaskSchedulerClient.from_environment`)."""
        return setup.from_environment(cls, environ, kwargs)

    async def close(self) -> None:
        """Close the channel (if this client created it) and the credential (if this SDK created it)."""
        try:
            await super().close()
        finally:
            credential, self._owned_credential = self._owned_credential, None
            await setup.aclose_credential(credential)
