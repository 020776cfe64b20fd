"""Durable entities: small, addressable pieces of state that run one operation at a time.

An entity is a function ``fn(ctx: EntityContext, input)`` or a `DurableEntity` subclass with one
method per operation, registered on the worker (``worker.add_entity`` or ``@worker.entity``).
Clients signal entities and read their state; orchestrations call, signal and lock them.
The names and module paths match the official SDK's ``durabletask.entities``.
"""

from durabletask.entities.durable_entity import DurableEntity
from durabletask.entities.entity_context import EntityContext
from durabletask.entities.entity_instance_id import EntityInstanceId
from durabletask.entities.entity_lock import EntityLock
from durabletask.entities.entity_metadata import EntityMetadata
from durabletask.entities.entity_operation_failed_exception import EntityOperationFailedException

__all__ = [
    "DurableEntity",
    "EntityContext",
    "EntityInstanceId",
    "EntityLock",
    "EntityMetadata",
    "EntityOperationFailedException",
]

PACKAGE_NAME = "durabletask.entities"
