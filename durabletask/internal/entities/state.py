"""What one entity batch changes: the state and the actions, with a checkpoint per operation.

Every operation of a batch either commits or rolls back as a whole: its state changes and the
signals and orchestration starts it queued. The state is kept encoded (the wire form), so a value
that cannot be encoded fails the operation that set it, and a state nobody touched goes back
unchanged, byte for byte.
"""

from __future__ import annotations

from typing import Any

from durabletask.internal import orchestrator_service_pb2 as pb
from durabletask.serialization import DataConverter


class EntityState:
    """The state and queued actions of one entity while a batch runs.

    Args:
        encoded_state: The state as it came from the backend (None: the entity has no state).
        converter: Encodes and decodes the state.
    """

    __slots__ = ("_actions", "_committed_actions", "_committed_state", "_converter", "_state")

    def __init__(self, encoded_state: str | None, converter: DataConverter) -> None:
        self._converter = converter
        self._state = encoded_state
        self._committed_state = encoded_state
        self._actions: list[pb.OperationAction] = []
        self._committed_actions = 0

    @property
    def encoded(self) -> str | None:
        """The current state in its encoded form (None: no state)."""
        return self._state

    def get(self, intended_type: type | None = None, default: Any = None) -> Any:
        """Decode the state, into ``intended_type`` if given; ``default`` when there is none.

        Raises:
            TypeError: The state cannot be turned into ``intended_type``.
        """
        if self._state is None:
            return default
        if intended_type is None:
            return self._converter.deserialize(self._state)
        value = self._converter.deserialize(self._state, intended_type)
        if isinstance(intended_type, type) and not isinstance(value, intended_type):
            if intended_type is float and type(value) is int:
                return float(value)
            raise TypeError(
                f"the entity state {self._state[:100]!r} cannot be read as {intended_type.__name__} "
                f"(it decodes to {type(value).__name__}); pass the type the state was stored as"
            )
        return value

    def set(self, value: Any) -> None:
        """Replace the state; None deletes it (the entity then no longer exists)."""
        self._state = None if value is None else self._converter.serialize(value)

    def add_action(self, action: pb.OperationAction) -> None:
        self._actions.append(action)

    def commit(self) -> None:
        """Keep everything the current operation did."""
        self._committed_state = self._state
        self._committed_actions = len(self._actions)

    def rollback(self) -> None:
        """Undo everything the current operation did: its state changes and its actions."""
        self._state = self._committed_state
        del self._actions[self._committed_actions:]

    def committed_actions(self) -> list[pb.OperationAction]:
        """The actions of committed operations, numbered in order."""
        actions = self._actions[:self._committed_actions]
        for number, action in enumerate(actions):
            action.id = number
        return actions
