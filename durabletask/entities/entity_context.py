"""`EntityContext`: what an entity operation can see and do."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar, overload

from google.protobuf import wrappers_pb2

from durabletask.entities.entity_instance_id import EntityInstanceId, as_entity_id
from durabletask.internal import orchestrator_service_pb2 as pb
from durabletask.internal.contexts import get_name
from durabletask.internal.entities.state import EntityState
from durabletask.internal.replay.actions import to_timestamp
from durabletask.serialization import DataConverter

TState = TypeVar("TState")


def _sv(value: str | None) -> wrappers_pb2.StringValue | None:
    return None if value is None else wrappers_pb2.StringValue(value=value)


class EntityContext:
    """The context of one entity operation.

    State changes and the signals and orchestrations an operation queues take effect only if the
    operation returns normally; if it raises, all of them are undone and the caller sees the failure.

    Args:
        orchestration_id: The entity's instance ID as a string (``@name@key``); the official SDK
            names it so.
        operation: The operation being run.
        state: The entity's state for this batch.
        entity_id: The entity's ID.
        data_converter: Encodes and decodes state and payloads.
    """

    def __init__(self, orchestration_id: str, operation: str, state: EntityState, entity_id: EntityInstanceId,
                 data_converter: DataConverter) -> None:
        self._orchestration_id = orchestration_id
        self._operation = operation
        self._state = state
        self._entity_id = entity_id
        self._data_converter = data_converter

    @property
    def orchestration_id(self) -> str:
        """The entity's own instance ID (``@name@key``), as in the official SDK."""
        return self._orchestration_id

    @property
    def operation(self) -> str:
        """The name of the operation being run."""
        return self._operation

    @property
    def entity_id(self) -> EntityInstanceId:
        """The ID of this entity."""
        return self._entity_id

    @overload
    def get_state(self, intended_type: type[TState], default: TState) -> TState: ...
    @overload
    def get_state(self, intended_type: type[TState]) -> TState | None: ...
    @overload
    def get_state(self, intended_type: None = None, default: Any = None) -> Any: ...
    def get_state(self, intended_type: type | None = None, default: Any = None) -> Any:
        """Return the entity's state, decoded into ``intended_type`` (dataclasses work too).

        Each call decodes afresh: changing the returned object changes nothing until it is
        passed to `set_state`.

        Args:
            intended_type: The type to decode into; None returns plain JSON values.
            default: What to return when the entity has no state yet.

        Raises:
            TypeError: The state cannot be read as ``intended_type``.
        """
        return self._state.get(intended_type, default)

    def set_state(self, new_state: Any) -> None:
        """Replace the entity's state; ``None`` deletes the entity once the operation succeeds."""
        self._state.set(new_state)

    def signal_entity(self, entity_instance_id: EntityInstanceId | str, operation: str, input: Any | None = None,
                      signal_time: datetime | None = None) -> None:
        """Send a one-way operation to an entity (this one included), when this operation succeeds.

        Args:
            entity_instance_id: The target entity.
            operation: The operation to run there.
            input: The operation's input.
            signal_time: Deliver no earlier than this (UTC; naive means UTC), e.g. to wake this
                entity up later.
        """
        target = as_entity_id(entity_instance_id, "entity_instance_id")
        if not operation:
            raise ValueError("signal_entity() needs an operation name")
        self._state.add_action(pb.OperationAction(sendSignal=pb.SendSignalAction(
            instanceId=str(target),
            name=operation,
            input=_sv(self._data_converter.serialize(input)),
            scheduledTime=None if signal_time is None else to_timestamp(signal_time),
        )))

    def schedule_new_orchestration(self, orchestration_name: str | Callable[..., Any], input: Any | None = None,
                                   instance_id: str | None = None) -> str:
        """Start an orchestration when this operation succeeds; return its instance ID.

        Args:
            orchestration_name: The orchestrator's registered name (or the function).
            input: The orchestration's input.
            instance_id: Its instance ID; a random one by default.
        """
        name = orchestration_name if isinstance(orchestration_name, str) else get_name(orchestration_name)
        if not name:
            raise ValueError("schedule_new_orchestration() needs an orchestrator name")
        new_id = instance_id or uuid.uuid4().hex
        self._state.add_action(pb.OperationAction(startNewOrchestration=pb.StartNewOrchestrationAction(
            instanceId=new_id,
            name=name,
            input=_sv(self._data_converter.serialize(input)),
        )))
        return new_id
