"""Durable Task SDK for Python: durable orchestrations, activities and entities over gRPC.

Submodules follow the official SDK's layout (``durabletask.task``, ``durabletask.client``,
``durabletask.worker``, ...). They are imported lazily so that ``import durabletask`` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0.dev0"

_SUBMODULES = frozenset({
    "task", "serialization", "internal", "history", "client", "worker", "grpc_options", "testing", "emulator",
    "azuremanaged", "entities",
})


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
