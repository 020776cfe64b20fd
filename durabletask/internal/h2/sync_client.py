"""A blocking driver for the HTTP/2 client connection, for synchronous callers.

`BlockingConnection` runs the same `durabletask.internal.h2.client.Connection` (framing, HPACK,
flow control, GOAWAY, trailers: one implementation for both) over a plain blocking socket: the
caller's thread sends the request and then reads frames until its call has what it waits for.
Nothing runs in the background, so a connection serves one thread (its calls, nested ones
included, multiplexed as usual); the blocking channel keeps one per thread.

The few event loop services `Connection` needs are provided by `_Turns`: ``call_soon`` queues the
callback until the current step is over (so the frames of one step still leave in one send), and
deadlines are enforced here with socket timeouts instead of loop timers.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Callable
from typing import Any, cast

from durabletask.internal.h2.client import Connection
from durabletask.internal.h2.client_stream import ClientStream


class _Turns:
    """What `Connection` uses of an event loop (``call_soon``, ``time``), run step by step by its driver.

    (``call_at`` is never reached: calls start without a deadline timer, `BlockingConnection.wait`
    enforces their deadlines.)
    """

    def __init__(self) -> None:
        self._ready: list[tuple[Callable[..., object], tuple[Any, ...]]] = []

    def call_soon(self, callback: Callable[..., object], *args: Any) -> None:
        self._ready.append((callback, args))

    def time(self) -> float:
        return time.monotonic()

    def run_ready(self) -> None:
        """Run what the last step queued (typically: send the frames it wrote)."""
        while self._ready:
            ready, self._ready = self._ready, []
            for callback, args in ready:
                callback(*args)


class _SocketTransport(asyncio.Transport):
    """Writes to a blocking socket; closing it reports the loss to the protocol on the next turn."""

    def __init__(self, sock: socket.socket, turns: _Turns, protocol: Connection) -> None:
        super().__init__({"socket": sock, "peername": sock.getpeername()})
        self.sock = sock
        self.write_timeout: float | None = None
        self._turns = turns
        self._protocol = protocol
        self._closing = False

    def write(self, data: Any) -> None:
        if self._closing:
            return
        try:
            self.sock.settimeout(self.write_timeout)
            self.sock.sendall(data)
        except OSError as error:
            self.lost(error)

    def close(self) -> None:
        self.lost(None)

    def lost(self, error: Exception | None) -> None:
        if not self._closing:
            self._closing = True
            self.sock.close()
            self._turns.call_soon(self._protocol.connection_lost, error)

    def is_closing(self) -> bool:
        return self._closing


class BlockingConnection:
    """One HTTP/2 connection driven by the thread that calls it."""

    def __init__(self, host: str, port: int, connect_timeout: float | None) -> None:
        """Connect (raises ``OSError`` if the server cannot be reached)."""
        sock = socket.create_connection((host, port), timeout=connect_timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._turns = _Turns()
        self.connection = Connection(cast(asyncio.AbstractEventLoop, self._turns), lambda _: None)
        self._transport = _SocketTransport(sock, self._turns, self.connection)
        self.connection.connection_made(self._transport)
        self._turns.run_ready()
        self.owner = threading.get_ident()

    @property
    def usable(self) -> bool:
        return self.connection.usable

    def start(self, stream: ClientStream, block: bytes, body: bytes, deadline: float | None) -> None:
        self._transport.write_timeout = None if deadline is None else max(0.001, deadline - time.monotonic())
        self.connection.start(stream, block, body, None)
        self._turns.run_ready()

    def wait(self, stream: ClientStream, deadline: float | None, *, for_message: bool) -> None:
        """Read until ``stream`` has ended (or, with ``for_message``, has a message).

        The call ends with DEADLINE_EXCEEDED once ``deadline`` (``time.monotonic()``) has passed.
        """
        while not stream.ended and not (for_message and stream.messages):
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                self.connection.expire(stream)
                self._turns.run_ready()
                return
            self._read(remaining)

    def cancel(self, stream: ClientStream) -> None:
        self.connection.cancel(stream)
        self._turns.run_ready()

    def close(self) -> None:
        """Close from the owning thread: calls in progress end as cancelled."""
        self.connection.close("Channel closed!")
        self._turns.run_ready()

    def interrupt(self) -> None:
        """Close from another thread: only shut the socket down (thread-safe); the owner, blocked in a
        read or on its next one, sees the connection end and fails its calls with UNAVAILABLE."""
        with contextlib.suppress(OSError):
            self._transport.sock.shutdown(socket.SHUT_RDWR)

    def _read(self, timeout: float | None) -> None:
        sock = self._transport.sock
        try:
            sock.settimeout(timeout)
            received = sock.recv_into(self.connection.get_buffer(-1))
        except (TimeoutError, BlockingIOError, InterruptedError):
            return  # the caller looks at the deadline again
        except OSError as error:
            self._transport.lost(error)
            self._turns.run_ready()
            return
        if not received:
            self._transport.lost(None)
        else:
            self.connection.buffer_updated(received)
        self._turns.run_ready()
