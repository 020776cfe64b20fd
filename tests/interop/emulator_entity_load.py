"""An official-SDK worker hosting a counter entity, for the entity crash test (run with the official SDK's Python).

    python emulator_entity_load.py worker ADDRESS [--slow]   # run a worker until killed (or stdin closes)
    python emulator_entity_load.py signal ADDRESS KEY COUNT  # signal COUNT "add 1" operations to @counter@KEY

With ``--slow`` every operation announces itself (``op-started``) and then hangs, so the test can kill
the worker in the middle of a batch.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

from durabletask import client as dc
from durabletask import entities
from durabletask import worker as dw
from durabletask.entities import EntityInstanceId

logging.basicConfig(level=logging.CRITICAL)

SLOW = "--slow" in sys.argv


def counter(ctx: entities.EntityContext, input: Any) -> Any:
    if SLOW:
        print("op-started", flush=True)
        time.sleep(600)
    if ctx.operation == "add":
        ctx.set_state(ctx.get_state(int, 0) + input)
    return ctx.get_state(int, 0)


def main() -> None:
    mode, address = sys.argv[1], sys.argv[2]
    if mode == "worker":
        worker = dw.TaskHubGrpcWorker(host_address=address)
        worker.add_entity(counter)
        worker.start()
        print("worker-ready", flush=True)
        sys.stdin.read()  # until the test closes stdin (or kills this process)
        worker.stop()
    elif mode == "signal":
        key, count = sys.argv[3], int(sys.argv[4])
        client = dc.TaskHubGrpcClient(host_address=address)
        for _ in range(count):
            client.signal_entity(EntityInstanceId("counter", key), "add", 1)
        print("signalled", flush=True)


if __name__ == "__main__":
    main()
