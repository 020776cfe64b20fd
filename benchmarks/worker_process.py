"""Hosts a worker for ``benchmarks/worker.py``: ours or the official SDK's, whichever ``durabletask`` imports.

Run by either interpreter (the official SDK has our import name, so each worker gets its own
process, which also lets its CPU time be measured on its own)::

    python benchmarks/worker_process.py --address localhost:PORT [--profile OUT.prof] [--sdk-logging]

Only the common API is used (``TaskHubGrpcWorker(host_address=...)``, ``add_orchestrator``,
``add_activity``, ``start``, ``stop``), so the same file runs against both SDKs. This file must
not import anything from the repository: under the official interpreter it runs isolated.

Protocol, one line each way:

* on start it prints ``{"ready": ..., "sdk": ..., "version": ...}`` once the worker has started;
* ``stats`` on stdin: it prints ``{"cpu": ..., "threads": {...}, "orchestrator_calls": ...,
  "activities": ...}``: the process CPU time (user + system, all threads, from
  ``getrusage(RUSAGE_SELF)``), the CPU time per thread group (Linux), and how often the
  orchestrator functions and the activity have been called so far;
* ``stop`` on stdin (or end of input): it stops the worker, prints the final stats and exits.

Counting: ``orchestrator_calls`` is the number of orchestration episodes (orchestration work items)
run; ``activities`` the number of activity work items run. The official SDK replays an
orchestration from the start in every episode, so there it counts calls of the orchestrator
functions. Ours keeps the state of running orchestrations between episodes and resumes it, running
no orchestrator code at all in an episode that only records results (a fan-out's), so there the
worker runtime's episode function is wrapped instead (`_count_runtime_episodes`).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import resource
import sys
import threading
import time
from importlib import metadata

from durabletask import task
from durabletask.worker import TaskHubGrpcWorker

_lock = threading.Lock()
_counts = {"orchestrator_calls": 0, "activities": 0}


def _count(key: str) -> None:
    with _lock:
        _counts[key] += 1


def _count_runtime_episodes() -> bool:
    """Count every episode our worker runtime runs; False under an SDK without that runtime (the official one)."""
    try:
        from durabletask.internal.runtime import stream
    except ImportError:
        return False
    run_orchestration = stream.run_orchestration

    def counted(*args, **kwargs):
        _count("orchestrator_calls")
        return run_orchestration(*args, **kwargs)

    stream.run_orchestration = counted
    return True


_COUNT_CALLS = not _count_runtime_episodes()


def _episode() -> None:
    if _COUNT_CALLS:
        _count("orchestrator_calls")


# ----------------------------------------------------------------- the benchmark's work

def inc(ctx, x):
    _count("activities")
    return x + 1


def chain(ctx, n):
    """``n`` activities one after another."""
    _episode()
    x = 0
    for _ in range(n):
        x = yield ctx.call_activity(inc, input=x)
    return x


def fan(ctx, n):
    """``n`` activities at once, joined with ``when_all``."""
    _episode()
    results = yield task.when_all([ctx.call_activity(inc, input=i) for i in range(n)])
    return sum(results)


def single(ctx, x):
    """A trivial orchestration: one activity."""
    _episode()
    y = yield ctx.call_activity(inc, input=x)
    return y


# ----------------------------------------------------------------- profiling (every thread)

_profilers: list = []
_profiled_threads: list[threading.Thread] = []


def _profile_all_threads() -> None:
    """Run every thread started from now on under its own ``cProfile.Profile``.

    The worker's own threads (the event loop, the activity pool) are started by ``start()``, so
    patching ``Thread.run`` before that covers all Python code the worker runs. The timer is the
    thread's CPU time, so time spent blocked (waiting for work, for the network) does not count.
    """
    import cProfile

    original_run = threading.Thread.run

    def run(self: threading.Thread) -> None:
        profiler = cProfile.Profile(time.thread_time)
        with _lock:
            _profilers.append(profiler)
            _profiled_threads.append(self)
        profiler.enable()
        try:
            original_run(self)
        finally:
            profiler.disable()

    threading.Thread.run = run  # type: ignore[method-assign]


def _dump_profile(path: str) -> None:
    import pstats

    for thread in list(_profiled_threads):
        thread.join(timeout=5)
    stats = None
    for profiler, thread in zip(_profilers, _profiled_threads, strict=True):
        if thread.is_alive():  # still running: its profiler cannot be read safely
            continue
        if stats is None:
            stats = pstats.Stats(profiler)
        else:
            stats.add(profiler)
    if stats is not None:
        stats.dump_stats(path)


# ----------------------------------------------------------------- the process

def _thread_cpu() -> dict:
    """CPU seconds per thread group, from /proc (Linux; empty elsewhere).

    Python threads are named by ``threading`` (numbered pool threads are grouped, e.g.
    ``durabletask-activity_3`` counts as ``durabletask-activity``; an unnamed thread by its
    target); other threads (gRPC's C-core threads) by their OS name, in brackets. Ended threads
    are not listed any more.
    """
    names = {t.native_id: t.name for t in threading.enumerate()}
    groups: dict = {}
    try:
        tick = os.sysconf("SC_CLK_TCK")
        for entry in os.scandir("/proc/self/task"):
            with open(f"/proc/self/task/{entry.name}/stat") as f:
                stat = f.read()
            comm = stat[stat.index("(") + 1:stat.rindex(")")]
            fields = stat[stat.rindex(")") + 2:].split()
            name = names.get(int(entry.name))
            if name is None:
                name = f"[{comm}]"
            else:  # "Thread-3 (_poll_wrapper)" -> "_poll_wrapper"; "pool_3" -> "pool"
                target = re.fullmatch(r"Thread-\d+ \((.*)\)", name)
                name = target.group(1) if target else re.sub(r"[-_ ]?\d+$", "", name)
            groups[name] = groups.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / tick
    except (OSError, ValueError):
        return {}
    return groups


def _stats() -> dict:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    with _lock:
        counts = dict(_counts)
    return {"cpu": usage.ru_utime + usage.ru_stime, "wall": time.perf_counter(), "threads": _thread_cpu(),
            **counts}


def _say(obj: dict) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--address", required=True)
    parser.add_argument("--profile", metavar="FILE", help="cProfile every worker thread; write pstats to FILE")
    parser.add_argument("--sdk-logging", action="store_true",
                        help="keep the SDK's default logging (the official worker logs each episode at INFO)")
    args = parser.parse_args()

    kwargs = {}
    if not args.sdk_logging:
        # Production-like: warnings only. The official worker otherwise formats an INFO line for
        # every orchestration episode; ours logs through the standard (silent) logging tree.
        quiet = logging.getLogger("benchmark-worker")
        quiet.setLevel(logging.WARNING)
        quiet.addHandler(logging.StreamHandler())
        kwargs["logger"] = quiet
    logging.basicConfig(level=logging.WARNING)

    worker = TaskHubGrpcWorker(host_address=args.address, **kwargs)
    worker.add_orchestrator(chain)
    worker.add_orchestrator(fan)
    worker.add_orchestrator(single)
    worker.add_activity(inc)

    if args.profile:
        _profile_all_threads()
    worker.start()
    try:
        version = metadata.version("durabletask")
    except metadata.PackageNotFoundError:
        version = "?"
    import durabletask
    _say({"ready": True, "sdk": durabletask.__file__, "version": version,
          "python": sys.version.split()[0], **_stats()})

    for line in sys.stdin:
        command = line.strip()
        if command == "stats":
            _say(_stats())
        elif command == "stop":
            break
    worker.stop()
    final = _stats()
    if args.profile:
        _dump_profile(args.profile)
    _say({"stopped": True, **final})


if __name__ == "__main__":
    main()
