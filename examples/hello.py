"""Hello, durable world: a decorated orchestrator and activities, run on a real backend.

With no ``ENDPOINT`` set, this starts our emulator in-process (in memory) and runs there. To use
another backend, set ``ENDPOINT`` (e.g. ``http://localhost:8080`` for ``durabletask emulator`` or the
DTS emulator) and optionally ``TASKHUB`` (default ``default``), like the public samples.

Run it with ``python examples/hello.py``.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Generator, Iterator
from typing import Any

from durabletask import task
from durabletask.client import OrchestrationStatus, TaskHubGrpcClient
from durabletask.worker import TaskHubGrpcWorker


@contextlib.contextmanager
def backend() -> Iterator[tuple[str, list[tuple[str, str]]]]:
    """The address and metadata to use: ENDPOINT/TASKHUB, or an in-process emulator."""
    endpoint = os.environ.get("ENDPOINT")
    if endpoint:
        yield endpoint, [("taskhub", os.environ.get("TASKHUB", "default"))]
        return
    from durabletask.emulator import Emulator

    with Emulator(memory=True) as emulator:
        print(f"started the emulator in-process at {emulator.address}")
        yield emulator.address, []


def main() -> None:
    with backend() as (address, metadata):
        worker = TaskHubGrpcWorker(host_address=address, metadata=metadata)

        @worker.activity
        def say_hello(ctx: task.ActivityContext, city: str) -> str:
            return f"Hello, {city}!"

        @worker.activity
        async def shout(ctx: task.ActivityContext, greeting: str) -> str:  # async activities run on the loop
            return greeting.upper()

        @worker.orchestrator
        def hello_cities(ctx: task.OrchestrationContext, cities: list[str]) -> Generator[task.Task[Any], Any, Any]:
            greetings = []
            for city in cities:
                greetings.append((yield ctx.call_activity(say_hello, input=city)))
            loud = yield task.when_all([ctx.call_activity(shout, input=g) for g in greetings])
            return loud

        with worker, TaskHubGrpcClient(host_address=address, metadata=metadata) as client:
            worker.start()
            instance_id = client.schedule_new_orchestration(hello_cities, input=["Tokyo", "Seattle", "London"])
            state = client.wait_for_orchestration_completion(instance_id, timeout=60)
            if state is None or state.runtime_status != OrchestrationStatus.COMPLETED:
                raise SystemExit(f"orchestration {instance_id} did not complete: {state}")
            print(f"orchestration {instance_id} completed: {state.get_output()}")


if __name__ == "__main__":
    main()
