"""``Emulator``: the engine and the gRPC server together, run in-process or from the command line."""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

import grpc

from durabletask.emulator import rewind
from durabletask.emulator.auth import BearerTokenRequired
from durabletask.emulator.engine import DEFAULT_LEASE_TIMEOUT, DEFAULT_PING_INTERVAL, Engine
from durabletask.emulator.h2.server import GrpcServer
from durabletask.emulator.service import Service
from durabletask.emulator.store import MemoryStore, SqliteStore, Store

logger = logging.getLogger("durabletask.emulator")

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080
TASK_HUBS_ENV = "DTS_TASK_HUB_NAMES"
TRANSPORTS = ("h2", "grpcio")
MAX_MESSAGE_BYTES = 64 * 1024 * 1024


def default_db_path() -> Path:
    """``$XDG_DATA_HOME/durabletask/emulator.db``, else ``~/.local/share/durabletask/emulator.db``."""
    data_home = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(data_home) / "durabletask" / "emulator.db"


def task_hubs_from_env(default: Sequence[str] = ("default",)) -> list[str]:
    configured = os.environ.get(TASK_HUBS_ENV, "")
    hubs = [h.strip() for h in configured.split(",") if h.strip()]
    return hubs or list(default)


class Emulator:
    """A Durable Task backend on a local port; SDK clients and workers connect to :attr:`address`.

    Use it from synchronous code with :meth:`start`/:meth:`stop` or ``with Emulator(...) as e:`` (it
    then runs on a background thread with its own event loop), or from asyncio code with
    ``await e.start_async()``/``await e.stop_async()`` or ``async with``.

    Args:
        host: interface to listen on.
        port: TCP port; 0 picks a free one (see :attr:`port` once started).
        db_path: SQLite file to keep state in (created if missing). Ignored with ``memory``.
        memory: keep state in memory only (lost when the emulator stops).
        store: a ready-made store instead of ``db_path``/``memory`` (tests).
        task_hubs: hub names served; default ``$DTS_TASK_HUB_NAMES`` (comma-separated) or ``default``.
        ping_interval: seconds of silence after which a worker stream gets a health ping.
        lease_timeout: seconds a worker may hold a work item before it is given to another worker.
        rewind_mode: ``"server"`` (rewrite the history of rewound instances here, for every SDK) or
            ``"worker"`` (let the worker rewrite it, the Python SDK's own flow).
        synchronous: SQLite ``synchronous`` setting; ``NORMAL`` survives process crashes, ``FULL`` also
            power loss.
        require_auth: refuse calls without a non-empty ``authorization: Bearer <token>`` (see
            :mod:`durabletask.emulator.auth`); :attr:`auth` then counts accepted and refused calls.
        transport: ``"h2"`` (default), the emulator's own HTTP/2 gRPC server, which costs several times
            less CPU per call; or ``"grpcio"``, the same service on a ``grpc.aio`` server.
    """

    def __init__(self, *, host: str = DEFAULT_HOST, port: int = 0, db_path: str | Path | None = None,
                 memory: bool = False, store: Store | None = None, task_hubs: Sequence[str] | None = None,
                 ping_interval: float = DEFAULT_PING_INTERVAL, lease_timeout: float = DEFAULT_LEASE_TIMEOUT,
                 rewind_mode: str = rewind.SERVER, synchronous: str = "NORMAL", require_auth: bool = False,
                 transport: str = "h2") -> None:
        if transport not in TRANSPORTS:
            raise ValueError(f"transport must be one of {', '.join(TRANSPORTS)}, not {transport!r}")
        if store is None:
            store = MemoryStore() if memory else SqliteStore(db_path or default_db_path(), synchronous=synchronous)
        self.store = store
        self.host = host
        self._requested_port = port
        self.port = port
        self.task_hubs = list(task_hubs) if task_hubs else task_hubs_from_env()
        self.engine = Engine(store, self.task_hubs, lease_timeout=lease_timeout, ping_interval=ping_interval,
                             rewind_mode=rewind_mode)
        self.transport = transport
        self._server: grpc.aio.Server | GrpcServer | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopped: asyncio.Event | None = None
        self.auth = BearerTokenRequired() if require_auth else None

    # -- where to connect

    @property
    def address(self) -> str:
        """``host:port`` for an SDK's ``host_address``."""
        return f"{self._connect_host()}:{self.port}"

    @property
    def endpoint(self) -> str:
        return f"http://{self._connect_host()}:{self.port}"

    def connection_string(self, task_hub: str | None = None) -> str:
        hub = task_hub or self.task_hubs[0]
        return f"Endpoint={self.endpoint};Authentication=None;TaskHub={hub}"

    def _connect_host(self) -> str:
        if self.host in ("", "0.0.0.0", "::", "[::]", "127.0.0.1", "localhost"):
            return "localhost"
        return f"[{self.host}]" if ":" in self.host and not self.host.startswith("[") else self.host

    @property
    def description(self) -> str:
        if isinstance(self.store, SqliteStore):
            return f"SQLite file {self.store.path}"
        if isinstance(self.store, MemoryStore):
            return "memory (state is lost when the emulator stops)"
        return type(self.store).__name__

    # -- asyncio

    async def start_async(self) -> Emulator:
        await self.engine.start()
        if self.transport == "h2":
            own = GrpcServer(Service(self.engine).routes(), max_message_bytes=MAX_MESSAGE_BYTES,
                             authenticate=self.auth.check if self.auth else None)
            try:
                self.port = await own.start(self.host, self._requested_port)
            except OSError:
                await self.engine.stop()
                raise
            self._server = own
        else:
            await self._start_grpcio()
        logger.info("durabletask emulator listening on %s (task hubs: %s; storage: %s)", self.address,
                    ", ".join(self.task_hubs), self.description)
        return self

    async def _start_grpcio(self) -> None:
        server = grpc.aio.server(interceptors=[self.auth] if self.auth else None, options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.so_reuseport", 0),
            # Accept clients' keepalive pings (some configure them) instead of closing the connection.
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.http2.min_ping_interval_without_data_ms", 5000),
            ("grpc.http2.max_ping_strikes", 0),
        ])
        server.add_generic_rpc_handlers((Service(self.engine).handler(),))
        bind_host = f"[{self.host}]" if ":" in self.host and not self.host.startswith("[") else self.host
        try:
            self.port = server.add_insecure_port(f"{bind_host}:{self._requested_port}")
        except RuntimeError as error:
            await self.engine.stop()
            raise OSError(f"cannot listen on {self.host}:{self._requested_port}: {error}") from error
        if self.port == 0:
            await self.engine.stop()
            raise OSError(f"cannot listen on {self.host}:{self._requested_port} (is the port in use?)")
        await server.start()
        self._server = server

    async def stop_async(self, grace: float = 1.0) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        for hub in self.engine.hubs.values():
            self.engine.dispatcher.close_all(hub.streams)
        await server.stop(grace)
        await self.engine.stop()
        logger.info("durabletask emulator stopped")

    async def __aenter__(self) -> Emulator:
        return await self.start_async()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop_async()

    # -- on a background thread

    def start(self) -> Emulator:
        """Start on a background thread; returns once the server is listening."""
        if self._thread is not None:
            raise RuntimeError("the emulator is already running")
        started = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            self._stopped = asyncio.Event()

            async def main() -> None:
                try:
                    await self.start_async()
                except BaseException as error:
                    failure.append(error)
                    started.set()
                    return
                started.set()
                assert self._stopped is not None
                await self._stopped.wait()
                await self.stop_async()

            try:
                loop.run_until_complete(main())
            finally:
                loop.close()

        self._thread = threading.Thread(target=run, name="durabletask-emulator", daemon=True)
        self._thread.start()
        started.wait()
        if failure:
            self._thread.join()
            self._thread = None
            raise failure[0]
        return self

    def stop(self) -> None:
        thread, self._thread = self._thread, None
        if thread is None:
            return
        loop, stopped = self._loop, self._stopped
        if loop is not None and stopped is not None:
            loop.call_soon_threadsafe(stopped.set)
        thread.join()

    def __enter__(self) -> Emulator:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
