"""An asyncio gRPC channel on the SDK's own HTTP/2 client, for cleartext targets.

Why: on a small machine ``grpc.aio`` spends 200-270 us of CPU on a unary call on the client side,
more than the worker's own work per work item. `H2Channel` implements the part of
``grpc.aio.Channel`` that the generated stubs use (``unary_unary``, ``unary_stream``), with the
same call signatures, the same errors (``grpc.aio.AioRpcError`` with gRPC's status codes, and
``asyncio.CancelledError`` for calls cancelled locally) and the same ``grpc.aio.EOF`` at the end of
a stream, on one lazily opened HTTP/2 connection (`durabletask.internal.h2.client`). The call
objects are in `durabletask.internal.grpc.h2_calls`.

`durabletask.internal.grpc.channels.async_channel` picks it only when it can honour everything
asked for: a cleartext ``host:port`` target, no interceptors, and no channel options beyond the
message size limits. ``DURABLETASK_GRPC_TRANSPORT=grpcio`` forces ``grpc.aio``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import gzip
import sys
import zlib
from collections.abc import Callable, Iterable
from typing import Any

import grpc
import grpc.aio

from durabletask import __version__
from durabletask.internal.grpc.h2_calls import UnaryStreamMultiCallable, UnaryUnaryMultiCallable, rpc_error
from durabletask.internal.h2 import hpack
from durabletask.internal.h2.client import Connection

DEFAULT_MAX_RECEIVE = 4 << 20
_NO_LIMIT = sys.maxsize
_USER_AGENT = f"grpc-python-durabletask/{__version__} (h2)"
# Static table entries (RFC 7541, Appendix A).
_METHOD_POST = 3
_SCHEME_HTTP = 6
_PATH = 4
_AUTHORITY = 1
_CONTENT_TYPE = 31
_USER_AGENT_NAME = 58
_RESERVED = frozenset({"content-type", "te", "grpc-timeout", "grpc-encoding", "grpc-accept-encoding", "user-agent",
                       "host", "connection"})
_ENCODINGS = {grpc.Compression.Gzip: "gzip", grpc.Compression.Deflate: "deflate"}
_METADATA_CACHE_LIMIT = 64
_TIMEOUT_UNITS = (("n", 1e9), ("u", 1e6), ("m", 1e3), ("S", 1.0), ("M", 1 / 60), ("H", 1 / 3600))

Metadata = Iterable[tuple[str, Any]]


def split_target(target: str) -> tuple[str, int] | None:
    """``(host, port)`` of a ``host:port`` or ``[v6-address]:port`` target, or None for other forms."""
    if "/" in target or target.count(":") == 0:
        return None
    if target.startswith("["):
        host, _, rest = target[1:].partition("]")
        if not rest.startswith(":"):
            return None
        port = rest[1:]
    else:
        host, _, port = target.rpartition(":")
        if ":" in host:  # an IPv6 address without brackets, or a scheme such as unix:
            return None
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        return None
    if host.lower() in ("unix", "unix-abstract", "vsock", "dns", "ipv4", "ipv6", "xds"):
        return None
    return host, int(port)


def _timeout_field(timeout: float) -> bytes:
    """The ``grpc-timeout`` header: at most 8 digits, in the finest unit that fits, rounded up."""
    field = _timeout_fields.get(timeout)
    if field is None:
        if len(_timeout_fields) >= _METADATA_CACHE_LIMIT:
            _timeout_fields.clear()
        field = _timeout_fields[timeout] = _encode_timeout(timeout)
    return field


_timeout_fields: dict[float, bytes] = {}  # the same few timeouts come back on every call


def _encode_timeout(timeout: float) -> bytes:
    for unit, per_second in _TIMEOUT_UNITS:
        value = -int(-timeout * per_second // 1)
        if value < 100_000_000:
            return hpack.literal("grpc-timeout", f"{max(value, 1)}{unit}")
    return hpack.literal("grpc-timeout", "99999999H")


def encode_metadata(metadata: Metadata) -> bytes:
    """Per-call metadata as header fields: keys lower-case, ``-bin`` values base64 without padding."""
    out = bytearray()
    for key, value in metadata:
        name = key.lower()
        if name[:1] == ":" or name in _RESERVED:
            continue
        if name.endswith("-bin"):
            raw = value if isinstance(value, (bytes, bytearray)) else str(value).encode("utf-8")
            text = base64.b64encode(raw).decode("ascii").rstrip("=")
        else:
            text = value.decode("latin-1") if isinstance(value, (bytes, bytearray)) else str(value)
        out += hpack.literal(name, text)
    return bytes(out)


class H2Channel(grpc.aio.Channel):
    """A ``grpc.aio.Channel`` for unary and server-streaming calls over the SDK's own HTTP/2 client."""

    def __init__(self, target: str, *, metadata: Metadata = (), max_receive_message_length: int | None = None,
                 max_send_message_length: int | None = None) -> None:
        """
        Args:
            target: ``host:port`` (or ``[v6-address]:port``) of a cleartext gRPC server.
            metadata: Added to every call, before the call's own metadata.
            max_receive_message_length: Largest response message accepted (default 4 MiB, -1 for no limit).
            max_send_message_length: Largest request message sent (default and -1: no limit).
        """
        address = split_target(target)
        if address is None:
            raise ValueError(f"target {target!r} is not host:port; use grpc.aio for other target forms")
        self._host, self._port = address
        self._target = target
        self._metadata_block = encode_metadata(metadata)
        self.max_receive = _limit(max_receive_message_length, DEFAULT_MAX_RECEIVE)
        self.max_send = _limit(max_send_message_length, _NO_LIMIT)
        self._base_block = (hpack.indexed(_METHOD_POST) + hpack.indexed(_SCHEME_HTTP)
                            + hpack.literal_indexed_name(_AUTHORITY, target)
                            + hpack.literal_indexed_name(_CONTENT_TYPE, "application/grpc")
                            + hpack.literal("te", "trailers")
                            + hpack.literal_indexed_name(_USER_AGENT_NAME, _USER_AGENT))
        self.connection: Connection | None = None
        self._connections: set[Connection] = set()
        self._connecting: asyncio.Task[Connection] | None = None
        self._metadata_cache: dict[Any, bytes] = {}
        self._closed = False

    # -- grpc.aio.Channel

    def unary_unary(self, method: str, request_serializer: Callable[[Any], bytes] | None = None,
                    response_deserializer: Callable[[bytes], Any] | None = None, **_: Any) -> Any:
        return UnaryUnaryMultiCallable(self, method, request_serializer, response_deserializer)

    def unary_stream(self, method: str, request_serializer: Callable[[Any], bytes] | None = None,
                     response_deserializer: Callable[[bytes], Any] | None = None, **_: Any) -> Any:
        return UnaryStreamMultiCallable(self, method, request_serializer, response_deserializer)

    def stream_unary(self, method: str, request_serializer: Any = None, response_deserializer: Any = None,
                     **_: Any) -> Any:
        raise NotImplementedError("client-streaming calls are not supported by durabletask's own HTTP/2 transport; "
                                  "set DURABLETASK_GRPC_TRANSPORT=grpcio to use grpc.aio")

    def stream_stream(self, method: str, request_serializer: Any = None, response_deserializer: Any = None,
                      **_: Any) -> Any:
        raise NotImplementedError("bidirectional-streaming calls are not supported by durabletask's own HTTP/2 "
                                  "transport; set DURABLETASK_GRPC_TRANSPORT=grpcio to use grpc.aio")

    async def close(self, grace: float | None = None) -> None:
        """Close the connections; calls still running after ``grace`` seconds are cancelled."""
        self._closed = True
        if grace:
            loop = asyncio.get_running_loop()
            end = loop.time() + grace
            while any(c.streams for c in self._connections) and loop.time() < end:
                await asyncio.sleep(0.01)
        if self._connecting is not None:
            self._connecting.cancel()
        for connection in list(self._connections):
            connection.close("Channel closed!")
        self.connection = None

    def get_state(self, try_to_connect: bool = False) -> grpc.ChannelConnectivity:
        if self._closed:
            return grpc.ChannelConnectivity.SHUTDOWN
        if self.connection is not None and self.connection.usable:
            return grpc.ChannelConnectivity.READY
        if self._connecting is not None:
            return grpc.ChannelConnectivity.CONNECTING
        if try_to_connect:
            asyncio.get_running_loop().create_task(self._ready_quietly())
        return grpc.ChannelConnectivity.IDLE

    async def wait_for_state_change(self, last_observed_state: grpc.ChannelConnectivity) -> None:
        while self.get_state() == last_observed_state:
            await asyncio.sleep(0.01)

    async def channel_ready(self) -> None:
        """Wait until the channel is connected (retrying failed connects)."""
        await self.connect(None, wait_for_ready=True)

    async def __aenter__(self) -> H2Channel:
        return self

    async def __aexit__(self, exc_type: Any, exc_val: Any, exc_tb: Any) -> None:
        await self.close()

    # -- used by the calls

    def request_block(self, method: str) -> bytes:
        """The constant part of a method's request header block."""
        return self._base_block[:2] + hpack.literal_indexed_name(_PATH, method) + self._base_block[2:]

    def header_block(self, prefix: bytes, timeout: float | None, metadata: Metadata | None,
                     encoding: str | None) -> bytes:
        block = prefix
        if timeout is not None:
            block += _timeout_field(timeout)
        if encoding is not None:
            block += hpack.literal("grpc-encoding", encoding)
        if self._metadata_block:
            block += self._metadata_block
        if metadata:
            block += self._encoded(metadata)
        return block

    def _encoded(self, metadata: Metadata) -> bytes:
        if not isinstance(metadata, tuple):
            return encode_metadata(metadata)
        cached = self._metadata_cache.get(metadata)
        if cached is None:
            cached = encode_metadata(metadata)
            if len(self._metadata_cache) >= _METADATA_CACHE_LIMIT:
                self._metadata_cache.clear()
            self._metadata_cache[metadata] = cached
        return cached

    def body(self, data: bytes, compression: grpc.Compression | None) -> tuple[bytes, str | None]:
        """A request message with its 5-byte gRPC prefix, compressed if asked; and its grpc-encoding."""
        if len(data) > self.max_send:
            raise rpc_error(grpc.StatusCode.RESOURCE_EXHAUSTED,
                            f"Sent message larger than max ({len(data)} vs. {self.max_send})")
        encoding = _ENCODINGS.get(compression) if compression is not None else None
        if encoding == "gzip":
            return b"\x01" + _compressed(gzip.compress(data)), encoding
        if encoding == "deflate":
            return b"\x01" + _compressed(zlib.compress(data)), encoding
        return b"\x00" + len(data).to_bytes(4, "big") + data, None

    def usable_connection(self) -> Connection | None:
        connection = self.connection
        if connection is not None and connection.usable and connection.loop is asyncio.get_running_loop():
            return connection
        return None

    async def connect(self, deadline: float | None, *, wait_for_ready: bool | None) -> Connection:
        """The channel's connection, opened if needed (one attempt shared by concurrent calls)."""
        loop = asyncio.get_running_loop()
        delay = 0.05
        while True:
            if self._closed:
                raise grpc.aio.UsageError("Channel is closed.")
            connection = self.usable_connection()
            if connection is not None:
                return connection
            attempt = self._connecting
            if attempt is None or attempt.get_loop() is not loop:
                attempt = self._connecting = loop.create_task(self._open(loop))
                attempt.add_done_callback(_retrieve)
            remaining = None if deadline is None else deadline - loop.time()
            try:
                if remaining is not None and remaining <= 0:
                    raise asyncio.TimeoutError
                return await asyncio.wait_for(asyncio.shield(attempt), remaining)
            except asyncio.TimeoutError:
                raise rpc_error(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded") from None
            except grpc.aio.AioRpcError:
                if not wait_for_ready:
                    raise
            remaining = None if deadline is None else deadline - loop.time()
            pause = delay if remaining is None else min(delay, max(0.0, remaining))
            await asyncio.sleep(pause)
            delay = min(delay * 2, 1.0)

    async def _open(self, loop: asyncio.AbstractEventLoop) -> Connection:
        try:
            _, connection = await loop.create_connection(lambda: Connection(loop, self._connection_closed),
                                                         self._host, self._port)
        except OSError as error:
            raise rpc_error(grpc.StatusCode.UNAVAILABLE,
                            f"failed to connect to {self._target}: {error.strerror or error}") from None
        finally:
            if self._connecting is asyncio.current_task():
                self._connecting = None
        if self._closed:
            connection.close("Channel closed!")
            raise grpc.aio.UsageError("Channel is closed.")
        self._connections.add(connection)
        self.connection = connection
        return connection

    async def _ready_quietly(self) -> None:
        with contextlib.suppress(grpc.aio.AioRpcError, grpc.aio.UsageError):
            await self.connect(None, wait_for_ready=False)

    def _connection_closed(self, connection: Connection) -> None:
        self._connections.discard(connection)
        if self.connection is connection:
            self.connection = None


def _compressed(data: bytes) -> bytes:
    return len(data).to_bytes(4, "big") + data


def _limit(value: int | None, default: int) -> int:
    if value is None:
        return default
    return _NO_LIMIT if value < 0 else value


def _retrieve(task: asyncio.Task[Any]) -> None:
    if not task.cancelled():
        task.exception()
