"""`EntityMetadata`: what a client reads about an entity (``get_entity``, entity queries)."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, TypeVar, overload

from durabletask.entities.entity_instance_id import EntityInstanceId
from durabletask.internal import orchestrator_service_pb2 as pb
from durabletask.serialization import DEFAULT_DATA_CONVERTER, DataConverter

TState = TypeVar("TState")


class EntityMetadata:
    """A snapshot of one entity as the backend stores it.

    Attributes:
        id: The entity's ID.
        last_modified: When an operation last changed it (aware, UTC).
        backlog_queue_size: Operations waiting to run.
        includes_state: Whether the state was asked for (and so is known).
    """

    def __init__(self, id: EntityInstanceId, last_modified: datetime, backlog_queue_size: int, locked_by: str,
                 includes_state: bool, state: Any | None, data_converter: DataConverter | None = None) -> None:
        self.id = id
        self.last_modified = last_modified
        self.backlog_queue_size = backlog_queue_size
        self._locked_by = locked_by
        self.includes_state = includes_state
        self._state = state
        self._data_converter = data_converter or DEFAULT_DATA_CONVERTER

    def __repr__(self) -> str:
        return (f"EntityMetadata(id={self.id!r}, last_modified={self.last_modified!r}, "
                f"backlog_queue_size={self.backlog_queue_size}, locked_by={self.locked_by!r}, "
                f"includes_state={self.includes_state}, serialized_state={self._state!r})")

    @staticmethod
    def from_entity_response(entity_response: pb.GetEntityResponse, includes_state: bool,
                             data_converter: DataConverter | None = None) -> EntityMetadata:
        """Read a ``GetEntity`` response (which must say the entity exists)."""
        return EntityMetadata.from_entity_metadata(entity_response.entity, includes_state, data_converter)

    @staticmethod
    def from_entity_metadata(entity: pb.EntityMetadata, includes_state: bool,
                             data_converter: DataConverter | None = None) -> EntityMetadata:
        """Read the wire's entity metadata.

        Raises:
            ValueError: The backend returned something that is not an entity ID.
        """
        try:
            entity_id = EntityInstanceId.parse(entity.instanceId)
        except ValueError as error:
            raise ValueError(f"the backend returned an invalid entity instance ID: {error}") from None
        state = entity.serializedState.value if includes_state and entity.HasField("serializedState") else None
        return EntityMetadata(
            id=entity_id,
            last_modified=entity.lastModifiedTime.ToDatetime(timezone.utc),
            backlog_queue_size=entity.backlogQueueSize,
            locked_by=entity.lockedBy.value if entity.HasField("lockedBy") else "",
            includes_state=includes_state,
            state=state,
            data_converter=data_converter,
        )

    @property
    def serialized_state(self) -> str | None:
        """The state as stored (encoded), or None if it was not asked for or there is none."""
        state: str | None = self._state
        return state

    @property
    def locked_by(self) -> str | None:
        """Who holds the entity's lock (backends report the owning orchestration), or None."""
        return self._locked_by or None

    @overload
    def get_state(self, intended_type: type[TState]) -> TState | None: ...
    @overload
    def get_state(self, intended_type: None = None) -> Any: ...
    def get_state(self, intended_type: type | None = None) -> Any:
        """The state as stored (an encoded string), as the official SDK returns it.

        With ``intended_type`` the encoded string is passed to ``intended_type(...)``. To decode
        the state, use `get_typed_state`.

        Raises:
            TypeError: ``intended_type(state)`` failed.
        """
        if intended_type is None or self._state is None or isinstance(self._state, intended_type):
            return self._state
        try:
            return intended_type(self._state)
        except Exception as error:
            raise TypeError(f"cannot convert the entity state to {intended_type.__name__}; "
                            f"use get_typed_state({intended_type.__name__}) to decode it") from error

    @overload
    def get_typed_state(self, intended_type: type[TState]) -> TState | None: ...
    @overload
    def get_typed_state(self, intended_type: None = None) -> Any: ...
    def get_typed_state(self, intended_type: type | None = None) -> Any:
        """Decode the state with the client's data converter, into ``intended_type`` if given."""
        if self._state is None:
            return None
        return self._data_converter.deserialize(self._state, intended_type)

    def get_locked_by(self) -> EntityInstanceId | None:
        """The lock owner as an entity ID, as the official SDK returns it; None when unlocked.

        Backends report the owning orchestration's instance ID, which is usually not an entity ID:
        read `locked_by` for the raw value.

        Raises:
            ValueError: The owner is not an entity ID.
        """
        if not self._locked_by:
            return None
        try:
            return EntityInstanceId.parse(self._locked_by)
        except ValueError:
            raise ValueError(f"the entity is locked by '{self._locked_by}', which is not an entity ID; "
                             f"read EntityMetadata.locked_by for the owner") from None
