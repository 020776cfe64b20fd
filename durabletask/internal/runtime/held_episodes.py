"""Holding back, briefly, the completion of an episode that sent nothing, so results share one episode.

Every orchestrator work item carries the orchestration's whole history, and a backend dispatches
an orchestration again as soon as a result reaches it while no episode of it is in flight. A
worker that answers an episode in a fraction of a millisecond therefore gets one episode per
result of a fan-in: a fan-out of 1,000 activities costs about as many episodes, each shipping,
parsing and committing a history of up to 2,000 events (the bytes grow with the square of the
fan-out), and the orchestration's own results wait behind them.

While an episode's completion has not been sent, the backend keeps the orchestration's new results
in its inbox, and the next episode delivers all of them. So the completion of an episode that
sent no action is held for at most the window (`TaskHubGrpcWorker(result_batching_window=...)`)
when two or more of the results its orchestration awaits have yet to be sent by anyone (a single
one is one more episode either way). Results this worker has sent already but the episode did not
carry (they reached the backend after it dispatched the episode) do not count: they are in the
backend's inbox. The completion is sent earlier:

* when this worker has completed every activity the held episode still awaited;
* when another work item for the same instance arrives (the backend has moved on);
* when the stream ends or the worker stops.

Holding changes no outcome: the episode's completion is exactly what it was, and results that
arrive meanwhile are delivered by the backend in the next episode. What it costs is at most the
window of delay before such a result is processed, and only for orchestrations awaiting several
tasks at once.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Callable

from durabletask.internal import orchestrator_service_pb2 as pb
from durabletask.internal.runtime.in_flight import WorkItem

_WATCHED = 10_000
"""Running orchestrations whose activity completions are remembered, least recently run dropped first."""


class _Held:
    __slots__ = ("item", "missing", "response", "timer")

    def __init__(self, item: WorkItem, response: pb.OrchestratorResponse, missing: set[int],
                 timer: asyncio.TimerHandle) -> None:
        self.item = item
        self.response = response
        self.missing = missing
        self.timer = timer


class HeldEpisodes:
    """Completions of episodes held back for up to ``window`` seconds, by instance ID (loop thread only).

    ``send(item, response)`` sends a completion; it is called once for every held episode.
    """

    def __init__(self, window: float, send: Callable[[WorkItem, pb.OrchestratorResponse], None]) -> None:
        self.window = window
        self._send = send
        self._held: dict[str, _Held] = {}
        # Of each orchestration that ran here and awaits tasks: the activities of it this worker has
        # completed since, minus those its last episode had the results of.
        self._sent: OrderedDict[str, set[int]] = OrderedDict()

    def __contains__(self, instance_id: object) -> bool:
        return instance_id in self._held

    def hold(self, item: WorkItem, response: pb.OrchestratorResponse, awaiting: tuple[int, ...]) -> bool:
        """Take note of an episode and hold its completion if it may be (True); otherwise (False) the caller
        sends it now. ``awaiting``: the tasks the orchestration awaits after the episode (`Episode`)."""
        if self.window <= 0:
            return False
        instance_id = response.instanceId
        if instance_id in self._held:  # (not expected: the backend sends one episode of an instance at a time)
            self.release(instance_id)
        sent = self._sent.pop(instance_id, None)
        if not awaiting:
            return False  # it has completed
        missing = set(awaiting)
        if sent:
            sent &= missing  # the results the episode had are history now
            missing -= sent
        self._sent[instance_id] = sent or set()
        if len(self._sent) > _WATCHED:
            self._sent.popitem(last=False)
        if response.actions or len(missing) < 2:
            return False
        timer = asyncio.get_running_loop().call_later(self.window, self.release, instance_id)
        self._held[instance_id] = _Held(item, response, missing, timer)
        return True

    def activity_done(self, instance_id: str, task_id: int) -> None:
        """This worker completed activity ``task_id`` of ``instance_id``; the last one awaited sends the episode."""
        sent = self._sent.get(instance_id)
        if sent is None:
            return
        sent.add(task_id)
        held = self._held.get(instance_id)
        if held is not None:
            held.missing.discard(task_id)
            if not held.missing:
                self.release(instance_id)

    def release(self, instance_id: str) -> None:
        """Send the held episode of ``instance_id`` now, if there is one."""
        held = self._held.pop(instance_id, None)
        if held is not None:
            held.timer.cancel()
            self._send(held.item, held.response)

    def release_all(self) -> None:
        """Send every held episode now."""
        for instance_id in list(self._held):
            self.release(instance_id)
