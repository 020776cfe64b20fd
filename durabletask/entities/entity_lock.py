"""`EntityLock`: what ``yield ctx.lock_entities([...])`` returns; leaving it releases the locks."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from durabletask.internal.contexts import OrchestrationContext


class EntityLock:
    """The critical section an orchestration holds over a set of entities.

    Use it as a context manager: ``with (yield ctx.lock_entities([a, b])):``. Leaving the block,
    normally or by an exception, releases every lock. Locks still held when the orchestration
    completes, fails or continues as new are released then.
    """

    def __init__(self, context: OrchestrationContext) -> None:
        self._context = context

    def __enter__(self) -> EntityLock:
        return self

    def __exit__(self, *args: object) -> None:
        self._context._exit_critical_section()
