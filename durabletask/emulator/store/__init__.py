"""Storage for the emulator: the interface (``base``), SQLite (default) and memory implementations."""

from durabletask.emulator.store.base import (
    TERMINAL_STATUSES,
    ActivityRecord,
    Batch,
    EntityRecord,
    HubSnapshot,
    InstanceRecord,
    Message,
    Store,
)
from durabletask.emulator.store.memory import MemoryStore
from durabletask.emulator.store.runner import StoreRunner
from durabletask.emulator.store.sqlite import SqliteStore

__all__ = [
    "TERMINAL_STATUSES",
    "ActivityRecord",
    "Batch",
    "EntityRecord",
    "HubSnapshot",
    "InstanceRecord",
    "MemoryStore",
    "Message",
    "SqliteStore",
    "Store",
    "StoreRunner",
]
