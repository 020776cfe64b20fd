"""A local, persistent Durable Task backend that speaks the sidecar gRPC protocol.

Run it with ``durabletask emulator`` or ``python -m durabletask.emulator``, or in-process::

    from durabletask.emulator import Emulator

    with Emulator(memory=True) as emulator:        # a free port; state in memory
        client = TaskHubGrpcClient(host_address=emulator.address)

Layers (each depends only on the next): ``service`` (gRPC in/out) -> ``engine`` (rules: dispatch,
leases, timers, redelivery, entity locks; see ``commands``, ``episode``, ``rewind``, ``dispatch``,
``entities``) -> ``store`` (SQLite by default, or memory). See ``docs/emulator.md``.
"""

from durabletask.emulator.engine import Engine
from durabletask.emulator.server import DEFAULT_HOST, DEFAULT_PORT, Emulator, default_db_path

__all__ = ["DEFAULT_HOST", "DEFAULT_PORT", "Emulator", "Engine", "default_db_path"]
