"""A blocking gRPC channel on the SDK's own HTTP/2 client, for cleartext targets.

`SyncH2Channel` is to ``grpc.Channel`` what `h2_channel.H2Channel` is to ``grpc.aio.Channel``:
the part the generated stubs use (``unary_unary``, ``unary_stream``), with grpc's call signatures
and errors (a ``grpc.RpcError`` with ``code()`` and ``details()``), over the shared HTTP/2
connection code driven by the calling thread (`durabletask.internal.h2.sync_client`). Each thread
gets its own connection, opened on its first call: no background threads, no locks on the call
path, and a long-poll on one thread never holds up another.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc

from durabletask.internal.grpc.h2_calls import rpc_error
from durabletask.internal.grpc.h2_requests import Metadata, RequestEncoder
from durabletask.internal.h2.client_stream import OK, ClientStream
from durabletask.internal.h2.sync_client import BlockingConnection

_CLOSED = "Cannot invoke RPC on closed channel!"


class SyncH2Channel(RequestEncoder, grpc.Channel):
    """A ``grpc.Channel`` for unary and server-streaming calls over the SDK's own HTTP/2 client."""

    def __init__(self, target: str, *, metadata: Metadata = (), max_receive_message_length: int | None = None,
                 max_send_message_length: int | None = None) -> None:
        """See `RequestEncoder`."""
        super().__init__(target, metadata=metadata, max_receive_message_length=max_receive_message_length,
                         max_send_message_length=max_send_message_length)
        self._local = threading.local()
        self._lock = threading.Lock()
        self._connections: set[BlockingConnection] = set()
        self._closed = False

    # -- grpc.Channel

    def unary_unary(self, method: str, request_serializer: Callable[[Any], bytes] | None = None,
                    response_deserializer: Callable[[bytes], Any] | None = None, **_: Any) -> Any:
        return SyncUnaryUnary(self, method, request_serializer, response_deserializer)

    def unary_stream(self, method: str, request_serializer: Callable[[Any], bytes] | None = None,
                     response_deserializer: Callable[[bytes], Any] | None = None, **_: Any) -> Any:
        return SyncUnaryStream(self, method, request_serializer, response_deserializer)

    def stream_unary(self, method: str, request_serializer: Any = None, response_deserializer: Any = None,
                     **_: Any) -> Any:
        raise NotImplementedError("client-streaming calls are not supported by durabletask's own HTTP/2 transport; "
                                  "set DURABLETASK_GRPC_TRANSPORT=grpcio to use grpc")

    def stream_stream(self, method: str, request_serializer: Any = None, response_deserializer: Any = None,
                      **_: Any) -> Any:
        raise NotImplementedError("bidirectional-streaming calls are not supported by durabletask's own HTTP/2 "
                                  "transport; set DURABLETASK_GRPC_TRANSPORT=grpcio to use grpc")

    def subscribe(self, callback: Callable[[grpc.ChannelConnectivity], None], try_to_connect: bool = False) -> None:
        raise NotImplementedError("connectivity callbacks are not supported by durabletask's own HTTP/2 transport; "
                                  "set DURABLETASK_GRPC_TRANSPORT=grpcio to use grpc")

    def unsubscribe(self, callback: Callable[[grpc.ChannelConnectivity], None]) -> None:
        pass

    def close(self) -> None:
        """Close the connections: this thread's calls end as cancelled, other threads' as unavailable."""
        with self._lock:
            self._closed = True
            connections, self._connections = list(self._connections), set()
        me = threading.get_ident()
        for connection in connections:
            if connection.owner == me:
                connection.close()
            else:
                connection.interrupt()

    def __enter__(self) -> SyncH2Channel:
        return self

    def __exit__(self, exc_type: Any, exc_val: Any, exc_tb: Any) -> None:
        self.close()

    # -- used by the calls

    def connection(self, deadline: float | None, wait_for_ready: bool | None) -> BlockingConnection:
        """This thread's connection, opened if needed.

        Calls a thread makes while it reads a stream (nested calls) share the connection: each call
        reads frames until it has what it waits for, and the frames of the others are kept for them.
        """
        if self._closed:
            raise ValueError(_CLOSED)
        current: BlockingConnection | None = getattr(self._local, "connection", None)
        if current is not None and current.usable:
            return current
        connection = self._open(deadline, wait_for_ready)
        with self._lock:
            if current is not None:
                self._connections.discard(current)
            if self._closed:
                connection.close()
                raise ValueError(_CLOSED)
            self._connections.add(connection)
        self._local.connection = connection
        return connection

    def _open(self, deadline: float | None, wait_for_ready: bool | None) -> BlockingConnection:
        delay = 0.05
        while True:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise rpc_error(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded")
            try:
                return BlockingConnection(self._host, self._port, remaining)
            except OSError as error:
                if isinstance(error, TimeoutError) and deadline is not None and time.monotonic() >= deadline:
                    raise rpc_error(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded") from None
                if not wait_for_ready:
                    raise rpc_error(grpc.StatusCode.UNAVAILABLE,
                                    f"failed to connect to {self._target}: {error.strerror or error}") from None
            pause = delay if deadline is None else min(delay, max(0.0, deadline - time.monotonic()))
            time.sleep(pause)
            delay = min(delay * 2, 1.0)


class _Method:
    __slots__ = ("_channel", "_deserialize", "_method", "_prefix", "_serialize")

    def __init__(self, channel: SyncH2Channel, method: str, serializer: Callable[[Any], bytes] | None,
                 deserializer: Callable[[bytes], Any] | None) -> None:
        self._channel = channel
        self._method = method
        self._prefix = channel.request_block(method)
        self._serialize = serializer
        self._deserialize = deserializer

    def _request(self, request: Any, timeout: float | None, metadata: Metadata | None, credentials: Any,
                 compression: grpc.Compression | None) -> tuple[bytes, bytes, float | None]:
        if credentials is not None:
            raise ValueError(f"per-call credentials ({type(credentials).__name__}) need a TLS channel; "
                             "durabletask's own HTTP/2 transport is cleartext")
        channel = self._channel
        body, encoding = channel.body(self._serialize(request) if self._serialize else request, compression)
        block = channel.header_block(self._prefix, timeout, metadata, encoding)
        return block, body, None if timeout is None else time.monotonic() + timeout


class SyncUnaryUnary(_Method):
    """``stub.Method(request, timeout=..., metadata=...)`` for a unary method: returns the response."""

    __slots__ = ()

    def __call__(self, request: Any, timeout: float | None = None, metadata: Metadata | None = None,
                 credentials: Any = None, wait_for_ready: bool | None = None,
                 compression: grpc.Compression | None = None) -> Any:
        block, body, deadline = self._request(request, timeout, metadata, credentials, compression)
        connection = self._channel.connection(deadline, wait_for_ready)
        stream = ClientStream(streaming=False, max_receive=self._channel.max_receive)
        try:
            connection.start(stream, block, body, deadline)
            connection.wait(stream, deadline, for_message=False)
        except BaseException:  # KeyboardInterrupt and the like: the server should not go on
            connection.cancel(stream)
            raise
        if stream.code is OK and len(stream.messages) == 1:
            data = stream.messages[0]
            if self._deserialize is None:
                return data
            try:
                return self._deserialize(data)
            except Exception as error:
                raise rpc_error(grpc.StatusCode.INTERNAL,
                                f"cannot deserialize the response of {self._method}: {error}") from None
        raise _call_error(stream, deadline)


class SyncUnaryStream(_Method):
    """``stub.Method(request, ...)`` for a server-streaming method: an iterator over the responses."""

    __slots__ = ()

    def __call__(self, request: Any, timeout: float | None = None, metadata: Metadata | None = None,
                 credentials: Any = None, wait_for_ready: bool | None = None,
                 compression: grpc.Compression | None = None) -> SyncStreamCall:
        block, body, deadline = self._request(request, timeout, metadata, credentials, compression)
        return SyncStreamCall(self._channel, self._method, self._deserialize, block, body, deadline, wait_for_ready)


class SyncStreamCall(Iterator[Any]):
    """A server-streaming call, like grpc's: iterate for the messages; `cancel`, `code`, `details`."""

    def __init__(self, channel: SyncH2Channel, method: str, deserialize: Callable[[bytes], Any] | None,
                 block: bytes, body: bytes, deadline: float | None, wait_for_ready: bool | None) -> None:
        self._method = method
        self._deserialize = deserialize
        self._deadline = deadline
        self._stream = ClientStream(streaming=True, max_receive=channel.max_receive)
        self._connection = channel.connection(deadline, wait_for_ready)
        self._connection.start(self._stream, block, body, deadline)

    def __iter__(self) -> SyncStreamCall:
        return self

    def __next__(self) -> Any:
        stream = self._stream
        if not stream.messages and not stream.ended:
            try:
                self._connection.wait(stream, self._deadline, for_message=True)
            except BaseException:
                self.cancel()
                raise
        if stream.messages:
            data = stream.messages.popleft()
            if self._deserialize is None:
                return data
            try:
                return self._deserialize(data)
            except Exception as error:
                self.cancel()
                raise rpc_error(grpc.StatusCode.INTERNAL,
                                f"cannot deserialize a message of {self._method}: {error}") from None
        if stream.code is OK:
            raise StopIteration
        raise _call_error(stream, self._deadline)

    def cancel(self) -> bool:
        """Cancel the call (RST_STREAM to the server); False if it had already ended."""
        if self._stream.ended:
            return False
        self._connection.cancel(self._stream)
        return True

    def is_active(self) -> bool:
        return not self._stream.ended

    def time_remaining(self) -> float | None:
        return None if self._deadline is None else max(0.0, self._deadline - time.monotonic())

    def code(self) -> grpc.StatusCode | None:
        return self._stream.code if self._stream.ended else None

    def details(self) -> str | None:
        return self._stream.details if self._stream.ended else None


def _call_error(stream: ClientStream, deadline: float | None) -> BaseException:
    if stream.code is OK:
        count = len(stream.messages)
        return rpc_error(grpc.StatusCode.INTERNAL if count else grpc.StatusCode.UNIMPLEMENTED,
                         f"a unary call ended with {count} response messages instead of one")
    if stream.code is grpc.StatusCode.UNAVAILABLE and deadline is not None and time.monotonic() >= deadline:
        return rpc_error(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded")  # a send that timed out
    return rpc_error(stream.code, stream.details, stream.trailers)
