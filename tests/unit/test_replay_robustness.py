"""Replay engine: correct where the official SDK is not, and tolerant of what backends send."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from durabletask import task
from durabletask.internal import orchestrator_service_pb2 as pb
from tests.unit import histories as h
from tests.unit.replay_support import completion, failure, kinds, output, run, start


def waits_for_event(ctx: task.OrchestrationContext, _: Any) -> Any:
    value = yield ctx.wait_for_external_event("go")
    return value


STARTED = [h.orchestrator_started(), h.execution_started("waits_for_event"), h.orchestrator_completed()]


# ---------------------------------------------------------------- suspend, resume, terminate

def test_resume_of_a_running_instance_is_ignored() -> None:
    result = run(waits_for_event, STARTED, [h.orchestrator_started(), h.resumed()])
    assert result.actions == []
    assert result.status is None


def test_suspended_orchestration_buffers_events_until_resumed() -> None:
    suspended = run(waits_for_event, STARTED, [h.orchestrator_started(), h.suspended(), h.event_raised("go", 1)])
    assert suspended.status is None and suspended.actions == []
    past = [*STARTED, h.orchestrator_started(), h.suspended(), h.event_raised("go", 1), h.orchestrator_completed()]
    resumed = run(waits_for_event, past, [h.orchestrator_started(), h.resumed()])
    assert output(resumed) == 1


@pytest.mark.parametrize("label,new", [
    ("running", [h.orchestrator_started(), h.terminated("stop")]),
    ("suspended", [h.orchestrator_started(), h.suspended(), h.terminated("stop")]),
    ("completed in the same batch", [h.orchestrator_started(), h.event_raised("go", 1), h.terminated("stop")]),
])
def test_terminate_always_wins(label: str, new: list[pb.HistoryEvent]) -> None:
    c = completion(run(waits_for_event, STARTED, new))
    assert c.orchestrationStatus == pb.ORCHESTRATION_STATUS_TERMINATED, label
    assert c.result.value == '"stop"'


def test_terminate_wins_over_a_failure_in_the_same_batch_and_starts_nothing() -> None:
    def orch(ctx: task.OrchestrationContext, _: Any) -> Any:
        try:
            yield ctx.call_activity("a")
        except task.TaskFailedError:
            yield ctx.call_activity("compensate")

    past = [h.orchestrator_started(), h.execution_started("orch"), h.task_scheduled(1, "a"), h.orchestrator_completed()]
    result = run(orch, past, [h.orchestrator_started(), h.task_failed(1), h.terminated()])
    assert kinds(result) == ["completeOrchestration"]
    assert completion(result).orchestrationStatus == pb.ORCHESTRATION_STATUS_TERMINATED


@pytest.mark.parametrize("event", [
    pb.HistoryEvent(eventId=-1, genericEvent=pb.GenericEvent()),
    pb.HistoryEvent(eventId=-1, historyState=pb.HistoryStateEvent()),
    pb.HistoryEvent(eventId=-1, continueAsNew=pb.ContinueAsNewEvent()),
    pb.HistoryEvent(eventId=-1),  # a kind this SDK does not know (no oneof member set)
])
def test_informational_and_unknown_events_do_not_fail_the_orchestration(event: pb.HistoryEvent) -> None:
    result = run(waits_for_event, [*STARTED[:2], event], [h.orchestrator_started(), event, h.event_raised("go", 5)])
    assert output(result) == 5


def test_duplicate_and_unknown_completions_are_ignored() -> None:
    def orch(ctx: task.OrchestrationContext, _: Any) -> Any:
        a = yield ctx.call_activity("a")
        b = yield ctx.wait_for_external_event("b")
        return [a, b]

    past = [h.orchestrator_started(), h.execution_started("orch"), h.task_scheduled(1, "a"),
            h.orchestrator_completed(), h.orchestrator_started(), h.task_completed(1, "first")]
    new = [h.orchestrator_started(), h.task_completed(1, "again"), h.task_completed(42, "?"),
           h.timer_fired(7, h.T0), h.event_raised("b", 2)]
    assert output(run(orch, past, new)) == ["first", 2]


def test_empty_new_events_is_an_error_not_a_failed_orchestration() -> None:
    with pytest.raises(task.OrchestrationStateError, match="no new events"):
        run(waits_for_event, STARTED, [])


def test_history_without_execution_started_is_an_error() -> None:
    with pytest.raises(task.OrchestrationStateError, match="no executionStarted"):
        run(waits_for_event, [], [h.orchestrator_started(), h.event_raised("go", 1)])


# ---------------------------------------------------------------- non-determinism

def two_activities(ctx: task.OrchestrationContext, _: Any) -> Any:
    yield ctx.call_activity("first")
    yield ctx.call_activity("second")


def test_nondeterminism_wrong_name_names_sequence_expected_and_actual() -> None:
    past = [h.orchestrator_started(), h.execution_started("two_activities"), h.task_scheduled(1, "renamed")]
    details = failure(run(two_activities, past, [h.orchestrator_started(), h.task_completed(1)]))
    assert details.errorType.endswith("NonDeterminismError")
    assert "action #1" in details.errorMessage
    assert "call_activity('renamed')" in details.errorMessage
    assert "call_activity('first')" in details.errorMessage


def test_nondeterminism_wrong_kind() -> None:
    past = [h.orchestrator_started(), h.execution_started("two_activities"), h.timer_created(1, h.T0)]
    message = failure(run(two_activities, past, [h.orchestrator_started(), h.timer_fired(1, h.T0)])).errorMessage
    assert "action #1 as create_timer()" in message
    assert "called call_activity('first')" in message


def test_nondeterminism_missing_action() -> None:
    past = [h.orchestrator_started(), h.execution_started("two_activities"), h.task_scheduled(1, "first"),
            h.task_scheduled(5, "extra")]
    message = failure(run(two_activities, past, [h.orchestrator_started(), h.task_completed(1)])).errorMessage
    assert "action #5 as call_activity('extra')" in message
    assert "created no action #5" in message


def test_sub_orchestration_nondeterminism() -> None:
    def orch(ctx: task.OrchestrationContext, _: Any) -> Any:
        yield ctx.call_sub_orchestrator("new_child")

    past = [h.orchestrator_started(), h.execution_started("orch"), h.sub_created(1, "old_child", "abc:0001")]
    message = failure(run(orch, past, [h.orchestrator_started(), h.sub_completed(1)])).errorMessage
    assert "call_sub_orchestrator('old_child')" in message and "call_sub_orchestrator('new_child')" in message


# ---------------------------------------------------------------- retries

RETRY = task.RetryPolicy(first_retry_interval=timedelta(seconds=10), max_number_of_attempts=3,
                         backoff_coefficient=2.0)


def retried_activity(ctx: task.OrchestrationContext, _: Any) -> Any:
    result = yield ctx.call_activity("flaky", input="x", retry_policy=RETRY, tags={"k": "v"})
    return result


RETRY_PAST = [h.orchestrator_started(), h.execution_started("retried_activity"), h.task_scheduled(1, "flaky", "x"),
              h.orchestrator_completed()]


def test_failed_attempt_schedules_backoff_timer_in_orchestration_time() -> None:
    result = run(retried_activity, RETRY_PAST, [h.orchestrator_started(h.at(1)), h.task_failed(1)])
    assert kinds(result) == ["createTimer"]
    assert result.actions[0].id == 2
    assert result.actions[0].createTimer.fireAt.ToDatetime() == h.at(1) + timedelta(seconds=10)


def test_retry_reissues_same_task_id_with_its_tags_and_input() -> None:
    past = [*RETRY_PAST, h.orchestrator_started(h.at(1)), h.task_failed(1), h.timer_created(2, h.at(1.5)),
            h.orchestrator_completed()]
    result = run(retried_activity, past, [h.orchestrator_started(h.at(2)), h.timer_fired(2, h.at(1.5))])
    assert kinds(result) == ["scheduleTask"]
    action = result.actions[0]
    assert action.id == 1
    assert (action.scheduleTask.name, action.scheduleTask.input.value) == ("flaky", '"x"')
    assert dict(action.scheduleTask.tags) == {"k": "v"}


def test_retry_succeeds_on_second_attempt() -> None:
    past = [*RETRY_PAST, h.orchestrator_started(h.at(1)), h.task_failed(1), h.timer_created(2, h.at(1.5)),
            h.orchestrator_completed(), h.orchestrator_started(h.at(2)), h.timer_fired(2, h.at(1.5)),
            h.task_scheduled(1, "flaky", "x"), h.orchestrator_completed()]
    assert output(run(retried_activity, past, [h.orchestrator_started(h.at(3)), h.task_completed(1, "ok")])) == "ok"


def test_retries_stop_after_max_attempts_with_exponential_backoff() -> None:
    past = [*RETRY_PAST, h.orchestrator_started(h.at(1)), h.task_failed(1), h.timer_created(2, h.at(1.5)),
            h.orchestrator_completed(), h.orchestrator_started(h.at(2)), h.timer_fired(2, h.at(1.5)),
            h.task_scheduled(1, "flaky", "x"), h.orchestrator_completed()]
    second = run(retried_activity, past, [h.orchestrator_started(h.at(3)), h.task_failed(1)])
    assert second.actions[0].createTimer.fireAt.ToDatetime() == h.at(3) + timedelta(seconds=20)
    past += [h.orchestrator_started(h.at(3)), h.task_failed(1), h.timer_created(3, h.at(4)),
             h.orchestrator_completed(), h.orchestrator_started(h.at(4)), h.timer_fired(3, h.at(4)),
             h.task_scheduled(1, "flaky", "x"), h.orchestrator_completed()]
    third = run(retried_activity, past, [h.orchestrator_started(h.at(5)), h.task_failed(1, "still broken")])
    assert "still broken" in failure(third).errorMessage


def test_retry_timeout_uses_orchestration_time_so_replay_is_stable() -> None:
    policy = task.RetryPolicy(first_retry_interval=timedelta(seconds=1), max_number_of_attempts=5,
                              retry_timeout=timedelta(minutes=2))

    def orch(ctx: task.OrchestrationContext, _: Any) -> Any:
        yield ctx.call_activity("flaky", retry_policy=policy)

    past = [h.orchestrator_started(h.at(0)), h.execution_started("orch"), h.task_scheduled(1, "flaky")]
    # Within the timeout (in orchestration time): retry, however long ago this history was written.
    assert kinds(run(orch, past, [h.orchestrator_started(h.at(1)), h.task_failed(1)])) == ["createTimer"]
    # Past the timeout: give up.
    late = run(orch, past, [h.orchestrator_started(h.at(3)), h.task_failed(1)])
    assert completion(late).orchestrationStatus == pb.ORCHESTRATION_STATUS_FAILED


def test_non_retriable_failure_stops_retries() -> None:
    result = run(retried_activity, RETRY_PAST, [h.orchestrator_started(), h.task_failed(1, non_retriable=True)])
    assert completion(result).orchestrationStatus == pb.ORCHESTRATION_STATUS_FAILED


def test_retry_predicate_decides_on_the_failure() -> None:
    policy = task.RetryPolicy(first_retry_interval=timedelta(seconds=1), max_number_of_attempts=5,
                              handle_failure=lambda f: f.is_caused_by(ConnectionError))

    def orch(ctx: task.OrchestrationContext, _: Any) -> Any:
        yield ctx.call_activity("net", retry_policy=policy)

    past = [h.orchestrator_started(), h.execution_started("orch"), h.task_scheduled(1, "net")]
    retried = run(orch, past, [h.orchestrator_started(), h.task_failed(1, error_type="builtins.ConnectionResetError")])
    assert kinds(retried) == ["createTimer"]
    given_up = run(orch, past, [h.orchestrator_started(), h.task_failed(1, error_type="builtins.ValueError")])
    assert completion(given_up).orchestrationStatus == pb.ORCHESTRATION_STATUS_FAILED


def test_retried_sub_orchestration_keeps_version_and_instance_id() -> None:
    policy = task.RetryPolicy(first_retry_interval=timedelta(seconds=1), max_number_of_attempts=2)

    def orch(ctx: task.OrchestrationContext, _: Any) -> Any:
        yield ctx.call_sub_orchestrator("child", version="1.5", retry_policy=policy)

    past = [h.orchestrator_started(), h.execution_started("orch"), h.sub_created(1, "child", "abc:0001"),
            h.orchestrator_completed(), h.orchestrator_started(), h.sub_failed(1), h.timer_created(2, h.T0),
            h.orchestrator_completed()]
    result = run(orch, past, [h.orchestrator_started(), h.timer_fired(2, h.T0)])
    create = result.actions[0].createSubOrchestration
    assert (result.actions[0].id, create.instanceId, create.version.value) == (1, "abc:0001", "1.5")


@pytest.mark.parametrize("kwargs,fragment", [
    ({"first_retry_interval": timedelta(seconds=-1), "max_number_of_attempts": 1}, "first_retry_interval"),
    ({"first_retry_interval": timedelta(seconds=1), "max_number_of_attempts": 0}, "max_number_of_attempts"),
    ({"first_retry_interval": timedelta(seconds=1), "max_number_of_attempts": 2, "backoff_coefficient": 0.5},
     "backoff_coefficient"),
])
def test_retry_policy_validation_names_the_argument(kwargs: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        task.RetryPolicy(**kwargs)


# ---------------------------------------------------------------- event-wait timeouts and cancellation

def waits_with_timeout(ctx: task.OrchestrationContext, _: Any) -> Any:
    try:
        value = yield ctx.wait_for_external_event("approval", timeout=timedelta(hours=1))
    except TimeoutError:
        return "timed out"
    return value


TIMEOUT_PAST = [h.orchestrator_started(), h.execution_started("waits_with_timeout"),
                h.timer_created(1, h.at(60)), h.orchestrator_completed()]


def test_wait_timeout_creates_a_durable_timer() -> None:
    result = start(waits_with_timeout)
    assert kinds(result) == ["createTimer"]
    assert result.actions[0].createTimer.fireAt.ToDatetime() == h.at(60)


def test_wait_timeout_fires_into_the_orchestrator_as_timeout_error() -> None:
    assert output(run(waits_with_timeout, TIMEOUT_PAST, [h.orchestrator_started(h.at(60)),
                                                         h.timer_fired(1, h.at(60))])) == "timed out"


def test_event_before_timeout_wins_and_later_timer_is_ignored() -> None:
    assert output(run(waits_with_timeout, TIMEOUT_PAST, [h.orchestrator_started(h.at(5)),
                                                         h.event_raised("approval", "yes"),
                                                         h.timer_fired(1, h.at(60))])) == "yes"


def test_event_timeout_error_is_also_a_task_failed_error() -> None:
    def orch(ctx: task.OrchestrationContext, _: Any) -> Any:
        try:
            yield ctx.wait_for_external_event("x", timeout=timedelta(0))
        except task.TaskFailedError as e:
            return [isinstance(e, task.EventTimeoutError), e.details.error_type]

    past = [h.orchestrator_started(), h.execution_started("orch"), h.timer_created(1, h.T0)]
    result = run(orch, past, [h.orchestrator_started(), h.timer_fired(1, h.T0)])
    assert output(result) == [True, "builtins.TimeoutError"]


def test_cancelled_timer_is_not_sent_and_its_firing_is_ignored() -> None:
    def orch(ctx: task.OrchestrationContext, _: Any) -> Any:
        timer = ctx.create_timer(timedelta(hours=1))
        event = ctx.wait_for_external_event("go")
        winner = yield task.when_any([timer, event])
        if winner is event:
            timer.cancel()
            return ["event", timer.is_cancelled]
        return ["timer", False]

    first = start(orch)
    assert kinds(first) == ["createTimer"]
    past = [h.orchestrator_started(), h.execution_started("orch"), h.timer_created(1, h.at(60))]
    result = run(orch, past, [h.orchestrator_started(), h.event_raised("go"), h.timer_fired(1, h.at(60))])
    assert output(result) == ["event", True]


def test_cancelling_an_event_wait_leaves_the_event_for_the_next_waiter() -> None:
    def orch(ctx: task.OrchestrationContext, _: Any) -> Any:
        abandoned = ctx.wait_for_external_event("go")
        assert abandoned.cancel()
        with pytest.raises(task.TaskCancelledError):
            abandoned.get_result()
        value = yield ctx.wait_for_external_event("go")
        return value

    past = [h.orchestrator_started(), h.execution_started("orch")]
    assert output(run(orch, past, [h.orchestrator_started(), h.event_raised("go", 7)])) == 7


# ---------------------------------------------------------------- rewind

def test_rewind_rewrites_failed_history_for_client_side_rewind_backends() -> None:
    def orch(ctx: task.OrchestrationContext, _: Any) -> Any:
        yield ctx.call_activity("ok")
        yield ctx.call_activity("broken")

    past = [h.orchestrator_started(), h.execution_started("orch"), h.task_scheduled(1, "ok"),
            h.task_completed(1), h.task_scheduled(2, "broken"), h.task_failed(2), h.execution_completed()]
    result = run(orch, past, [h.orchestrator_started(), h.rewound()])
    assert kinds(result) == ["rewindOrchestration"]
    history = result.actions[0].rewindOrchestration.newHistory
    kept = [(e.WhichOneof("eventType"), e.eventId) for e in history]
    assert ("taskScheduled", 1) in kept and ("taskScheduled", 2) not in kept
    assert all(k not in ("taskFailed", "executionCompleted") for k, _ in kept)
    assert kept[-1][0] == "executionRewound"
    assert history[1].executionStarted.orchestrationInstance.executionId.value


def test_rewound_history_replays_and_reschedules_failed_work() -> None:
    def orch(ctx: task.OrchestrationContext, _: Any) -> Any:
        yield ctx.call_activity("ok")
        yield ctx.call_activity("broken")

    past = [h.orchestrator_started(), h.execution_started("orch"), h.task_scheduled(1, "ok"), h.task_completed(1)]
    result = run(orch, past, [h.orchestrator_started(), h.rewound()])
    assert [(a.id, a.scheduleTask.name) for a in result.actions] == [(2, "broken")]


# ---------------------------------------------------------------- fixes found by the lockstep comparison

def test_long_retry_backoff_is_chunked_like_any_timer() -> None:
    policy = task.RetryPolicy(first_retry_interval=timedelta(days=4), max_number_of_attempts=2)

    def orch(ctx: task.OrchestrationContext, _: Any) -> Any:
        yield ctx.call_activity("slow_to_recover", retry_policy=policy)

    past = [h.orchestrator_started(), h.execution_started("orch"), h.task_scheduled(1, "slow_to_recover")]
    first = run(orch, past, [h.orchestrator_started(), h.task_failed(1)])
    assert first.actions[0].createTimer.fireAt.ToDatetime() == h.T0 + timedelta(days=3)
    past += [h.orchestrator_started(), h.task_failed(1), h.timer_created(2, h.T0 + timedelta(days=3))]
    second = run(orch, past, [h.orchestrator_started(h.T0 + timedelta(days=3)),
                              h.timer_fired(2, h.T0 + timedelta(days=3))])
    assert [(a.id, a.createTimer.fireAt.ToDatetime()) for a in second.actions] == [(3, h.T0 + timedelta(days=4))]


def test_no_retry_is_scheduled_once_the_orchestration_has_ended() -> None:
    def orch(ctx: task.OrchestrationContext, _: Any) -> Any:
        ctx.call_activity("retried", retry_policy=RETRY)
        yield ctx.call_activity("fatal")

    past = [h.orchestrator_started(), h.execution_started("orch"), h.task_scheduled(1, "retried"),
            h.task_scheduled(2, "fatal")]
    result = run(orch, past, [h.orchestrator_started(), h.task_failed(2), h.task_failed(1)])
    assert kinds(result) == ["completeOrchestration"]


def test_actions_confirmed_while_suspended_are_not_sent_again() -> None:
    def orch(ctx: task.OrchestrationContext, _: Any) -> Any:
        yield ctx.call_activity("a")
        yield ctx.call_activity("b")
        value = yield ctx.wait_for_external_event("go")
        return value

    past = [h.orchestrator_started(), h.execution_started("orch"), h.task_scheduled(1, "a"),
            h.orchestrator_completed(), h.orchestrator_started(), h.task_completed(1), h.suspended(),
            h.task_scheduled(2, "b"), h.orchestrator_completed()]
    result = run(orch, past, [h.orchestrator_started(), h.event_raised("go", 1)])
    assert result.actions == []


def test_failure_types_are_reported_under_their_public_names() -> None:
    past = [h.orchestrator_started(), h.execution_started("two_activities"), h.task_scheduled(1, "renamed")]
    details = failure(run(two_activities, past, [h.orchestrator_started(), h.task_completed(1)]))
    assert details.errorType == "durabletask.task.NonDeterminismError"
    assert task.TaskFailedError.__module__ == "durabletask.task"


def test_two_suspends_then_one_resume_resumes() -> None:
    past = [*STARTED, h.orchestrator_started(), h.suspended(), h.suspended(), h.event_raised("go", 3)]
    assert output(run(waits_for_event, past, [h.orchestrator_started(), h.resumed()])) == 3
