"""The names a worker knows: orchestrators, activities and entities registered by name."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from durabletask.internal.contexts import get_entity_name, get_name

AnyFunction = Callable[..., Any]


class Registry:
    """Maps names to orchestrator and activity functions and to entities.

    Orchestrator and activity names are case-sensitive, as on the wire; entity names are
    lower-cased, as in entity IDs. Registering a second function under a name that is taken is
    an error rather than a silent replacement.
    """

    __slots__ = ("activities", "entities", "orchestrators")

    def __init__(self) -> None:
        self.orchestrators: dict[str, AnyFunction] = {}
        self.activities: dict[str, AnyFunction] = {}
        self.entities: dict[str, Any] = {}

    def add_orchestrator(self, fn: AnyFunction, name: str | None = None) -> str:
        """Register an orchestrator under ``name`` (default: the function's name); return the name."""
        return _add(self.orchestrators, "orchestrator", fn, name)

    def add_activity(self, fn: AnyFunction, name: str | None = None) -> str:
        """Register an activity under ``name`` (default: the function's name); return the name."""
        return _add(self.activities, "activity", fn, name)

    def add_entity(self, fn: Any, name: str | None = None) -> str:
        """Register an entity function or `DurableEntity` class; return its (lower-case) name.

        Raises:
            ValueError: The name is empty, contains ``@`` or is taken by another entity.
            TypeError: ``fn`` is neither a function nor a class.
        """
        if fn is None or not callable(fn):
            raise TypeError(f"entity {fn!r} is neither a function (ctx, input) nor a DurableEntity subclass")
        resolved = (name if name is not None else get_entity_name(fn)).lower()
        if not resolved or not resolved.strip():
            raise ValueError("an entity name cannot be empty")
        if "@" in resolved:
            raise ValueError(f"the entity name '{resolved}' contains '@', which entity IDs use as a separator")
        existing = self.entities.get(resolved)
        if existing is not None and existing is not fn:
            raise ValueError(
                f"an entity named '{resolved}' is already registered ({existing!r}); pick another name with name=..."
            )
        self.entities[resolved] = fn
        return resolved

    def get_entity(self, name: str) -> Any | None:
        return self.entities.get(name.lower())

    def get_orchestrator(self, name: str) -> AnyFunction | None:
        return self.orchestrators.get(name)

    def get_activity(self, name: str) -> AnyFunction | None:
        return self.activities.get(name)


def _add(table: dict[str, AnyFunction], kind: str, fn: AnyFunction, name: str | None) -> str:
    if not callable(fn):
        raise TypeError(f"{kind} {fn!r} is not callable")
    resolved = name if name is not None else get_name(fn)
    if not resolved or not resolved.strip():
        raise ValueError(f"an {kind} name cannot be empty")
    existing = table.get(resolved)
    if existing is not None and existing is not fn:
        raise ValueError(
            f"an {kind} named '{resolved}' is already registered ({existing!r}); "
            f"pick another name with name=..."
        )
    table[resolved] = fn
    return resolved


def not_registered_message(kind: str, name: str, table: dict[str, AnyFunction]) -> str:
    """Say that ``name`` is unknown and list what is registered, for the user's error message."""
    known = ", ".join(sorted(f"'{n}'" for n in table)) or "none"
    return f"{kind} '{name}' is not registered on this worker (registered: {known})"
