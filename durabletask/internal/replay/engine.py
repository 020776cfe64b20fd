"""The replay engine: (registered code, past events, new events) -> (actions, custom status, completion).

Pure: no I/O, no wall clock, no threads. The worker hands it an orchestrator work item's
``pastEvents`` and ``newEvents`` and sends back what it returns. With a session capacity, the
state of running orchestrations is kept between episodes (`durabletask.internal.replay.sessions`)
and resumed when the next history continues it, instead of being replayed from the start.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

from durabletask.internal import orchestrator_service_pb2 as pb
from durabletask.internal.failures import OrchestrationStateError
from durabletask.internal.registry import Registry
from durabletask.internal.replay import rewind
from durabletask.internal.replay.context import ReplayContext
from durabletask.internal.replay.handlers import apply_events
from durabletask.internal.replay.sessions import SessionCache
from durabletask.serialization import DEFAULT_DATA_CONVERTER, DataConverter

logger = logging.getLogger("durabletask.orchestration")

DEFAULT_MAXIMUM_TIMER_INTERVAL = timedelta(days=3)
"""Timers longer than this are split into chunks (backends other than DTS may cap timer length)."""


@dataclass(frozen=True)
class ExecutionResult:
    """What one episode of an orchestration produced.

    Attributes:
        actions: The actions to send, in creation order; a completion, if any, is last.
        encoded_custom_status: The full current custom status (None: no custom status).
        status: The completion status (``OrchestrationStatus`` value), or None while running.
        awaiting: While the orchestration runs, the sequence numbers of the tasks (activities,
            timers, sub-orchestrations, entity calls) whose results it has not had yet; empty once
            it has completed.
    """

    actions: list[pb.OrchestratorAction]
    encoded_custom_status: str | None
    status: int | None
    awaiting: tuple[int, ...] = ()

    @property
    def is_complete(self) -> bool:
        return self.status is not None


class OrchestrationExecutor:
    """Replays orchestrations registered in ``registry``.

    Args:
        registry: Where orchestrators are looked up by name.
        data_converter: Encodes and decodes payloads.
        maximum_timer_interval: Split longer timers into chunks of this length; None disables it.
        default_version: The version given to sub-orchestrations started without one.
        maximum_cached_orchestrations: Keep the state of up to this many running orchestrations between
            episodes, so that their next episode resumes them instead of replaying their history
            (0: replay every episode from the start).
    """

    def __init__(
        self,
        registry: Registry,
        *,
        data_converter: DataConverter | None = None,
        maximum_timer_interval: timedelta | None = DEFAULT_MAXIMUM_TIMER_INTERVAL,
        default_version: str | None = None,
        maximum_cached_orchestrations: int = 0,
    ) -> None:
        if maximum_cached_orchestrations < 0:
            raise ValueError(
                f"maximum_cached_orchestrations must be 0 (no cache) or more, got {maximum_cached_orchestrations}")
        self._registry = registry
        self.sessions = SessionCache(maximum_cached_orchestrations) if maximum_cached_orchestrations else None
        self._default_version = default_version
        self._converter = data_converter or DEFAULT_DATA_CONVERTER
        self._maximum_timer_interval = maximum_timer_interval

    def execute(
        self,
        instance_id: str,
        past_events: Sequence[pb.HistoryEvent],
        new_events: Sequence[pb.HistoryEvent],
    ) -> ExecutionResult:
        """Replay ``past_events``, apply ``new_events`` and return the episode's outcome.

        Raises:
            OrchestrationStateError: The work item is malformed (no new events, or no
                executionStarted anywhere); the caller should abandon it rather than fail the
                orchestration.
        """
        if not new_events:
            raise OrchestrationStateError(
                f"the work item for instance '{instance_id}' has no new events; there is nothing to run"
            )
        sessions = self.sessions
        ctx = None if sessions is None or not past_events else sessions.resume(instance_id, past_events)
        if ctx is None:
            ctx = self.new_context(instance_id)
            apply_events(ctx, past_events)
        ctx._is_replaying = False
        apply_events(ctx, new_events)
        if ctx.rewind_requested:
            if sessions is not None:
                sessions.discard(instance_id)
            logger.info("%s: rewinding the failed orchestration", instance_id)
            return ExecutionResult([rewind.rewind_action(past_events, new_events)], None, None)
        if not ctx.started and ctx.status is None:
            if sessions is not None:
                sessions.discard(instance_id)
            raise ctx.start_not_seen()
        result = result_of(ctx)
        if sessions is not None:
            sessions.keep(instance_id, ctx, past_events, new_events)
        return result

    def new_context(self, instance_id: str) -> ReplayContext:
        """A fresh replay state, in replay mode, for ``instance_id``."""
        return ReplayContext(instance_id, self._registry, self._converter, self._maximum_timer_interval,
                             self._default_version)


def result_of(ctx: ReplayContext) -> ExecutionResult:
    """Collect the episode's outcome from a replay state."""
    actions = ctx.result_actions()
    if ctx.status is not None and not ctx.is_replaying:
        logger.info("%s: orchestration '%s' completed with status %s", ctx.instance_id, ctx.name,
                    pb.OrchestrationStatus.Name(ctx.status))
    awaiting = tuple(ctx.pending_tasks) if ctx.status is None else ()
    return ExecutionResult(actions, ctx.encoded_custom_status, ctx.status, awaiting)
