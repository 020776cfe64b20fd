"""The deadlines of an HTTP/2 connection's calls, on one event loop timer (client and server alike).

Most calls end long before their deadline. A timer per call would be pushed on the loop's heap and
cancelled again for nearly every call; `Deadlines` keeps one timer, at the earliest deadline that
may still matter, so starting a call with a deadline costs a comparison. When the timer fires, the
connection ends the calls that are due and says which deadline comes next.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from typing import Protocol, TypeVar

NEVER = float("inf")
_SLACK = 1e-3  # a timer may fire up to the clock's resolution early


class HasDeadline(Protocol):
    @property
    def deadline(self) -> float | None: ...


C = TypeVar("C", bound=HasDeadline)


class Deadlines:
    """One loop timer for the deadlines (``loop.time()`` values) of a connection's calls.

    ``on_due(now)`` ends the calls whose deadline is at or before ``now`` and returns the earliest
    deadline left (`NEVER`: none, or the connection is gone); see `end_due`.
    """

    __slots__ = ("_loop", "_on_due", "_timer", "at")

    def __init__(self, loop: asyncio.AbstractEventLoop, on_due: Callable[[float], float]) -> None:
        self._loop = loop
        self._on_due = on_due
        self._timer: asyncio.TimerHandle | None = None
        self.at = NEVER
        """When the timer fires (`NEVER`: it is not armed)."""

    def add(self, deadline: float) -> None:
        """A call with this deadline started: the timer moves earlier if it has to."""
        if deadline < self.at:
            if self._timer is not None:
                self._timer.cancel()
            self.at = deadline
            self._timer = self._loop.call_at(deadline, self._fire)

    def cancel(self) -> None:
        """The connection is gone: no more firing."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.at = NEVER

    def _fire(self) -> None:
        self._timer = None
        self.at = NEVER
        earliest = self._on_due(self._loop.time() + _SLACK)
        if earliest < NEVER:
            self.add(earliest)


def end_due(calls: Iterable[C], now: float, end: Callable[[C], object]) -> float:
    """Call ``end`` for each call whose deadline is at or before ``now``; the earliest deadline of the others."""
    earliest = NEVER
    for call in calls:
        deadline = call.deadline
        if deadline is None:
            continue
        if deadline <= now:
            end(call)
        elif deadline < earliest:
            earliest = deadline
    return earliest
