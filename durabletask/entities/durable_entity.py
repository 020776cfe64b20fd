"""`DurableEntity`: the base class of class-based entities (one method per operation)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar, overload

from durabletask.entities.entity_context import EntityContext
from durabletask.entities.entity_instance_id import EntityInstanceId

TState = TypeVar("TState")


class DurableEntity:
    """Subclass this and write one method per operation: ``def add(self, amount: int) -> int``.

    A fresh instance runs each operation, so attributes set on ``self`` do not survive between
    operations: keep what must last in the entity state (`get_state` / `set_state`). A method
    takes the operation's input as its one argument (or no argument), and its return value is
    the operation's result. ``delete`` is built in; override it to add behaviour.
    """

    entity_context: EntityContext

    def _initialize_entity_context(self, context: EntityContext) -> None:
        self.entity_context = context

    @overload
    def get_state(self, intended_type: type[TState], default: TState) -> TState: ...
    @overload
    def get_state(self, intended_type: type[TState]) -> TState | None: ...
    @overload
    def get_state(self, intended_type: None = None, default: Any = None) -> Any: ...
    def get_state(self, intended_type: type | None = None, default: Any = None) -> Any:
        """See `EntityContext.get_state`."""
        return self.entity_context.get_state(intended_type, default)

    def set_state(self, state: Any) -> None:
        """See `EntityContext.set_state`."""
        self.entity_context.set_state(state)

    def signal_entity(self, entity_instance_id: EntityInstanceId | str, operation: str, input: Any | None = None,
                      signal_time: datetime | None = None) -> None:
        """See `EntityContext.signal_entity`."""
        self.entity_context.signal_entity(entity_instance_id, operation, input, signal_time)

    def schedule_new_orchestration(self, orchestration_name: str | Callable[..., Any], input: Any | None = None,
                                   instance_id: str | None = None) -> str:
        """See `EntityContext.schedule_new_orchestration`."""
        return self.entity_context.schedule_new_orchestration(orchestration_name, input, instance_id=instance_id)

    def delete(self, input: Any = None) -> None:
        """Delete the entity: clear its state (the input is ignored)."""
        self.set_state(None)
