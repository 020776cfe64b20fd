"""Kept orchestration state (sessions) against our emulator: resumed when it can be, replayed when not."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from durabletask import history, task
from durabletask.client import OrchestrationStatus, TaskHubGrpcClient
from durabletask.emulator import Emulator
from durabletask.worker import TaskHubGrpcWorker

starts: Counter[str] = Counter()  # instance ID -> how often the orchestrator body started


def add(ctx: task.ActivityContext, pair: list[int]) -> int:
    return pair[0] + pair[1]


def long_chain(ctx: task.OrchestrationContext, n: int) -> Any:
    starts[ctx.instance_id] += 1
    total = 0
    for i in range(n):
        total = yield ctx.call_activity(add, input=[total, i])
    return total


def fan_in(ctx: task.OrchestrationContext, n: int) -> Any:
    starts[ctx.instance_id] += 1
    results = yield task.when_all([ctx.call_activity(add, input=[i, i]) for i in range(n)])
    return sum(results)


@pytest.fixture()
def emulator() -> Iterator[Emulator]:
    with Emulator(memory=True) as emu:
        yield emu


def _worker(emulator: Emulator, **kwargs: Any) -> TaskHubGrpcWorker:
    worker = TaskHubGrpcWorker(host_address=emulator.address, **kwargs)
    worker.add_orchestrator(long_chain)
    worker.add_orchestrator(fan_in)
    worker.add_activity(add)
    worker.start()  # (the context manager stops it, as the official SDK's does, but does not start it)
    return worker


def _run(emulator: Emulator, orchestrator: Any, n: int, timeout: float = 60) -> tuple[str, Any]:
    with TaskHubGrpcClient(host_address=emulator.address) as client:
        instance_id = client.schedule_new_orchestration(orchestrator, input=n)
        state = client.wait_for_orchestration_completion(instance_id, timeout=timeout)
    assert state is not None and state.runtime_status == OrchestrationStatus.COMPLETED, state
    return instance_id, state.get_output()


def test_a_long_chain_starts_its_orchestrator_once(emulator: Emulator) -> None:
    with _worker(emulator):
        instance_id, result = _run(emulator, long_chain, 50)
    assert result == sum(range(50))
    assert starts[instance_id] == 1  # 51 episodes, each resumed from the last one's state


def test_without_sessions_every_episode_replays(emulator: Emulator) -> None:
    with _worker(emulator, maximum_cached_orchestrations=0):
        instance_id, result = _run(emulator, long_chain, 10)
    assert result == sum(range(10))
    assert starts[instance_id] == 11


def test_fan_in_of_many_results_arriving_over_several_episodes(emulator: Emulator) -> None:
    with _worker(emulator):
        instance_id, result = _run(emulator, fan_in, 300)
    assert result == sum(2 * i for i in range(300))
    assert starts[instance_id] == 1


def test_two_workers_taking_turns_on_the_same_orchestrations_agree(emulator: Emulator) -> None:
    """A worker's kept state goes stale when the other worker runs an episode: it must notice and replay."""
    with _worker(emulator), _worker(emulator), TaskHubGrpcClient(host_address=emulator.address) as client:
        ids = [client.schedule_new_orchestration(long_chain, input=40) for _ in range(8)]
        states = [client.wait_for_orchestration_completion(i, timeout=60) for i in ids]
    for instance_id, state in zip(ids, states, strict=True):
        assert state is not None and state.get_output() == sum(range(40))
        assert 1 <= starts[instance_id] <= 41


def test_a_restarted_worker_replays_what_it_no_longer_keeps(emulator: Emulator) -> None:
    with TaskHubGrpcClient(host_address=emulator.address) as client:
        with _worker(emulator):
            instance_id = client.schedule_new_orchestration(long_chain, input=30)
            client.wait_for_orchestration_start(instance_id, timeout=10)
            deadline = time.monotonic() + 10
            while not any(isinstance(e, history.TaskCompletedEvent)
                          for e in client.get_orchestration_history(instance_id)):
                assert time.monotonic() < deadline, "no activity completed"
                time.sleep(0.005)
        with _worker(emulator):
            state = client.wait_for_orchestration_completion(instance_id, timeout=60)
    assert state is not None and state.get_output() == sum(range(30))
    assert starts[instance_id] >= 2  # the new worker started from the history
