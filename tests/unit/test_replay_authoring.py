"""Replay engine: the authoring features of the official SDK (official_sdk.md section 1.1)."""

from __future__ import annotations

import json
import logging
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from durabletask import task
from durabletask.internal import orchestrator_service_pb2 as pb
from tests.unit import histories as h
from tests.unit.replay_support import completion, failure, kinds, output, run, start

# ---------------------------------------------------------------- orchestrator functions

def test_generator_orchestrator_schedules_first_activity_with_encoded_input() -> None:
    def greet(ctx: task.OrchestrationContext, name: str) -> Any:
        result = yield ctx.call_activity("say_hello", input=name)
        return result

    result = start(greet, "Tokyo")
    assert kinds(result) == ["scheduleTask"]
    action = result.actions[0]
    assert action.id == 1  # the Python SDK numbers actions from 1
    assert action.scheduleTask.name == "say_hello"
    assert action.scheduleTask.input.value == '"Tokyo"'
    assert result.status is None


def test_chain_replays_past_and_completes_with_output() -> None:
    def chain(ctx: task.OrchestrationContext, n: int) -> Any:
        x = 0
        for _ in range(n):
            x = yield ctx.call_activity("inc", input=x)
        return x

    past = [h.orchestrator_started(), h.execution_started("chain", 2), h.task_scheduled(1, "inc", 0),
            h.orchestrator_completed(), h.orchestrator_started(h.at(1)), h.task_completed(1, 1),
            h.task_scheduled(2, "inc", 1), h.orchestrator_completed()]
    result = run(chain, past, [h.orchestrator_started(h.at(2)), h.task_completed(2, 2)])
    assert kinds(result) == ["completeOrchestration"]
    assert output(result) == 2
    assert result.status == pb.ORCHESTRATION_STATUS_COMPLETED


def test_non_generator_orchestrator_completes_at_once() -> None:
    def plain(ctx: task.OrchestrationContext, value: int) -> int:
        return value * 2

    assert output(start(plain, 21)) == 42


def test_orchestrator_with_no_input_and_no_output() -> None:
    def nothing(ctx: task.OrchestrationContext, _: Any) -> None:
        return None

    c = completion(start(nothing))
    assert c.orchestrationStatus == pb.ORCHESTRATION_STATUS_COMPLETED
    assert not c.HasField("result")


def test_async_def_orchestrator_fails_with_clear_message() -> None:
    async def not_a_generator(ctx: task.OrchestrationContext, _: Any) -> int:
        return 1

    details = failure(start(not_a_generator))
    assert "async def" in details.errorMessage
    assert "not_a_generator" in details.errorMessage


def test_unregistered_orchestrator_fails_naming_it_and_the_registered_ones() -> None:
    def known(ctx: task.OrchestrationContext, _: Any) -> None:
        return None

    result = run(known, [], [h.orchestrator_started(), h.execution_started("unknown_one")])
    details = failure(result)
    assert "'unknown_one'" in details.errorMessage
    assert "'known'" in details.errorMessage
    assert details.errorType.endswith("OrchestratorNotRegisteredError")


def test_yielding_a_non_task_fails_with_a_hint() -> None:
    def bad(ctx: task.OrchestrationContext, _: Any) -> Any:
        yield 42

    details = failure(start(bad))
    assert "yielded 42" in details.errorMessage
    assert "call_activity" in details.errorMessage


def test_uncaught_exception_fails_with_qualified_type_message_and_stack() -> None:
    def broken(ctx: task.OrchestrationContext, _: Any) -> Any:
        raise KeyError("missing")

    details = failure(start(broken))
    assert details.errorType == "builtins.KeyError"
    assert details.errorMessage == "'missing'"
    assert "broken" in details.stackTrace.value


# ---------------------------------------------------------------- context information

def test_context_information() -> None:
    seen: dict[str, Any] = {}

    def info(ctx: task.OrchestrationContext, _: Any) -> Any:
        seen["first"] = (ctx.instance_id, ctx.parent_instance_id, ctx.version, ctx.current_utc_datetime,
                         ctx.is_replaying)
        yield ctx.create_timer(timedelta(seconds=5))
        seen["second"] = (ctx.current_utc_datetime, ctx.is_replaying)

    started = h.execution_started("info", instance_id="child-1", version="2.0", parent_instance_id="parent-1")
    past = [h.orchestrator_started(h.T0), started, h.timer_created(1, h.T0 + timedelta(seconds=5)),
            h.orchestrator_completed()]
    new = [h.orchestrator_started(h.at(1)), h.timer_fired(1, h.T0 + timedelta(seconds=5))]
    run(info, past, new, instance_id="child-1")
    assert seen["first"] == ("child-1", "parent-1", "2.0", h.T0, True)
    assert seen["second"] == (h.at(1), False)


def test_version_and_parent_absent_are_none() -> None:
    seen: list[Any] = []

    def info(ctx: task.OrchestrationContext, _: Any) -> None:
        seen.extend([ctx.version, ctx.parent_instance_id])

    start(info)
    assert seen == [None, None]


# ---------------------------------------------------------------- activities

@dataclass
class Point:
    x: int
    y: int


def test_activity_reference_gives_name_and_return_type() -> None:
    def make_point(ctx: task.ActivityContext, _: Any) -> Point:
        return Point(1, 2)

    got: list[Any] = []

    def orch(ctx: task.OrchestrationContext, _: Any) -> Any:
        got.append((yield ctx.call_activity(make_point)))

    past = [h.orchestrator_started(), h.execution_started("orch"), h.task_scheduled(1, "make_point"),
            h.orchestrator_completed()]
    run(orch, past, [h.orchestrator_started(), h.task_completed(1, {"x": 1, "y": 2})])
    assert got == [Point(1, 2)]


def test_activity_tags_are_sent() -> None:
    def orch(ctx: task.OrchestrationContext, _: Any) -> Any:
        yield ctx.call_activity("a", tags={"team": "billing"})

    action = start(orch).actions[0]
    assert dict(action.scheduleTask.tags) == {"team": "billing"}


def test_activity_failure_is_raised_into_the_orchestrator() -> None:
    def orch(ctx: task.OrchestrationContext, _: Any) -> Any:
        try:
            yield ctx.call_activity("flaky")
        except task.TaskFailedError as e:
            return {"caught": e.details.message, "type": e.details.error_type,
                    "is_value_error": e.details.is_caused_by(ValueError)}

    past = [h.orchestrator_started(), h.execution_started("orch"), h.task_scheduled(1, "flaky"),
            h.orchestrator_completed()]
    result = run(orch, past, [h.orchestrator_started(), h.task_failed(1, "bad input")])
    assert output(result) == {"caught": "bad input", "type": "builtins.ValueError", "is_value_error": True}


def test_uncaught_activity_failure_fails_orchestration_with_inner_failure() -> None:
    def orch(ctx: task.OrchestrationContext, _: Any) -> Any:
        yield ctx.call_activity("flaky")

    past = [h.orchestrator_started(), h.execution_started("orch"), h.task_scheduled(1, "flaky"),
            h.orchestrator_completed()]
    details = failure(run(orch, past, [h.orchestrator_started(), h.task_failed(1, "bad input")]))
    assert details.errorType.endswith("TaskFailedError")
    assert "Activity task #1 failed: bad input" in details.errorMessage
    assert details.innerFailure.errorMessage == "bad input"
    assert details.innerFailure.errorType == "builtins.ValueError"


# ---------------------------------------------------------------- timers

def test_timer_from_delta_and_from_aware_datetime() -> None:
    def orch(ctx: task.OrchestrationContext, _: Any) -> Any:
        yield ctx.create_timer(timedelta(minutes=5))
        yield ctx.create_timer(datetime(2026, 1, 1, 14, 0, tzinfo=timezone(timedelta(hours=1))))

    first = start(orch)
    assert first.actions[0].createTimer.fireAt.ToDatetime() == h.at(5)
    past = [h.orchestrator_started(), h.execution_started("orch"), h.timer_created(1, h.at(5)),
            h.orchestrator_completed()]
    second = run(orch, past, [h.orchestrator_started(h.at(5)), h.timer_fired(1, h.at(5))])
    assert second.actions[0].id == 2
    assert second.actions[0].createTimer.fireAt.ToDatetime() == datetime(2026, 1, 1, 13, 0)


def test_long_timer_is_split_into_chunks_and_completes_at_final_time() -> None:
    done: list[datetime] = []

    def orch(ctx: task.OrchestrationContext, _: Any) -> Any:
        yield ctx.create_timer(timedelta(days=7))
        done.append(ctx.current_utc_datetime)

    day = timedelta(days=1)
    first = start(orch)
    assert first.actions[0].createTimer.fireAt.ToDatetime() == h.T0 + 3 * day
    past = [h.orchestrator_started(), h.execution_started("orch"), h.timer_created(1, h.T0 + 3 * day),
            h.orchestrator_completed()]
    second = run(orch, past, [h.orchestrator_started(h.T0 + 3 * day), h.timer_fired(1, h.T0 + 3 * day)])
    assert [(a.id, a.createTimer.fireAt.ToDatetime()) for a in second.actions] == [(2, h.T0 + 6 * day)]
    past += [h.orchestrator_started(h.T0 + 3 * day), h.timer_fired(1, h.T0 + 3 * day),
             h.timer_created(2, h.T0 + 6 * day), h.orchestrator_completed()]
    third = run(orch, past, [h.orchestrator_started(h.T0 + 6 * day), h.timer_fired(2, h.T0 + 6 * day)])
    assert third.actions[0].createTimer.fireAt.ToDatetime() == h.T0 + 7 * day
    past += [h.orchestrator_started(h.T0 + 6 * day), h.timer_fired(2, h.T0 + 6 * day),
             h.timer_created(3, h.T0 + 7 * day), h.orchestrator_completed()]
    last = run(orch, past, [h.orchestrator_started(h.T0 + 7 * day), h.timer_fired(3, h.T0 + 7 * day)])
    assert kinds(last) == ["completeOrchestration"]
    assert done[-1] == h.T0 + 7 * day


def test_long_timer_is_not_split_without_a_maximum_interval() -> None:
    def orch(ctx: task.OrchestrationContext, _: Any) -> Any:
        yield ctx.create_timer(timedelta(days=30))

    result = start(orch, maximum_timer_interval=None)
    assert result.actions[0].createTimer.fireAt.ToDatetime() == h.T0 + timedelta(days=30)


# ---------------------------------------------------------------- sub-orchestrations

def test_sub_orchestration_default_id_version_and_result() -> None:
    def parent(ctx: task.OrchestrationContext, _: Any) -> Any:
        a = yield ctx.call_sub_orchestrator("child", input=1, version="3")
        b = yield ctx.call_sub_orchestrator("child", instance_id="explicit")
        return [a, b]

    first = start(parent)
    create = first.actions[0].createSubOrchestration
    assert (create.name, create.instanceId, create.input.value, create.version.value) == ("child", "abc:0001", "1", "3")
    past = [h.orchestrator_started(), h.execution_started("parent"), h.sub_created(1, "child", "abc:0001"),
            h.orchestrator_completed(), h.orchestrator_started(), h.sub_completed(1, "x"),
            h.sub_created(2, "child", "explicit"), h.orchestrator_completed()]
    assert output(run(parent, past, [h.orchestrator_started(), h.sub_completed(2, "y")])) == ["x", "y"]


def test_sub_orchestration_failure_raises_task_failed_error() -> None:
    def parent(ctx: task.OrchestrationContext, _: Any) -> Any:
        try:
            yield ctx.call_sub_orchestrator("child")
        except task.TaskFailedError as e:
            return e.details.message

    past = [h.orchestrator_started(), h.execution_started("parent"), h.sub_created(1, "child", "abc:0001"),
            h.orchestrator_completed()]
    assert output(run(parent, past, [h.orchestrator_started(), h.sub_failed(1, "child broke")])) == "child broke"


# ---------------------------------------------------------------- external events

def test_event_names_match_case_insensitively_and_decode_data() -> None:
    def orch(ctx: task.OrchestrationContext, _: Any) -> Any:
        approval = yield ctx.wait_for_external_event("Approval")
        return approval

    past = [h.orchestrator_started(), h.execution_started("orch"), h.orchestrator_completed()]
    result = run(orch, past, [h.orchestrator_started(), h.event_raised("APPROVAL", {"ok": True})])
    assert output(result) == {"ok": True}


def test_events_arriving_before_the_wait_are_buffered_in_order() -> None:
    def orch(ctx: task.OrchestrationContext, _: Any) -> Any:
        yield ctx.create_timer(timedelta(minutes=1))
        first = yield ctx.wait_for_external_event("item")
        second = yield ctx.wait_for_external_event("item")
        return [first, second]

    past = [h.orchestrator_started(), h.execution_started("orch"), h.timer_created(1, h.at(1)),
            h.orchestrator_completed()]
    new = [h.orchestrator_started(h.at(1)), h.event_raised("item", 1), h.event_raised("item", 2),
           h.timer_fired(1, h.at(1))]
    assert output(run(orch, past, new)) == [1, 2]


def test_event_data_type_decodes_into_dataclass() -> None:
    @dataclass
    class Approval:
        approver: str

    def orch(ctx: task.OrchestrationContext, _: Any) -> Any:
        value = yield ctx.wait_for_external_event("approve", data_type=Approval)
        return value.approver

    past = [h.orchestrator_started(), h.execution_started("orch"), h.orchestrator_completed()]
    assert output(run(orch, past, [h.orchestrator_started(), h.event_raised("approve", {"approver": "kim"})])) == "kim"


# ---------------------------------------------------------------- send_event

def test_send_event_action_and_replay_check() -> None:
    def orch(ctx: task.OrchestrationContext, _: Any) -> Any:
        ctx.send_event("other", "ping", data={"n": 1})
        yield ctx.create_timer(timedelta(seconds=1))

    first = start(orch)
    assert kinds(first) == ["sendEvent", "createTimer"]
    send = first.actions[0].sendEvent
    assert (send.instance.instanceId, send.name, send.data.value) == ("other", "ping", '{"n": 1}')
    past = [h.orchestrator_started(), h.execution_started("orch"), h.event_sent(1, "other", "ping"),
            h.timer_created(2, h.at(0)), h.orchestrator_completed()]
    assert kinds(run(orch, past, [h.orchestrator_started(), h.timer_fired(2, h.at(0))])) == ["completeOrchestration"]
    changed = [*past[:2], h.event_sent(1, "someone-else", "ping"), *past[3:]]
    details = failure(run(orch, changed, [h.orchestrator_started(), h.timer_fired(2, h.at(0))]))
    assert "send_event('someone-else', 'ping')" in details.errorMessage


@pytest.mark.parametrize("target,name,fragment", [("", "e", "instance_id"), ("@counter@a", "e", "signal_entity"),
                                                  ("x", " ", "event_name")])
def test_send_event_rejects_bad_arguments(target: str, name: str, fragment: str) -> None:
    def orch(ctx: task.OrchestrationContext, _: Any) -> None:
        ctx.send_event(target, name)

    assert fragment in failure(start(orch)).errorMessage


# ---------------------------------------------------------------- continue-as-new

def test_continue_as_new_with_new_input_version_and_saved_events() -> None:
    def orch(ctx: task.OrchestrationContext, count: int) -> Any:
        yield ctx.create_timer(timedelta(seconds=1))
        ctx.continue_as_new(count + 1, save_events=True, new_version="2")

    past = [h.orchestrator_started(), h.execution_started("orch", 1), h.timer_created(1, h.at(0)),
            h.orchestrator_completed()]
    new = [h.orchestrator_started(), h.event_raised("later", "a"), h.timer_fired(1, h.at(0)),
           h.event_raised("Later", "b")]
    c = completion(run(orch, past, new))
    assert c.orchestrationStatus == pb.ORCHESTRATION_STATUS_CONTINUED_AS_NEW
    assert c.result.value == "2"
    assert c.newVersion.value == "2"
    assert [(e.eventRaised.name, e.eventRaised.input.value) for e in c.carryoverEvents] == [("later", '"a"'),
                                                                                          ("Later", '"b"')]


def test_continue_as_new_without_save_events_drops_buffered_events() -> None:
    def orch(ctx: task.OrchestrationContext, _: Any) -> None:
        ctx.continue_as_new("again")

    new = [h.orchestrator_started(), h.execution_started("orch"), h.event_raised("x", 1)]
    c = completion(run(orch, [], new))
    assert c.orchestrationStatus == pb.ORCHESTRATION_STATUS_CONTINUED_AS_NEW
    assert len(c.carryoverEvents) == 0


# ---------------------------------------------------------------- composition

def test_when_all_fans_out_and_keeps_input_order() -> None:
    def orch(ctx: task.OrchestrationContext, _: Any) -> Any:
        results = yield task.when_all([ctx.call_activity("sq", input=i) for i in range(3)])
        return results

    first = start(orch)
    assert [a.id for a in first.actions] == [1, 2, 3]
    scheduled = [h.task_scheduled(i + 1, "sq", i) for i in range(3)]
    past = [h.orchestrator_started(), h.execution_started("orch"), *scheduled]
    new = [h.orchestrator_started(), h.task_completed(3, 4), h.task_completed(1, 0), h.task_completed(2, 1)]
    assert output(run(orch, past, new)) == [0, 1, 4]


def test_when_all_reports_first_failure_only_after_all_finish() -> None:
    def orch(ctx: task.OrchestrationContext, _: Any) -> Any:
        try:
            yield task.when_all([ctx.call_activity("a"), ctx.call_activity("b")])
        except task.TaskFailedError as e:
            return e.details.message

    past = [h.orchestrator_started(), h.execution_started("orch"), h.task_scheduled(1, "a"), h.task_scheduled(2, "b")]
    assert run(orch, past, [h.orchestrator_started(), h.task_failed(1, "a broke")]).status is None
    assert output(run(orch, past, [h.orchestrator_started(), h.task_failed(1, "a broke"),
                                   h.task_completed(2, 1)])) == "a broke"


def test_when_any_returns_the_winning_task() -> None:
    def orch(ctx: task.OrchestrationContext, _: Any) -> Any:
        slow = ctx.call_activity("slow")
        fast = ctx.call_activity("fast")
        winner = yield task.when_any([slow, fast])
        return "fast" if winner is fast else "slow"

    past = [h.orchestrator_started(), h.execution_started("orch"), h.task_scheduled(1, "slow"),
            h.task_scheduled(2, "fast")]
    assert output(run(orch, past, [h.orchestrator_started(), h.task_completed(2, None)])) == "fast"


def test_when_all_of_nothing_completes_immediately() -> None:
    def orch(ctx: task.OrchestrationContext, _: Any) -> Any:
        results = yield task.when_all([])
        return results

    assert output(start(orch)) == []


# ---------------------------------------------------------------- deterministic UUIDs

def test_new_uuid_is_name_based_on_instance_time_and_counter() -> None:
    ids: list[str] = []

    def orch(ctx: task.OrchestrationContext, _: Any) -> None:
        ids.extend([ctx.new_uuid(), ctx.new_uuid()])

    start(orch)
    namespace = uuid.uuid5(uuid.NAMESPACE_OID, "9e952958-5e33-4daf-827f-2fa12937b875")
    expected = [str(uuid.uuid5(namespace, f"abc_2026-01-01T12:00:00.000000Z_{i}")) for i in range(2)]
    assert ids == expected
    ids.clear()
    start(orch)
    assert ids == expected  # the same on every replay


# ---------------------------------------------------------------- custom status

def test_custom_status_is_encoded_and_can_be_cleared() -> None:
    def orch(ctx: task.OrchestrationContext, _: Any) -> Any:
        ctx.set_custom_status({"stage": 1})
        yield ctx.create_timer(timedelta(seconds=1))
        ctx.set_custom_status(None)

    assert json.loads(start(orch).encoded_custom_status or "null") == {"stage": 1}
    past = [h.orchestrator_started(), h.execution_started("orch"), h.timer_created(1, h.at(0))]
    assert run(orch, past, [h.orchestrator_started(), h.timer_fired(1, h.at(0))]).encoded_custom_status is None


# ---------------------------------------------------------------- replay-safe logging

def test_replay_safe_logger_logs_only_new_work(caplog: pytest.LogCaptureFixture) -> None:
    def orch(ctx: task.OrchestrationContext, _: Any) -> Any:
        log = ctx.create_replay_safe_logger(logging.getLogger("test.orch"))
        log.info("before timer")
        yield ctx.create_timer(timedelta(seconds=1))
        log.info("after timer")

    past = [h.orchestrator_started(), h.execution_started("orch"), h.timer_created(1, h.at(0))]
    with caplog.at_level(logging.INFO, logger="test.orch"):
        run(orch, past, [h.orchestrator_started(), h.timer_fired(1, h.at(0))])
    assert [r.getMessage() for r in caplog.records if r.name == "test.orch"] == ["after timer"]


# ---------------------------------------------------------------- get_name

def test_get_name_rejects_lambdas() -> None:
    assert task.get_name(test_get_name_rejects_lambdas) == "test_get_name_rejects_lambdas"
    with pytest.raises(ValueError, match="lambda"):
        task.get_name(lambda: None)
