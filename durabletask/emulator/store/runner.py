"""Runs a store's calls in submission order, with group commit, on the loop or on a thread of its own.

The engine submits batches and reads from the asyncio loop and awaits their futures.

* A store whose writes are quick (SQLite with ``synchronous=NORMAL``: a commit is one write to its
  journal file, no fsync) runs on the loop: the batches submitted during one turn of the loop are
  committed together at the end of that turn (:mod:`durabletask.emulator.turn`). No thread
  hand-overs, no GIL contention; measured, this costs less CPU than the thread
  (``benchmarks/emulator.py``).
* A store that waits for the disk (``synchronous=FULL``: an fsync per commit) gets a dedicated
  thread that takes everything queued since its last turn, commits all waiting batches in one
  transaction, runs reads in between in order, and resolves the futures with a single hand-over to
  the loop.
* A store that never blocks (memory) is called inline, batch by batch.

Ordering guarantee: calls take effect in the order they were submitted, so a read submitted after
a batch sees that batch, and the durable state is always a prefix of the engine's changes.

A batch's outcome is a :class:`Durable`: unlike an asyncio future, it runs its callbacks as soon
as the commit is done, in the same pass, so an answer waiting for the commit is written (and sent)
in the pass that committed it instead of turns later.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Generator
from typing import Any, TypeVar

from durabletask.emulator.store.base import Batch, Store
from durabletask.emulator.turn import turn_end

logger = logging.getLogger("durabletask.emulator.store")

T = TypeVar("T")


class Durable:
    """The outcome of a submitted batch: done once the batch is durable, or failed with the store's error.

    Callbacks (``add_done_callback``) run synchronously when it is settled, or at once if it already
    is; it can be awaited any number of times.
    """

    __slots__ = ("_callbacks", "_done", "_error")

    def __init__(self) -> None:
        self._done = False
        self._error: BaseException | None = None
        self._callbacks: list[Callable[[Durable], object]] = []

    def done(self) -> bool:
        return self._done

    def cancelled(self) -> bool:
        return False

    def exception(self) -> BaseException | None:
        if not self._done:
            raise asyncio.InvalidStateError("the batch is not committed yet")
        return self._error

    def add_done_callback(self, callback: Callable[[Durable], object]) -> None:
        if self._done:
            _call(callback, self)
        else:
            self._callbacks.append(callback)

    def settle(self, error: BaseException | None = None) -> None:
        """Mark it done (failed with ``error``) and run its callbacks; a second call does nothing."""
        if self._done:
            return
        self._done = True
        self._error = error
        callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            _call(callback, self)

    def __await__(self) -> Generator[Any, None, None]:
        if not self._done:
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self.add_done_callback(lambda _: None if waiter.done() else waiter.set_result(None))
            yield from waiter
        if self._error is not None:
            raise self._error

    @classmethod
    def of(cls, awaitable: Awaitable[Any]) -> Durable:
        """A Durable settled when ``awaitable`` (run as a task) finishes."""
        durable = cls()

        def finished(task: asyncio.Future[Any]) -> None:
            durable.settle(asyncio.CancelledError() if task.cancelled() else task.exception())

        asyncio.ensure_future(awaitable).add_done_callback(finished)
        return durable


def _call(callback: Callable[[Durable], object], durable: Durable) -> None:
    try:
        callback(durable)
    except Exception:
        logger.exception("a callback of a committed batch failed")


# Queue entries: (batch or callable, Durable for a batch or future for a call).
_Entry = tuple[Any, Any]


class StoreRunner:
    """Owns the store and the thread that talks to it."""

    def __init__(self, store: Store, *, linger: float = 0.001, threaded: bool | None = None) -> None:
        self.store = store
        self.threaded = store.waits_for_disk if threaded is None else threaded
        """Run the store on its own thread; otherwise on the loop, committing each turn's batches together."""
        self._inline: list[_Entry] = []
        self.linger = linger
        """Seconds the store thread waits for more batches before a commit while busy (group commit)."""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queue: list[_Entry] = []
        self._outbox: list[_Entry] = []
        self._cond = threading.Condition()
        self._closing = False
        self._thread: threading.Thread | None = None
        self._last: Durable | None = None
        self.commits = 0
        """Number of transactions (group commits) so far, for tests and benchmarks."""

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        if self.threaded:
            ready: asyncio.Future[None] = self._loop.create_future()
            self._thread = threading.Thread(target=self._run, args=(ready,), name="durabletask-emulator-store",
                                            daemon=True)
            self._thread.start()
            await ready
        else:
            self.store.open()

    async def stop(self) -> None:
        if self._thread is not None:
            if self._outbox:
                self._hand_over()
            with self._cond:
                self._closing = True
                self._cond.notify()
            await asyncio.get_running_loop().run_in_executor(None, self._thread.join)
            self._thread = None
        elif self._loop is not None:
            self._commit_inline()
            self.store.close()
        self._loop = None

    def submit(self, batch: Batch) -> Durable:
        """Queue a batch; the result settles once it is durable (or fails with the store's error)."""
        loop = self._loop
        if loop is None:
            raise RuntimeError("the store runner is not started")
        durable = Durable()
        if self._thread is None and self.store.blocking:  # on the loop, grouped by turn
            if not self._inline:
                turn_end(loop).add(self._commit_inline)
            self._inline.append((batch, durable))
            self._last = durable
            return durable
        if self._thread is None:
            durable.settle(self.store.apply([batch])[0])
            return durable
        self._last = durable
        self._enqueue((batch, durable))
        return durable

    async def call(self, function: Callable[..., T], *args: Any) -> T:
        """Run a read on the store, after every batch submitted before it."""
        loop = self._loop
        if loop is None:
            raise RuntimeError("the store runner is not started")
        if self._thread is None:
            self._commit_inline()
            return function(*args)
        future: asyncio.Future[T] = loop.create_future()
        self._enqueue((lambda: function(*args), future))
        return await future

    async def flush(self) -> None:
        """Wait until everything submitted so far is durable (or failed)."""
        self._commit_inline()
        last = self._last
        if last is not None and not last.done():
            with contextlib.suppress(Exception):  # its submitter gets the error
                await last

    def when_flushed(self, callback: Callable[[], object]) -> None:
        """`flush` without a task: call ``callback`` once everything submitted so far is durable (or failed);
        at once if it already is."""
        self._commit_inline()
        last = self._last
        if last is None or last.done():
            callback()
        else:
            last.add_done_callback(lambda _: callback())

    @property
    def pending(self) -> bool:
        return self._last is not None and not self._last.done()

    def _commit_inline(self) -> None:
        entries, self._inline = self._inline, []
        if entries:
            _settle_all(self._process(entries))

    def _enqueue(self, entry: _Entry) -> None:
        # Entries made during one turn of the event loop are handed over together at its end.
        if not self._outbox:
            assert self._loop is not None
            self._loop.call_soon(self._hand_over)
        self._outbox.append(entry)

    def _hand_over(self) -> None:
        entries, self._outbox = self._outbox, []
        with self._cond:
            self._queue.extend(entries)
            self._cond.notify()

    # -- the store thread

    def _run(self, ready: asyncio.Future[None]) -> None:
        loop = self._loop
        assert loop is not None
        try:
            self.store.open()
        except BaseException as error:  # report to start() and end the thread
            loop.call_soon_threadsafe(_settle, ready, None, error)
            return
        loop.call_soon_threadsafe(_settle, ready, None, None)
        busy_until = 0.0
        try:
            while True:
                with self._cond:
                    while not self._queue and not self._closing:
                        self._cond.wait()
                    if self.linger > 0 and time.monotonic() < busy_until and not self._closing:
                        # Busy: give the loop a moment to add more batches to this transaction.
                        self._cond.wait(self.linger)
                    entries, self._queue = self._queue, []
                    if not entries and self._closing:
                        return
                outcomes = self._process(entries)
                loop.call_soon_threadsafe(_settle_all, outcomes)
                busy_until = time.monotonic() + 0.05
        finally:
            self.store.close()

    def _process(self, entries: list[_Entry]) -> list[tuple[Any, Any, BaseException | None]]:
        outcomes: list[tuple[Any, Any, BaseException | None]] = []
        pending: list[_Entry] = []

        def commit_pending() -> None:
            if not pending:
                return
            try:
                errors = self.store.apply([batch for batch, _ in pending])
                self.commits += 1
            except BaseException as error:  # an unexpected failure fails every batch of the group
                logger.exception("the store failed to apply %d batch(es)", len(pending))
                errors = [error] * len(pending)
            outcomes.extend((future, None, error) for (_, future), error in zip(pending, errors, strict=True))
            pending.clear()

        for entry in entries:
            if isinstance(entry[0], Batch):
                pending.append(entry)
                continue
            commit_pending()
            try:
                outcomes.append((entry[1], entry[0](), None))
            except BaseException as error:
                outcomes.append((entry[1], None, error))
        commit_pending()
        return outcomes


def _settle(future: asyncio.Future[Any] | Durable, result: Any, error: BaseException | None) -> None:
    if isinstance(future, Durable):
        future.settle(error)
    elif future.done():
        return
    elif error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


def _settle_all(outcomes: list[tuple[Any, Any, BaseException | None]]) -> None:
    for future, result, error in outcomes:
        _settle(future, result, error)
