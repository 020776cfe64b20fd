"""The threads that run plain (synchronous) activities and entity batches.

Why not ``concurrent.futures.ThreadPoolExecutor``: its ``submit`` takes a lock, builds a future
and a work item and asks a Python-level ``Semaphore`` whether a thread is idle; on the worker's
loop thread that was about a tenth of the CPU of a small work item. Here `post` hands a job (a
plain callable that delivers its own result) to one ``SimpleQueue``, and a counter under a lock
decides whether an idle thread will take it or a new thread must start. `submit` is the
``Executor`` interface on top, for code that wants a future (``loop.run_in_executor``).

Threads start on demand up to the maximum and then stay. They are daemon threads: after `shutdown`
the worker has already waited for (or given back) the work they run.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Executor, Future
from typing import Any, TypeVar

logger = logging.getLogger("durabletask.worker")

T = TypeVar("T")


class ActivityThreads(Executor):
    """Up to ``max_threads`` threads taking jobs from one queue, in order."""

    def __init__(self, max_threads: int, name: str = "durabletask-activity") -> None:
        if max_threads < 1:
            raise ValueError(f"max_threads must be >= 1, got {max_threads}")
        self._max = max_threads
        self._name = name
        self._jobs: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._idle = 0  # threads that finished a job and have not been promised another one
        self._threads: list[threading.Thread] = []
        self._shut = False

    @property
    def threads(self) -> int:
        """How many threads have been started."""
        return len(self._threads)

    def post(self, job: Callable[[], None]) -> None:
        """Run ``job()`` on one of the threads; it must deliver its own result (and not raise).

        Raises:
            RuntimeError: After `shutdown`.
        """
        if self._shut:
            raise RuntimeError("cannot schedule new work after shutdown")
        self._jobs.put(job)
        with self._lock:
            if self._idle:
                self._idle -= 1
                return
            if len(self._threads) >= self._max:
                return
            thread = threading.Thread(target=self._work, name=f"{self._name}_{len(self._threads)}", daemon=True)
            self._threads.append(thread)
        thread.start()

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        job = _FutureJob(fn, args, kwargs)
        self.post(job)
        return job.future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Take no more jobs; the threads end after the jobs queued so far (dropped with ``cancel_futures``)."""
        with self._lock:
            if self._shut:
                return
            self._shut = True
            threads = list(self._threads)
        if cancel_futures:
            while True:
                try:
                    dropped = self._jobs.get_nowait()
                except queue.Empty:
                    break
                if isinstance(dropped, _FutureJob):
                    dropped.future.cancel()
        for _ in threads:
            self._jobs.put(None)
        if wait:
            for thread in threads:
                thread.join()

    def _work(self) -> None:
        jobs = self._jobs
        lock = self._lock
        while True:
            job = jobs.get()
            if job is None:
                return
            try:
                job()
            except BaseException:
                logger.exception("a job on the activity threads failed unexpectedly")
            del job
            with lock:
                self._idle += 1


class _FutureJob:
    """A job that reports through a ``concurrent.futures.Future`` (what `ActivityThreads.submit` returns)."""

    __slots__ = ("args", "fn", "future", "kwargs")

    def __init__(self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        self.fn = fn
        self.args = args
        self.kwargs = kwargs
        self.future: Future[Any] = Future()

    def __call__(self) -> None:
        if not self.future.set_running_or_notify_cancel():
            return
        try:
            result = self.fn(*self.args, **self.kwargs)
        except BaseException as error:
            self.future.set_exception(error)
        else:
            self.future.set_result(result)
