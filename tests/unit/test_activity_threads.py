"""`ActivityThreads`: the worker's threads for plain activities and entity batches."""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import CancelledError

import pytest

from durabletask.internal.runtime.activity_threads import ActivityThreads
from tests.support.polling import wait_until


def test_jobs_run_on_one_reused_thread_when_they_come_one_at_a_time() -> None:
    threads = ActivityThreads(8)
    try:
        names = []
        done = threading.Event()

        def job() -> None:
            names.append(threading.current_thread().name)
            done.set()

        for _ in range(20):
            done.clear()
            threads.post(job)
            assert done.wait(5)
            wait_until(lambda: threads._idle, timeout=5, interval=0.001)  # until the thread is back, idle
        assert threads.threads == 1 and set(names) == {"durabletask-activity_0"}
    finally:
        threads.shutdown()


def test_no_more_than_max_threads_run_at_once_and_queued_jobs_wait_their_turn() -> None:
    threads = ActivityThreads(3, "t")
    lock = threading.Lock()
    running = peak = finished = 0
    release = threading.Event()

    def job() -> None:
        nonlocal running, peak, finished
        with lock:
            running += 1
            peak = max(peak, running)
        release.wait(5)
        with lock:
            running -= 1
            finished += 1

    try:
        for _ in range(9):
            threads.post(job)
        deadline = time.monotonic() + 5
        while running < 3 and time.monotonic() < deadline:
            time.sleep(0.001)
        time.sleep(0.05)
        assert running == 3 and threads.threads == 3
        release.set()
        deadline = time.monotonic() + 5
        while finished < 9 and time.monotonic() < deadline:
            time.sleep(0.001)
        assert finished == 9 and peak == 3 and threads.threads == 3
    finally:
        threads.shutdown()


def test_submit_gives_futures_with_results_and_errors() -> None:
    threads = ActivityThreads(2)
    try:
        assert threads.submit(lambda a, b=0: a + b, 2, b=3).result(5) == 5
        with pytest.raises(ZeroDivisionError):
            threads.submit(lambda: 1 / 0).result(5)
    finally:
        threads.shutdown()


def test_a_failing_job_is_logged_and_its_thread_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    threads = ActivityThreads(1)
    try:
        with caplog.at_level(logging.ERROR, logger="durabletask.worker"):
            threads.post(lambda: print(1 / 0))
            assert threads.submit(lambda: "still here").result(5) == "still here"
        assert threads.threads == 1
        assert any("failed unexpectedly" in r.getMessage() for r in caplog.records)
    finally:
        threads.shutdown()


def test_shutdown_cancels_queued_futures_and_refuses_new_jobs() -> None:
    threads = ActivityThreads(1)
    release = threading.Event()
    started = threading.Event()

    def blocks() -> str:
        started.set()
        release.wait(5)
        return "ran"

    running = threads.submit(blocks)
    assert started.wait(5)
    queued = threads.submit(lambda: "never")
    threads.shutdown(wait=False, cancel_futures=True)
    with pytest.raises(CancelledError):
        queued.result(1)
    release.set()
    assert running.result(5) == "ran"
    with pytest.raises(RuntimeError, match="after shutdown"):
        threads.post(lambda: None)
    threads.shutdown()  # twice is fine


def test_max_threads_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_threads"):
        ActivityThreads(0)
