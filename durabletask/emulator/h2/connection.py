"""One HTTP/2 connection of the emulator's gRPC server: frames in, calls dispatched, frames out.

An ``asyncio.Protocol``: ``data_received`` parses whole frames from the buffer and acts on them at
once; a request is dispatched when its stream ends (every ``TaskHubSidecarService`` method takes a
single request message). Each call runs as a task; its response is written as one buffer (headers,
data, trailers) when flow control allows, which it nearly always does.

Flow control: the server opens the receive windows of the connection and of every stream to the
maximum at the start, so peers never wait for it (request size is bounded by the message limit
instead). Outgoing data respects the peer's windows and maximum frame size; a server-streaming
handler is paused while its stream's data waits for a window or the socket's buffer is full.
"""

from __future__ import annotations

import asyncio
import gzip
import logging
import socket
import struct
import time
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

import grpc
import grpc.aio

from durabletask.emulator.h2.call import Call, Shape, shape_of, status_fields
from durabletask.emulator.turn import turn_end
from durabletask.internal.h2 import frames as f
from durabletask.internal.h2 import hpack
from durabletask.internal.h2.deadlines import NEVER, Deadlines, end_due

if TYPE_CHECKING:
    from durabletask.emulator.h2.server import GrpcServer, Outcome, Route

logger = logging.getLogger("durabletask.emulator.h2")

_RESPONSE_HEADERS = b"\x88" + hpack.literal("content-type", "application/grpc")  # :status 200 (static index 8)
_OK_TRAILERS = status_fields(grpc.StatusCode.OK, "")
_HEAD = struct.Struct(">IBI")  # a frame header: length (24 bits) and type, flags, stream id
_WINDOW = struct.Struct(">I")
# A unary answer whose message fits the windows: HEADERS, DATA head and the message's 5-byte prefix
# in one pack; then the message, and the trailers' frame head and fields.
_ANSWER_HEAD = struct.Struct(f">IBI{len(_RESPONSE_HEADERS)}sIBIBI")
_ANSWER_HEADERS = (len(_RESPONSE_HEADERS) << 8) | f.HEADERS
_OK_TRAILERS_FIRST = (len(_OK_TRAILERS) << 8) | f.HEADERS
_SHAPE_BLOCK_BYTES = 512  # header blocks longer than this (rarely repeated) are not kept as cache keys
_SHAPE_LIMIT = 64
_MAX_HEADER_BLOCK = 1 << 20
_READ_SIZE = 1 << 16
_SERVER_PREFACE = f.settings({
    f.SETTINGS_ENABLE_PUSH: 0,
    f.SETTINGS_INITIAL_WINDOW_SIZE: f.MAX_WINDOW,
    f.SETTINGS_MAX_FRAME_SIZE: 1 << 20,
}) + f.window_update(0, f.MAX_WINDOW - f.DEFAULT_WINDOW)
_HTTP1_ANSWER = (b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\n"
                 b"This is the durabletask emulator's gRPC endpoint (HTTP/2 only). Point a Durable Task SDK "
                 b"at it, for example host_address='localhost:8080'.\n")


class Stream:
    """The server's side of one HTTP/2 stream (one call)."""

    __slots__ = (
        "body",
        "body_size",
        "connection",
        "deadline",
        "drained",
        "ended",
        "headers_sent",
        "id",
        "on_end",
        "outbox",
        "remote_closed",
        "send_window",
        "shape",
        "task",
        "trailers",
    )

    def __init__(self, stream_id: int, connection: Connection, shape: Shape, window: int) -> None:
        self.id = stream_id
        self.connection = connection
        self.shape = shape
        self.body: list[bytes] = []
        self.body_size = 0
        self.task: asyncio.Task[None] | None = None
        self.send_window = window
        self.outbox = bytearray()  # DATA payload waiting for a window
        self.trailers: bytes | None = None  # the closing HEADERS frame, sent after the outbox
        self.ended = False  # answered, reset or its connection lost
        self.remote_closed = False
        self.headers_sent = False
        self.drained: asyncio.Future[None] | None = None
        self.deadline: float | None = None  # loop time after which the call ends with DEADLINE_EXCEEDED
        self.on_end: Callable[[], object] | None = None  # an immediate call's outcome.cancel, if it has one


class Connection(asyncio.BufferedProtocol):
    """Speaks HTTP/2 with one client and runs its calls through the server's routes."""

    def __init__(self, server: GrpcServer) -> None:
        self.server = server
        self.loop = asyncio.get_running_loop()
        self._turn_end = turn_end(self.loop)
        self.peer = "unknown"
        self.streams: dict[int, Stream] = {}
        self._transport: asyncio.Transport | None = None
        self._inbox = memoryview(bytearray(_READ_SIZE))  # the socket reads into this, again and again
        self._pending = bytearray()  # the start of a frame that has not fully arrived
        self._need = 0  # how many bytes _pending must hold before parsing is worth trying
        self._preface_seen = False
        self._decoder = hpack.Decoder()
        self._shapes: dict[bytes, tuple[list[tuple[str, str]], Shape]] = {}  # by header block, see _shape
        self._header_block: tuple[int, int, bytearray] | None = None  # stream id, flags, fragments
        self._last_stream_id = 0
        self._peer_window = f.DEFAULT_WINDOW  # initial window of each stream the peer receives on
        self._peer_max_frame = f.DEFAULT_MAX_FRAME
        self._send_window = f.DEFAULT_WINDOW  # the connection's window for our DATA
        self._received = 0  # DATA bytes received since the last connection WINDOW_UPDATE
        self._blocked: dict[int, Stream] = {}  # streams with data waiting for a window
        self.paused = False
        self._resumed: asyncio.Future[None] | None = None
        self._going_away = False
        self._out: list[bytes] = []  # written at the end of the loop's turn (one send for many frames)
        self._push_due = False  # _out holds a message of a streaming call: sent before answers (see turn.py)
        self._deadlines = Deadlines(self.loop, self._deadlines_due)  # one timer for all calls' deadlines
        self.idle: asyncio.Event = asyncio.Event()
        self.idle.set()

    # -- asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self.peer = _peer_name(transport.get_extra_info("peername"))
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # answers are single writes: no Nagle delay
        self.server.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.connections.discard(self)
        self._transport = None
        self._deadlines.cancel()
        for stream in list(self.streams.values()):
            self._end_stream(stream, cancel=True)
        self.streams.clear()
        self._blocked.clear()
        if self._resumed is not None and not self._resumed.done():
            self._resumed.set_result(None)

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        if self._resumed is not None and not self._resumed.done():
            self._resumed.set_result(None)
        self._resumed = None

    def get_buffer(self, sizehint: int) -> memoryview:
        # A reused buffer: with plain data_received, asyncio allocates 256 KiB per read (an mmap,
        # an mremap and a munmap per call).
        return self._inbox

    def buffer_updated(self, nbytes: int) -> None:
        self.data_received(bytes(self._inbox[:nbytes]))  # one copy: the view's slice is not one

    def data_received(self, data: bytes) -> None:
        if self._pending:
            self._pending += data
            if len(self._pending) < self._need:
                return  # a large frame still arriving: no copy until it is whole
            buffer = bytes(self._pending)
            self._pending.clear()
        else:
            buffer = data
        pos = 0
        need = 0
        try:
            if not self._preface_seen:
                if len(buffer) < len(f.PREFACE):
                    if not f.PREFACE.startswith(buffer):
                        self._refuse_http1(buffer)
                    else:
                        self._keep(buffer, len(f.PREFACE))
                    return
                if not buffer.startswith(f.PREFACE):
                    self._refuse_http1(buffer)
                    return
                self._preface_seen = True
                pos = len(f.PREFACE)
                self._write(_SERVER_PREFACE)  # only now: a client speaking HTTP/1.1 gets a readable answer
            end = len(buffer)
            streams = self.streams
            while end - pos >= 9:
                first, flags, stream_id = _HEAD.unpack_from(buffer, pos)
                length = first >> 8
                if end - pos - 9 < length:
                    need = 9 + length
                    break
                kind = first & 0xFF
                stream_id &= 0x7FFF_FFFF
                start = pos + 9
                pos = start + length
                if self._header_block is not None:
                    self._frame(kind, flags, stream_id, buffer[start:pos])
                elif kind == f.WINDOW_UPDATE and length == 4:
                    # The most frequent frame (C-core acknowledges the first bytes of every answer),
                    # handled here rather than through _frame: two calls fewer per frame.
                    increment = _WINDOW.unpack_from(buffer, start)[0] & 0x7FFF_FFFF
                    if stream_id == 0:
                        self._connection_window(increment)
                    else:
                        stream = streams.get(stream_id)
                        if stream is not None:
                            stream.send_window += increment
                            if stream_id in self._blocked:
                                self._flush(stream)
                    continue
                elif kind == f.DATA:
                    self._data(flags, stream_id, buffer[start:pos])
                elif kind == f.HEADERS:
                    self._headers(flags, stream_id, buffer[start:pos])
                else:
                    self._frame(kind, flags, stream_id, buffer[start:pos])
                if self._transport is None:
                    return
        except f.ProtocolError as error:
            self._fail(error.code, str(error))
            return
        except hpack.HpackError as error:
            self._fail(f.COMPRESSION_ERROR, str(error))
            return
        if pos < len(buffer):
            self._keep(buffer[pos:], need or 9)

    def _keep(self, rest: bytes, need: int) -> None:
        self._pending += rest
        self._need = need

    # -- frames in

    def _frame(self, kind: int, flags: int, stream_id: int, payload: bytes) -> None:
        if self._header_block is not None and kind != f.CONTINUATION:
            raise f.ProtocolError(f.PROTOCOL_ERROR, "a header block was interrupted by another frame")
        if kind == f.WINDOW_UPDATE:
            self._window_update(stream_id, payload)
        elif kind == f.DATA:
            self._data(flags, stream_id, payload)
        elif kind == f.HEADERS:
            self._headers(flags, stream_id, payload)
        elif kind == f.CONTINUATION:
            self._continuation(flags, stream_id, payload)
        elif kind == f.PING:
            if len(payload) != 8:
                raise f.ProtocolError(f.FRAME_SIZE_ERROR, "a PING frame must carry 8 bytes")
            if not flags & f.ACK:
                self._write(f.frame(f.PING, f.ACK, 0, payload))
        elif kind == f.SETTINGS:
            self._settings(flags, payload)
        elif kind == f.RST_STREAM:
            stream = self.streams.get(stream_id)
            if stream is not None:
                self._end_stream(stream, cancel=True)
        elif kind == f.GOAWAY:
            self._going_away = True
        elif kind == f.PUSH_PROMISE:
            raise f.ProtocolError(f.PROTOCOL_ERROR, "clients must not send PUSH_PROMISE")
        # PRIORITY and unknown frame types are ignored, as HTTP/2 requires.

    def _data(self, flags: int, stream_id: int, payload: bytes) -> None:
        size = len(payload)
        self._received += size
        if self._received > f.MAX_WINDOW // 2:
            self._write(f.window_update(0, self._received))
            self._received = 0
        stream = self.streams.get(stream_id)
        if stream is None or stream.remote_closed:
            return  # a stream that is over (answered, reset or refused): its data is discarded
        if flags & f.PADDED:
            payload = _unpad(payload)
        if stream.body_size >= 0:
            stream.body.append(payload)
            stream.body_size += len(payload)
            if stream.body_size > self.server.max_message_bytes + 5:
                stream.body_size = -1  # refused once the request ends; keep nothing meanwhile
                stream.body.clear()
        if flags & f.END_STREAM:
            stream.remote_closed = True
            self._dispatch(stream)

    def _headers(self, flags: int, stream_id: int, payload: bytes) -> None:
        if stream_id == 0 or stream_id % 2 == 0:
            raise f.ProtocolError(f.PROTOCOL_ERROR, f"HEADERS on stream {stream_id}, which a client cannot open")
        if flags & f.PADDED:
            payload = _unpad(payload)
        if flags & f.PRIORITY_FLAG:
            payload = payload[5:]
        if flags & f.END_HEADERS:
            self._header_block_done(stream_id, flags, payload)
        else:
            self._header_block = (stream_id, flags, bytearray(payload))

    def _continuation(self, flags: int, stream_id: int, payload: bytes) -> None:
        block = self._header_block
        if block is None or block[0] != stream_id:
            raise f.ProtocolError(f.PROTOCOL_ERROR, "CONTINUATION without a header block to continue")
        block[2].extend(payload)
        if len(block[2]) > _MAX_HEADER_BLOCK:
            raise f.ProtocolError(f.PROTOCOL_ERROR, "a header block is larger than 1 MiB")
        if flags & f.END_HEADERS:
            self._header_block = None
            self._header_block_done(stream_id, block[1], bytes(block[2]))

    def _header_block_done(self, stream_id: int, flags: int, block: bytes) -> None:
        headers = self._decoder.decode(block)  # always, to keep the dynamic table in step
        existing = self.streams.get(stream_id)
        if existing is not None:  # trailers from the client end its side of the stream
            if not existing.remote_closed:
                existing.remote_closed = True
                self._dispatch(existing)
            return
        if stream_id <= self._last_stream_id:
            return  # a stream that is already over
        self._last_stream_id = stream_id
        if self._going_away or self.server.closing:
            self._write(f.rst_stream(stream_id, f.REFUSED_STREAM))
            return
        stream = Stream(stream_id, self, self._shape(block, headers), self._peer_window)
        self.streams[stream_id] = stream
        self.idle.clear()
        if flags & f.END_STREAM:
            stream.remote_closed = True
            self._dispatch(stream)

    def _shape(self, block: bytes, headers: list[tuple[str, str]]) -> Shape:
        """The request's `Shape`, computed once per distinct header list. Keyed by the header block:
        clients that index their headers send the same few bytes for every call of a method. The
        same bytes can mean other fields once the HPACK table has changed, hence the comparison."""
        cached = self._shapes.get(block)
        if cached is not None and cached[0] == headers:
            return cached[1]
        shape = shape_of(headers, self.server.route_for)
        if len(block) <= _SHAPE_BLOCK_BYTES:
            if len(self._shapes) >= _SHAPE_LIMIT:
                self._shapes.clear()
            self._shapes[block] = (headers, shape)
        return shape

    def _window_update(self, stream_id: int, payload: bytes) -> None:
        increment = f.parse_window_update(payload)
        if stream_id == 0:
            self._connection_window(increment)
            return
        stream = self.streams.get(stream_id)
        if stream is not None:
            stream.send_window += increment
            if stream.id in self._blocked:
                self._flush(stream)

    def _connection_window(self, increment: int) -> None:
        self._send_window += increment
        if self._send_window > f.MAX_WINDOW:
            raise f.ProtocolError(f.FLOW_CONTROL_ERROR, "the connection's flow-control window overflowed")
        for blocked in list(self._blocked.values()):
            self._flush(blocked)
            if self._send_window <= 0:
                break

    def _settings(self, flags: int, payload: bytes) -> None:
        if flags & f.ACK:
            return
        for key, value in f.parse_settings(payload):
            if key == f.SETTINGS_INITIAL_WINDOW_SIZE:
                delta = value - self._peer_window
                self._peer_window = value
                for stream in self.streams.values():
                    stream.send_window += delta
            elif key == f.SETTINGS_MAX_FRAME_SIZE:
                self._peer_max_frame = value
        self._write(f.frame(f.SETTINGS, f.ACK, 0))
        for stream in list(self._blocked.values()):
            self._flush(stream)

    # -- calls

    def _dispatch(self, stream: Stream) -> None:
        shape = stream.shape
        route = shape.route
        if route is None:
            assert shape.refusal is not None
            self._finish(stream, *shape.refusal)
            return
        if stream.body_size < 0:
            self._finish(stream, grpc.StatusCode.RESOURCE_EXHAUSTED,
                         f"the request is larger than the emulator's limit of {self.server.max_message_bytes} bytes")
            return
        body = stream.body[0] if len(stream.body) == 1 else b"".join(stream.body)
        stream.body = []
        message, problem = _single_message(body, shape.encoding)
        if message is None:
            assert problem is not None
            self._finish(stream, *problem)
            return
        deadline = None
        metadata = shape.metadata
        seconds = shape.timeout
        if seconds is not None:
            deadline = stream.deadline = time.monotonic() + seconds  # the loop's clock (time.monotonic)
            self._deadlines.add(deadline)
        call = Call(stream, metadata, deadline)
        refused = self.server.authenticate(metadata) if self.server.authenticate is not None else None
        if refused is not None:
            self._finish(stream, grpc.StatusCode.UNAUTHENTICATED, refused)
            return
        try:
            request = route.deserialize(message)
        except Exception as error:
            self._finish(stream, grpc.StatusCode.INVALID_ARGUMENT,
                         f"the request is not a valid {route.request_name} message: {error}")
            return
        if route.immediate is not None:
            self._run_immediate(stream, route, request, call)
        elif route.streaming:
            stream.task = self.loop.create_task(self._run_streaming(stream, route, request, call))
        else:
            stream.task = self.loop.create_task(self._run_unary(stream, route, request, call))

    def _run_immediate(self, stream: Stream, route: Route, request: Any, call: Call) -> None:
        assert route.immediate is not None
        try:
            durable, response = route.immediate(request, call)
        except (grpc.aio.AbortError, Exception) as error:
            self._end_with_error(stream, route, call, error)
            return
        if durable is None:
            self._respond(stream, route, call, response)
            return
        # An outcome that can be cancelled (a wait) is, once the call ends: answered, reset or timed out.
        stream.on_end = getattr(durable, "cancel", None)
        durable.add_done_callback(lambda done: self._answer(stream, route, call, done, response))

    def _answer(self, stream: Stream, route: Route, call: Call, done: Outcome, response: Any) -> None:
        if stream.ended:
            return
        if done.cancelled():
            self._finish(stream, grpc.StatusCode.CANCELLED, "the call was cancelled")
            return
        error = done.exception()
        if error is None:
            self._respond(stream, route, call, response)
        elif call.error_status is not None and not isinstance(error, grpc.aio.AbortError):
            self._finish(stream, *call.error_status(error))
        else:
            self._end_with_error(stream, route, call, error)

    def _respond(self, stream: Stream, route: Route, call: Call, response: Any) -> None:
        try:
            data = route.serialize(response() if callable(response) else response)
        except Exception as error:
            self._end_with_error(stream, route, call, error)
            return
        if not stream.ended:
            self._write_response(stream, data)

    async def _run_unary(self, stream: Stream, route: Route, request: Any, call: Call) -> None:
        try:
            data = route.serialize(await route.behaviour(request, call))
        except (grpc.aio.AbortError, asyncio.CancelledError, Exception) as error:
            self._end_with_error(stream, route, call, error)
            if isinstance(error, asyncio.CancelledError):
                raise
            return
        if not stream.ended:
            self._write_response(stream, data)

    async def _run_streaming(self, stream: Stream, route: Route, request: Any, call: Call) -> None:
        self._write(f.frame(f.HEADERS, f.END_HEADERS, stream.id, _RESPONSE_HEADERS))
        stream.headers_sent = True
        items: AsyncIterator[Any] = route.behaviour(request, call)
        try:
            async for item in items:
                if stream.ended:
                    break
                self.send_message(stream, route.serialize(item))
                if stream.outbox or self.paused:
                    await self._writable(stream)
        except (grpc.aio.AbortError, asyncio.CancelledError, Exception) as error:
            self._end_with_error(stream, route, call, error)
            if isinstance(error, asyncio.CancelledError):
                raise
            return
        finally:
            aclose = getattr(items, "aclose", None)
            if aclose is not None:
                await aclose()
        self._finish(stream, grpc.StatusCode.OK, "")

    def _end_with_error(self, stream: Stream, route: Route, call: Call, error: BaseException) -> None:
        """The status a call ends with when its handler raised: its abort, CANCELLED, or UNKNOWN."""
        if isinstance(error, grpc.aio.AbortError):
            self._finish(stream, call.code, call.details)
        elif isinstance(error, asyncio.CancelledError):
            self._finish(stream, grpc.StatusCode.CANCELLED, "the call was cancelled")  # no-op once ended
        else:
            logger.error("%s failed", route.path, exc_info=error)
            self._finish(stream, grpc.StatusCode.UNKNOWN, f"unexpected {type(error).__name__}: {error}")

    def _deadlines_due(self, now: float) -> float:
        if self._transport is None:
            return NEVER
        return end_due(list(self.streams.values()), now, self._deadline_passed)

    def _deadline_passed(self, stream: Stream) -> None:
        stream.deadline = None
        if stream.ended:
            return
        task = stream.task
        self._finish(stream, grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded")
        if task is not None:
            task.cancel()

    # -- frames out

    def _write(self, data: bytes, *, push: bool = False) -> None:
        """Queue bytes for the socket; everything queued in one turn of the loop goes out in one send, at the
        end of the turn (after the store's commit and the work-item pump: :mod:`durabletask.emulator.turn`).
        ``push``: the bytes carry a message of a streaming call (a work item), so the connection is flushed
        before those that only carry answers."""
        if self._transport is None:
            return
        if not self._out:
            self._turn_end.add_send(self._send_out)
        if push and not self._push_due:
            self._push_due = True
            self._turn_end.add_send(self._send_out, first=True)
        self._out.append(data)

    def _send_out(self) -> None:
        self._push_due = False
        out, self._out = self._out, []
        transport = self._transport
        if transport is not None and out:
            transport.write(out[0] if len(out) == 1 else b"".join(out))

    def _write_response(self, stream: Stream, data: bytes) -> None:
        """A unary answer: headers, the message and OK trailers, in one write when the windows allow."""
        size = len(data) + 5
        stream_id = stream.id
        if size <= self._send_window and size <= stream.send_window and size <= self._peer_max_frame:
            self._send_window -= size
            self._write(_ANSWER_HEAD.pack(_ANSWER_HEADERS, f.END_HEADERS, stream_id, _RESPONSE_HEADERS,
                                          (size << 8) | f.DATA, 0, stream_id, 0, len(data))
                        + data + _HEAD.pack(_OK_TRAILERS_FIRST, f.END_HEADERS | f.END_STREAM, stream_id)
                        + _OK_TRAILERS)
            self._close(stream)
            return
        self._write(f.frame(f.HEADERS, f.END_HEADERS, stream_id, _RESPONSE_HEADERS))
        stream.headers_sent = True
        self.send_message(stream, data)
        stream.trailers = f.frame(f.HEADERS, f.END_HEADERS | f.END_STREAM, stream_id, _OK_TRAILERS)
        self._flush(stream)

    def send_message(self, stream: Stream, data: bytes) -> None:
        """Queue one length-prefixed message on a stream whose headers are out (sent as windows allow)."""
        stream.outbox += b"\x00" + len(data).to_bytes(4, "big")
        stream.outbox += data
        self._flush(stream)

    def _flush(self, stream: Stream) -> None:
        outbox = stream.outbox
        route = stream.shape.route
        push = route is not None and route.streaming
        while outbox:
            room = min(self._send_window, stream.send_window, self._peer_max_frame, len(outbox))
            if room <= 0:
                self._blocked[stream.id] = stream
                return
            chunk = bytes(outbox[:room])
            del outbox[:room]
            self._send_window -= room
            stream.send_window -= room
            self._write(f.head(f.DATA, 0, stream.id, room) + chunk, push=push)
        self._blocked.pop(stream.id, None)
        if stream.trailers is not None:
            trailers, stream.trailers = stream.trailers, None
            self._write(trailers)
            self._close(stream)
            return
        drained = stream.drained
        if drained is not None and not self.paused:
            stream.drained = None
            if not drained.done():
                drained.set_result(None)

    async def _writable(self, stream: Stream) -> None:
        """Wait until the stream's data is out and the socket takes more (back-pressure on a stream)."""
        if stream.outbox:
            stream.drained = self.loop.create_future()
            await stream.drained
        while self.paused and self._transport is not None:
            if self._resumed is None:
                self._resumed = self.loop.create_future()
            await self._resumed

    def _finish(self, stream: Stream, code: grpc.StatusCode, details: str) -> None:
        """End the call with a status: trailers after any pending data, or a trailers-only answer."""
        if stream.ended:
            return
        fields = status_fields(code, details)
        if stream.headers_sent:
            stream.trailers = f.frame(f.HEADERS, f.END_HEADERS | f.END_STREAM, stream.id, fields)
            self._flush(stream)
        else:
            stream.outbox.clear()
            self._write(f.frame(f.HEADERS, f.END_HEADERS | f.END_STREAM, stream.id, _RESPONSE_HEADERS + fields))
            self._close(stream)

    def _close(self, stream: Stream) -> None:
        """Our side of the stream is done (END_STREAM sent)."""
        if not stream.remote_closed:  # the client is still sending: tell it to stop
            self._write(f.rst_stream(stream.id, f.NO_ERROR))
        self._end_stream(stream, cancel=False)

    def _end_stream(self, stream: Stream, *, cancel: bool) -> None:
        if stream.ended:
            return
        stream.ended = True
        stream.remote_closed = True
        self.streams.pop(stream.id, None)
        self._blocked.pop(stream.id, None)
        drained = stream.drained
        if drained is not None and not drained.done():
            drained.set_result(None)
        if cancel and stream.task is not None and not stream.task.done():
            stream.task.cancel()
        on_end = stream.on_end
        if on_end is not None:
            stream.on_end = None
            on_end()
        if not self.streams:
            self.idle.set()

    # -- connection end

    def go_away(self) -> None:
        """Tell the client no new calls are taken here (calls in flight go on)."""
        if not self._going_away:
            self._going_away = True
            self._write(f.goaway(self._last_stream_id, f.NO_ERROR, "the emulator is shutting down"))

    def abort(self) -> None:
        """Drop the connection now, cancelling its calls."""
        transport = self._transport
        if transport is not None:
            transport.abort()

    def _fail(self, code: int, message: str) -> None:
        logger.warning("closing the HTTP/2 connection from %s: %s", self.peer, message)
        self._write(f.goaway(self._last_stream_id, code, message))
        self._send_out()
        transport = self._transport
        if transport is not None:
            transport.close()
            self._transport = None
        for stream in list(self.streams.values()):
            self._end_stream(stream, cancel=True)

    def _refuse_http1(self, buffer: bytes) -> None:
        logger.info("refused a non-HTTP/2 connection from %s (%r)", self.peer, bytes(buffer[:40]))
        transport = self._transport
        if transport is not None:
            if buffer[:4] in (b"GET ", b"POST", b"HEAD", b"PUT ", b"OPTI"):
                transport.write(_HTTP1_ANSWER)
            transport.close()
            self._transport = None


def _unpad(payload: bytes) -> bytes:
    if not payload:
        raise f.ProtocolError(f.PROTOCOL_ERROR, "a padded frame has no pad length")
    pad = payload[0]
    if pad >= len(payload):
        raise f.ProtocolError(f.PROTOCOL_ERROR, "a frame's padding is longer than the frame")
    return payload[1:len(payload) - pad]


def _single_message(body: bytes, encoding: str) -> tuple[bytes | None, tuple[Any, str] | None]:
    """The one length-prefixed message of a request body, or the status to refuse it with."""
    if len(body) < 5:
        return None, (grpc.StatusCode.INTERNAL, "the request has no message (a gRPC call sends exactly one)")
    length = int.from_bytes(body[1:5], "big")
    if len(body) != 5 + length:
        return None, (grpc.StatusCode.INTERNAL, "the request body is not exactly one length-prefixed gRPC message")
    if body[0]:
        if encoding != "gzip":
            return None, (grpc.StatusCode.UNIMPLEMENTED,
                          f"compressed requests with grpc-encoding '{encoding}' are not supported (use gzip or none)")
        return gzip.decompress(body[5:]), None
    return body[5:], None


def _peer_name(address: Any) -> str:
    if isinstance(address, tuple) and len(address) >= 2:
        host, port = address[0], address[1]
        return f"ipv6:[{host}]:{port}" if ":" in str(host) else f"ipv4:{host}:{port}"
    return str(address)
