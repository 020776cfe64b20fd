"""Creating gRPC channels from a host address, the way the official SDK reads it.

``https://`` or ``grpcs://`` means TLS, ``http://`` or ``grpc://`` plaintext; a bare
``host:port`` follows ``secure_channel``. Extra metadata is added to every call by an
interceptor on grpc channels, and by the channel itself on the SDK's own HTTP/2 transport.

Channels use the SDK's own HTTP/2 client (`h2_channel.H2Channel` for asyncio,
`h2_sync_channel.SyncH2Channel` blocking) where it honours everything asked for (cleartext
``host:port``, no interceptors, no channel options other than the message size limits) and
``grpc.aio`` / ``grpc`` otherwise; ``DURABLETASK_GRPC_TRANSPORT=grpcio`` forces grpc.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any, NamedTuple

import grpc
import grpc.aio

from durabletask.grpc_options import GrpcChannelOptions
from durabletask.internal import orchestrator_service_pb2_grpc as stubs
from durabletask.internal.grpc.h2_channel import H2Channel
from durabletask.internal.grpc.h2_requests import split_target
from durabletask.internal.grpc.h2_sync_channel import SyncH2Channel

logger = logging.getLogger("durabletask.grpc")

DEFAULT_HOST_ADDRESS = "localhost:4001"
TRANSPORT_VARIABLE = "DURABLETASK_GRPC_TRANSPORT"
_OWN_TRANSPORT_OPTIONS = frozenset({"grpc.max_receive_message_length", "grpc.max_send_message_length"})
_SECURE = ("https://", "grpcs://")
_INSECURE = ("http://", "grpc://")

Metadata = Sequence[tuple[str, str]]


class Target(NamedTuple):
    address: str
    secure: bool


def parse_host_address(host_address: str | None, secure_channel: bool) -> Target:
    """Split a host address into the gRPC target and whether to use TLS.

    Raises:
        ValueError: The address is empty once its scheme is removed.
    """
    address = (host_address or DEFAULT_HOST_ADDRESS).strip()
    lowered = address.lower()
    secure = secure_channel
    for prefix in _SECURE:
        if lowered.startswith(prefix):
            address, secure = address[len(prefix):], True
            break
    else:
        for prefix in _INSECURE:
            if lowered.startswith(prefix):
                address, secure = address[len(prefix):], False
                break
    address = address.rstrip("/")
    if not address:
        raise ValueError(f"host_address {host_address!r} has no host: use e.g. 'localhost:8080' or "
                         f"'https://myscheduler.westus2.durabletask.io'")
    return Target(address, secure)


def _options(channel_options: GrpcChannelOptions | None) -> list[tuple[str, Any]]:
    return channel_options.to_grpc_options() if channel_options is not None else []


def sync_channel(host_address: str | None, secure_channel: bool = False,
                 interceptors: Sequence[Any] | None = None,
                 channel_options: GrpcChannelOptions | None = None,
                 metadata: Metadata | None = None) -> grpc.Channel:
    """A blocking channel adding ``metadata`` to every call, with ``interceptors`` applied in order.

    The SDK's own HTTP/2 transport when `own_transport_refusal` finds nothing against it, else ``grpc``.
    """
    target = parse_host_address(host_address, secure_channel)
    options = _options(channel_options)
    refusal = own_transport_refusal(target, interceptors, options)
    if refusal is None:
        limits = dict(options)
        logger.debug("gRPC transport for %s (blocking): durabletask's own HTTP/2 client", target.address)
        return SyncH2Channel(target.address, metadata=metadata or (),
                             max_receive_message_length=limits.get("grpc.max_receive_message_length"),
                             max_send_message_length=limits.get("grpc.max_send_message_length"))
    logger.debug("gRPC transport for %s (blocking): grpc (%s)", target.address, refusal)
    if target.secure:
        channel = grpc.secure_channel(target.address, grpc.ssl_channel_credentials(), options=options)
    else:
        channel = grpc.insecure_channel(target.address, options=options)
    chain = with_metadata(metadata, interceptors, asynchronous=False)
    if chain:
        channel = grpc.intercept_channel(channel, *chain)
    return channel


def async_channel(host_address: str | None, secure_channel: bool = False,
                  interceptors: Sequence[Any] | None = None,
                  channel_options: GrpcChannelOptions | None = None,
                  metadata: Metadata | None = None) -> grpc.aio.Channel:
    """An asyncio channel adding ``metadata`` to every call, with ``interceptors`` applied in order.

    The SDK's own HTTP/2 transport when `own_transport_refusal` finds nothing against it, else ``grpc.aio``.
    """
    target = parse_host_address(host_address, secure_channel)
    options = _options(channel_options)
    refusal = own_transport_refusal(target, interceptors, options)
    if refusal is None:
        limits = dict(options)
        logger.debug("gRPC transport for %s: durabletask's own HTTP/2 client", target.address)
        return H2Channel(target.address, metadata=metadata or (),
                         max_receive_message_length=limits.get("grpc.max_receive_message_length"),
                         max_send_message_length=limits.get("grpc.max_send_message_length"))
    logger.debug("gRPC transport for %s: grpc.aio (%s)", target.address, refusal)
    chain = with_metadata(metadata, interceptors, asynchronous=True) or None
    if target.secure:
        return grpc.aio.secure_channel(target.address, grpc.ssl_channel_credentials(), options=options,
                                       interceptors=chain)
    return grpc.aio.insecure_channel(target.address, options=options, interceptors=chain)


def own_transport_refusal(target: Target, interceptors: Sequence[Any] | None,
                          options: Sequence[tuple[str, Any]]) -> str | None:
    """Why a channel to ``target`` must use grpc, or None if the SDK's own transport can serve it."""
    choice = os.environ.get(TRANSPORT_VARIABLE, "").strip().lower()
    if choice == "grpcio":
        return f"{TRANSPORT_VARIABLE}=grpcio"
    if choice not in ("", "auto", "h2"):
        logger.warning("%s=%r is not known (use 'grpcio' to force grpc.aio, or 'auto'); using 'auto'",
                       TRANSPORT_VARIABLE, choice)
    if target.secure:
        return "TLS"
    if interceptors:
        return "interceptors"
    others = sorted({name for name, _ in options} - _OWN_TRANSPORT_OPTIONS)
    if others:
        return f"channel options {', '.join(others)}"
    for name, value in options:
        if not isinstance(value, int):
            return f"channel option {name}={value!r}"
    if split_target(target.address) is None:
        return f"target {target.address!r} is not host:port"
    return None


class CallDetails(NamedTuple):
    """Client call details with replaced metadata (blocking channels)."""

    method: str
    timeout: float | None
    metadata: Any
    credentials: Any
    wait_for_ready: Any
    compression: Any


def _with_metadata(details: Any, extra: Metadata) -> CallDetails:
    merged = list(details.metadata or ()) + list(extra)
    return CallDetails(details.method, details.timeout, merged, details.credentials,
                        getattr(details, "wait_for_ready", None), getattr(details, "compression", None))


class MetadataInterceptor(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor,
                          grpc.StreamUnaryClientInterceptor, grpc.StreamStreamClientInterceptor):
    """Adds fixed metadata (e.g. ``taskhub``) to every call of a blocking channel."""

    def __init__(self, metadata: Metadata) -> None:
        self._metadata = list(metadata)

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(_with_metadata(details, self._metadata), request)

    def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(_with_metadata(details, self._metadata), request)

    def intercept_stream_unary(self, continuation: Any, details: Any, request_iterator: Any) -> Any:
        return continuation(_with_metadata(details, self._metadata), request_iterator)

    def intercept_stream_stream(self, continuation: Any, details: Any, request_iterator: Any) -> Any:
        return continuation(_with_metadata(details, self._metadata), request_iterator)


def _aio_details(details: Any, extra: Metadata) -> grpc.aio.ClientCallDetails:
    merged = grpc.aio.Metadata(*(tuple(details.metadata or ())), *extra)
    return grpc.aio.ClientCallDetails(details.method, details.timeout, merged, details.credentials,
                                      details.wait_for_ready)


class _AsyncUnaryUnaryMetadata(grpc.aio.UnaryUnaryClientInterceptor):
    def __init__(self, metadata: Metadata) -> None:
        self._metadata = list(metadata)

    async def intercept_unary_unary(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
        return await continuation(_aio_details(client_call_details, self._metadata), request)


class _AsyncUnaryStreamMetadata(grpc.aio.UnaryStreamClientInterceptor):
    def __init__(self, metadata: Metadata) -> None:
        self._metadata = list(metadata)

    async def intercept_unary_stream(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
        return await continuation(_aio_details(client_call_details, self._metadata), request)


def async_metadata_interceptors(metadata: Metadata) -> list[Any]:
    """Interceptors adding ``metadata`` to unary and server-streaming calls of an asyncio channel.

    One object per call kind: grpc.aio files an interceptor under a single kind, so an object
    implementing several would silently skip the others (streams would lose the metadata).
    """
    return [_AsyncUnaryUnaryMetadata(metadata), _AsyncUnaryStreamMetadata(metadata)]


def with_metadata(metadata: Metadata | None, interceptors: Sequence[Any] | None, *, asynchronous: bool) -> list[Any]:
    """The interceptor chain: the metadata interceptor (if any metadata) before the user's."""
    chain: list[Any] = []
    if metadata:
        chain += async_metadata_interceptors(metadata) if asynchronous else [MetadataInterceptor(metadata)]
    chain += list(interceptors or ())
    return chain


def sidecar_stub(channel: grpc.Channel | grpc.aio.Channel) -> Any:
    """A ``TaskHubSidecarService`` stub on ``channel`` (sync or asyncio, as the channel is)."""
    return stubs.TaskHubSidecarServiceStub(channel)  # type: ignore[no-untyped-call]
