"""Worker options: concurrency, versioning and work-item filters (the official SDK's names)."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from enum import Enum

from durabletask.internal import orchestrator_service_pb2 as pb


class ConcurrencyOptions:
    """How much work a worker takes on at once.

    Args:
        maximum_concurrent_activity_work_items: Activities in flight (default ``100 * cpus``).
        maximum_concurrent_orchestration_work_items: Orchestration episodes in flight
            (default ``100 * cpus``).
        maximum_concurrent_entity_work_items: Entity batches in flight (default ``100 * cpus``).
        maximum_thread_pool_workers: Threads for synchronous activities (default ``cpus + 4``).
            ``async def`` activities run on the event loop and use no thread.
    """

    def __init__(self, maximum_concurrent_activity_work_items: int | None = None,
                 maximum_concurrent_orchestration_work_items: int | None = None,
                 maximum_concurrent_entity_work_items: int | None = None,
                 maximum_thread_pool_workers: int | None = None) -> None:
        cpus = os.cpu_count() or 1
        self.maximum_concurrent_activity_work_items = _positive(
            "maximum_concurrent_activity_work_items", maximum_concurrent_activity_work_items, 100 * cpus)
        self.maximum_concurrent_orchestration_work_items = _positive(
            "maximum_concurrent_orchestration_work_items", maximum_concurrent_orchestration_work_items, 100 * cpus)
        self.maximum_concurrent_entity_work_items = _positive(
            "maximum_concurrent_entity_work_items", maximum_concurrent_entity_work_items, 100 * cpus)
        self.maximum_thread_pool_workers = _positive(
            "maximum_thread_pool_workers", maximum_thread_pool_workers, cpus + 4)

    def __repr__(self) -> str:
        return (f"ConcurrencyOptions(activities={self.maximum_concurrent_activity_work_items}, "
                f"orchestrations={self.maximum_concurrent_orchestration_work_items}, "
                f"entities={self.maximum_concurrent_entity_work_items}, "
                f"threads={self.maximum_thread_pool_workers})")


def _positive(name: str, value: int | None, default: int) -> int:
    if value is None:
        return default
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    return value


class VersionMatchStrategy(Enum):
    """Which orchestration versions a worker runs."""

    NONE = 1
    """Any version."""
    STRICT = 2
    """Only the worker's own version."""
    CURRENT_OR_OLDER = 3
    """The worker's version or older ones."""


class VersionFailureStrategy(Enum):
    """What a worker does with an orchestration whose version it does not run."""

    REJECT = 1
    """Give the work item back, for another worker to take."""
    FAIL = 2
    """Fail the orchestration."""


class VersioningOptions:
    """Versioning settings of a worker.

    Args:
        version: The version of the orchestrations this worker implements.
        default_version: The version given to sub-orchestrations started without one.
        match_strategy: Which versions this worker runs.
        failure_strategy: What to do with the others.
    """

    def __init__(self, version: str | None = None, default_version: str | None = None,
                 match_strategy: VersionMatchStrategy | None = None,
                 failure_strategy: VersionFailureStrategy | None = None) -> None:
        self.version = version
        self.default_version = default_version
        self.match_strategy = match_strategy
        self.failure_strategy = failure_strategy


_NUMERIC = re.compile(r"^v?(\d+(?:\.\d+)*)$", re.IGNORECASE)


def compare_versions(left: str | None, right: str | None) -> int:
    """-1, 0 or 1. Dotted numbers compare numerically (``1.10 > 1.9``), anything else as text.

    An absent version is older than any present one.
    """
    if not left and not right:
        return 0
    if not left:
        return -1
    if not right:
        return 1
    a, b = _NUMERIC.match(left), _NUMERIC.match(right)
    if a and b:
        xs = [int(p) for p in a.group(1).split(".")]
        ys = [int(p) for p in b.group(1).split(".")]
        width = max(len(xs), len(ys))
        xs += [0] * (width - len(xs))
        ys += [0] * (width - len(ys))
        return (xs > ys) - (xs < ys)
    return (left > right) - (left < right)


def version_mismatch(options: VersioningOptions | None, version: str | None) -> pb.TaskFailureDetails | None:
    """Why this worker must not run an orchestration of ``version``, or None if it may."""
    if options is None or options.match_strategy in (None, VersionMatchStrategy.NONE):
        return None
    order = compare_versions(version, options.version)
    if options.match_strategy == VersionMatchStrategy.STRICT and order != 0:
        message = f"The orchestration version '{version}' does not match the worker version '{options.version}'."
    elif options.match_strategy == VersionMatchStrategy.CURRENT_OR_OLDER and order > 0:
        message = f"The orchestration version '{version}' is greater than the worker version '{options.version}'."
    else:
        return None
    return pb.TaskFailureDetails(errorType="VersionMismatch", errorMessage=message, isNonRetriable=True)


@dataclass
class OrchestrationWorkItemFilter:
    """Ask for work items of the orchestration ``name`` (any version if ``versions`` is empty)."""

    name: str
    versions: list[str] = field(default_factory=list)


@dataclass
class ActivityWorkItemFilter:
    """Ask for work items of the activity ``name`` (any version if ``versions`` is empty)."""

    name: str
    versions: list[str] = field(default_factory=list)


@dataclass
class EntityWorkItemFilter:
    """Ask for work items of the entity ``name`` (names are case-insensitive)."""

    name: str

    def __post_init__(self) -> None:
        self.name = self.name.lower()


@dataclass
class WorkItemFilters:
    """Which work items the backend should send this worker; others stay for other workers."""

    orchestrations: list[OrchestrationWorkItemFilter] = field(default_factory=list)
    activities: list[ActivityWorkItemFilter] = field(default_factory=list)
    entities: list[EntityWorkItemFilter] = field(default_factory=list)

    def to_proto(self) -> pb.WorkItemFilters:
        return pb.WorkItemFilters(
            orchestrations=[pb.OrchestrationFilter(name=f.name, versions=f.versions) for f in self.orchestrations],
            activities=[pb.ActivityFilter(name=f.name, versions=f.versions) for f in self.activities],
            entities=[pb.EntityFilter(name=f.name) for f in self.entities],
        )
