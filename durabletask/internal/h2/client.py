"""The client side of one HTTP/2 connection carrying gRPC calls (cleartext, prior knowledge).

`Connection` is an ``asyncio.BufferedProtocol``: the socket is read into one reused buffer (a plain
``Protocol`` would have asyncio allocate a fresh 256 KiB ``bytes`` per read), whole frames are
parsed from it and acted on at once, and gRPC messages are cut out of DATA frames into the call's
`ClientStream` as they complete. Frames written during one turn of the loop leave in one send.

Flow control: the receive windows of the connection and of every stream are opened to the
maximum at the start and topped up as data arrives, so the server never waits for us (a response
message is bounded by the receive limit instead). What we send respects the server's windows and
maximum frame size.

The state of each call is a `durabletask.internal.h2.client_stream.ClientStream`; the gRPC API on
top (channel, multicallables, call objects, errors) is `durabletask.internal.grpc.h2_channel`.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections import deque
from collections.abc import Callable

import grpc

from durabletask.internal.h2 import frames as f
from durabletask.internal.h2 import hpack
from durabletask.internal.h2.client_stream import RESET_CODES, ClientStream, http_code, status_of
from durabletask.internal.h2.deadlines import NEVER, Deadlines, end_due

logger = logging.getLogger("durabletask.grpc")

_BUFFER = 256 * 1024  # the receive buffer, grown for a frame that does not fit
_MIN_FREE = 64 * 1024  # room offered to each read
_OUR_MAX_FRAME = 1 << 20
_REFILL = f.MAX_WINDOW // 2  # received bytes after which a window is topped up again
_LAST_STREAM_ID = 2**31 - 1
_CLIENT_PREFACE = f.PREFACE + f.settings({
    f.SETTINGS_ENABLE_PUSH: 0,
    f.SETTINGS_INITIAL_WINDOW_SIZE: f.MAX_WINDOW,
    f.SETTINGS_MAX_FRAME_SIZE: _OUR_MAX_FRAME,
}) + f.window_update(0, f.MAX_WINDOW - f.DEFAULT_WINDOW)
_MAX_HEADER_BLOCK = 1 << 20


class Connection(asyncio.BufferedProtocol):
    """One HTTP/2 connection to a gRPC server, shared by the calls of a channel."""

    def __init__(self, loop: asyncio.AbstractEventLoop, on_closed: Callable[[Connection], None]) -> None:
        self.loop = loop
        self.usable = False
        """True while new calls may start here: connected, no GOAWAY, stream ids left."""
        self.streams: dict[int, ClientStream] = {}
        self._on_closed = on_closed
        self._transport: asyncio.Transport | None = None
        self._buf = bytearray(_BUFFER)
        self._view = memoryview(self._buf)
        self._rstart = 0  # unparsed bytes are _buf[_rstart:_rend]
        self._rend = 0
        self._frame_size = 9  # bytes the next frame needs in the buffer
        self._decoder = hpack.Decoder()
        self._header_block: tuple[int, int, bytearray] | None = None  # stream id, flags, fragments
        self._next_id = 1
        self._peer_window = f.DEFAULT_WINDOW  # initial window of each stream we send on
        self._peer_max_frame = f.DEFAULT_MAX_FRAME
        self._peer_max_streams = 2**31
        self._send_window = f.DEFAULT_WINDOW
        self._received = 0
        self._blocked: dict[int, ClientStream] = {}
        self._queued: deque[tuple[ClientStream, bytes, bytes]] = deque()  # over the server's stream limit
        self._table_update = b""  # a dynamic table size update owed at the start of the next header block
        self._out: list[bytes] = []
        self._holding = False  # `start` decides itself when its frames leave
        self._corked = 0  # inside `cork`: frames leave at the end of the batch
        self._deliveries: list[ClientStream] = []  # streams with messages for their `on_messages`
        self._closed_reason: str | None = None
        self._deadlines = Deadlines(loop, self._deadlines_due)
        self.read_pause = 0.0
        """Seconds to leave the socket unread after each read (0: read as data arrives), for a connection
        whose responses nobody waits on (see `H2Channel.read_pause`). It reads at once whenever a
        request waits for the server (for a flow-control window or under its stream limit)."""
        self._resume_timer: asyncio.TimerHandle | None = None

    # -- asyncio.BufferedProtocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.usable = True
        self._write(_CLIENT_PREFACE)

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        self.usable = False
        if self._resume_timer is not None:
            self._resume_timer.cancel()
            self._resume_timer = None
        self._deadlines.cancel()
        reason = self._closed_reason or (f"the connection to the server was lost: {exc}" if exc is not None
                                         else "the server closed the connection")
        self._fail_all(grpc.StatusCode.UNAVAILABLE, reason)
        self._on_closed(self)

    def eof_received(self) -> bool:
        return False

    def get_buffer(self, sizehint: int) -> memoryview:
        pending = self._rend - self._rstart
        needed = max(_MIN_FREE, self._frame_size - pending)  # room for the rest of the frame, or a good read
        if len(self._buf) - self._rend >= needed:
            return self._view[self._rend:]
        if pending + needed <= len(self._buf):
            self._buf[:pending] = self._buf[self._rstart:self._rend]  # the partial frame moves to the front
        else:
            grown = bytearray(max(2 * len(self._buf), pending + needed))
            grown[:pending] = self._view[self._rstart:self._rend]
            self._buf = grown
            self._view = memoryview(grown)
        self._rstart, self._rend = 0, pending
        return self._view[pending:]

    def buffer_updated(self, nbytes: int) -> None:
        self._rend += nbytes
        buf = self._buf
        pos = self._rstart
        end = self._rend
        try:
            while end - pos >= 9:
                length, kind, flags, stream_id = f.parse_head(buf, pos)
                if end - pos - 9 < length:
                    if length > _OUR_MAX_FRAME:
                        raise f.ProtocolError(f.FRAME_SIZE_ERROR, f"a frame of {length} bytes, above our maximum")
                    self._frame_size = 9 + length
                    break
                start = pos + 9
                pos = start + length
                if self._header_block is not None and kind != f.CONTINUATION:
                    raise f.ProtocolError(f.PROTOCOL_ERROR, "a header block was interrupted by another frame")
                if kind == f.DATA:
                    self._data(flags, stream_id, start, length)
                elif kind == f.HEADERS:
                    self._headers(flags, stream_id, start, length)
                else:
                    self._control(kind, flags, stream_id, bytes(self._view[start:pos]))
                if self._transport is None:
                    return
            else:
                self._frame_size = 9
        except f.ProtocolError as error:
            self._fail_connection(error.code, str(error))
            return
        except hpack.HpackError as error:
            self._fail_connection(f.COMPRESSION_ERROR, str(error))
            return
        if pos == end:
            self._rstart = self._rend = 0
        else:
            self._rstart = pos
        if self._deliveries:
            self._deliver()
        if self.read_pause and self._resume_timer is None and not self._blocked and not self._queued:
            transport = self._transport
            if transport is not None:
                transport.pause_reading()
                self._resume_timer = self.loop.call_later(self.read_pause, self._resume_reading)

    def read_now(self) -> None:
        """End a pause of `read_pause`: read what the server has sent (and go on pausing after reads)."""
        if self._resume_timer is not None:
            self._resume_timer.cancel()
            self._resume_reading()

    def _resume_reading(self) -> None:
        self._resume_timer = None
        if self._transport is not None:
            self._transport.resume_reading()

    def deliver_later(self, stream: ClientStream) -> None:
        """Call ``stream.on_messages`` once the bytes being parsed are done with (all its messages at once)."""
        self._deliveries.append(stream)

    def _deliver(self) -> None:
        """Hand messages to the streams that take them as they come; what they send leaves in one send."""
        streams, self._deliveries = self._deliveries, []
        self.cork()
        try:
            for stream in streams:
                stream.deliver_due = False
                handler = stream.on_messages
                if handler is not None and stream.messages:
                    handler()
        finally:
            self.uncork()

    def cork(self) -> None:
        """Hold the frames written from now on until `uncork`: calls started in a batch leave in one send."""
        self._corked += 1
        self._holding = True

    def uncork(self) -> None:
        self._corked -= 1
        if not self._corked:
            self._holding = False
            if self._out:
                self._send_out()

    # -- calls

    def start(self, stream: ClientStream, block: bytes, body: bytes, deadline: float | None) -> None:
        """Send a request: ``block`` is its header block, ``body`` its length-prefixed message."""
        stream.connection = self
        if deadline is not None:
            stream.deadline = deadline
            self._deadlines.add(deadline)
        if len(self.streams) >= self._peer_max_streams:
            self._queued.append((stream, block, body))
            self.read_now()  # the streams that are over free their places only once their ends are read
            return
        if self._out or self._corked or self._transport is None:
            self._open(stream, block, body)  # joins the send already due this turn, or the corked batch
            return
        self._holding = True
        try:
            self._open(stream, block, body)
        finally:
            self._holding = False
        if not getattr(self.loop, "_ready", True):
            self._send_out()  # nothing else will run before the loop polls: no later write to wait for
        else:
            self.loop.call_soon(self._send_out)

    def cancel(self, stream: ClientStream, details: str = "Locally cancelled by application!") -> None:
        """End a call from our side (RST_STREAM CANCEL) with status CANCELLED."""
        if stream.ended:
            return
        stream.locally_cancelled = True
        self._close_stream(stream, grpc.StatusCode.CANCELLED, details, reset=f.CANCEL)

    def expire(self, stream: ClientStream) -> None:
        """End a call whose deadline passed (RST_STREAM CANCEL) with status DEADLINE_EXCEEDED."""
        self._close_stream(stream, grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded", reset=f.CANCEL)

    def close(self, details: str) -> None:
        """Close the connection now; its calls end as cancelled locally."""
        self.usable = False
        queued = [item[0] for item in self._queued]
        self._queued.clear()
        for stream in list(self.streams.values()) + queued:
            self.cancel(stream, details)
        transport = self._transport
        if transport is not None:
            self._send_out()
            transport.close()

    def _open(self, stream: ClientStream, block: bytes, body: bytes) -> None:
        stream_id = stream.id = self._next_id
        self._next_id += 2
        if self._next_id > _LAST_STREAM_ID:
            self.usable = False  # the channel opens another connection for the next call
        self.streams[stream_id] = stream
        stream.send_window = self._peer_window
        if self._table_update:
            block = self._table_update + block
            self._table_update = b""
        if len(block) <= self._peer_max_frame:
            self._write(f.head(f.HEADERS, f.END_HEADERS, stream_id, len(block)), block)
        else:
            self._write(*f.header_frames(stream_id, block, self._peer_max_frame, end_stream=False))
        size = len(body)
        if size <= self._send_window and size <= stream.send_window and size <= self._peer_max_frame:
            self._send_window -= size
            stream.send_window -= size
            stream.local_closed = True
            self._write(f.head(f.DATA, f.END_STREAM, stream_id, size), body)
        else:
            stream.body = body
            self._flush(stream)

    def _flush(self, stream: ClientStream) -> None:
        body = stream.body
        pos = stream.body_pos
        while pos < len(body):
            room = min(self._send_window, stream.send_window, self._peer_max_frame, len(body) - pos)
            if room <= 0:
                stream.body_pos = pos
                self._blocked[stream.id] = stream
                self.read_now()  # for the server's WINDOW_UPDATE
                return
            self._send_window -= room
            stream.send_window -= room
            last = pos + room >= len(body)
            self._write(f.head(f.DATA, f.END_STREAM if last else 0, stream.id, room), body[pos:pos + room])
            pos += room
        stream.body = b""
        stream.body_pos = 0
        stream.local_closed = True
        self._blocked.pop(stream.id, None)

    def _close_stream(self, stream: ClientStream, code: grpc.StatusCode, details: str, *,
                      reset: int | None = None) -> None:
        """Forget a stream that is over and wake its reader; ``reset`` sends RST_STREAM if it is still open."""
        if stream.ended:
            return
        if self.streams.pop(stream.id, None) is not None:
            self._blocked.pop(stream.id, None)
            if reset is not None and not (stream.local_closed and stream.remote_closed):
                self._write(f.rst_stream(stream.id, reset))
            stream.local_closed = stream.remote_closed = True
            if self._queued and self.usable:
                self._open_queued()
        elif stream.id == 0:
            self._drop_queued(stream)
        stream.finish(code, details)
        if not self.usable and not self.streams and not self._queued and self._transport is not None:
            self._send_out()
            self._transport.close()  # after GOAWAY or with ids used up: the last call is over

    def _open_queued(self) -> None:
        while self._queued and len(self.streams) < self._peer_max_streams:
            stream, block, body = self._queued.popleft()
            self._open(stream, block, body)

    def _drop_queued(self, stream: ClientStream) -> None:
        self._queued = deque(queued for queued in self._queued if queued[0] is not stream)

    def _deadlines_due(self, now: float) -> float:
        if self._transport is None:
            return NEVER
        return end_due(list(self.streams.values()) + [item[0] for item in self._queued], now, self.expire)

    def _fail_all(self, code: grpc.StatusCode, details: str) -> None:
        self.usable = False
        queued = [item[0] for item in self._queued]
        self._queued.clear()
        for stream in list(self.streams.values()) + queued:
            self._close_stream(stream, code, details)
        self._blocked.clear()

    # -- frames in

    def _data(self, flags: int, stream_id: int, start: int, length: int) -> None:
        self._received += length
        if self._received > _REFILL:
            self._write(f.window_update(0, self._received))
            self._received = 0
        stream = self.streams.get(stream_id)
        if stream is None:
            if stream_id == 0:
                raise f.ProtocolError(f.PROTOCOL_ERROR, "DATA on stream 0")
            return  # a call that is over (cancelled, timed out): its data is dropped
        stream.received += length
        if stream.received > _REFILL:
            self._write(f.window_update(stream_id, stream.received))
            stream.received = 0
        if stream.headers is None:
            raise f.ProtocolError(f.PROTOCOL_ERROR, f"DATA before the response headers on stream {stream_id}")
        end = start + length
        if flags & f.PADDED:
            if not length or self._buf[start] >= length:
                raise f.ProtocolError(f.PROTOCOL_ERROR, "a DATA frame's padding is longer than the frame")
            end -= self._buf[start]
            start += 1
        if end > start:
            problem = stream.receive(self._view, start, end)
            if problem is not None:
                self._close_stream(stream, *problem, reset=f.CANCEL)
                return
        if flags & f.END_STREAM and not stream.ended:
            stream.remote_closed = True
            self._close_stream(stream, grpc.StatusCode.INTERNAL,
                               "the server ended the call without a status (no trailers)", reset=f.CANCEL)

    def _headers(self, flags: int, stream_id: int, start: int, length: int) -> None:
        if stream_id == 0:
            raise f.ProtocolError(f.PROTOCOL_ERROR, "HEADERS on stream 0")
        end = start + length
        if flags & f.PADDED:
            if not length or self._buf[start] >= length:
                raise f.ProtocolError(f.PROTOCOL_ERROR, "a HEADERS frame's padding is longer than the frame")
            end -= self._buf[start]
            start += 1
        if flags & f.PRIORITY_FLAG:
            start += 5
            if start > end:
                raise f.ProtocolError(f.FRAME_SIZE_ERROR, "a HEADERS frame too short for its priority fields")
        block = bytes(self._view[start:end])
        if flags & f.END_HEADERS:
            self._header_block_done(stream_id, flags, block)
        else:
            self._header_block = (stream_id, flags, bytearray(block))

    def _header_block_done(self, stream_id: int, flags: int, block: bytes) -> None:
        fields = self._decoder.decode(block)  # always, to keep the dynamic table in step
        stream = self.streams.get(stream_id)
        if stream is None:
            return
        if stream.headers is None:
            stream.headers = fields
            status = ""
            for name, value in fields:
                if name == ":status":
                    status = value
                elif name == "grpc-encoding":
                    stream.encoding = value
            if flags & f.END_STREAM:
                self._trailers(stream, fields, status)
            elif status != "200":
                self._close_stream(stream, http_code(status),
                                   f"the server answered with HTTP status {status or 'none'}", reset=f.CANCEL)
            return
        if not flags & f.END_STREAM:
            raise f.ProtocolError(f.PROTOCOL_ERROR, f"a second header block without END_STREAM on stream {stream_id}")
        self._trailers(stream, fields, "200")

    def _trailers(self, stream: ClientStream, fields: list[tuple[str, str]], http_status: str) -> None:
        stream.trailers = fields
        stream.remote_closed = True
        self._close_stream(stream, *status_of(fields, http_status, stream.pending is not None), reset=f.CANCEL)

    def _control(self, kind: int, flags: int, stream_id: int, payload: bytes) -> None:
        if kind == f.CONTINUATION:
            block = self._header_block
            if block is None or block[0] != stream_id:
                raise f.ProtocolError(f.PROTOCOL_ERROR, "CONTINUATION without a header block to continue")
            block[2].extend(payload)
            if len(block[2]) > _MAX_HEADER_BLOCK:
                raise f.ProtocolError(f.PROTOCOL_ERROR, "a header block is larger than 1 MiB")
            if flags & f.END_HEADERS:
                self._header_block = None
                self._header_block_done(stream_id, block[1], bytes(block[2]))
        elif kind == f.WINDOW_UPDATE:
            self._window_update(stream_id, payload)
        elif kind == f.PING:
            if len(payload) != 8:
                raise f.ProtocolError(f.FRAME_SIZE_ERROR, "a PING frame must carry 8 bytes")
            if not flags & f.ACK:
                self._write(f.frame(f.PING, f.ACK, 0, payload))
        elif kind == f.SETTINGS:
            self._settings(flags, payload)
        elif kind == f.RST_STREAM:
            if len(payload) != 4:
                raise f.ProtocolError(f.FRAME_SIZE_ERROR, "a RST_STREAM frame must carry 4 bytes")
            stream = self.streams.get(stream_id)
            if stream is not None:
                error = f.parse_error_code(payload)
                stream.local_closed = stream.remote_closed = True
                self._close_stream(stream, RESET_CODES.get(error, grpc.StatusCode.INTERNAL),
                                   f"the server reset the stream (HTTP/2 error code {error})")
        elif kind == f.GOAWAY:
            self._goaway(payload)
        elif kind == f.PUSH_PROMISE:
            raise f.ProtocolError(f.PROTOCOL_ERROR, "PUSH_PROMISE although push is disabled")
        # PRIORITY and unknown frame types are ignored, as HTTP/2 requires.

    def _window_update(self, stream_id: int, payload: bytes) -> None:
        increment = f.parse_window_update(payload)
        if stream_id == 0:
            self._send_window += increment
            if self._send_window > f.MAX_WINDOW:
                raise f.ProtocolError(f.FLOW_CONTROL_ERROR, "the connection's flow-control window overflowed")
            for blocked in list(self._blocked.values()):
                if self._send_window <= 0:
                    break
                self._flush(blocked)
            return
        stream = self.streams.get(stream_id)
        if stream is not None:
            stream.send_window += increment
            if stream_id in self._blocked:
                self._flush(stream)

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
            elif key == f.SETTINGS_MAX_CONCURRENT_STREAMS:
                self._peer_max_streams = value
            elif key == f.SETTINGS_HEADER_TABLE_SIZE and value < hpack.DEFAULT_TABLE_SIZE:
                self._table_update = hpack.table_size_update(0)  # we never index; say so as RFC 7541 4.2 asks
        self._write(f.frame(f.SETTINGS, f.ACK, 0))
        for stream in list(self._blocked.values()):
            self._flush(stream)
        if self._queued and self.usable:
            self._open_queued()

    def _goaway(self, payload: bytes) -> None:
        if len(payload) < 8:
            raise f.ProtocolError(f.FRAME_SIZE_ERROR, "a GOAWAY frame must carry at least 8 bytes")
        last_id, code, debug = f.parse_goaway(payload)
        self.usable = False
        text = debug.decode("utf-8", "replace")
        note = f"the server is going away (GOAWAY, HTTP/2 error code {code}{': ' + text if text else ''})"
        self._closed_reason = note
        logger.debug("%s; last stream it handles: %d", note, last_id)
        queued = [item[0] for item in self._queued]
        self._queued.clear()
        for stream in [s for s in self.streams.values() if s.id > last_id] + queued:
            self._close_stream(stream, grpc.StatusCode.UNAVAILABLE, f"{note} before taking the call")
        if not self.streams and self._transport is not None:
            self._send_out()
            self._transport.close()

    def _fail_connection(self, code: int, message: str) -> None:
        """End the connection after a protocol error; `connection_lost` follows."""
        logger.warning("closing the HTTP/2 connection to the gRPC server: %s", message)
        self._write(f.goaway(0, code, message))
        self._fail_all(grpc.StatusCode.INTERNAL, f"HTTP/2 protocol error: {message}")
        transport = self._transport
        if transport is not None:
            self._send_out()
            transport.close()
            self._transport = None

    # -- frames out

    def _write(self, *data: bytes) -> None:
        """Queue bytes for the socket; everything queued in one turn of the loop goes out in one send."""
        if self._transport is None:
            return
        if not self._out and not self._holding:
            self.loop.call_soon(self._send_out)
        self._out += data

    def _send_out(self) -> None:
        out, self._out = self._out, []
        transport = self._transport
        if transport is not None and out:
            transport.write(out[0] if len(out) == 1 else b"".join(out))
