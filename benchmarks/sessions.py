"""Sessions benchmark: engine time over an orchestration's whole life, with and without kept state.

Run from the repository root, with our package installed::

    python benchmarks/sessions.py           # N = 100, 1,000
    python benchmarks/sessions.py --quick   # N = 100, 300
    python benchmarks/sessions.py --json

An orchestration of N steps runs N + 1 episodes. Without sessions every episode replays the whole
history (as the official SDK always does), so the life of the orchestration costs O(N^2); a worker
keeping sessions resumes the kept state and processes only what is new, O(N). Two orchestrations:

* ``chain``: N activities one after another (one result per episode);
* ``fan-in``: N activities at once, joined with ``when_all``, their results arriving 10 per episode.

Each episode's request is built the way a backend commits episodes (``[orchestratorStarted, <new
events>, <confirmations>, orchestratorCompleted]``) and parsed from bytes before it is timed, as
a worker receives it; only ``execute`` is timed. Best of several rounds. This is a benchmark, not
a test: it prints figures and never fails.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from durabletask import task  # noqa: E402
from durabletask.internal import orchestrator_service_pb2 as pb  # noqa: E402
from durabletask.internal.registry import Registry  # noqa: E402
from durabletask.internal.replay.engine import OrchestrationExecutor  # noqa: E402
from tests.unit import histories as h  # noqa: E402

BATCH = 10  # fan-in results per episode


def chain(ctx: Any, n: int) -> Any:
    total = 0
    for i in range(n):
        total = yield ctx.call_activity("add", input=[total, i])
    return total


def fan_in(ctx: Any, n: int) -> Any:
    results = yield task.when_all([ctx.call_activity("add", input=[i, i]) for i in range(n)])
    return sum(results)


def _results(name: str, actions: list[pb.OrchestratorAction], pending: list[pb.HistoryEvent]) -> None:
    """Queue the activity results a backend would deliver for the scheduled tasks."""
    for action in actions:
        if action.HasField("scheduleTask"):
            a, b = json.loads(action.scheduleTask.input.value)
            pending.append(h.task_completed(action.id, a + b))


def episodes(name: str, n: int, executor: OrchestrationExecutor) -> Iterator[bytes]:
    """Drive one orchestration with ``executor``: yields each episode's serialized request; the caller runs it."""
    history: list[pb.HistoryEvent] = []
    pending: list[pb.HistoryEvent] = []
    new = [h.orchestrator_started(h.at(0)), h.execution_started(name, n)]
    for minute in range(1, 10 * n + 10):
        request = pb.OrchestratorRequest(instanceId="bench", pastEvents=history, newEvents=new)
        yield request.SerializeToString()
        result = executor.execute("bench", list(history), new)  # untimed twin: decides what comes next
        history = history + new
        for action in result.actions:
            if action.HasField("scheduleTask"):
                history.append(h.task_scheduled(action.id, action.scheduleTask.name))
        history.append(h.orchestrator_completed())
        if result.is_complete:
            return
        _results(name, result.actions, pending)
        take = 1 if name == "chain" else BATCH
        arrivals, pending = pending[:take], pending[take:]
        new = [h.orchestrator_started(h.at(minute)), *arrivals]
    raise RuntimeError(f"{name}({n}) did not complete")


def life(name: str, n: int, capacity: int) -> tuple[float, int]:
    """Seconds of ``execute`` over the orchestration's life, and its number of episodes."""
    registry = Registry()
    registry.add_orchestrator(chain)
    registry.add_orchestrator(fan_in)
    twin = OrchestrationExecutor(registry)
    timed = OrchestrationExecutor(registry, maximum_cached_orchestrations=capacity)
    total, count = 0.0, 0
    for data in episodes(name, n, twin):
        request = pb.OrchestratorRequest.FromString(data)
        past, new = request.pastEvents, request.newEvents
        start = time.perf_counter()
        timed.execute("bench", past, new)
        total += time.perf_counter() - start
        count += 1
    return total, count


def best(fn: Callable[[], tuple[float, int]], rounds: int) -> tuple[float, int]:
    runs = [fn() for _ in range(rounds)]
    return min(runs)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="N = 100 and 300, fewer rounds")
    parser.add_argument("--json", action="store_true", help="print a JSON report instead of the table")
    args = parser.parse_args(argv)
    sizes, rounds = ((100, 300), 2) if args.quick else ((100, 1000), 3)
    rows = []
    for name in ("chain", "fan-in"):
        for n in sizes:
            kind = "chain" if name == "chain" else "fan_in"
            replay, episodes_run = best(lambda: life(kind, n, 0), rounds)  # noqa: B023
            resumed, _ = best(lambda: life(kind, n, 10), rounds)  # noqa: B023
            rows.append({"orchestration": name, "n": n, "episodes": episodes_run,
                         "full_replay_ms": replay * 1e3, "sessions_ms": resumed * 1e3,
                         "speedup": replay / resumed if resumed else None})
    if args.json:
        print(json.dumps({"python": sys.version.split()[0], "rows": rows}, indent=2))
        return
    print(f"{'orchestration':<14}{'N':>6}{'episodes':>10}{'full replay ms':>16}{'sessions ms':>13}{'x':>8}")
    for r in rows:
        print(f"{r['orchestration']:<14}{r['n']:>6}{r['episodes']:>10}{r['full_replay_ms']:>16.1f}"
              f"{r['sessions_ms']:>13.1f}{r['speedup']:>8.1f}")
    print("(engine time over the orchestration's whole life, best of "
          f"{rounds} rounds; full replay is what the official SDK does in every episode)")


if __name__ == "__main__":
    main()
