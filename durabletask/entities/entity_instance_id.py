"""`EntityInstanceId`: the identity of one durable entity, written ``@<name>@<key>`` on the wire."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, eq=True)
class EntityInstanceId:
    """Names one entity: the entity's (registered) name plus a key chosen by the caller.

    The name is lower-cased, as every Durable Task SDK does, so ``Counter`` and ``counter`` are
    the same entity; the key is case-sensitive. Instances are immutable, compare equal by value,
    are ordered by their string form (the order in which locks are taken) and are hashable, so
    they can be set members and dictionary keys.

    Args:
        entity: The entity's name. Must be non-empty and must not contain ``@``.
        key: The key that tells instances of the entity apart. Must be non-empty. (It may contain
            ``@``, as .NET allows; the official Python SDK refuses such keys.)

    Raises:
        ValueError: The name is empty or contains ``@``, or the key is empty.
    """

    entity: str
    key: str

    def __post_init__(self) -> None:
        EntityInstanceId.validate_entity_name(self.entity)
        EntityInstanceId.validate_key(self.key)
        object.__setattr__(self, "entity", self.entity.lower())

    def __str__(self) -> str:
        return f"@{self.entity}@{self.key}"

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, EntityInstanceId):
            return NotImplemented
        return str(self) < str(other)

    @staticmethod
    def parse(entity_id: str) -> EntityInstanceId:
        """Read an ID written as ``@<name>@<key>`` (what ``str()`` produces).

        Raises:
            ValueError: ``entity_id`` is not of that form.
        """
        if not isinstance(entity_id, str) or not entity_id.startswith("@"):
            raise ValueError(f"'{entity_id}' is not an entity ID: entity IDs look like '@<name>@<key>'")
        parts = entity_id.split("@", 2)
        if len(parts) != 3:
            raise ValueError(f"'{entity_id}' is not an entity ID: entity IDs look like '@<name>@<key>'")
        return EntityInstanceId(parts[1], parts[2])

    @staticmethod
    def validate_entity_name(name: str) -> None:
        """Check that ``name`` can be an entity name.

        Raises:
            ValueError: It is empty or contains ``@`` (the separator of entity IDs).
        """
        if not isinstance(name, str) or not name:
            raise ValueError("an entity name cannot be empty")
        if "@" in name:
            raise ValueError(f"the entity name '{name}' contains '@', which separates name and key in entity IDs")

    @staticmethod
    def validate_key(key: str) -> None:
        """Check that ``key`` can be an entity key.

        Raises:
            ValueError: It is empty.
        """
        if not isinstance(key, str) or not key:
            raise ValueError("an entity key cannot be empty")


def as_entity_id(value: EntityInstanceId | str, what: str = "entity") -> EntityInstanceId:
    """Accept an `EntityInstanceId` or its ``@name@key`` string form.

    Raises:
        TypeError: ``value`` is neither.
        ValueError: The string is not an entity ID.
    """
    if isinstance(value, EntityInstanceId):
        return value
    if isinstance(value, str):
        return EntityInstanceId.parse(value)
    raise TypeError(f"{what} must be an EntityInstanceId (or an '@name@key' string), got {value!r}")
