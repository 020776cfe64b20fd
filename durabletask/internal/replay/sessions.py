"""Orchestration sessions: replay state kept between episodes, so a generator resumes instead of replaying.

Without a session, every episode rebuilds the orchestration from its whole history: the generator
runs again from the start and every past event goes through its handler, so an orchestration of n
steps costs O(n^2) over its life. A session keeps the `ReplayContext` (and its suspended generator)
of a running orchestration after an episode. The next work item for that instance still carries
the full history; when that history is the one this context already processed, followed only by
what committing the episode added (confirmations of the actions sent and the end-of-episode
marker), those few events are applied to the kept context and the episode goes on from there.

Anything else (a shorter or different history, an event the kept context does not expect, another
execution) drops the session and the caller replays from scratch, so a session never changes an
episode's outcome for deterministic orchestrator code. Code that is not deterministic is checked
for it only when a full replay happens.

Sessions of finished orchestrations are not kept. The cache holds at most ``capacity`` sessions and
drops the least recently used one beyond that.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Sequence

from durabletask.internal import orchestrator_service_pb2 as pb
from durabletask.internal.replay import entities
from durabletask.internal.replay.context import ReplayContext
from durabletask.internal.replay.handlers import apply_events

logger = logging.getLogger("durabletask.orchestration")

# Committing an episode appends confirmations of its actions: event kind -> the action kinds it confirms.
_CONFIRMS: dict[str, frozenset[str]] = {
    "taskScheduled": frozenset({"scheduleTask"}),
    "timerCreated": frozenset({"createTimer"}),
    "subOrchestrationInstanceCreated": frozenset({"createSubOrchestration"}),
    # Durable Functions records entity actions as eventSent too.
    "eventSent": frozenset({"sendEvent", entities.CALLED, entities.SIGNALED, entities.LOCK_REQUESTED,
                            entities.UNLOCK_SENT}),
    entities.CALLED: frozenset({entities.CALLED}),
    entities.SIGNALED: frozenset({entities.SIGNALED}),
    entities.LOCK_REQUESTED: frozenset({entities.LOCK_REQUESTED}),
    entities.UNLOCK_SENT: frozenset({entities.UNLOCK_SENT}),
}
_MARKERS = frozenset({"orchestratorCompleted"})


def _copy(event: pb.HistoryEvent) -> pb.HistoryEvent:
    # A copy, not a reference: a reference would keep the whole work item it came from alive.
    copy = pb.HistoryEvent()
    copy.CopyFrom(event)
    return copy


class _Session:
    """A running orchestration's context and the landmarks of the history it has processed."""

    __slots__ = ("context", "first", "last", "length", "marker", "marker_index")

    def __init__(self, context: ReplayContext, past: Sequence[pb.HistoryEvent],
                 new: Sequence[pb.HistoryEvent]) -> None:
        self.context = context
        self.length = len(past) + len(new)
        # The history's first event, the episode's first new event (its OrchestratorStarted marker,
        # stamped by the backend at each dispatch) and the last event processed: a history that
        # matches all three at their positions is the one this context has seen.
        self.first = _copy(past[0] if past else new[0])
        self.marker_index = len(past)
        self.marker = _copy(new[0])
        self.last = _copy(new[-1])


class SessionCache:
    """At most ``capacity`` orchestration sessions, by instance ID, least recently used dropped first.

    Not thread-safe for one instance: an executor serves one worker loop. `resume` takes the
    session out of the cache, so a context is never shared by two episodes.
    """

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"a session cache needs a capacity of at least 1, got {capacity}")
        self.capacity = capacity
        self._sessions: OrderedDict[str, _Session] = OrderedDict()
        self.resumed = 0
        self.replayed = 0

    def __len__(self) -> int:
        return len(self._sessions)

    def __contains__(self, instance_id: object) -> bool:
        return instance_id in self._sessions

    def resume(self, instance_id: str, past: Sequence[pb.HistoryEvent]) -> ReplayContext | None:
        """The kept context brought up to the end of ``past``, or None if ``past`` is not its continuation."""
        session = self._sessions.pop(instance_id, None)
        if session is None:
            self.replayed += 1
            return None
        reason = _mismatch(session, past)
        if reason is not None:
            self.replayed += 1
            logger.debug("%s: replaying from the start: %s", instance_id, reason)
            return None
        ctx = session.context
        ctx._is_replaying = True
        apply_events(ctx, past[session.length:])
        if ctx.status is not None:
            # A confirmation did not match its action (a determinism check failed): the kept state is
            # not this history's; a replay from the start decides.
            self.replayed += 1
            logger.debug("%s: replaying from the start: a confirmation did not match its action", instance_id)
            return None
        self.resumed += 1
        return ctx

    def keep(self, instance_id: str, ctx: ReplayContext, past: Sequence[pb.HistoryEvent],
             new: Sequence[pb.HistoryEvent]) -> None:
        """Keep ``ctx`` after an episode that processed ``past`` + ``new`` (only if it is still running)."""
        self._sessions.pop(instance_id, None)  # (a stale one, from a first episode that did not resume)
        if ctx.status is not None or ctx.rewind_requested or not ctx.started or not new:
            return
        self._sessions[instance_id] = _Session(ctx, past, new)  # the most recently used
        if len(self._sessions) > self.capacity:
            self._sessions.popitem(last=False)

    def discard(self, instance_id: str) -> None:
        self._sessions.pop(instance_id, None)


def _mismatch(session: _Session, past: Sequence[pb.HistoryEvent]) -> str | None:
    """Why ``past`` does not continue what ``session`` processed (None: it does)."""
    length = session.length
    if len(past) < length:
        return f"the history has {len(past)} events, fewer than the {length} already processed"
    if past[0] != session.first:
        return "the history starts differently (another execution)"
    if past[session.marker_index] != session.marker or past[length - 1] != session.last:
        return "the last episode's events are not in the history as processed (another episode was committed)"
    pending = session.context.pending_actions
    seen: set[int] = set()
    for event in past[length:]:
        kind = event.WhichOneof("eventType")
        if kind in _MARKERS:
            continue
        confirms = _CONFIRMS.get(kind or "")
        if confirms is None:
            return f"the history has a new {kind} event that only a replay can place"
        action = pending.get(event.eventId)
        if action is None or action.kind not in confirms or event.eventId in seen:
            return f"{kind} #{event.eventId} confirms no action sent in the last episode"
        seen.add(event.eventId)
    return None
