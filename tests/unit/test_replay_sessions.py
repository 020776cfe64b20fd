"""Sessions: an executor that keeps running orchestrations resumes them, and replays whenever it must.

The episode-by-episode equivalence with a full replay over every engine scenario is in
``tests/interop/test_engine_lockstep.py`` (``test_a_worker_keeping_sessions_answers_as_a_full_replay``);
these tests cover the cases where the kept state must not be used.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from durabletask.internal import orchestrator_service_pb2 as pb
from durabletask.internal.registry import Registry
from durabletask.internal.replay.engine import ExecutionResult, OrchestrationExecutor
from durabletask.worker import DEFAULT_MAXIMUM_CACHED_ORCHESTRATIONS, TaskHubGrpcWorker
from tests.unit import histories as h
from tests.unit.replay_support import output

runs: list[int] = []  # how often the orchestrator body started


def counting_chain(ctx: Any, n: int) -> Any:
    runs.append(1)
    total = 0
    for i in range(n):
        total = yield ctx.call_activity("add", input=[total, i])
    return total


def named(ctx: Any, _: Any) -> Any:
    first = yield ctx.call_activity("first")
    second = yield ctx.call_activity("second", input=first)
    return [first, second]


class Instance:
    """One instance's history, committed the way a backend does it."""

    def __init__(self, executor: OrchestrationExecutor, name: str, input: Any, instance_id: str = "abc") -> None:
        self.executor = executor
        self.instance_id = instance_id
        self.history: list[pb.HistoryEvent] = []
        self.minute = 0
        self.inbox = [h.execution_started(name, input, instance_id=instance_id)]

    def episode(self, *arrivals: pb.HistoryEvent, commit: bool = True) -> ExecutionResult:
        self.minute += 1
        new = [h.orchestrator_started(h.at(self.minute)), *self.inbox, *arrivals]
        self.inbox = []
        result = self.executor.execute(self.instance_id, list(self.history), new)
        if commit:
            self.history += new
            for action in result.actions:
                if action.HasField("scheduleTask"):
                    self.history.append(h.task_scheduled(action.id, action.scheduleTask.name))
            self.history.append(h.orchestrator_completed())
        return result

    def scheduled(self, result: ExecutionResult) -> list[tuple[int, str, Any]]:
        out = []
        for action in result.actions:
            if action.HasField("scheduleTask"):
                task = action.scheduleTask
                out.append((action.id, task.name, json.loads(task.input.value) if task.HasField("input") else None))
        return out


def executor(capacity: int = 10) -> OrchestrationExecutor:
    registry = Registry()
    registry.add_orchestrator(counting_chain)
    registry.add_orchestrator(named)
    return OrchestrationExecutor(registry, maximum_cached_orchestrations=capacity)


def run_chain(instance: Instance, n: int) -> ExecutionResult:
    result = instance.episode()
    for _ in range(n):
        [(seq, _, (total, i))] = instance.scheduled(result)
        result = instance.episode(h.task_completed(seq, total + i))
    return result


def test_a_kept_orchestration_runs_its_code_once_instead_of_once_per_episode() -> None:
    runs.clear()
    assert output(run_chain(Instance(executor(), "counting_chain", 20), 20)) == sum(range(20))
    assert len(runs) == 1

    runs.clear()
    assert output(run_chain(Instance(executor(capacity=0), "counting_chain", 20), 20)) == sum(range(20))
    assert len(runs) == 21  # without sessions every episode replays from the start


def test_a_finished_orchestration_is_not_kept() -> None:
    ex = executor()
    run_chain(Instance(ex, "counting_chain", 3), 3)
    assert ex.sessions is not None and len(ex.sessions) == 0 and ex.sessions.resumed == 3


def test_an_episode_whose_outcome_was_not_committed_is_replayed_from_the_history() -> None:
    """A completion that never landed: the backend delivers the same history again (with more news)."""
    ex = executor()
    instance = Instance(ex, "named", None)
    instance.episode()
    lost = instance.episode(h.task_completed(1, "a"), commit=False)
    assert [name for _, name, _ in instance.scheduled(lost)] == ["second"]
    # Redelivered with the same first result: the kept state (already past it) must not be used.
    again = instance.episode(h.task_completed(1, "a"))
    assert [name for _, name, _ in instance.scheduled(again)] == ["second"]
    assert ex.sessions is not None and ex.sessions.replayed == 1
    assert output(instance.episode(h.task_completed(2, "b"))) == ["a", "b"]


def test_a_history_another_worker_extended_is_replayed() -> None:
    """Another worker ran the next episode (its own OrchestratorStarted) and committed it."""
    mine, theirs = executor(), executor()
    instance = Instance(mine, "named", None)
    instance.episode()
    instance.episode(h.task_completed(1, "a"), commit=False)  # kept here, but never committed
    instance.executor = theirs
    instance.minute += 5
    instance.episode(h.task_completed(1, "a"))  # the other worker's episode, committed
    instance.executor = mine
    result = instance.episode(h.task_completed(2, "b"))
    assert output(result) == ["a", "b"]
    assert mine.sessions is not None and mine.sessions.replayed == 1


def test_news_the_kept_state_has_not_seen_in_past_events_force_a_replay() -> None:
    """A result recorded in past events (the backend committed a prefix only): only a replay places it."""
    ex = executor()
    instance = Instance(ex, "named", None)
    instance.episode()
    instance.history.append(h.task_completed(1, "a"))
    result = instance.episode()
    assert [name for _, name, _ in instance.scheduled(result)] == ["second"]
    assert ex.sessions is not None and ex.sessions.replayed == 1


def test_a_confirmation_that_does_not_match_forces_a_replay_instead_of_failing() -> None:
    ex = executor()
    instance = Instance(ex, "named", None)
    first = instance.episode(commit=False)
    instance.history += [h.orchestrator_started(h.at(1)), h.execution_started("named", None),
                         h.task_scheduled(1, "renamed"), h.orchestrator_completed()]
    assert instance.scheduled(first)[0][1] == "first"
    result = instance.episode(h.task_completed(1, "a"))
    # The full replay decides: the history says task 1 was 'renamed', the code calls 'first'.
    assert result.actions[-1].completeOrchestration.orchestrationStatus == pb.ORCHESTRATION_STATUS_FAILED
    assert "renamed" in result.actions[-1].completeOrchestration.failureDetails.errorMessage
    assert ex.sessions is not None and ex.sessions.replayed == 1


def test_another_execution_under_the_same_instance_id_starts_from_its_own_history() -> None:
    ex = executor()
    old = Instance(ex, "counting_chain", 2)
    old.episode()
    old.episode(h.task_completed(1, 0))  # kept: waiting for its second activity
    # Purged and started again under the same ID with other input; its second episode happens to
    # look like the old one's, but its history starts elsewhere.
    new = Instance(ex, "counting_chain", 1)
    new.history = [h.orchestrator_started(h.at(-30)), h.execution_started("counting_chain", 1),
                   h.task_scheduled(1, "add"), h.orchestrator_completed(),
                   old.history[4], old.history[5], h.orchestrator_completed()]
    new.inbox, new.minute = [], 40
    runs.clear()
    assert output(new.episode()) == 0
    assert runs == [1]
    assert ex.sessions is not None and ex.sessions.replayed == 1


def test_the_least_recently_used_orchestration_is_dropped_beyond_the_capacity() -> None:
    ex = executor(capacity=2)
    instances = [Instance(ex, "named", None, instance_id=f"i{k}") for k in range(3)]
    for instance in instances:
        instance.episode()
    sessions = ex.sessions
    assert sessions is not None
    assert len(sessions) == 2 and "i0" not in sessions
    for instance in (instances[1], instances[2], instances[0]):
        assert [n for _, n, _ in instance.scheduled(instance.episode(h.task_completed(1, "x")))] == ["second"]
    assert (sessions.resumed, sessions.replayed) == (2, 1)  # i1 and i2 resumed, i0 replayed
    assert len(sessions) == 2 and "i1" not in sessions  # i0 took the place of the least recently used


def test_the_worker_keeps_a_thousand_orchestrations_by_default_and_checks_the_setting() -> None:
    assert TaskHubGrpcWorker().maximum_cached_orchestrations == DEFAULT_MAXIMUM_CACHED_ORCHESTRATIONS == 1000
    assert TaskHubGrpcWorker(maximum_cached_orchestrations=0).maximum_cached_orchestrations == 0
    for bad in (-1, 2.5, True, "10"):
        with pytest.raises(ValueError, match="maximum_cached_orchestrations"):
            TaskHubGrpcWorker(maximum_cached_orchestrations=bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="maximum_cached_orchestrations"):
        OrchestrationExecutor(Registry(), maximum_cached_orchestrations=-5)
