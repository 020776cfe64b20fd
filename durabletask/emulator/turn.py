"""Work done at the end of the event loop's turn, in one pass: store commits, work-item pumps, socket writes.

A request that changes state travels through three pieces of deferred work: the store commits the
turn's batches together, the dispatcher hands out the work that became ready, and each connection
sends what was written to it in one ``send``. Scheduled one by one with ``loop.call_soon``, each
runs a turn after the one that scheduled it, and a commit's answer left three turns (and two
sends) after its request arrived. Registered here, they run in one callback, in the order they
were registered, including work registered while the pass runs: the commit's answers are
written during the pass and their connection is flushed in the same pass, with the work items
the pump wrote before it, in one send.

Socket sends (`add_send`) run after all other work of the pass, and those marked ``first`` before
the others: a connection that pushed a work item is flushed before one that only carries answers.
On a busy machine the send that wakes a client can let that client run before the emulator's
next send; the worker waiting for its work item is the one that should not wait for that.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Callable

logger = logging.getLogger("durabletask.emulator")


class TurnEnd:
    """The deferred work of one event loop."""

    __slots__ = ("_due", "_first", "_loop", "_queue", "_sends")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = weakref.ref(loop)  # the registry below is keyed by the loop: no strong reference back
        self._queue: list[Callable[[], object]] = []
        self._first: list[Callable[[], object]] = []
        self._sends: list[Callable[[], object]] = []
        self._due = False

    def _schedule(self) -> None:
        if not self._due:
            loop = self._loop()
            if loop is None:  # pragma: no cover - a loop that is gone runs nothing
                return
            self._due = True
            loop.call_soon(self._run)

    def add(self, work: Callable[[], object]) -> None:
        """Run ``work`` once the callbacks already due this turn have run."""
        self._schedule()
        self._queue.append(work)

    def add_send(self, send: Callable[[], object], *, first: bool = False) -> None:
        """Run ``send`` after the pass's other work; ``first``: before the sends that are not."""
        self._schedule()
        (self._first if first else self._sends).append(send)

    def _run(self) -> None:
        try:
            while self._queue or self._first or self._sends:  # work added by work runs in this pass too
                if self._queue:
                    batch, self._queue = self._queue, []
                elif self._first:
                    batch, self._first = self._first, []
                else:
                    batch, self._sends = self._sends, []
                for i, work in enumerate(batch):
                    try:
                        work()
                    except Exception:
                        logger.exception("deferred work %r failed", work)
                    except BaseException:  # pragma: no cover - KeyboardInterrupt mid-pass: the rest runs later
                        self._queue[:0] = batch[i + 1:]
                        raise
        finally:
            self._due = False
            if self._queue or self._first or self._sends:  # pragma: no cover - only after a BaseException
                self._schedule()


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
