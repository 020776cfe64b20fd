"""Replay benchmark, official side: run by the official SDK's interpreter (see ``benchmarks/replay.py``).

Reads a JSON job on stdin::

    {"source": "<orchestrator source>", "orchestrators": ["chain", "fan"], "warmup": 1,
     "cases": [{"scenario": "chain", "n": 100, "runs": 5, "path": "/tmp/.../chain-100.bin"}, ...]}

Each ``path`` holds a serialized ``OrchestratorRequest`` built by our stubs; this script parses it
with the official stubs and times ``durabletask.worker._OrchestrationExecutor.execute`` on it. It
writes a JSON report (versions, per-case timings and the completion it saw) to stdout.

Only the standard library is imported at module level, so ``benchmarks/replay.py`` can import
`time_runs` and `describe_completion` from here and time both engines the same way.
"""

from __future__ import annotations

import gc
import json
import sys
from collections.abc import Callable, Sequence
from time import perf_counter
from typing import Any


def time_runs(prepare: Callable[[], tuple[Any, ...]], run: Callable[..., Any], repeats: int,
              warmup: int) -> tuple[list[float], Any]:
    """Time ``run(*prepare())`` ``repeats`` times after ``warmup`` untimed runs.

    ``prepare`` (parsing the request, building the executor) is not timed. The garbage collector
    is run before each timed call but stays enabled during it. Returns the timings in seconds and
    the last run's result.
    """
    times: list[float] = []
    result: Any = None
    for i in range(warmup + repeats):
        args = prepare()
        gc.collect()
        start = perf_counter()
        result = run(*args)
        elapsed = perf_counter() - start
        if i >= warmup:
            times.append(elapsed)
    return times, result


def describe_completion(actions: Sequence[Any], completed_status: int) -> dict[str, Any]:
    """Summarise an episode's actions: their kinds, and the completion's status and result."""
    kinds = [str(a.WhichOneof("orchestratorActionType")) for a in actions]
    out: dict[str, Any] = {"actions": kinds, "completed": False, "result": None}
    if actions and actions[-1].HasField("completeOrchestration"):
        done = actions[-1].completeOrchestration
        out["completed"] = done.orchestrationStatus == completed_status
        out["status"] = int(done.orchestrationStatus)
        out["result"] = done.result.value if done.HasField("result") else None
    return out


def versions() -> dict[str, str]:
    import platform

    import google.protobuf
    from google.protobuf.internal import api_implementation

    return {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "protobuf": google.protobuf.__version__,
        "protobuf_backend": api_implementation.Type(),
    }


def main() -> None:
    import logging
    from importlib import metadata

    from durabletask import task, worker
    from durabletask.internal import orchestrator_service_pb2 as pb
    from durabletask.serialization import JsonDataConverter

    job = json.loads(sys.stdin.buffer.read())
    namespace: dict[str, Any] = {"task": task}
    exec(compile(job["source"], "<benchmark orchestrators>", "exec"), namespace)

    registry = worker._Registry()
    for name in job["orchestrators"]:
        registry.add_orchestrator(namespace[name])
    logger = logging.getLogger("durabletask-benchmark-official")
    logger.setLevel(logging.WARNING)
    converter = JsonDataConverter()

    results = []
    for case in job["cases"]:
        with open(case["path"], "rb") as f:
            data = f.read()

        def prepare(data: bytes = data) -> tuple[Any, ...]:
            req = pb.OrchestratorRequest()
            req.ParseFromString(data)
            executor = worker._OrchestrationExecutor(registry, logger, data_converter=converter)
            return executor, req

        def run(executor: Any, req: Any) -> Any:
            return executor.execute(req.instanceId, req.pastEvents, req.newEvents)

        times, result = time_runs(prepare, run, case["runs"], job["warmup"])
        check = prepare()[1]
        results.append({
            "scenario": case["scenario"],
            "n": case["n"],
            "events": len(check.pastEvents) + len(check.newEvents),
            "times": times,
            "outcome": describe_completion(result.actions, pb.ORCHESTRATION_STATUS_COMPLETED),
        })

    report = {"versions": {**versions(), "durabletask": metadata.version("durabletask")}, "results": results}
    sys.stdout.write(json.dumps(report))


if __name__ == "__main__":
    main()
