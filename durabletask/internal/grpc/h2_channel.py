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
import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import grpc.aio

from durabletask.internal.grpc.h2_calls import UnaryStreamMultiCallable, UnaryUnaryMultiCallable, rpc_error
from durabletask.internal.grpc.h2_requests import Metadata, RequestEncoder
from durabletask.internal.h2.client import Connection


class H2Channel(RequestEncoder, grpc.aio.Channel):
    """A ``grpc.aio.Channel`` for unary and server-streaming calls over the SDK's own HTTP/2 client."""

    def __init__(self, target: str, *, metadata: Metadata = (), max_receive_message_length: int | None = None,
                 max_send_message_length: int | None = None) -> None:
        """See `RequestEncoder`."""
        super().__init__(target, metadata=metadata, max_receive_message_length=max_receive_message_length,
                         max_send_message_length=max_send_message_length)
        self.connection: Connection | None = None
        self._connections: set[Connection] = set()
        self._connecting: asyncio.Task[Connection] | None = None
        self._closed = False
        self._read_pause = 0.0

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

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """Calls started inside leave in one send (on the open connection; nothing changes without one).

        To be used on the loop the channel serves, as `UnaryUnaryMultiCallable.start`.
        """
        connection = self.connection
        if connection is None or not connection.usable:
            yield
            return
        connection.cork()
        try:
            yield
        finally:
            connection.uncork()

    @property
    def read_pause(self) -> float:
        """Seconds the channel's connections leave their socket unread after each read (default 0).

        For a channel whose calls only report back to done callbacks that are in no hurry, such as
        the worker's completions: the responses of several calls are then read in one go, instead
        of waking the loop for each. A connection still reads at once when a request waits for the
        server. Set it to 0 to read as data arrives (what waiting for calls to end needs).
        """
        return self._read_pause

    @read_pause.setter
    def read_pause(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError(f"read_pause must be 0 or more seconds, got {seconds}")
        self._read_pause = seconds
        for connection in self._connections:
            connection.read_pause = seconds
            if not seconds:
                connection.read_now()

    # -- used by the calls

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
        connection.read_pause = self._read_pause
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


def _retrieve(task: asyncio.Task[Any]) -> None:
    if not task.cancelled():
        task.exception()
