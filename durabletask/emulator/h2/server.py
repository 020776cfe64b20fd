"""The emulator's own gRPC server: HTTP/2 (cleartext, prior knowledge) on asyncio, in pure Python.

Why not ``grpc.aio``: on a small machine its server spends about 350 us of CPU on an empty unary
call, several times the emulator's own work per call; this server needs well under 100 us (see
``benchmarks/emulator.py``). It implements what gRPC clients use: unary and server-streaming calls,
metadata, deadlines (``grpc-timeout``), cancellation (RST_STREAM), status and message trailers,
flow control, PING, GOAWAY on shutdown, gzip-compressed requests. TLS is not offered; the emulator
listens on cleartext, like the DTS emulator. ``Emulator(transport="grpcio")`` runs the same service
on ``grpc.aio`` instead.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import grpc

from durabletask.emulator.h2.connection import Connection

logger = logging.getLogger("durabletask.emulator.h2")

class Outcome(Protocol):
    """What an immediate call waits for before it answers (an asyncio future, or a store ``Durable``)."""

    def add_done_callback(self, fn: Callable[[Any], object], /) -> None: ...

    def cancelled(self) -> bool: ...

    def exception(self) -> BaseException | None: ...


Authenticate = Callable[[Sequence[tuple[str, Any]]], "str | None"]
"""Checks a call's metadata; returns None to accept it, or why it is refused (UNAUTHENTICATED)."""


@dataclass(frozen=True)
class Route:
    """One method: where its calls go and how its messages are (de)serialized."""

    path: str
    behaviour: Callable[..., Any]
    """``async def (request, context) -> response``, or an async generator for server streaming."""
    deserialize: Callable[[bytes], Any]
    serialize: Callable[[Any], bytes]
    streaming: bool
    request_name: str
    immediate: Callable[[Any, Any], tuple[Outcome | None, Any]] | None = None
    """Optional synchronous form of a unary ``behaviour``, so that the call needs no task of its own:
    ``(request, context)`` returns ``(outcome, response)``, where ``response`` is sent once ``outcome``
    (None: nothing to wait for) is done without an error; or it raises (``grpc.aio.AbortError`` after
    ``context.fail`` for a status of its choosing). ``response`` may be a function of no arguments that
    gives the message when it is sent. An outcome with a ``cancel()`` method is cancelled when the call
    ends before it is done (the caller reset it or left, or its deadline passed)."""


class GrpcServer:
    """Serves ``routes`` (by ``/Service/Method`` path) to gRPC clients over cleartext HTTP/2."""

    def __init__(self, routes: Sequence[Route], *, max_message_bytes: int,
                 authenticate: Authenticate | None = None) -> None:
        self.routes = {route.path: route for route in routes}
        self.max_message_bytes = max_message_bytes
        self.authenticate = authenticate
        self.connections: set[Connection] = set()
        self.closing = False
        self._server: asyncio.AbstractServer | None = None

    async def start(self, host: str, port: int) -> int:
        """Listen on ``host:port`` (port 0 picks one); returns the port."""
        loop = asyncio.get_running_loop()
        try:
            listener = _listen_socket(host, port)
        except OSError as error:
            raise OSError(f"cannot listen on {host}:{port}: {error.strerror or error}") from error
        self._server = await loop.create_server(lambda: Connection(self), sock=listener, backlog=512)
        return int(listener.getsockname()[1])

    async def stop(self, grace: float) -> None:
        """Stop listening, let calls in flight finish for up to ``grace`` seconds, then cut the rest."""
        self.closing = True
        server, self._server = self._server, None
        if server is not None:
            server.close()
        connections = list(self.connections)
        for connection in connections:
            connection.go_away()
        busy = [connection.idle.wait() for connection in connections if not connection.idle.is_set()]
        if busy:
            await asyncio.wait([asyncio.ensure_future(waiter) for waiter in busy], timeout=grace)
        for connection in list(self.connections):
            connection.abort()
        if server is not None:
            await server.wait_closed()

    def route_for(self, headers: list[tuple[str, str]]) -> tuple[Route | None, tuple[grpc.StatusCode, str] | None]:
        """The route of a request, or the status to refuse it with (unknown method, not gRPC)."""
        path = method = content_type = None
        for name, value in headers:
            if name == ":path":
                path = value
            elif name == ":method":
                method = value
            elif name == "content-type":
                content_type = value
        route = self.routes.get(path) if path is not None else None
        if method != "POST":
            return None, (grpc.StatusCode.UNIMPLEMENTED, f"gRPC calls use POST, not {method}")
        if content_type is None or not content_type.startswith("application/grpc"):
            return None, (grpc.StatusCode.INVALID_ARGUMENT,
                          f"content-type '{content_type}' is not gRPC (application/grpc)")
        if route is None:
            return None, (grpc.StatusCode.UNIMPLEMENTED, f"unknown method {path}: this server implements "
                                                         "TaskHubSidecarService")
        return route, None


def _listen_socket(host: str, port: int) -> socket.socket:
    """One listening socket: dual-stack IPv6 for ``""``/``::``, else the first address ``host`` resolves to."""
    bare = host.strip("[]")
    address: Any
    if bare in ("", "::"):
        family, address = socket.AF_INET6, ("::", port)
    else:
        info = socket.getaddrinfo(bare, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
        family, address = info[0], info[4]
    listener = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6 and bare in ("", "::"):
            listener.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        listener.bind(address)
        listener.listen(512)
        listener.setblocking(False)
    except OSError:
        listener.close()
        raise
    return listener
