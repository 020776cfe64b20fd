"""One gRPC call on the SDK's HTTP/2 client: the messages it received and the status it ended with.

`ClientStream` is the state a `durabletask.internal.h2.client.Connection` keeps per stream and the
call object reads: length-prefixed gRPC messages are cut out of DATA payloads as they complete
(a message split over many frames is gathered in one growing buffer, never re-joined), and the
response's trailers become a status code and details as gRPC defines them.
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import zlib
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote_to_bytes

import grpc

from durabletask.internal.h2 import frames as f

if TYPE_CHECKING:
    from durabletask.internal.h2.client import Connection

OK = grpc.StatusCode.OK
_CODES = {code.value[0]: code for code in grpc.StatusCode}
# gRPC's mapping of HTTP/2 stream errors and of HTTP statuses without a grpc-status (doc/statuscodes.md).
RESET_CODES = {f.REFUSED_STREAM: grpc.StatusCode.UNAVAILABLE, f.CANCEL: grpc.StatusCode.CANCELLED,
               f.ENHANCE_YOUR_CALM: grpc.StatusCode.RESOURCE_EXHAUSTED,
               f.INADEQUATE_SECURITY: grpc.StatusCode.PERMISSION_DENIED}
_HTTP_CODES = {400: grpc.StatusCode.INTERNAL, 401: grpc.StatusCode.UNAUTHENTICATED,
               403: grpc.StatusCode.PERMISSION_DENIED, 404: grpc.StatusCode.UNIMPLEMENTED,
               429: grpc.StatusCode.UNAVAILABLE, 502: grpc.StatusCode.UNAVAILABLE,
               503: grpc.StatusCode.UNAVAILABLE, 504: grpc.StatusCode.UNAVAILABLE}
_NOT_METADATA = frozenset({"content-type", "grpc-status", "grpc-message", "grpc-encoding", "grpc-accept-encoding"})

Problem = tuple[grpc.StatusCode, str]


class ClientStream:
    """One call: what is left to send, the messages received, and how the call ended."""

    __slots__ = (
        "body",
        "body_pos",
        "callbacks",
        "code",
        "connection",
        "deadline",
        "deliver_due",
        "details",
        "encoding",
        "ended",
        "headers",
        "id",
        "local_closed",
        "locally_cancelled",
        "max_receive",
        "messages",
        "need",
        "on_messages",
        "pending",
        "received",
        "remote_closed",
        "send_window",
        "streaming",
        "trailers",
        "waiter",
    )

    def __init__(self, *, streaming: bool, max_receive: int) -> None:
        self.id = 0  # given when the request is sent
        self.connection: Connection | None = None
        self.streaming = streaming
        """Wake the reader for every message; a unary call is woken only when it ends."""
        self.max_receive = max_receive
        self.messages: deque[bytes] = deque()
        self.pending: bytearray | None = None  # the start of a message still arriving
        self.need = 5  # bytes ``pending`` must hold before it is worth parsing again
        self.waiter: asyncio.Future[None] | None = None
        self.body = b""  # request bytes waiting for a window, from ``body_pos``
        self.body_pos = 0
        self.local_closed = False  # END_STREAM (or RST_STREAM) sent
        self.remote_closed = False  # END_STREAM (or RST_STREAM) received
        self.send_window = 0
        self.received = 0  # DATA bytes since the stream's window was last topped up
        self.headers: list[tuple[str, str]] | None = None
        self.trailers: list[tuple[str, str]] = []
        self.encoding = "identity"
        self.ended = False
        self.code = OK
        self.details = ""
        self.locally_cancelled = False
        self.deadline: float | None = None  # loop time after which the call ends with DEADLINE_EXCEEDED
        self.callbacks: list[Callable[[], None]] | None = None
        self.on_messages: Callable[[], None] | None = None
        """Set on a streaming call that takes its messages as they come instead of waiting for them:
        the connection calls it once it has parsed what one read brought (`Connection.deliver_later`)."""
        self.deliver_due = False

    def receive(self, view: memoryview, start: int, end: int) -> Problem | None:
        """Take the DATA payload ``view[start:end]``; the status to end the call with if it cannot go on."""
        pending = self.pending
        if pending is None:
            pos, problem = self._cut(view, start, end)
            if pos < end and problem is None:
                self.pending = bytearray(view[pos:end])
                self._update_need()
        else:
            pending += view[start:end]
            if len(pending) < self.need:
                return None
            with memoryview(pending) as whole:
                pos, problem = self._cut(whole, 0, len(pending))
            if pos >= len(pending) or problem is not None:
                self.pending = None
            else:
                del pending[:pos]
                self._update_need()
        if self.on_messages is not None:
            if self.messages and not self.deliver_due and self.connection is not None:
                self.deliver_due = True
                self.connection.deliver_later(self)
        elif self.streaming and self.messages and self.waiter is not None:
            waiter, self.waiter = self.waiter, None
            if not waiter.done():
                waiter.set_result(None)
        return problem

    def _cut(self, view: memoryview, pos: int, end: int) -> tuple[int, Problem | None]:
        """Cut the complete messages out of ``view[pos:end]``; returns where the rest starts."""
        while end - pos >= 5:
            size = int.from_bytes(view[pos + 1:pos + 5], "big")
            if size > self.max_receive:
                return end, (grpc.StatusCode.RESOURCE_EXHAUSTED,
                             f"Received message larger than max ({size} vs. {self.max_receive})")
            if end - pos - 5 < size:
                break
            message = bytes(view[pos + 5:pos + 5 + size])
            if view[pos]:
                try:
                    message = self._decompress(message)
                except ValueError as error:
                    return end, (grpc.StatusCode.INTERNAL, str(error))
                if len(message) > self.max_receive:
                    return end, (grpc.StatusCode.RESOURCE_EXHAUSTED,
                                 f"Received message larger than max ({len(message)} vs. {self.max_receive})")
            self.messages.append(message)
            pos += 5 + size
        return pos, None

    def _decompress(self, message: bytes) -> bytes:
        try:
            if self.encoding == "gzip":
                return gzip.decompress(message)
            if self.encoding == "deflate":
                return zlib.decompress(message)
        except (OSError, EOFError, zlib.error) as error:
            raise ValueError(f"cannot decompress a response message ({self.encoding}): {error}") from None
        raise ValueError(f"a compressed response message with grpc-encoding '{self.encoding}', which is not supported")

    def _update_need(self) -> None:
        pending = self.pending
        assert pending is not None
        self.need = 5 + int.from_bytes(pending[1:5], "big") if len(pending) >= 5 else 5

    def cancel(self) -> None:
        """End the call from our side (RST_STREAM) with status CANCELLED; nothing if it is over."""
        if self.connection is not None:
            self.connection.cancel(self)

    def finish(self, code: grpc.StatusCode, details: str) -> None:
        """Record how the call ended and wake its reader (the connection's bookkeeping is done by then)."""
        if self.ended:
            return
        self.ended = True
        self.code = code
        self.details = details
        self.body = b""
        self.pending = None
        waiter = self.waiter
        if waiter is not None:
            self.waiter = None
            if not waiter.done():
                waiter.set_result(None)
        callbacks, self.callbacks = self.callbacks, None
        for callback in callbacks or ():
            callback()


def status_of(fields: list[tuple[str, str]], http_status: str, mid_message: bool) -> Problem:
    """The status of a call from its trailers (or a trailers-only response)."""
    code: grpc.StatusCode | None = None
    details = ""
    for name, value in fields:
        if name == "grpc-status":
            code = _CODES.get(int(value), grpc.StatusCode.UNKNOWN) if value.isdigit() else grpc.StatusCode.UNKNOWN
        elif name == "grpc-message":
            details = percent_decode(value)
    if code is None:
        if http_status != "200":
            return http_code(http_status), f"the server answered with HTTP status {http_status or 'none'}"
        return grpc.StatusCode.UNKNOWN, "the server ended the call without a grpc-status"
    if mid_message and code is OK:
        return grpc.StatusCode.INTERNAL, "the server ended the call in the middle of a message"
    return code, details


def http_code(status: str) -> grpc.StatusCode:
    return _HTTP_CODES.get(int(status), grpc.StatusCode.UNKNOWN) if status.isdigit() else grpc.StatusCode.UNKNOWN


def percent_decode(value: str) -> str:
    """A grpc-message value: percent-encoded UTF-8 (the header decoder gave its bytes as latin-1)."""
    if "%" not in value:
        return value if value.isascii() else value.encode("latin-1").decode("utf-8", "replace")
    return unquote_to_bytes(value.encode("latin-1")).decode("utf-8", "replace")


def metadata_of(fields: list[tuple[str, str]] | None) -> tuple[tuple[str, Any], ...]:
    """Application metadata of a header block: no pseudo-headers or gRPC's own fields; ``-bin`` values decoded."""
    pairs: list[tuple[str, Any]] = []
    for name, value in fields or ():
        if name[:1] == ":" or name in _NOT_METADATA:
            continue
        if name.endswith("-bin"):
            try:
                pairs.append((name, base64.b64decode(value + "=" * (-len(value) % 4))))
            except ValueError:
                continue
        else:
            pairs.append((name, value))
    return tuple(pairs)
