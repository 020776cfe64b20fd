"""Helper of ``benchmarks/emulator.py``, run with the OFFICIAL SDK's interpreter.

    python official_emulator_load.py backend PORT            # serve the official in-memory backend
    python official_emulator_load.py drive ADDRESS N WARMUP   # official worker + client: N chains of 5

``drive`` starts a worker, runs WARMUP orchestrations, prints ``ready``, waits for a line on stdin,
then schedules N orchestrations at once, waits for all of them and prints one JSON line with the
wall time. ``backend`` prints ``ready`` once listening and serves until stdin closes.
"""

from __future__ import annotations

import json
import logging
import sys
import time

logging.basicConfig(level=logging.CRITICAL)


def inc(ctx, x: int) -> int:
    return x + 1


def chain5(ctx, x: int):
    for _ in range(5):
        x = yield ctx.call_activity(inc, input=x)
    return x


def drive(address: str, count: int, warmup: int) -> None:
    from durabletask import client as dc
    from durabletask import worker as dw

    w = dw.TaskHubGrpcWorker(host_address=address)
    w.add_orchestrator(chain5)
    w.add_activity(inc)
    w.start()
    c = dc.TaskHubGrpcClient(host_address=address)

    def run(n: int, prefix: str) -> float:
        began = time.perf_counter()
        ids = [c.schedule_new_orchestration(chain5, input=i, instance_id=f"{prefix}-{i}") for i in range(n)]
        for i, iid in enumerate(ids):
            state = c.wait_for_orchestration_completion(iid, timeout=300)
            if state is None or state.serialized_output != str(i + 5):
                raise SystemExit(f"{iid} ended wrong: {state}")
        return time.perf_counter() - began

    run(warmup, f"warm-{time.time_ns()}")
    print("ready", flush=True)
    sys.stdin.readline()
    seconds = run(count, f"bench-{time.time_ns()}")
    print(json.dumps({"seconds": seconds, "count": count}), flush=True)
    w.stop()


def backend(port: int) -> None:
    from durabletask.testing import create_test_backend

    server = create_test_backend(port=port)
    print("ready", flush=True)
    sys.stdin.read()
    server.stop()


if __name__ == "__main__":
    if sys.argv[1] == "backend":
        backend(int(sys.argv[2]))
    else:
        drive(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
