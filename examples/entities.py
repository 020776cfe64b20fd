"""Durable entities: a function entity, a class entity, calls, signals and a critical section.

With no ``ENDPOINT`` set, this starts our emulator in-process (in memory) and runs there. To use
another backend, set ``ENDPOINT`` (e.g. ``http://localhost:8080`` for ``durabletask emulator`` or the
DTS emulator) and optionally ``TASKHUB`` (default ``default``), like the public samples.

Run it with ``python examples/entities.py``.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Generator, Iterator
from typing import Any

from durabletask import task
from durabletask.client import EntityQuery, OrchestrationStatus, TaskHubGrpcClient
from durabletask.entities import DurableEntity, EntityContext, EntityInstanceId
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

        @worker.entity
        def counter(ctx: EntityContext, amount: int | None) -> int:
            """A function entity: one function runs every operation."""
            value = ctx.get_state(int, 0)
            if ctx.operation == "add":
                value += amount or 0
                ctx.set_state(value)
            return value

        @worker.entity
        class Account(DurableEntity):
            """A class entity: one method per operation; the state lives in get_state/set_state."""

            def deposit(self, amount: int) -> int:
                balance = self.get_state(int, 0) + amount
                self.set_state(balance)
                return balance

            def withdraw(self, amount: int) -> int:
                balance = self.get_state(int, 0)
                if amount > balance:
                    raise ValueError(f"insufficient funds ({balance} < {amount})")  # rolls the operation back
                self.set_state(balance - amount)
                return balance - amount

        @worker.orchestrator
        def transfer(ctx: task.OrchestrationContext, amount: int) -> Generator[task.Task[Any], Any, str]:
            source, target = EntityInstanceId("account", "alice"), EntityInstanceId("account", "bob")
            # While the section lasts, nobody else runs operations on either account.
            with (yield ctx.lock_entities([source, target])):
                try:
                    yield ctx.call_entity(source, "withdraw", amount)
                except task.TaskFailedError as error:
                    return f"declined: {error}"
                yield ctx.call_entity(target, "deposit", amount)
            ctx.signal_entity(EntityInstanceId("counter", "transfers"), "add", 1)
            return "done"

        with worker, TaskHubGrpcClient(host_address=address, metadata=metadata) as client:
            worker.start()
            client.signal_entity(EntityInstanceId("account", "alice"), "deposit", 100)
            for amount in (60, 60):
                instance_id = client.schedule_new_orchestration(transfer, input=amount)
                state = client.wait_for_orchestration_completion(instance_id, timeout=60)
                if state is None or state.runtime_status != OrchestrationStatus.COMPLETED:
                    raise SystemExit(f"orchestration {instance_id} did not complete: {state}")
                print(f"transfer of {amount}: {state.get_output()}")
            for entity in client.get_all_entities(EntityQuery(instance_id_starts_with="@account@")):
                print(f"{entity.id}: {entity.get_typed_state(int)}")
            deadline = time.monotonic() + 10
            while (transfers := client.get_entity(EntityInstanceId("counter", "transfers"))) is None:
                if time.monotonic() > deadline:  # the counter signal is one-way: it may take a moment
                    break
                time.sleep(0.05)
            print(f"transfers done: {transfers.get_typed_state(int) if transfers else 0}")


if __name__ == "__main__":
    main()
