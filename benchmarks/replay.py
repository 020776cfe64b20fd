"""Replay benchmark: microseconds per history event, our engine vs the official SDK's executor.

Run from the repository root, with our package installed::

    python benchmarks/replay.py            # N = 100, 1,000, 10,000; best of >= 5 runs
    python benchmarks/replay.py --quick    # N = 100, 1,000; best of >= 3 runs
    python benchmarks/replay.py --json     # machine-readable report on stdout
    python benchmarks/replay.py --profile  # also cProfile our engine at N = 1,000

Two orchestrations are replayed, each from a work item as a backend would send it (the layout of
the official in-memory backend: every episode is ``[orchestratorStarted, <new events>,
<confirmations of the episode's actions>, orchestratorCompleted]``):

* ``chain``: N activities one after another. Past events hold N episodes; the new events
  ``[orchestratorStarted, taskCompleted(N)]`` let the orchestration complete.
* ``fan``: N activities started at once and joined with ``when_all``. Past events hold the first
  episode (N taskScheduled); the new events hold ``orchestratorStarted`` and the N results.

The histories are built once with our stubs and serialized; the official SDK parses the same
bytes with its own stubs in a subprocess (its import name is ours too). Only ``execute`` is timed;
each timed run gets a freshly parsed request and a fresh executor, as a worker would. This is a
benchmark, not a test: it prints figures and never fails on a missed target.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
from datetime import timedelta
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from benchmarks.official_replay import describe_completion, time_runs, versions  # noqa: E402
from durabletask import task  # noqa: E402
from durabletask.internal import orchestrator_service_pb2 as pb  # noqa: E402
from durabletask.internal.registry import Registry  # noqa: E402
from durabletask.internal.replay.engine import OrchestrationExecutor  # noqa: E402
from tests.support.official import OFFICIAL_VERSION, run_official  # noqa: E402
from tests.unit import histories as h  # noqa: E402

OFFICIAL_SCRIPT = Path(__file__).resolve().parent / "official_replay.py"

# The orchestrators, as source, so that both SDKs run exactly the same code: it is exec'd here
# with our ``task`` module and in the official subprocess with the official one.
ORCHESTRATOR_SOURCE = '''
def chain(ctx, n):
    x = 0
    for _ in range(n):
        x = yield ctx.call_activity("inc", input=x)
    return x


def fan(ctx, n):
    tasks = [ctx.call_activity("inc", input=i) for i in range(n)]
    results = yield task.when_all(tasks)
    return sum(results)
'''
ORCHESTRATORS = ("chain", "fan")

SIZES = (100, 1_000, 10_000)
QUICK_SIZES = (100, 1_000)
REPEATS = 5
QUICK_REPEATS = 3
ROUNDS = 5
QUICK_ROUNDS = 3
# Small cases take well under a millisecond, so a best of 5 is mostly noise: they get more timed
# runs, up to about this many replayed events per case (never fewer than the repeats asked for).
EVENTS_PER_CASE = 40_000
QUICK_EVENTS_PER_CASE = 10_000
MAX_RUNS = 200

TARGET_US_PER_EVENT = {"chain": 1.0, "fan": 1.5}
TARGET_SPEEDUP = 4.0


# ---------------------------------------------------------------------------------------------
# Histories


def _started(episode: int) -> pb.HistoryEvent:
    return h.orchestrator_started(h.T0 + timedelta(seconds=episode))


def chain_request(n: int) -> pb.OrchestratorRequest:
    """Activity k (1..n) gets input k-1 and returns k; the last episode receives result n."""
    instance_id = f"bench-chain-{n}"
    past = [_started(0), h.execution_started("chain", n, instance_id=instance_id),
            h.task_scheduled(1, "inc", 0), h.orchestrator_completed()]
    for k in range(1, n):
        past += [_started(k), h.task_completed(k, k), h.task_scheduled(k + 1, "inc", k),
                 h.orchestrator_completed()]
    new = [_started(n), h.task_completed(n, n)]
    return pb.OrchestratorRequest(instanceId=instance_id, pastEvents=past, newEvents=new)


def fan_request(n: int) -> pb.OrchestratorRequest:
    """Activity k (1..n) gets input k-1 and returns it; all results arrive in one episode."""
    instance_id = f"bench-fan-{n}"
    past = [_started(0), h.execution_started("fan", n, instance_id=instance_id)]
    past += [h.task_scheduled(k, "inc", k - 1) for k in range(1, n + 1)]
    past.append(h.orchestrator_completed())
    new = [_started(1)] + [h.task_completed(k, k - 1) for k in range(1, n + 1)]
    return pb.OrchestratorRequest(instanceId=instance_id, pastEvents=past, newEvents=new)


BUILDERS = {"chain": chain_request, "fan": fan_request}
EXPECTED = {"chain": lambda n: n, "fan": lambda n: n * (n - 1) // 2}


# ---------------------------------------------------------------------------------------------
# Measuring


def our_registry() -> Registry:
    namespace: dict[str, Any] = {"task": task}
    exec(compile(ORCHESTRATOR_SOURCE, "<benchmark orchestrators>", "exec"), namespace)
    registry = Registry()
    for name in ORCHESTRATORS:
        registry.add_orchestrator(namespace[name])
    return registry


def runs_per_round(events: int, repeats: int, rounds: int, events_per_case: int) -> int:
    """Timed runs of a case in each round: at least ``repeats`` in all, more for small cases."""
    total = max(repeats, min(MAX_RUNS, events_per_case // events))
    return -(-total // rounds)


def measure_ours(cases: list[dict[str, Any]], warmup: int) -> list[dict[str, Any]]:
    registry = our_registry()
    results = []
    for case in cases:
        data: bytes = case["data"]

        def prepare(data: bytes = data) -> tuple[Any, ...]:
            req = pb.OrchestratorRequest()
            req.ParseFromString(data)
            return OrchestrationExecutor(registry), req

        def run(executor: OrchestrationExecutor, req: pb.OrchestratorRequest) -> Any:
            return executor.execute(req.instanceId, req.pastEvents, req.newEvents)

        times, result = time_runs(prepare, run, case["runs"], warmup)
        results.append({"times": times,
                        "outcome": describe_completion(result.actions, pb.ORCHESTRATION_STATUS_COMPLETED)})
    return results


def measure_official(cases: list[dict[str, Any]], warmup: int,
                     workdir: str) -> tuple[dict[str, str], list[dict[str, Any]]]:
    job_cases = []
    for case in cases:
        path = os.path.join(workdir, f"{case['scenario']}-{case['n']}.bin")
        with open(path, "wb") as f:
            f.write(case["data"])
        job_cases.append({"scenario": case["scenario"], "n": case["n"], "runs": case["runs"], "path": path})
    job = {"source": ORCHESTRATOR_SOURCE, "orchestrators": list(ORCHESTRATORS), "warmup": warmup,
           "cases": job_cases}
    proc = run_official(OFFICIAL_SCRIPT, input_bytes=json.dumps(job).encode(), timeout=3600)
    report = json.loads(proc.stdout)
    return report["versions"], report["results"]


def _pool(pooled: list[dict[str, Any]], more: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Add a round's timings to the earlier rounds'; keep the latest outcome."""
    if not pooled:
        return more
    return [{**new, "times": old["times"] + new["times"]} for old, new in zip(pooled, more, strict=True)]


def check(engine: str, case: dict[str, Any], outcome: dict[str, Any]) -> str | None:
    """An error message if the episode did not end in the expected completion, else None."""
    expected = case["expected"]
    if outcome["actions"] != ["completeOrchestration"]:
        return f"{engine}: expected one completeOrchestration action, got {outcome['actions']}"
    if not outcome["completed"]:
        return f"{engine}: the orchestration did not complete successfully (status {outcome.get('status')})"
    raw = outcome["result"]
    try:
        value = None if raw is None else json.loads(raw)
    except ValueError:
        value = raw
    if value != expected:
        return f"{engine}: result {raw!r}, expected {expected!r}"
    return None


def summarise(times: list[float], events: int) -> dict[str, Any]:
    return {
        "times_s": times,
        "best_us_per_event": min(times) / events * 1e6,
        "median_us_per_event": statistics.median(times) / events * 1e6,
    }


def run_benchmark(sizes: tuple[int, ...], repeats: int, rounds: int, events_per_case: int, warmup: int,
                  with_official: bool, progress: bool) -> dict[str, Any]:
    cases = []
    for scenario in ORCHESTRATORS:
        for n in sizes:
            req = BUILDERS[scenario](n)
            events = len(req.pastEvents) + len(req.newEvents)
            cases.append({"scenario": scenario, "n": n, "data": req.SerializeToString(), "events": events,
                          "runs": runs_per_round(events, repeats, rounds, events_per_case),
                          "expected": EXPECTED[scenario](n)})

    # Alternate the engines over several rounds, so that a busy spell on the machine does not
    # land on one engine only; each case's timings are pooled over the rounds.
    ours: list[dict[str, Any]] = []
    official_versions: dict[str, str] | None = None
    official: list[dict[str, Any]] | None = None
    with tempfile.TemporaryDirectory(prefix="durabletask-bench-") as workdir:
        for round_no in range(1, rounds + 1):
            if progress:
                print(f"round {round_no}/{rounds}: timing our engine...", file=sys.stderr, flush=True)
            ours = _pool(ours, measure_ours(cases, warmup))
            if with_official:
                if progress:
                    print(f"round {round_no}/{rounds}: timing the official SDK {OFFICIAL_VERSION} "
                          f"(subprocess)...", file=sys.stderr, flush=True)
                official_versions, theirs = measure_official(cases, warmup, workdir)
                official = _pool(official or [], theirs)

    rows = []
    errors = []
    for i, case in enumerate(cases):
        scenario, n, events = case["scenario"], case["n"], case["events"]
        row: dict[str, Any] = {"scenario": scenario, "n": n, "events": events, "runs": len(ours[i]["times"]),
                               "ours": summarise(ours[i]["times"], events), "official": None,
                               "speedup": None, "speedup_median": None}
        error = check("ours", case, ours[i]["outcome"])
        if error:
            errors.append(f"{scenario} N={n}: {error}")
        if official is not None:
            theirs = official[i]
            if theirs["events"] != events:
                errors.append(f"{scenario} N={n}: official parsed {theirs['events']} events, we built {events}")
            error = check("official", case, theirs["outcome"])
            if error:
                errors.append(f"{scenario} N={n}: {error}")
            elif ours[i]["outcome"]["result"] != theirs["outcome"]["result"]:
                errors.append(f"{scenario} N={n}: results differ: ours {ours[i]['outcome']['result']!r}, "
                              f"official {theirs['outcome']['result']!r}")
            row["official"] = summarise(theirs["times"], events)
            row["speedup"] = row["official"]["best_us_per_event"] / row["ours"]["best_us_per_event"]
            row["speedup_median"] = (row["official"]["median_us_per_event"]
                                     / row["ours"]["median_us_per_event"])
        target = TARGET_US_PER_EVENT[scenario]
        row["targets"] = {
            "us_per_event": target,
            "us_per_event_met": row["ours"]["best_us_per_event"] <= target,
            "speedup": TARGET_SPEEDUP,
            "speedup_met": None if row["speedup"] is None else row["speedup"] >= TARGET_SPEEDUP,
        }
        rows.append(row)

    return {
        "benchmark": "replay",
        "unit": "microseconds per history event",
        "repeats": repeats,
        "rounds": rounds,
        "events_per_case": events_per_case,
        "warmup": warmup,
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
        "ours": versions(),
        "official": official_versions,
        "rows": rows,
        "errors": errors,
    }


# ---------------------------------------------------------------------------------------------
# Reporting


def _met(flag: bool | None) -> str:
    return "n/a" if flag is None else ("met" if flag else "NOT met")


def print_table(report: dict[str, Any]) -> None:
    ours_v, official_v = report["ours"], report["official"]
    print("replay: microseconds per history event, best of `runs` timed runs (median in parentheses); "
          "lower is better")
    print(f"runs: at least {report['repeats']}, more for small cases (up to ~{report['events_per_case']:,} "
          f"events per case),")
    print(f"      spread over {report['rounds']} rounds alternating the engines, "
          f"{report['warmup']} untimed warm-up run per case per round")
    print(f"ours:     Python {ours_v['python']}, protobuf {ours_v['protobuf']} "
          f"(backend: {ours_v['protobuf_backend']}; upb: {'yes' if ours_v['protobuf_backend'] == 'upb' else 'NO'})")
    if official_v:
        print(f"official: durabletask {official_v['durabletask']}, Python {official_v['python']}, "
              f"protobuf {official_v['protobuf']} (backend: {official_v['protobuf_backend']}; "
              f"upb: {'yes' if official_v['protobuf_backend'] == 'upb' else 'NO'})")
    else:
        print("official: skipped")
    print()
    header = (f"{'scenario':<9} {'N':>7} {'events':>8} {'runs':>5} {'ours':>16} {'official':>16} "
              f"{'speed-up':>9}")
    print(header)
    print("-" * len(header))
    for row in report["rows"]:
        ours = f"{row['ours']['best_us_per_event']:.3f} ({row['ours']['median_us_per_event']:.3f})"
        if row["official"] is None:
            official, speedup = "-", "-"
        else:
            official = (f"{row['official']['best_us_per_event']:.3f} "
                        f"({row['official']['median_us_per_event']:.3f})")
            speedup = f"{row['speedup']:.1f}x"
        print(f"{row['scenario']:<9} {row['n']:>7,} {row['events']:>8,} {row['runs']:>5} {ours:>16} "
              f"{official:>16} {speedup:>9}")
    print()
    print(f"targets: ours <= {TARGET_US_PER_EVENT['chain']} us/event (chain), "
          f"<= {TARGET_US_PER_EVENT['fan']} us/event (fan), >= {TARGET_SPEEDUP:g}x faster than official")
    for row in report["rows"]:
        t = row["targets"]
        speed = "" if t["speedup_met"] is None else f"; >= {t['speedup']:g}x: {_met(t['speedup_met'])}"
        print(f"  {row['scenario']:<6} N={row['n']:<7,} <= {t['us_per_event']} us/event: "
              f"{_met(t['us_per_event_met'])}{speed}")
    for error in report["errors"]:
        print(f"ERROR: {error}")


def print_profile(sizes: tuple[int, ...], top: int = 10) -> None:
    """cProfile our engine on each scenario (at N = 1,000 if measured) and print the top functions."""
    import cProfile
    import pstats

    n = 1_000 if 1_000 in sizes else sizes[-1]
    runs = 20
    registry = our_registry()
    for scenario in ORCHESTRATORS:
        data = BUILDERS[scenario](n).SerializeToString()
        profiler = cProfile.Profile()
        for _ in range(runs):
            req = pb.OrchestratorRequest()
            req.ParseFromString(data)
            executor = OrchestrationExecutor(registry)
            profiler.runcall(executor.execute, req.instanceId, req.pastEvents, req.newEvents)
        print()
        print(f"profile: ours, {scenario} N={n:,}, {runs} runs (top {top} by tottime)")
        pstats.Stats(profiler, stream=sys.stdout).sort_stats("tottime").print_stats(top)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help=f"N = {', '.join(map(str, QUICK_SIZES))} only, best of {QUICK_REPEATS}")
    parser.add_argument("--json", action="store_true", help="print a JSON report instead of the table")
    parser.add_argument("--repeats", type=int,
                        help=f"minimum timed runs per case (default {REPEATS}, or {QUICK_REPEATS} with --quick)")
    parser.add_argument("--rounds", type=int,
                        help=f"rounds alternating the engines (default {ROUNDS}, or {QUICK_ROUNDS} with --quick)")
    parser.add_argument("--no-official", action="store_true", help="time our engine only")
    parser.add_argument("--profile", action="store_true",
                        help="also print a cProfile of our engine (N = 1,000) after the table")
    args = parser.parse_args(argv)

    sizes = QUICK_SIZES if args.quick else SIZES
    repeats = args.repeats or (QUICK_REPEATS if args.quick else REPEATS)
    rounds = max(1, args.rounds or (QUICK_ROUNDS if args.quick else ROUNDS))
    events_per_case = QUICK_EVENTS_PER_CASE if args.quick else EVENTS_PER_CASE
    report = run_benchmark(sizes, max(1, repeats), rounds, events_per_case, warmup=1,
                           with_official=not args.no_official, progress=not args.json)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_table(report)
    if args.profile and not args.json:
        print_profile(sizes)


if __name__ == "__main__":
    main()
