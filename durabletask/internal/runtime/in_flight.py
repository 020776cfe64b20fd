"""The work items a worker holds: taken from the stream, not yet completed or given back.

A work item is tracked from dispatch until its completion is acknowledged, rejected for good, or
the item is given back. Most items run without an asyncio task of their own (an orchestration
episode runs inline, a plain activity on a thread, the completion is a call with a done
callback), so the runtime tracks items, not tasks: `stop` waits until none is left, then gives
back the rest.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Protocol

logger = logging.getLogger("durabletask.worker")


class _Cancellable(Protocol):
    def cancel(self) -> Any: ...


class WorkItem:
    """One work item in flight: its kind (``orchestration``, ``activity``, ``entity``) and completion token."""

    __slots__ = ("call", "given_up", "kind", "task", "token")

    def __init__(self, kind: str, token: str) -> None:
        self.kind = kind
        self.token = token
        self.task: asyncio.Task[Any] | None = None
        """The task working on the item, if it has one."""
        self.call: _Cancellable | None = None
        """The completion call in flight, if it was started without a task."""
        self.given_up = False
        """Set when stopping gave the item back: a result that still arrives is dropped."""


class InFlight:
    """The items in flight, and a way to wait until there are none."""

    def __init__(self) -> None:
        self._items: dict[WorkItem, None] = {}
        self._empty: asyncio.Future[None] | None = None

    def add(self, kind: str, token: str) -> WorkItem:
        item = WorkItem(kind, token)
        self._items[item] = None
        return item

    def done(self, item: WorkItem) -> None:
        """The item is over (completed, rejected or given back); idempotent."""
        if item not in self._items:
            return
        del self._items[item]
        if not self._items:
            empty = self._empty
            if empty is not None and not empty.done():
                empty.set_result(None)

    def track(self, item: WorkItem, task: asyncio.Task[Any]) -> None:
        """``task`` works on ``item``; if it fails or is cancelled, the item is over."""
        item.task = task
        task.add_done_callback(lambda t: self._task_done(item, t))

    def _task_done(self, task_item: WorkItem, task: asyncio.Task[Any]) -> None:
        if task_item.task is task:
            task_item.task = None
        if task.cancelled():
            self.done(task_item)
        elif task.exception() is not None:
            logger.error("unexpected error while processing a work item", exc_info=task.exception())
            self.done(task_item)

    async def wait_empty(self, timeout: float) -> list[WorkItem]:
        """Wait until no item is left or ``timeout`` passes; the items left over."""
        if self._items:
            self._empty = asyncio.get_running_loop().create_future()
            try:
                await asyncio.wait_for(asyncio.shield(self._empty), timeout)
            except asyncio.TimeoutError:
                pass
            finally:
                self._empty = None
        return list(self._items)
