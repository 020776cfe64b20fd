"""One gRPC call on the emulator's own HTTP/2 server: what a handler sees, and the status it ends with.

`Call` offers the subset of ``grpc.aio.ServicerContext`` the emulator's service uses
(``invocation_metadata``, ``time_remaining``, ``done``, ``abort``, ``peer``), so the same service
runs on this server and on ``grpc.aio``.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NoReturn

import grpc
import grpc.aio

from durabletask.internal.h2 import hpack

if TYPE_CHECKING:
    from durabletask.emulator.h2.connection import Stream
    from durabletask.emulator.h2.server import Route

_TIMEOUT_UNITS = {"H": 3600.0, "M": 60.0, "S": 1.0, "m": 1e-3, "u": 1e-6, "n": 1e-9}
# Headers that belong to HTTP/2 or gRPC itself rather than to the application's metadata.
_NOT_METADATA = frozenset({"content-type", "te", "grpc-timeout", "grpc-encoding", "grpc-accept-encoding"})


class Call:
    """The context of one call, handed to the handler as its ``context`` argument."""

    __slots__ = ("_metadata", "_stream", "code", "deadline", "details", "error_status")

    def __init__(self, stream: Stream, metadata: tuple[tuple[str, str | bytes], ...], deadline: float | None) -> None:
        self._stream = stream
        self._metadata = metadata
        self.deadline = deadline
        """``time.monotonic()`` value after which the caller has given up, if it set a deadline."""
        self.code = grpc.StatusCode.OK
        self.details = ""
        self.error_status: Callable[[BaseException], tuple[grpc.StatusCode, str]] | None = None
        """For ``Route.immediate`` calls: the status to end with if the awaited future fails with an error."""

    def invocation_metadata(self) -> tuple[tuple[str, str | bytes], ...]:
        """The caller's metadata: ``(key, value)`` pairs, values of ``-bin`` keys as bytes."""
        return self._metadata

    def time_remaining(self) -> float | None:
        """Seconds left before the caller's deadline, or None without one."""
        return None if self.deadline is None else max(0.0, self.deadline - time.monotonic())

    def done(self) -> bool:
        """True once the call has ended: answered, cancelled by the caller, or its connection lost."""
        return self._stream.ended

    def peer(self) -> str:
        """The caller's address in gRPC's form, such as ``ipv4:127.0.0.1:50000``."""
        return self._stream.connection.peer

    def send_now(self, message: bytes) -> bool:
        """Write one message of a server-streaming answer now, unless something must go out first.

        False when the call is over, its headers are not out yet, earlier data is waiting for a
        flow-control window, or the socket is full: the handler then yields the message as usual.
        """
        stream = self._stream
        if stream.ended or not stream.headers_sent or stream.outbox or stream.connection.paused:
            return False
        stream.connection.send_message(stream, message)
        return True

    async def abort(self, code: grpc.StatusCode, details: str = "") -> NoReturn:
        """End the call with ``code`` and ``details`` (raises, like ``grpc.aio``'s ``abort``)."""
        self.fail(code, details)

    def fail(self, code: grpc.StatusCode, details: str = "") -> NoReturn:
        """`abort` for code that does not await: records the status and raises ``grpc.aio.AbortError``."""
        if code == grpc.StatusCode.OK:
            raise ValueError("abort needs an error status code, not OK")
        self.code = code
        self.details = details
        raise grpc.aio.AbortError(details)


class Shape:
    """What a request's headers say about its call: the route (or why it is refused), the metadata,
    the timeout and the message encoding. A pure function of the header list, so a connection
    computes it once per distinct list: clients send the same headers for every call of a method."""

    __slots__ = ("encoding", "metadata", "refusal", "route", "timeout")

    def __init__(self, route: Route | None, refusal: tuple[grpc.StatusCode, str] | None,
                 metadata: tuple[tuple[str, str | bytes], ...], timeout: float | None, encoding: str) -> None:
        self.route = route
        self.refusal = refusal
        self.metadata = metadata
        self.timeout = timeout
        """Seconds of ``grpc-timeout``, or None without one (or a malformed one, which is ignored)."""
        self.encoding = encoding
        """``grpc-encoding``: how a compressed request message is compressed."""


def shape_of(headers: list[tuple[str, str]], route_for: Callable[[list[tuple[str, str]]], Any]) -> Shape:
    """The `Shape` of a request's headers; ``route_for`` is the server's `GrpcServer.route_for`."""
    route, refusal = route_for(headers)
    timeout = encoding = None
    for name, value in headers:  # the first of each counts
        if name == "grpc-timeout" and timeout is None:
            timeout = value
        elif name == "grpc-encoding" and encoding is None:
            encoding = value
    seconds = parse_timeout(timeout) if timeout is not None else None
    return Shape(route, refusal, metadata_pairs(headers), seconds, encoding or "identity")


def parse_timeout(value: str) -> float | None:
    """Seconds of a ``grpc-timeout`` value (``100m``, ``5S``), or None if it is malformed."""
    unit = _TIMEOUT_UNITS.get(value[-1:])
    digits = value[:-1]
    if unit is None or not digits.isdigit() or len(digits) > 8:
        return None
    return int(digits) * unit


def metadata_pairs(headers: list[tuple[str, str]]) -> tuple[tuple[str, str | bytes], ...]:
    pairs: list[tuple[str, str | bytes]] = []
    for name, value in headers:
        if name[0] == ":" or name in _NOT_METADATA:
            continue
        if name.endswith("-bin"):
            pairs.append((name, base64.b64decode(value + "=" * (-len(value) % 4))))
        else:
            pairs.append((name, value))
    return tuple(pairs)


def _percent_encode(text: str) -> str:
    raw = text.encode("utf-8", "replace")
    if all(0x20 <= b <= 0x7E and b != 0x25 for b in raw):
        return text
    return "".join(chr(b) if 0x20 <= b <= 0x7E and b != 0x25 else f"%{b:02X}" for b in raw)


def status_fields(code: grpc.StatusCode, details: str) -> bytes:
    """HPACK fields ``grpc-status`` and, if any, ``grpc-message`` (percent-encoded)."""
    fields = hpack.literal("grpc-status", str(code.value[0]))
    if details:
        fields += hpack.literal("grpc-message", _percent_encode(details))
    return fields
