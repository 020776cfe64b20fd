"""Durable tasks: what an orchestrator yields and what the replay engine completes.

Tasks are created by the orchestration context (an activity call, a timer, an event wait, ...)
and completed by the replay engine when the history says so. Composite tasks (`when_all`,
`when_any`) complete from their children. Every class keeps ``__slots__`` and a flat
``__init__``: a long replay creates one task per history step, so their cost is the engine's cost.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Generic, TypeVar, cast

from durabletask.internal import orchestrator_service_pb2 as pb
from durabletask.internal.failures import TaskCancelledError, TaskFailedError

if TYPE_CHECKING:
    from datetime import datetime

    from durabletask.internal.retry import RetryPolicy

T = TypeVar("T")


class Task(Generic[T]):
    """A unit of durable work whose result an orchestrator waits for by yielding it."""

    __slots__ = ("_exception", "_is_complete", "_parents", "_result")

    def __init__(self) -> None:
        self._is_complete = False
        self._exception: TaskFailedError | None = None
        self._result: Any = None
        self._parents: list[CompositeTask[Any]] | None = None

    @property
    def is_complete(self) -> bool:
        """True once the task has a result or a failure."""
        return self._is_complete

    @property
    def is_failed(self) -> bool:
        """True if the task completed with a failure."""
        return self._exception is not None

    @property
    def result(self) -> T:
        """The task's result; same as `get_result`."""
        return self.get_result()

    def get_result(self) -> T:
        """Return the result, or raise the failure if the task failed.

        Raises:
            ValueError: The task has not completed yet.
            TaskFailedError: The task failed.
        """
        if not self._is_complete:
            raise ValueError("The task has not completed.")
        if self._exception is not None:
            raise self._exception
        return cast(T, self._result)

    def get_exception(self) -> TaskFailedError:
        """Return the failure of a failed task.

        Raises:
            ValueError: The task has not failed.
        """
        if self._exception is None:
            raise ValueError("The task has not failed.")
        return self._exception

    def _notify_parents(self) -> None:
        parents = self._parents
        if parents:
            self._parents = None
            for parent in parents:
                parent.on_child_completed(self)


class CompletableTask(Task[T]):
    """A task the replay engine completes from a history event.

    Args:
        expected_type: The type the result is decoded into; None keeps plain JSON values.
    """

    __slots__ = ("_expected_type",)

    def __init__(self, expected_type: type | None = None) -> None:
        self._is_complete = False
        self._exception = None
        self._result = None
        self._parents = None
        self._expected_type = expected_type

    def complete(self, result: T) -> None:
        """Complete the task with a result and wake whatever waits on it."""
        if self._is_complete:
            raise ValueError("The task has already completed.")
        self._result = result
        self._is_complete = True
        if self._parents:
            self._notify_parents()

    def fail(self, message: str, details: pb.TaskFailureDetails | BaseException) -> None:
        """Fail the task; waiting orchestrator code sees a `TaskFailedError`."""
        if self._is_complete:
            raise ValueError("The task has already completed.")
        self._exception = TaskFailedError(message, details)
        self._is_complete = True
        if self._parents:
            self._notify_parents()


class CancellableTask(CompletableTask[T]):
    """A task that can be cancelled before it completes (timers and external-event waits)."""

    __slots__ = ("_cancel_handler", "_is_cancelled")

    def __init__(self, expected_type: type | None = None) -> None:
        CompletableTask.__init__(self, expected_type)
        self._is_cancelled = False
        self._cancel_handler: Callable[[], None] | None = None

    @property
    def is_cancelled(self) -> bool:
        """True if `cancel` took effect."""
        return self._is_cancelled

    def get_result(self) -> T:
        if self._is_cancelled:
            raise TaskCancelledError("The task was cancelled.")
        return super().get_result()

    def set_cancel_handler(self, cancel_handler: Callable[[], None]) -> None:
        """Register what undoes the task's pending work when it is cancelled."""
        self._cancel_handler = cancel_handler

    def cancel(self) -> bool:
        """Cancel the task if it has not completed.

        A cancelled timer that the backend already scheduled still fires; its firing is ignored.

        Returns:
            True if the task was cancelled, False if it had already completed.
        """
        if self._is_complete:
            return False
        if self._cancel_handler is not None:
            self._cancel_handler()
        self._is_cancelled = True
        self._is_complete = True
        if self._parents:
            self._notify_parents()
        return True


class TimerTask(CancellableTask[None]):
    """A durable timer. Long timers are split into chunks no longer than the worker's maximum."""

    __slots__ = ("_final_fire_at", "_maximum_timer_interval", "_retryable_parent")

    def __init__(self, final_fire_at: datetime | None = None, maximum_timer_interval: Any = None) -> None:
        CancellableTask.__init__(self)
        self._final_fire_at = final_fire_at
        self._maximum_timer_interval = maximum_timer_interval
        self._retryable_parent: RetryableTask[Any] | None = None

    def set_retryable_parent(self, retryable_task: RetryableTask[Any]) -> None:
        """Mark this timer as the back-off delay before ``retryable_task``'s next attempt."""
        self._retryable_parent = retryable_task


class RetryableTask(CompletableTask[T]):
    """An activity or sub-orchestration call governed by a `RetryPolicy`.

    A failed attempt schedules a timer; when it fires the same action is issued again under the
    same sequence number, so the history shows one task scheduled several times.
    """

    __slots__ = ("_action", "_attempt_count", "_is_sub_orch", "_retry_policy", "_start_time")

    def __init__(self, retry_policy: RetryPolicy, action: Any, start_time: datetime, is_sub_orch: bool,
                 expected_type: type | None = None) -> None:
        CompletableTask.__init__(self, expected_type)
        self._retry_policy = retry_policy
        self._action = action
        self._start_time = start_time
        self._is_sub_orch = is_sub_orch
        self._attempt_count = 1

    @property
    def attempt_count(self) -> int:
        """How many attempts have been made so far (1 for the first)."""
        return self._attempt_count

    def increment_attempt_count(self) -> None:
        self._attempt_count += 1


class CompositeTask(Task[T]):
    """A task made of other tasks. A task may belong to several composites."""

    __slots__ = ("_completed_tasks", "_failed_tasks", "_pending", "_tasks")

    def __init__(self, tasks: Sequence[Task[Any]]) -> None:
        Task.__init__(self)
        self._tasks: list[Task[Any]] = list(tasks)
        self._completed_tasks = 0
        self._failed_tasks = 0
        # id(child) -> how many times the child appears (a task may be passed twice).
        pending: dict[int, int] = {}
        already_complete: list[Task[Any]] = []
        for child in self._tasks:
            key = id(child)
            count = pending.get(key)
            if count is not None:
                pending[key] = count + 1
                continue
            pending[key] = 1
            if child._is_complete:
                already_complete.append(child)
            elif child._parents is None:
                child._parents = [self]
            else:
                child._parents.append(self)
        self._pending = pending
        for child in already_complete:
            if self._is_complete:
                break
            self.on_child_completed(child)

    def get_tasks(self) -> list[Task[Any]]:
        """The child tasks, in the order given."""
        return self._tasks

    def on_child_completed(self, task: Task[Any]) -> None:
        raise NotImplementedError

    def _finish(self) -> None:
        self._is_complete = True
        for child in self._tasks:
            parents = child._parents
            if parents and self in parents:
                parents.remove(self)
        if self._parents:
            self._notify_parents()


class WhenAllTask(CompositeTask[list[T]]):
    """Completes when every child has completed; fails with the first failure after all finish."""

    __slots__ = ("_pending_exception",)

    def __init__(self, tasks: Sequence[Task[T]]) -> None:
        self._pending_exception: TaskFailedError | None = None
        CompositeTask.__init__(self, tasks)
        if not self._tasks:
            self._result = []
            self._is_complete = True

    @property
    def pending_tasks(self) -> int:
        """How many children have not completed."""
        return len(self._tasks) - self._completed_tasks

    def get_completed_tasks(self) -> int:
        return self._completed_tasks

    def on_child_completed(self, task: Task[Any]) -> None:
        if self._is_complete:
            return
        occurrences = self._pending.pop(id(task), 0)
        if not occurrences:
            return
        self._completed_tasks += occurrences
        if task._exception is not None:
            self._failed_tasks += occurrences
            if self._pending_exception is None:
                self._pending_exception = task._exception
        elif task._result is None and isinstance(task, CancellableTask) and task._is_cancelled \
                and self._pending_exception is None:
            self._pending_exception = TaskFailedError(
                "A task awaited by when_all was cancelled.", TaskCancelledError("The task was cancelled.")
            )
        if not self._pending:
            if self._pending_exception is not None:
                self._exception = self._pending_exception
            else:
                self._result = [child._result for child in self._tasks]
            self._finish()


class WhenAnyTask(CompositeTask[Task[T]]):
    """Completes with the first child to complete (successfully or not); losers keep running."""

    __slots__ = ()

    def on_child_completed(self, task: Task[Any]) -> None:
        if not self._is_complete:
            self._result = task
            self._finish()


def when_all(tasks: Sequence[Task[T]]) -> WhenAllTask[T]:
    """Wait for all tasks; the result lists their results in the order given.

    If any task fails, the first failure is raised once every task has finished.
    """
    return WhenAllTask(tasks)


def when_any(tasks: Sequence[Task[T]]) -> WhenAnyTask[T]:
    """Wait for the first task to complete; the result is that task. The others are not cancelled.

    Raises:
        ValueError: ``tasks`` is empty (nothing could ever complete).
    """
    if not tasks:
        raise ValueError("when_any() needs at least one task")
    return WhenAnyTask(tasks)
