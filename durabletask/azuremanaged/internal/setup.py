"""Shared construction steps of the Durable Task Scheduler client, async client and worker."""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from durabletask.azuremanaged.connection import ConnectionString, Settings, settings_from_environment
from durabletask.azuremanaged.internal.calls import (
    BearerTokenInterceptor,
    async_header_interceptors,
    check_taskhub,
    check_token_transport,
    scheduler_metadata,
)
from durabletask.azuremanaged.internal.tokens import AccessTokenSource, resolve_resource_id

T = TypeVar("T")

_FROM_SETTINGS = ("host_address", "taskhub", "token_credential")


@dataclass
class Wiring:
    """What to pass to the base class: metadata, interceptors, and the token source (None: no token)."""

    metadata: list[tuple[str, str]]
    interceptors: list[Any]
    source: AccessTokenSource | None


def wire(*, host_address: str, taskhub: str, token_credential: Any, resource_id: str | None,
         secure_channel: bool, channel: Any, metadata: Sequence[tuple[str, str]] | None,
         interceptors: Sequence[Any] | None, kind: str) -> Wiring:
    """Validate the arguments and build the metadata and interceptors for ``kind``.

    ``kind`` is ``"sync"`` (blocking client: synchronous credentials only), ``"async"`` (asyncio client)
    or ``"worker"`` (asyncio, credential errors become ``UNAUTHENTICATED`` so that it reconnects).
    """
    check_taskhub(taskhub)
    if not isinstance(host_address, str) or not host_address.strip():
        raise ValueError("host_address is required: the scheduler endpoint, e.g. "
                         "'https://myscheduler.westus2.durabletask.io' (or 'http://localhost:8080' for an emulator)")
    headers = scheduler_metadata(taskhub, metadata)
    chain = list(interceptors or ())
    source: AccessTokenSource | None = None
    if token_credential is None:
        resolve_resource_id(resource_id)  # still reject a bad resource_id
    else:
        source = AccessTokenSource(token_credential, resource_id=resource_id)
        if kind == "sync" and source.is_async:
            raise TypeError("DurableTaskSchedulerClient needs a synchronous credential (azure.identity, e.g. "
                            "DefaultAzureCredential); use AsyncDurableTaskSchedulerClient with azure.identity.aio "
                            "credentials")
        if channel is None:
            check_token_transport(host_address, secure_channel)
    if kind == "sync":
        # grpc.intercept_channel applies an interceptor to every call kind it implements.
        if source is not None:
            chain.append(BearerTokenInterceptor(source))
        return Wiring(headers, chain, source)
    if kind == "async":
        # grpc.aio files an interceptor under one call kind only, so the headers go in one per kind.
        return Wiring([], [*chain, *async_header_interceptors(headers, source)], source)
    # The worker sends the fixed headers on each call itself (cheaper than an interceptor).
    if source is not None:
        chain += async_header_interceptors([], source, errors_as_status=True)
    return Wiring(headers, chain, source)


def _check_kwargs(kwargs: Mapping[str, Any], where: str) -> None:
    clash = [k for k in _FROM_SETTINGS if k in kwargs]
    if clash:
        raise TypeError(f"{', '.join(clash)} come(s) from the {where}; do not pass them as well")


def from_connection_string(cls: type[T], connection_string: str | ConnectionString, kwargs: dict[str, Any]) -> T:
    cs = connection_string if isinstance(connection_string, ConnectionString) else \
        ConnectionString.parse(connection_string)
    _check_kwargs(kwargs, "connection string")
    return _build(cls, Settings(cs.endpoint, cs.task_hub, cs.create_credential(), "connection string"), kwargs)


def from_environment(cls: type[T], environ: Mapping[str, str] | None, kwargs: dict[str, Any]) -> T:
    _check_kwargs(kwargs, "environment")
    return _build(cls, settings_from_environment(environ), kwargs)


def _build(cls: type[T], settings: Settings, kwargs: dict[str, Any]) -> T:
    credential = settings.token_credential
    try:
        instance = cls(host_address=settings.host_address, taskhub=settings.taskhub,  # type: ignore[call-arg]
                       token_credential=credential, **kwargs)
    except BaseException:
        close_credential(credential)
        raise
    instance._owned_credential = credential  # type: ignore[attr-defined]
    return instance


def close_credential(credential: Any) -> None:
    """Close a synchronous credential this SDK created (no-op for None or an asynchronous one)."""
    close = getattr(credential, "close", None)
    if callable(close) and not inspect.iscoroutinefunction(close):
        close()


async def aclose_credential(credential: Any) -> None:
    """Close a credential this SDK created, synchronous or asynchronous."""
    close = getattr(credential, "close", None)
    if callable(close):
        result = close()
        if inspect.isawaitable(result):
            await result
