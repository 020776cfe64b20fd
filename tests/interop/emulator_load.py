"""Load for the emulator's durability and dead-worker tests, run with the OFFICIAL SDK's interpreter.

    python emulator_load.py worker ADDRESS [--slow]   # run a worker until killed (or stdin closes)
    python emulator_load.py start ADDRESS N PREFIX    # schedule N `chain5` orchestrations PREFIX-0..N-1

``chain5(x)`` calls the activity ``step`` five times in a row and returns x + 5 * 10 (``step`` adds
10 after a short sleep). With ``--slow`` the worker's ``step`` announces itself on stdout
(``step-started``) and then hangs, so that a test can kill the worker in the middle of it.
"""

from __future__ import annotations

import logging
import sys
import time

from durabletask import client as dc
from durabletask import task
from durabletask import worker as dw

logging.basicConfig(level=logging.CRITICAL)

SLOW = "--slow" in sys.argv


def step(ctx: task.ActivityContext, x: int) -> int:
    if SLOW:
        print("step-started", flush=True)
        time.sleep(3600)
    time.sleep(0.02)
    return x + 10


def chain5(ctx: task.OrchestrationContext, x: int):
    for _ in range(5):
        x = yield ctx.call_activity(step, input=x)
    return x


def main() -> None:
    mode, address = sys.argv[1], sys.argv[2]
    if mode == "worker":
        w = dw.TaskHubGrpcWorker(host_address=address)
        w.add_orchestrator(chain5)
        w.add_activity(step)
        w.start()
        print("worker-ready", flush=True)
        sys.stdin.read()  # until the test closes stdin (or kills this process)
        w.stop()
    elif mode == "start":
        count, prefix = int(sys.argv[3]), sys.argv[4]
        c = dc.TaskHubGrpcClient(host_address=address)
        for i in range(count):
            c.schedule_new_orchestration(chain5, input=i, instance_id=f"{prefix}-{i}")
        print("started", flush=True)
    else:
        raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    main()
