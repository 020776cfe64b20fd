"""Orchestration authoring API: contexts, tasks, composition, retries and failures.

The names and signatures match the official ``durabletask.task`` module, so orchestrators written
for it run unchanged. Additions: ``wait_for_external_event(..., timeout=...)``,
``RetryPolicy(handle_failure=...)``, `NonRetriableError`, `EventTimeoutError` and
``FailureDetails.is_non_retriable``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeAlias

from durabletask.entities import DurableEntity, EntityContext, EntityInstanceId, EntityLock
from durabletask.internal.contexts import (
    Activity,
    ActivityContext,
    OrchestrationContext,
    Orchestrator,
    ReplaySafeLogger,
    T,
    TInput,
    TOutput,
    get_entity_name,
    get_name,
)
from durabletask.internal.failures import (
    EventTimeoutError,
    FailureDetails,
    NonDeterminismError,
    NonRetriableError,
    OrchestrationStateError,
    TaskCancelledError,
    TaskFailedError,
)
from durabletask.internal.retry import RetryPolicy
from durabletask.internal.tasks import (
    CancellableTask,
    CompletableTask,
    CompositeTask,
    RetryableTask,
    Task,
    TimerTask,
    WhenAllTask,
    WhenAnyTask,
    when_all,
    when_any,
)

Entity: TypeAlias = Callable[[EntityContext, TInput], TOutput] | type[DurableEntity]
"""An entity: a function ``(ctx, input) -> output`` or a `DurableEntity` subclass."""

__all__ = [
    "Activity",
    "ActivityContext",
    "CancellableTask",
    "CompletableTask",
    "CompositeTask",
    "DurableEntity",
    "Entity",
    "EntityContext",
    "EntityInstanceId",
    "EntityLock",
    "EventTimeoutError",
    "FailureDetails",
    "NonDeterminismError",
    "NonRetriableError",
    "OrchestrationContext",
    "OrchestrationStateError",
    "Orchestrator",
    "ReplaySafeLogger",
    "RetryPolicy",
    "RetryableTask",
    "T",
    "TInput",
    "TOutput",
    "Task",
    "TaskCancelledError",
    "TaskFailedError",
    "TimerTask",
    "WhenAllTask",
    "WhenAnyTask",
    "get_entity_name",
    "get_name",
    "when_all",
    "when_any",
]
