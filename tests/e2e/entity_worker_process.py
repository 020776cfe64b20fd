"""Our worker hosting a counter entity in its own process, for the entity crash test.

    python entity_worker_process.py ADDRESS [--hang-at N]

Prints ``worker-ready`` once connected. With ``--hang-at N``, the operation that finds the counter at
``N`` (after earlier operations of the same batch ran) prints ``op-started`` and hangs, so the test can
kill the worker in the middle of a batch. Runs until stdin closes (or the process is killed).
"""

from __future__ import annotations

import logging
import sys
import time

from durabletask.entities import EntityContext
from durabletask.worker import TaskHubGrpcWorker

logging.basicConfig(level=logging.CRITICAL)


def main() -> None:
    address = sys.argv[1]
    hang_at = int(sys.argv[sys.argv.index("--hang-at") + 1]) if "--hang-at" in sys.argv else None

    def counter(ctx: EntityContext, amount: int) -> int:
        value = ctx.get_state(int, 0)
        if value == hang_at:
            print("op-started", flush=True)
            time.sleep(600)
        ctx.set_state(value + amount)
        return value + amount

    worker = TaskHubGrpcWorker(host_address=address)
    worker.add_entity(counter)
    worker.start()
    if not worker.wait_until_connected(30):
        raise SystemExit("worker did not connect")
    print("worker-ready", flush=True)
    sys.stdin.read()
    worker.stop(2)


if __name__ == "__main__":
    main()
