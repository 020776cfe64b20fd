"""The contexts user code receives: `OrchestrationContext` and `ActivityContext`.

`OrchestrationContext` is abstract: the replay engine provides the implementation. Keeping the
interface apart from the engine lets tests and tools provide their own.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Generator
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeAlias, TypeVar, overload

from durabletask.internal.retry import RetryPolicy
from durabletask.internal.tasks import CancellableTask, CompletableTask, Task, TimerTask

TInput = TypeVar("TInput")
TOutput = TypeVar("TOutput")
T = TypeVar("T")

if TYPE_CHECKING:
    from durabletask.entities import EntityInstanceId, EntityLock

    _LoggerAdapter = logging.LoggerAdapter[logging.Logger]
else:
    _LoggerAdapter = logging.LoggerAdapter


class ReplaySafeLogger(_LoggerAdapter):
    """A logger that stays silent while the orchestrator replays, so each line is logged once."""

    def __init__(self, logger: logging.Logger, is_replaying: Callable[[], bool]) -> None:
        super().__init__(logger, {})
        self._is_replaying = is_replaying

    def isEnabledFor(self, level: int) -> bool:
        """False during replay, so callers also skip formatting the message."""
        if self._is_replaying():
            return False
        return self.logger.isEnabledFor(level)


class OrchestrationContext(ABC):
    """What an orchestrator function can see and do.

    Every method is deterministic: replaying the same history makes the same calls return the
    same tasks, which the engine matches against the history by sequence number.
    """

    @property
    @abstractmethod
    def instance_id(self) -> str:
        """The ID of this orchestration instance."""

    @property
    @abstractmethod
    def parent_instance_id(self) -> str | None:
        """The ID of the parent orchestration, for a sub-orchestration; otherwise None."""

    @property
    @abstractmethod
    def version(self) -> str | None:
        """The version this instance was started with, if any."""

    @property
    @abstractmethod
    def current_utc_datetime(self) -> datetime:
        """The deterministic current time: when the current episode started (naive UTC)."""

    @property
    @abstractmethod
    def is_replaying(self) -> bool:
        """True while the engine re-runs code for events that were already processed."""

    @abstractmethod
    def set_custom_status(self, custom_status: Any) -> None:
        """Set the instance's custom status (any serializable value; None clears it)."""

    @abstractmethod
    def create_timer(self, fire_at: datetime | timedelta) -> TimerTask:
        """Create a durable timer that fires at ``fire_at`` (UTC) or after a delay."""

    @overload
    def call_activity(self, activity: Callable[[ActivityContext, TInput], TOutput] | str, *,
                      input: TInput | None = ..., retry_policy: RetryPolicy | None = ...,
                      tags: dict[str, str] | None = ..., return_type: type[T]) -> CompletableTask[T]: ...

    @overload
    def call_activity(self, activity: Callable[[ActivityContext, TInput], TOutput] | str, *,
                      input: TInput | None = ..., retry_policy: RetryPolicy | None = ...,
                      tags: dict[str, str] | None = ..., return_type: None = ...) -> CompletableTask[TOutput]:
        ...

    @abstractmethod
    def call_activity(self, activity: Callable[[ActivityContext, TInput], TOutput] | str, *,
                      input: TInput | None = None, retry_policy: RetryPolicy | None = None,
                      tags: dict[str, str] | None = None, return_type: type | None = None) -> CompletableTask[Any]:
        """Schedule an activity and return a task for its result.

        Args:
            activity: The activity function, or its registered name.
            input: The activity's input; it must be serializable by the data converter.
            retry_policy: Retry the activity on failure as this policy says.
            tags: Key/value tags sent with the activity.
            return_type: Decode the result into this type. By default the activity function's
                return annotation decides; with a name, plain JSON values are returned.
        """

    @overload
    def call_sub_orchestrator(self, orchestrator: Orchestrator[TInput, TOutput] | str, *,
                              input: TInput | None = ..., instance_id: str | None = ...,
                              retry_policy: RetryPolicy | None = ..., version: str | None = ...,
                              return_type: type[T]) -> CompletableTask[T]: ...

    @overload
    def call_sub_orchestrator(self, orchestrator: Orchestrator[TInput, TOutput] | str, *,
                              input: TInput | None = ..., instance_id: str | None = ...,
                              retry_policy: RetryPolicy | None = ..., version: str | None = ...,
                              return_type: None = ...) -> CompletableTask[TOutput]: ...

    @abstractmethod
    def call_sub_orchestrator(self, orchestrator: Orchestrator[TInput, TOutput] | str, *,
                              input: TInput | None = None, instance_id: str | None = None,
                              retry_policy: RetryPolicy | None = None, version: str | None = None,
                              return_type: type | None = None) -> CompletableTask[Any]:
        """Start a sub-orchestration and return a task for its result.

        Args:
            orchestrator: The orchestrator function, or its registered name.
            input: The sub-orchestration's input.
            instance_id: The child's instance ID; by default ``<parent id>:<sequence as 4 hex>``,
                which is deterministic.
            retry_policy: Retry the sub-orchestration on failure as this policy says.
            version: The child's version.
            return_type: Decode the result into this type.
        """

    @overload
    def wait_for_external_event(self, name: str, *, data_type: type[T],
                                timeout: timedelta | None = ...) -> CancellableTask[T]: ...

    @overload
    def wait_for_external_event(self, name: str, *, data_type: None = ...,
                                timeout: timedelta | None = ...) -> CancellableTask[Any]: ...

    @abstractmethod
    def wait_for_external_event(self, name: str, *, data_type: type | None = None,
                                timeout: timedelta | None = None) -> CancellableTask[Any]:
        """Wait for an event raised to this instance (names match case-insensitively).

        Events that arrive before anyone waits are kept and handed out in arrival order.

        Args:
            name: The event name.
            data_type: Decode the event's data into this type.
            timeout: Give up after this much orchestration time: the task then fails with
                `EventTimeoutError` (a `TimeoutError`). A durable timer backs the timeout.
        """

    def send_event(self, instance_id: str, event_name: str, *, data: Any | None = None) -> None:
        """Send an event to another orchestration instance (fire and forget)."""
        raise NotImplementedError(f"{type(self).__name__} does not support send_event()")

    @overload
    def call_entity(self, entity: EntityInstanceId, operation: str, input: Any = ..., *,
                    return_type: type[T]) -> CompletableTask[T]: ...

    @overload
    def call_entity(self, entity: EntityInstanceId, operation: str, input: Any = ..., *,
                    return_type: None = ...) -> CompletableTask[Any]: ...

    def call_entity(self, entity: EntityInstanceId, operation: str, input: Any = None, *,
                    return_type: type | None = None) -> CompletableTask[Any]:
        """Run an operation on an entity and return a task for its result.

        If the operation raises, the task fails with a `TaskFailedError` whose cause is an
        `EntityOperationFailedException` (the entity's own error is its inner failure).

        Args:
            entity: The entity.
            operation: The operation's name.
            input: The operation's input.
            return_type: Decode the result into this type.

        Raises:
            RuntimeError: Inside a critical section, the entity is not one of the locked ones, or
                a call to it is still running.
        """
        raise NotImplementedError(f"{type(self).__name__} does not support call_entity()")

    def signal_entity(self, entity_id: EntityInstanceId, operation_name: str, input: Any = None,
                      signal_time: datetime | None = None) -> None:
        """Send a one-way operation to an entity (fire and forget).

        Args:
            entity_id: The entity.
            operation_name: The operation's name.
            input: The operation's input.
            signal_time: Deliver no earlier than this (UTC).

        Raises:
            RuntimeError: Inside a critical section, the entity is one of the locked ones (call it
                instead).
        """
        raise NotImplementedError(f"{type(self).__name__} does not support signal_entity()")

    def lock_entities(self, entities: list[EntityInstanceId]) -> CompletableTask[EntityLock]:
        """Lock entities for a critical section: ``with (yield ctx.lock_entities([a, b])):``.

        While the section lasts, only this orchestration runs operations on the locked entities,
        and it may only call (not signal) them, one call per entity at a time. Leaving the
        ``with`` block releases the locks; so does completing, failing or continuing as new.

        Raises:
            RuntimeError: A critical section is already open (sections do not nest).
            ValueError: ``entities`` is empty.
        """
        raise NotImplementedError(f"{type(self).__name__} does not support lock_entities()")

    def _exit_critical_section(self) -> None:
        """Release the locks of the open critical section, if any (called by `EntityLock`)."""
        raise NotImplementedError(f"{type(self).__name__} does not support entity locks")

    @abstractmethod
    def continue_as_new(self, new_input: Any, *, save_events: bool = False,
                        new_version: str | None = None) -> None:
        """Restart this instance with a new input and an empty history once the orchestrator returns.

        Args:
            new_input: The input of the new execution.
            save_events: Carry events that arrived but were not consumed into the new execution.
            new_version: The version of the new execution; by default the current one.
        """

    @abstractmethod
    def new_uuid(self) -> str:
        """Return a UUID that is the same on every replay (name-based, RFC 4122 section 4.3)."""

    def create_replay_safe_logger(self, logger: logging.Logger) -> ReplaySafeLogger:
        """Wrap ``logger`` so that it logs nothing while the orchestrator replays."""
        return ReplaySafeLogger(logger, lambda: self.is_replaying)


class ActivityContext:
    """What an activity function can see about its invocation.

    Args:
        orchestration_id: The instance ID of the orchestration that scheduled the activity.
        task_id: The activity's sequence number within that orchestration.
    """

    __slots__ = ("_orchestration_id", "_task_id")

    def __init__(self, orchestration_id: str, task_id: int) -> None:
        self._orchestration_id = orchestration_id
        self._task_id = task_id

    @property
    def orchestration_id(self) -> str:
        """The instance ID of the orchestration that scheduled this activity."""
        return self._orchestration_id

    @property
    def task_id(self) -> int:
        """The activity's sequence number, unique within its orchestration."""
        return self._task_id


Orchestrator: TypeAlias = Callable[[OrchestrationContext, TInput], "Generator[Task[Any], Any, TOutput] | TOutput"]
"""An orchestrator: ``(ctx, input)`` returning a generator that yields tasks (or a plain value)."""

Activity: TypeAlias = Callable[[ActivityContext, TInput], TOutput]
"""An activity: ``(ctx, input) -> output``."""


def get_name(fn: Callable[..., Any]) -> str:
    """Return the name a function is registered and called under.

    Raises:
        ValueError: ``fn`` is a lambda, which has no usable name.
    """
    name = getattr(fn, "__durabletask_name__", None) or getattr(fn, "__name__", None)
    if not name:
        raise ValueError(f"cannot infer a name from {fn!r}: register it with an explicit name")
    if name == "<lambda>":
        raise ValueError("cannot infer a name from a lambda function: register it with an explicit name")
    return str(name)


def get_entity_name(fn: Callable[..., Any] | type) -> str:
    """Return the name an entity function or class is registered under (before lower-casing).

    Raises:
        ValueError: ``fn`` is a lambda, which has no usable name.
    """
    name = getattr(fn, "__durable_entity_name__", None)
    if name:
        return str(name)
    return get_name(fn)
