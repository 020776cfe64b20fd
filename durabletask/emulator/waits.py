"""Waiting for an instance to start or finish, without a task: what WaitForInstanceStart/Completion wait on.

An `InstanceWait` is done when the instance's durable record gets there (or the instance is gone),
when its time is up, or when it is cancelled (the caller left). Its done callbacks run at once, in
the commit's callback that made the record get there, so the emulator's own server writes the
answer in the same pass of the loop as the completion that finished the instance: no task to wake,
no extra turns of the loop between the last episode's commit and the client's answer.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from durabletask.emulator.state import HubState, Waiter
from durabletask.emulator.store.base import PENDING, InstanceRecord
from durabletask.emulator.store.runner import StoreRunner

logger = logging.getLogger("durabletask.emulator.engine")


def started(record: InstanceRecord | None) -> bool:
    return record is None or record.status != PENDING


def finished(record: InstanceRecord | None) -> bool:
    return record is None or bool(record.is_terminal)


class InstanceWait:
    """One wait for one instance (see the module). ``record`` is the instance's record once done without
    an error; None if it does not exist. ``exception()`` is ``TimeoutError`` when the time ran out and
    ``asyncio.CancelledError`` after `cancel`."""

    __slots__ = ("_callbacks", "_done", "_error", "_hub", "_instance_id", "_timer", "_waiter", "record")

    def __init__(self, runner: StoreRunner, hub: HubState, instance_id: str, *, until_started: bool,
                 timeout: float | None) -> None:
        self.record: InstanceRecord | None = None
        self._hub = hub
        self._instance_id = instance_id
        self._callbacks: list[Callable[[InstanceWait], object]] = []
        self._done = False
        self._error: BaseException | None = None
        self._waiter: Waiter | None = None
        self._timer: asyncio.TimerHandle | None = None
        if timeout is not None:
            self._timer = asyncio.get_running_loop().call_later(timeout, self._settle, None, TimeoutError())
        predicate = started if until_started else finished
        # The in-memory record can be ahead of the durable one while a commit is on its way to disk.
        runner.when_flushed(lambda: self._look(predicate))

    def _look(self, predicate: Callable[[InstanceRecord | None], bool]) -> None:
        if self._done:
            return
        instance = self._hub.instances.get(self._instance_id)
        record = instance.record if instance is not None else None
        if predicate(record):
            self._settle(record)
            return
        self._waiter = Waiter(predicate=predicate, settle=self._settle)
        self._hub.waiters.setdefault(self._instance_id, []).append(self._waiter)

    def _settle(self, record: InstanceRecord | None, error: BaseException | None = None) -> None:
        if self._done:
            return
        self._done = True
        self.record = record
        self._error = error
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        waiter, self._waiter = self._waiter, None
        if waiter is not None:  # still registered unless the commit that settled it took it out
            waiters = self._hub.waiters.get(self._instance_id)
            if waiters is not None and waiter in waiters:
                waiters.remove(waiter)
                if not waiters:
                    del self._hub.waiters[self._instance_id]
        callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            try:
                callback(self)
            except Exception:
                logger.exception("a callback of an instance wait failed")

    def cancel(self) -> None:
        """Stop waiting (the caller is gone); a wait that is already done stays as it is."""
        self._settle(None, asyncio.CancelledError())

    # -- the Outcome protocol of the emulator's HTTP/2 server (and what a Durable offers)

    def done(self) -> bool:
        return self._done

    def add_done_callback(self, callback: Callable[[InstanceWait], object], /) -> None:
        if self._done:
            callback(self)
        else:
            self._callbacks.append(callback)

    def cancelled(self) -> bool:
        return isinstance(self._error, asyncio.CancelledError)

    def exception(self) -> BaseException | None:
        return self._error

    def __await__(self) -> Any:
        if not self._done:
            future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self.add_done_callback(lambda _: None if future.done() else future.set_result(None))
            try:
                yield from future
            finally:
                if not self._done:  # the awaiting task was cancelled
                    self.cancel()
        if self._error is not None:
            raise self._error
        return self.record
