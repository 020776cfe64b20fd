"""Work done at the end of the event loop's turn, in one pass: store commits, work-item pumps, socket writes.

A request that changes state travels through three pieces of deferred work: the store commits the
turn's batches together, the dispatcher hands out the work that became ready, and each connection
sends what was written to it in one ``send``. Scheduled one by one with ``loop.call_soon``, each
runs a turn after the one that scheduled it, and a commit's answer left three turns (and two
sends) after its request arrived. Registered here, they run in one callback, in the order they
were registered, including work registered while the pass runs: the commit's answers are
written during the pass and their connection is flushed in the same pass, with the work items
the pump wrote before it, in one send.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Callable

logger = logging.getLogger("durabletask.emulator")


class TurnEnd:
    """The deferred work of one event loop."""

    __slots__ = ("_loop", "_queue")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = weakref.ref(loop)  # the registry below is keyed by the loop: no strong reference back
        self._queue: list[Callable[[], object]] = []

    def add(self, work: Callable[[], object]) -> None:
        """Run ``work`` once the callbacks already due this turn have run."""
        if not self._queue:
            loop = self._loop()
            if loop is None:  # pragma: no cover - a loop that is gone runs nothing
                return
            loop.call_soon(self._run)
        self._queue.append(work)

    def _run(self) -> None:
        queue = self._queue
        i = 0
        try:
            while i < len(queue):  # work added by work runs in this pass too
                work = queue[i]
                i += 1
                try:
                    work()
                except Exception:
                    logger.exception("deferred work %r failed", work)
        finally:
            self._queue = []
            if i < len(queue):  # pragma: no cover - only after a BaseException (KeyboardInterrupt) mid-pass
                for work in queue[i:]:
                    self.add(work)


_turn_ends: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, TurnEnd] = weakref.WeakKeyDictionary()
# The loop asked for last and its TurnEnd: a weak-keyed lookup makes a weak reference every time,
# and the engine asks a few times per turn, nearly always for the same loop.
_last: tuple[weakref.ref[asyncio.AbstractEventLoop], TurnEnd] | None = None


def turn_end(loop: asyncio.AbstractEventLoop) -> TurnEnd:
    """The loop's :class:`TurnEnd` (one per loop, created on first use)."""
    global _last
    last = _last
    if last is not None and last[0]() is loop:
        return last[1]
    ends = _turn_ends.get(loop)
    if ends is None:
        ends = _turn_ends[loop] = TurnEnd(loop)
    _last = (weakref.ref(loop), ends)
    return ends
