"""The call objects of `H2Channel`: unary and server-streaming multicallables, and the streaming call.

They follow ``grpc.aio``: a unary multicallable is awaited for its response; a server-streaming one
gives a `StreamCall` with ``read()`` (``grpc.aio.EOF`` at the end), ``async for``, ``cancel()`` and
the status. Failures raise ``grpc.aio.AioRpcError``; a call cancelled locally raises
``asyncio.CancelledError``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

import grpc
import grpc.aio

from durabletask.internal.h2.client_stream import OK, ClientStream, metadata_of

if TYPE_CHECKING:
    from durabletask.internal.grpc.h2_channel import H2Channel
    from durabletask.internal.grpc.h2_requests import Metadata


def rpc_error(code: grpc.StatusCode, details: str,
              trailers: list[tuple[str, str]] | None = None) -> grpc.aio.AioRpcError:
    """The error ``grpc.aio`` raises for a call that ended with ``code``."""
    return grpc.aio.AioRpcError(code, initial_metadata=grpc.aio.Metadata(),
                                trailing_metadata=grpc.aio.Metadata(*metadata_of(trailers)), details=details)


class UnaryUnaryMultiCallable:
    """``stub.Method(request, timeout=..., metadata=...)`` for a unary method: awaiting it gives the response."""

    __slots__ = ("_channel", "_deserialize", "_method", "_prefix", "_serialize")

    def __init__(self, channel: H2Channel, method: str, serializer: Callable[[Any], bytes] | None,
                 deserializer: Callable[[bytes], Any] | None) -> None:
        self._channel = channel
        self._method = method
        self._prefix = channel.request_block(method)
        self._serialize = serializer
        self._deserialize = deserializer

    async def __call__(self, request: Any, *, timeout: float | None = None, metadata: Metadata | None = None,
                       credentials: Any = None, wait_for_ready: bool | None = None,
                       compression: grpc.Compression | None = None) -> Any:
        channel = self._channel
        if credentials is not None:
            _refuse_credentials(credentials)
        body, encoding = channel.body(self._serialize(request) if self._serialize else request, compression)
        block = channel.header_block(self._prefix, timeout, metadata, encoding)
        connection = channel.connection
        if connection is not None and connection.usable and connection.loop.is_running():
            loop = connection.loop  # (the running loop: a channel serves the loop it first connected on)
            deadline = None if timeout is None else loop.time() + timeout
        else:
            loop = asyncio.get_running_loop()
            deadline = None if timeout is None else loop.time() + timeout
            connection = await channel.connect(deadline, wait_for_ready=wait_for_ready)
        stream = ClientStream(streaming=False, max_receive=channel.max_receive)
        waiter = stream.waiter = loop.create_future()
        connection.start(stream, block, body, deadline)
        try:
            await waiter
        except asyncio.CancelledError:
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
        raise _call_error(stream)

    def start(self, request: Any, on_done: Callable[[BaseException | None], None], *, timeout: float | None = None,
              metadata: Metadata | None = None, serialized: bool = False) -> ClientStream | None:
        """Send the call now, without a task or a future: for callers on the loop that only need the outcome.

        ``on_done(error)`` runs on the loop when the call ends: ``None`` when it succeeded (the
        response is not decoded), else what awaiting the call would have raised. ``request`` may be
        already serialized (``serialized=True``), e.g. by a thread that built it.

        To be called on the loop the channel serves (the loop it connected on).

        Returns:
            The call's stream (``cancel()`` ends it), or None when the channel has no open
            connection: then nothing was sent; await the call instead, which connects.
        """
        channel = self._channel
        connection = channel.connection  # (not usable_connection(): asking for the running loop costs a getpid)
        if connection is None or not connection.usable:
            return None
        data = request if serialized or self._serialize is None else self._serialize(request)
        body, encoding = channel.body(data, None)
        block = channel.header_block(self._prefix, timeout, metadata, encoding)
        stream = ClientStream(streaming=False, max_receive=channel.max_receive)
        stream.callbacks = [lambda: on_done(None if stream.code is OK and len(stream.messages) == 1
                                            else _call_error(stream))]
        connection.start(stream, block, body, None if timeout is None else connection.loop.time() + timeout)
        return stream


class UnaryStreamMultiCallable:
    """``stub.Method(request, ...)`` for a server-streaming method: gives a `StreamCall`."""

    __slots__ = ("_channel", "_deserialize", "_method", "_prefix", "_serialize")

    def __init__(self, channel: H2Channel, method: str, serializer: Callable[[Any], bytes] | None,
                 deserializer: Callable[[bytes], Any] | None) -> None:
        self._channel = channel
        self._method = method
        self._prefix = channel.request_block(method)
        self._serialize = serializer
        self._deserialize = deserializer

    def __call__(self, request: Any, *, timeout: float | None = None, metadata: Metadata | None = None,
                 credentials: Any = None, wait_for_ready: bool | None = None,
                 compression: grpc.Compression | None = None) -> StreamCall:
        channel = self._channel
        if credentials is not None:
            _refuse_credentials(credentials)
        body, encoding = channel.body(self._serialize(request) if self._serialize else request, compression)
        block = channel.header_block(self._prefix, timeout, metadata, encoding)
        return StreamCall(channel, self._method, self._deserialize, block, body, timeout, wait_for_ready)


class StreamCall:
    """A server-streaming call, like ``grpc.aio.UnaryStreamCall``: `read` or ``async for``, `cancel`, status."""

    def __init__(self, channel: H2Channel, method: str, deserialize: Callable[[bytes], Any] | None, block: bytes,
                 body: bytes, timeout: float | None, wait_for_ready: bool | None) -> None:
        loop = self._loop = asyncio.get_running_loop()
        self._method = method
        self._deserialize = deserialize
        self._deadline = None if timeout is None else loop.time() + timeout
        self._stream = ClientStream(streaming=True, max_receive=channel.max_receive)
        self._starting: asyncio.Task[None] | None = None
        connection = channel.usable_connection()
        if connection is not None:
            connection.start(self._stream, block, body, self._deadline)
        else:
            self._starting = loop.create_task(self._start(channel, block, body, wait_for_ready))

    async def _start(self, channel: H2Channel, block: bytes, body: bytes, wait_for_ready: bool | None) -> None:
        try:
            connection = await channel.connect(self._deadline, wait_for_ready=wait_for_ready)
        except grpc.aio.AioRpcError as error:
            self._stream.finish(error.code(), error.details() or "")
            return
        except grpc.aio.UsageError as error:
            self._stream.locally_cancelled = True
            self._stream.finish(grpc.StatusCode.CANCELLED, str(error))
            return
        if not self._stream.ended:
            connection.start(self._stream, block, body, self._deadline)

    async def _started(self) -> None:
        """Wait for the call to be sent, if it waits for a connection (cancelling the call if cancelled)."""
        if self._starting is not None:
            try:
                await self._starting
            except asyncio.CancelledError:
                self.cancel()
                raise
            self._starting = None

    async def read(self) -> Any:
        """The next response message, or ``grpc.aio.EOF`` once the call ended with OK."""
        await self._started()
        stream = self._stream
        while True:
            if stream.locally_cancelled:
                raise asyncio.CancelledError()
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
            if stream.ended:
                if stream.code is OK:
                    return grpc.aio.EOF
                raise _call_error(stream)
            waiter = stream.waiter = self._loop.create_future()
            try:
                await waiter
            except asyncio.CancelledError:
                self.cancel()
                raise

    async def deliver(self, handler: Callable[[Any], None]) -> None:
        """Hand every response message to ``handler`` as soon as it is parsed, until the call ends.

        The alternative to `read` for a consumer that acts on each message at once: no task
        wake-up per message, and what ``handler`` sends for all the messages of one socket read
        leaves in one send. ``handler`` runs on the loop, inside the connection's read; if it raises,
        the call is cancelled and the error is raised here. Returns when the call ends with OK;
        raises as `read` does otherwise.
        """
        await self._started()
        stream = self._stream
        failure: list[BaseException] = []

        def take() -> None:
            messages = stream.messages
            deserialize = self._deserialize
            while messages and not failure:
                data = messages.popleft()
                try:
                    message = data if deserialize is None else deserialize(data)
                except Exception as error:
                    failure.append(rpc_error(grpc.StatusCode.INTERNAL,
                                             f"cannot deserialize a message of {self._method}: {error}"))
                    self.cancel()
                    return
                try:
                    handler(message)
                except BaseException as error:
                    failure.append(error)
                    self.cancel()
                    return

        stream.on_messages = take
        try:
            take()
            await self._ended()
        except asyncio.CancelledError:
            self.cancel()
            raise
        finally:
            stream.on_messages = None
        if failure:
            raise failure[0]
        if stream.locally_cancelled:
            raise asyncio.CancelledError()
        if stream.code is not OK:
            raise _call_error(stream)

    def __aiter__(self) -> AsyncIterator[Any]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Any]:
        try:
            while True:
                message = await self.read()
                if message is grpc.aio.EOF:
                    return
                yield message
        finally:
            self.cancel()

    def cancel(self) -> bool:
        """Cancel the call (RST_STREAM to the server); False if it had already ended."""
        stream = self._stream
        if stream.ended:
            return False
        if self._starting is not None and not self._starting.done():
            self._starting.cancel()
        if stream.connection is not None:
            stream.connection.cancel(stream)
        else:
            stream.locally_cancelled = True
            stream.finish(grpc.StatusCode.CANCELLED, "Locally cancelled by application!")
        return True

    def cancelled(self) -> bool:
        return self._stream.locally_cancelled

    def done(self) -> bool:
        return self._stream.ended

    def add_done_callback(self, callback: Callable[[StreamCall], None]) -> None:
        stream = self._stream
        if stream.ended:
            callback(self)
            return
        if stream.callbacks is None:
            stream.callbacks = []
        stream.callbacks.append(lambda: callback(self))

    def time_remaining(self) -> float | None:
        return None if self._deadline is None else max(0.0, self._deadline - self._loop.time())

    async def _ended(self) -> None:
        if not self._stream.ended:
            ended: asyncio.Future[None] = self._loop.create_future()
            self.add_done_callback(lambda _: _resolve(ended))
            await ended

    async def code(self) -> grpc.StatusCode:
        await self._ended()
        return self._stream.code

    async def details(self) -> str:
        await self._ended()
        return self._stream.details

    async def initial_metadata(self) -> grpc.aio.Metadata:
        stream = self._stream
        while stream.headers is None and not stream.ended:
            await asyncio.sleep(0.001)
        return grpc.aio.Metadata(*metadata_of(stream.headers))

    async def trailing_metadata(self) -> grpc.aio.Metadata:
        await self._ended()
        return grpc.aio.Metadata(*metadata_of(self._stream.trailers))

    async def wait_for_connection(self) -> None:
        if self._starting is not None:
            await asyncio.shield(self._starting)


def _call_error(stream: ClientStream) -> BaseException:
    if stream.locally_cancelled:
        return asyncio.CancelledError()
    if stream.code is OK:
        count = len(stream.messages)
        return rpc_error(grpc.StatusCode.INTERNAL if count else grpc.StatusCode.UNIMPLEMENTED,
                         f"a unary call ended with {count} response messages instead of one")
    return rpc_error(stream.code, stream.details, stream.trailers)


def _refuse_credentials(credentials: Any) -> None:
    raise ValueError(f"per-call credentials ({type(credentials).__name__}) need a TLS channel; durabletask's own "
                     "HTTP/2 transport is cleartext")


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
