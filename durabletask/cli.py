"""The ``durabletask`` command. Each subcommand registers itself in :func:`build_parser`.

``durabletask emulator``: run the local Durable Task backend (see ``docs/emulator.md``).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Sequence


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="durabletask", description="Durable Task for Python.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True
    _add_emulator(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.run(args))


# -- durabletask emulator


def _positive(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be more than 0, not {text}")
    return value


def _add_emulator(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from durabletask.emulator.server import DEFAULT_HOST, DEFAULT_PORT, TASK_HUBS_ENV

    parser = commands.add_parser(
        "emulator", help="run the local Durable Task backend (emulator)",
        description="Run a local, persistent Durable Task backend that Durable Task SDKs (this one, the "
                    "official Python, .NET and Java SDKs) connect to, like the Durable Task Scheduler "
                    "emulator. Stop it with Ctrl-C.")
    parser.add_argument("--host", default=DEFAULT_HOST, help=f"interface to listen on (default {DEFAULT_HOST})")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"gRPC port (default {DEFAULT_PORT})")
    storage = parser.add_mutually_exclusive_group()
    storage.add_argument("--db", metavar="PATH",
                         help="SQLite file for the state (default: durabletask/emulator.db in the user data "
                              "directory, $XDG_DATA_HOME or ~/.local/share)")
    storage.add_argument("--memory", action="store_true", help="keep the state in memory only")
    parser.add_argument("--taskhubs", metavar="NAMES",
                        help=f"comma-separated task hub names (default ${TASK_HUBS_ENV} or 'default')")
    parser.add_argument("--ping-interval", type=_positive, default=30.0, metavar="SECONDS",
                        help="health ping to idle workers after this many seconds (default 30)")
    parser.add_argument("--lease-timeout", type=_positive, default=600.0, metavar="SECONDS",
                        help="redeliver a work item a connected worker has held this long (default 600)")
    parser.add_argument("--rewind", choices=("server", "worker"), default="server",
                        help="who rewrites the history of a rewound orchestration (default: server)")
    parser.add_argument("--require-auth", action="store_true",
                        help="refuse calls without an 'authorization: Bearer <token>' header (any non-empty token "
                             "is accepted), to test a client's or worker's token handling")
    parser.add_argument("--transport", choices=("h2", "grpcio"), default="h2",
                        help="gRPC server: h2 (default), the emulator's own HTTP/2 server, or grpcio (grpc.aio, "
                             "several times more CPU per call)")
    parser.add_argument("--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"),
                        help="logging level (default INFO)")
    parser.set_defaults(run=_run_emulator)


def _run_emulator(args: argparse.Namespace) -> int:
    from durabletask.emulator.server import Emulator

    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    hubs = [h.strip() for h in args.taskhubs.split(",") if h.strip()] if args.taskhubs else None
    emulator = Emulator(host=args.host, port=args.port, db_path=args.db, memory=args.memory, task_hubs=hubs,
                        ping_interval=args.ping_interval, lease_timeout=args.lease_timeout, rewind_mode=args.rewind,
                        require_auth=args.require_auth, transport=args.transport)
    try:
        asyncio.run(_serve(emulator))
    except _StartupError as error:
        print(f"durabletask emulator: {error}", file=sys.stderr)
        return 1
    return 0


class _StartupError(Exception):
    pass


async def _serve(emulator: object) -> None:
    from durabletask.emulator.server import Emulator

    assert isinstance(emulator, Emulator)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):  # pragma: no cover - e.g. Windows
            signal.signal(sig, lambda *_: loop.call_soon_threadsafe(stop.set))
    try:
        await emulator.start_async()
    except (OSError, RuntimeError) as error:
        raise _StartupError(str(error)) from error
    hubs = ", ".join(emulator.task_hubs)
    print(
        f"Durable Task emulator listening on {emulator.address}\n"
        f"  task hubs:  {hubs}\n"
        f"  storage:    {emulator.description}\n"
        f"  connect:    {emulator.connection_string()}\n"
        f"  (SDKs: host_address=\"{emulator.address}\", metadata taskhub=<hub>; Ctrl-C to stop)",
        flush=True,
    )
    try:
        await stop.wait()
    finally:
        print("stopping...", flush=True)
        await emulator.stop_async()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
