"""Sending work-item completions, and giving work items back.

A completion is first sent as a call with a done callback (the SDK's own transport), which needs
no task; with grpc, and after a transient failure, it is sent from a task that retries with
back-off and, if the completion never lands, gives the item back (abandon) so the backend
redelivers it at once instead of waiting for the lease to expire. A rejection for good (the lease
moved on, the instance is gone) is logged and the item is over: the backend redelivers it if it
still needs doing. Every item handed here ends in `InFlight.done`.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import grpc
import grpc.aio

from durabletask.internal import orchestrator_service_pb2 as pb
from durabletask.internal.runtime.in_flight import InFlight, WorkItem

logger = logging.getLogger("durabletask.worker")

_TRANSIENT = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED,
                        grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.ABORTED})
_ATTEMPTS = 5
_TIMEOUT = 30.0
_ABANDON = {
    "orchestration": ("AbandonTaskOrchestratorWorkItem", pb.AbandonOrchestrationTaskRequest),
    "activity": ("AbandonTaskActivityWorkItem", pb.AbandonActivityTaskRequest),
    "entity": ("AbandonTaskEntityWorkItem", pb.AbandonEntityTaskRequest),
}


class Completions:
    """Completes and gives back the worker's items on the current stub (set by the runtime per channel)."""

    def __init__(self, in_flight: InFlight, metadata: tuple[tuple[str, str], ...]) -> None:
        self.stub: Any = None
        self._in_flight = in_flight
        self._md = metadata

    def send(self, item: WorkItem, method: str, response: Any, body: bytes | None = None) -> None:
        """Send ``response`` (``body``: it serialized) with ``method``; an item given back sends nothing."""
        if item.given_up:
            return
        call = getattr(self.stub, method)
        start = getattr(call, "start", None)
        if start is not None:
            started = start(response if body is None else body,
                            lambda error: self._sent(item, method, response, error),
                            timeout=_TIMEOUT, metadata=self._md, serialized=body is not None)
            if started is not None:
                item.call = started
                return
        self._retry_in_task(item, method, response, 0)

    def _sent(self, item: WorkItem, method: str, response: Any, error: BaseException | None) -> None:
        item.call = None
        if error is None or item.given_up or not isinstance(error, grpc.aio.AioRpcError):
            self._in_flight.done(item)
        elif error.code() in _TRANSIENT:
            self._retry_in_task(item, method, response, 1)  # the first attempt was this call
        else:
            _rejected(method, error)
            self._in_flight.done(item)

    def _retry_in_task(self, item: WorkItem, method: str, response: Any, first: int) -> None:
        self._in_flight.track(item, asyncio.ensure_future(self._retry(item, method, response, first)))

    async def _retry(self, item: WorkItem, method: str, response: Any, first: int) -> None:
        for attempt in range(first, _ATTEMPTS):
            if attempt:
                await asyncio.sleep(min(2.0, 0.1 * 2 ** (attempt - 1)))
            try:
                await getattr(self.stub, method)(response, timeout=_TIMEOUT, metadata=self._md)
                self._in_flight.done(item)
                return
            except grpc.aio.AioRpcError as error:
                if error.code() not in _TRANSIENT:
                    _rejected(method, error)
                    self._in_flight.done(item)
                    return
        logger.warning("%s failed %d times; giving the work item back", method, _ATTEMPTS)
        await self.give_back(None, item)

    async def give_back(self, _: Any, item: WorkItem) -> None:
        """Abandon ``item`` (the signature of a work function, for `WorkerRuntime._spawn`); it is over then."""
        try:
            await self.abandon(item.kind, item.token)
        finally:
            self._in_flight.done(item)

    async def abandon(self, kind: str, token: str) -> None:
        """Give back the work item of ``kind`` with ``token``; a failure is logged (the lease will expire)."""
        method, request = _ABANDON[kind]
        try:
            await getattr(self.stub, method)(request(completionToken=token), timeout=10, metadata=self._md)
        except grpc.aio.AioRpcError as error:
            logger.info("could not give back a %s work item (%s); its lease will expire", kind, error.code().name)

    async def drain(self, timeout: float) -> None:
        """Let in-flight work finish for ``timeout`` seconds, then stop what is left and give it back."""
        leftovers = await self._in_flight.wait_empty(timeout)
        if not leftovers:
            return
        tasks = []
        for item in leftovers:
            item.given_up = True
            if item.task is not None:
                item.task.cancel()
                tasks.append(item.task)
            if item.call is not None:
                item.call.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.gather(*(self.abandon(item.kind, item.token) for item in leftovers), return_exceptions=True)


def _rejected(method: str, error: grpc.aio.AioRpcError) -> None:
    logger.warning("%s rejected (%s: %s); the backend will redeliver the work item",
                   method, error.code().name, error.details())
