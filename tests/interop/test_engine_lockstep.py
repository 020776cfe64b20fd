"""Our replay engine and the official SDK's executor produce the same actions, episode by episode.

A small simulated backend (this file) plays the official in-memory backend's role: it keeps the
history and, for each episode, sends ``[OrchestratorStarted(t), <inbox>]`` as new events to both
engines: ours in-process and the official one in a long-lived subprocess running
``lockstep.py`` under the official SDK's interpreter. The two responses (actions and custom status)
must be byte-identical, with only the stack traces of failure details removed; the actions are then
applied as a backend would (confirmation events, fake activity results, timers firing on a
simulated clock, canned sub-orchestration results, continue-as-new with carried-over events), and
the next episode starts. An orchestration started by the official SDK can therefore continue on
ours at any point: same sequence numbers, sub-orchestration IDs, retry timers, timer chunks...

After a difference the backend goes on with the official SDK's actions, so that one failure lists
every episode that differs (up to a few). Known differences are strict expected failures whose
reason says what differs (``DIFF_*`` below); fixing one in the engine turns its scenario into an
unexpected pass, and the marker must then go.
"""

from __future__ import annotations

import base64
import heapq
import json
import os
import select
import subprocess
import tempfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import IO, Any

import pytest
from google.protobuf import text_format, timestamp_pb2, wrappers_pb2

from durabletask.internal import orchestrator_service_pb2 as pb
from tests.interop import lockstep
from tests.support.official import official_python, venv_dir

pytestmark = pytest.mark.interop

SCRIPT = Path(lockstep.__file__).resolve()
T0 = datetime(2024, 1, 1, 12, 0, 0, 123456)
STEP = timedelta(seconds=1)  # the clock moves on between episodes
SLOW = timedelta(hours=1)  # how long the "slow" activity takes
SUB_ORCHESTRATION_TIME = timedelta(minutes=1)
ANSWER_TIMEOUT = 30.0  # seconds; an episode takes milliseconds


# ----------------------------------------------------------------------------- the official engine


class OfficialEngine:
    """The official SDK's executor in a subprocess that answers one JSON line per request line."""

    def __init__(self) -> None:
        # Kept open for the process's lifetime (closed in close()); read only to explain a crash.
        self._stderr: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115
        self._proc = self._start()

    def _start(self) -> subprocess.Popen[bytes]:
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
        return subprocess.Popen(
            [str(official_python()), "-I", str(SCRIPT)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr,
            env=env, cwd=str(venv_dir()),
        )

    def ask(self, message: Any, timeout: float = ANSWER_TIMEOUT) -> Any:
        """Send one request line and read the answer line; a hung engine is killed, not waited for."""
        if self._proc.poll() is not None:  # killed after a timeout in an earlier test: start afresh
            self._proc = self._start()
        assert self._proc.stdin is not None and self._proc.stdout is not None
        self._proc.stdin.write(json.dumps(message).encode() + b"\n")
        self._proc.stdin.flush()
        ready, _, _ = select.select([self._proc.stdout], [], [], timeout)
        if not ready:
            self._proc.kill()
            self._proc.wait()
            raise TimeoutError(f"the official engine did not answer within {timeout} s (killed)")
        line = self._proc.stdout.readline()
        if not line:
            self._stderr.seek(0)
            raise RuntimeError(f"the official lockstep process died:\n{self._stderr.read().decode(errors='replace')}")
        return json.loads(line)

    def close(self) -> None:
        if self._proc.stdin is not None:
            self._proc.stdin.close()
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        self._stderr.close()


@pytest.fixture(scope="module")
def official() -> Iterator[OfficialEngine]:
    engine = OfficialEngine()
    assert engine.ask([]) == []  # alive, and answers batches
    yield engine
    engine.close()


def test_the_subprocess_runs_the_official_sdk_and_this_process_ours(official: OfficialEngine) -> None:
    assert lockstep.SDK == "ours"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    out = subprocess.run([str(official_python()), "-I", str(SCRIPT), "--sdk"], capture_output=True,
                         env=env, cwd=str(venv_dir()), check=True, timeout=60)
    assert out.stdout.decode().strip() == "official"


# ----------------------------------------------------------------------------- history events


def _ts(when: datetime) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(when)
    return ts


def _sv(value: str | None) -> wrappers_pb2.StringValue | None:
    return None if value is None else wrappers_pb2.StringValue(value=value)


def _event(when: datetime, event_id: int = -1, **kind: Any) -> pb.HistoryEvent:
    return pb.HistoryEvent(eventId=event_id, timestamp=_ts(when), **kind)


def raised(name: str, value: Any = None, *, raw: str | None = None) -> Any:
    """An external event, built when it is delivered (its timestamp is the delivery time)."""
    encoded = raw if raw is not None else (None if value is None else json.dumps(value))
    return lambda when: _event(when, eventRaised=pb.EventRaisedEvent(name=name, input=_sv(encoded)))


def suspended(reason: str | None = None) -> Any:
    return lambda when: _event(when, executionSuspended=pb.ExecutionSuspendedEvent(input=_sv(reason)))


def resumed(reason: str | None = None) -> Any:
    return lambda when: _event(when, executionResumed=pb.ExecutionResumedEvent(input=_sv(reason)))


def terminated(output: Any = None) -> Any:
    encoded = None if output is None else json.dumps(output)
    return lambda when: _event(when, executionTerminated=pb.ExecutionTerminatedEvent(input=_sv(encoded)))


DUE = object()
"""In a dispatch's injection list: where the results that are due go (default: after the injected events)."""


def stray_result(task_id: int) -> Any:
    """A result for a task the orchestration never scheduled (e.g. a duplicate delivery)."""
    return lambda when: _event(when, taskCompleted=pb.TaskCompletedEvent(taskScheduledId=task_id, result=_sv("0")))


def stray_timer(timer_id: int) -> Any:
    return lambda when: _event(when, timerFired=pb.TimerFiredEvent(timerId=timer_id, fireAt=_ts(when)))


def _failure(error_type: str, message: str) -> pb.TaskFailureDetails:
    return pb.TaskFailureDetails(errorType=error_type, errorMessage=message,
                                 stackTrace=wrappers_pb2.StringValue(value='  File "fake.py", line 1\n'))


# ----------------------------------------------------------------------------- scenarios


@dataclass
class Scenario:
    orchestrator: str
    input: Any = None
    # dispatch number -> events delivered in that dispatch (or in the next one with something to do)
    injections: dict[int, list[Any]] = field(default_factory=dict)
    status: int = pb.ORCHESTRATION_STATUS_COMPLETED  # the expected final status
    generations: int = 1  # expected number of executions (continue-as-new)
    xfail: str | None = None
    max_episodes: int = 60


# Where the engines still differ, on purpose: each is a bug of the official engine (or a detail of
# it) that ours does not copy. The scenarios stay as strict expected failures, so that a change on
# either side is noticed.
DIFF_RETRY_NONE_INPUT = (
    "retry of an activity (or sub-orchestration) called without input: the official SDK re-issues "
    "scheduleTask/createSubOrchestration with input=StringValue('') (it re-sends str(action.input.value)); "
    "ours re-sends the original action, input unset"
)
DIFF_SUB_RETRY_VERSION = (
    "retry of a versioned sub-orchestration: the official SDK re-issues createSubOrchestration without the "
    "version (it drops it); ours re-sends version '2.0'"
)
DIFF_CARRYOVER_TIMESTAMP = (
    "continue_as_new(save_events=True): the official SDK's carryover events have timestamp set to an empty "
    "Timestamp (timestamp {}); ours leave timestamp unset"
)
DIFF_CARRYOVER_NAME = (
    "continue_as_new(save_events=True): the official SDK carries buffered events over under their "
    "case-folded name ('TICK' -> 'tick', 'Other' -> 'other'); ours keeps the name as raised "
    "(plus the carryover timestamp difference)"
)
DIFF_TERMINATE_SAME_BATCH = (
    "terminate in the same batch as a task result: the official SDK still resumes the orchestrator and "
    "sends the scheduleTask it then makes (before or after the TERMINATED completion, in event order); "
    "ours sends only the TERMINATED completion"
)
DIFF_RESUME_NOT_SUSPENDED = (
    "executionResumed for an orchestration that is not suspended: the official SDK fails the orchestration "
    "(errorType 'durabletask.task.OrchestrationStateError', "
    "\"Don't know how to handle event of type 'executionResumed'\"); "
    "ours ignores the event"
)
DIFF_NONDETERMINISM = (
    "a non-determinism failure: same errorType, action id and status, but ours has its own message (naming "
    "the sequence number, the recorded call and the attempted call); official: \"Failed to restore orchestration "
    "state due to a history mismatch: A previous execution called call_activity with name='inc' and sequence "
    "number 1, but the current execution is instead trying to call echo ...\" (same action id and status)"
)
DIFF_NOT_REGISTERED = (
    "unregistered orchestrator: same errorType, but ours names the registered orchestrators too; official: "
    "\"A '<name>' orchestrator was not registered.\""
)

SCENARIOS: dict[str, Scenario] = {
    "chain": Scenario("chain", input=1),
    "fan_out": Scenario("fan_out", input=10),
    "when_any_activity_wins": Scenario("when_any_timer", input="inc"),
    "when_any_timer_wins": Scenario("when_any_timer", input="slow"),
    "long_timer_chunks": Scenario("long_timer"),
    "retry_then_succeed": Scenario("retry_then_succeed"),
    "retry_none_input": Scenario("retry_none_input", xfail=DIFF_RETRY_NONE_INPUT),
    "retry_long_backoff": Scenario("retry_long_backoff"),
    "retry_exhausted": Scenario("retry_exhausted", status=pb.ORCHESTRATION_STATUS_FAILED),
    "sub_orchestrations": Scenario("sub_orchestrations"),
    "sub_orchestration_retry": Scenario("sub_orchestration_retry"),
    "sub_orchestration_retry_versioned": Scenario("sub_orchestration_retry_versioned",
                                                  xfail=DIFF_SUB_RETRY_VERSION),
    "external_events": Scenario("external_events", injections={
        0: [raised("Early", {"e": 1})],
        2: [raised("APPROVAL", "yes"), raised("twice", 1), raised("Twice", 2), raised("unrelated", 0)],
        3: [raised("EMPTY")],
    }),
    "send_event": Scenario("send_events"),
    "continue_as_new_save_events": Scenario(
        "continue_as_new_saved", generations=4, xfail=DIFF_CARRYOVER_TIMESTAMP, injections={
        0: [raised("tick", 1), raised("other", "kept"), raised("tick", 2), raised("tick", 3), raised("other")],
        6: [raised("tick", 4)],
    }),
    "continue_as_new_save_events_mixed_case": Scenario(
        "continue_as_new_mixed_case", generations=3, xfail=DIFF_CARRYOVER_NAME, injections={
            0: [raised("Tick", 1), raised("TICK", 2), raised("Other", "x"), raised("tick", 3)],
        }),
    "continue_as_new_without_saved_events": Scenario("continue_as_new_plain", generations=4, injections={
        0: [raised("dropped", 1)],
    }),
    "custom_status": Scenario("custom_status"),
    "new_uuid": Scenario("new_uuids"),
    "compensation": Scenario("compensation"),
    "suspend_resume": Scenario("suspend_resume", injections={
        1: [suspended("maintenance")],
        2: [raised("ping", "while suspended")],
        4: [resumed()],
    }),
    "terminate": Scenario("terminated", status=pb.ORCHESTRATION_STATUS_TERMINATED,
                          xfail=DIFF_TERMINATE_SAME_BATCH, injections={
        1: [terminated("stopped")],  # in the same batch as the first activity's result
    }),
    "terminate_after_result": Scenario("terminated", status=pb.ORCHESTRATION_STATUS_TERMINATED,
                                       xfail=DIFF_TERMINATE_SAME_BATCH, injections={
        1: [DUE, terminated("stopped")],  # the first activity's result, then the termination
    }),
    "terminate_while_suspended": Scenario("terminated", status=pb.ORCHESTRATION_STATUS_TERMINATED, injections={
        2: [suspended()],
        3: [raised("ignored", 1)],
        5: [terminated()],
    }),
    "orchestrator_raises": Scenario("failing", status=pb.ORCHESTRATION_STATUS_FAILED),
    "fire_and_forget": Scenario("fire_and_forget"),
    "continue_as_new_with_pending_actions": Scenario("continue_as_new_with_pending", generations=3),
    "edge_cases": Scenario("edge_cases", injections={2: [raised("EARLY", "e")]}),
    "suspend_edge_cases": Scenario("suspend_edge_cases", injections={
        1: [suspended("one")],
        2: [raised("a", 1), resumed()],  # the wait completes on resume
        3: [suspended("two")],
        4: [stray_result(99), stray_timer(98)],  # ignored (after the suspension)
        6: [raised("C", 3), resumed()],  # buffered by the suspension, then delivered on resume
    }),
    "resume_when_not_suspended": Scenario("suspend_edge_cases", xfail=DIFF_RESUME_NOT_SUSPENDED, injections={
        1: [resumed("not suspended")],
        2: [raised("a", 1)],
        3: [raised("c", 3)],
    }),
    "nondeterminism_detected": Scenario("nondeterministic", status=pb.ORCHESTRATION_STATUS_FAILED,
                                        xfail=DIFF_NONDETERMINISM),
    "not_a_generator": Scenario("not_a_generator", input={"a": [1, 2]}),
    "unknown_orchestrator": Scenario("nobody_registered_this", status=pb.ORCHESTRATION_STATUS_FAILED,
                                     xfail=DIFF_NOT_REGISTERED),
    "entity_calls_and_signals": Scenario("entity_calls"),
    "entity_critical_section": Scenario("entity_lock"),
    "entity_lock_released_on_failure": Scenario("entity_lock_then_fail", status=pb.ORCHESTRATION_STATUS_FAILED),
    "entity_lock_released_on_return": Scenario("entity_lock_returns_inside"),
    "entity_lock_released_on_continue_as_new": Scenario("entity_lock_continue_as_new", input=0, generations=3),
}


# ----------------------------------------------------------------------------- the simulated backend


def _activity(name: str, encoded: str | None,
              attempt: int) -> tuple[timedelta, str | None, pb.TaskFailureDetails | None]:
    """Fake activities: (duration, encoded result, failure)."""
    value = json.loads(encoded) if encoded else None
    if name == "inc":
        return timedelta(0), json.dumps(value + 1), None
    if name == "echo":
        return timedelta(0), encoded, None
    if name == "slow":
        return SLOW, json.dumps(value * 100), None
    if name == "fail_twice":
        if attempt < 3:
            return timedelta(0), None, _failure("builtins.ValueError", f"fail_twice: attempt {attempt} failed")
        return timedelta(0), json.dumps(["ok", value, attempt]), None
    if name == "always_fail":
        return timedelta(0), None, _failure("builtins.RuntimeError", f"always_fail({value}) attempt {attempt}")
    raise AssertionError(f"no fake activity named {name!r}")


def _sub_orchestration(name: str, instance_id: str, encoded: str | None,
                       attempt: int) -> tuple[str | None, pb.TaskFailureDetails | None]:
    value = json.loads(encoded) if encoded else None
    if name == "child":
        return json.dumps({"child": instance_id, "input": value}), None
    if name == "child_fail":
        return None, _failure("builtins.Exception", f"child {instance_id} failed")
    if name == "child_fail_twice":
        if attempt < 3:
            return None, _failure("builtins.Exception", f"child {instance_id} attempt {attempt} failed")
        return json.dumps([instance_id, value, attempt]), None
    raise AssertionError(f"no fake sub-orchestration named {name!r}")


def _entity_operation(target: str, operation: str, encoded: str | None, states: dict[str, int]
                      ) -> tuple[str | None, pb.TaskFailureDetails | None]:
    """Fake entities: every entity is a counter starting at 7; 'fail' always fails."""
    value = json.loads(encoded) if encoded else None
    current = states.get(target, 7)
    if operation == "add":
        states[target] = current + value
        return json.dumps(states[target]), None
    if operation == "get":
        return json.dumps(current), None
    if operation == "fail":
        return None, _failure("builtins.ValueError", f"{target} refuses {value}")
    raise AssertionError(f"no fake entity operation {operation!r}")


def _normalized(response: pb.OrchestratorResponse) -> pb.OrchestratorResponse:
    """Remove what legitimately differs between SDKs: stack traces (they name each SDK's files)."""
    copy = pb.OrchestratorResponse()
    copy.CopyFrom(response)
    for action in copy.actions:
        if action.HasField("completeOrchestration") and action.completeOrchestration.HasField("failureDetails"):
            details = action.completeOrchestration.failureDetails
            while True:
                details.ClearField("stackTrace")
                if not details.HasField("innerFailure"):
                    break
                details = details.innerFailure
    return copy


def _show(response: pb.OrchestratorResponse) -> str:
    return text_format.MessageToString(response, as_one_line=False) or "<empty>"


class Backend:
    """Keeps one instance's history and produces each episode's new events."""

    def __init__(self, name: str, scenario: Scenario) -> None:
        self.scenario = scenario
        self.instance_id = f"lockstep-{name}"
        self.clock = T0
        self.history: list[pb.HistoryEvent] = []
        self.outbox: list[tuple[datetime, int, pb.HistoryEvent]] = []  # (due, tie-breaker, event)
        self.attempts: Counter[tuple[int, str]] = Counter()
        self.injections = {k: list(v) for k, v in scenario.injections.items()}
        self.generation = 0
        self.inbox: list[pb.HistoryEvent] = [self._started(scenario.input, None)]
        self.status: int | None = None
        self.output: str | None = None
        self.failure: pb.TaskFailureDetails | None = None
        self.sent: list[pb.SendEventAction] = []
        self.entity_states: dict[str, int] = {}
        self._ties = 0

    def _started(self, encoded_input: Any, version: str | None, *, raw: bool = False) -> pb.HistoryEvent:
        encoded = encoded_input if raw else (None if encoded_input is None else json.dumps(encoded_input))
        return _event(self.clock, executionStarted=pb.ExecutionStartedEvent(
            name=self.scenario.orchestrator, input=_sv(encoded), version=_sv(version),
            orchestrationInstance=pb.OrchestrationInstance(
                instanceId=self.instance_id, executionId=_sv(f"execution-{self.generation}")),
        ))

    def _later(self, due: datetime, event: pb.HistoryEvent) -> None:
        self._ties += 1
        heapq.heappush(self.outbox, (due, self._ties, event))

    def _due(self) -> list[pb.HistoryEvent]:
        out = []
        while self.outbox and self.outbox[0][0] <= self.clock:
            due, _, event = heapq.heappop(self.outbox)
            event.timestamp.CopyFrom(_ts(max(due, T0)))
            out.append(event)
        return out

    def next_request(self, dispatch: int) -> pb.OrchestratorRequest | None:
        """The next episode's request, or None if nothing would ever wake the orchestration."""
        if dispatch:
            self.clock += STEP
        inbox, self.inbox = self.inbox, []
        injected = self.injections.pop(dispatch, [])
        if DUE not in injected:
            injected = [*injected, DUE]
        for make in injected:
            inbox += self._due() if make is DUE else [make(self.clock)]
        if not inbox and self.outbox:
            self.clock = max(self.clock, self.outbox[0][0])
            inbox += self._due()
        if not inbox and self.injections:
            later = min(self.injections)
            inbox += [make(self.clock) for make in self.injections.pop(later)]
        if not inbox:
            return None
        new = [_event(self.clock, orchestratorStarted=pb.OrchestratorStartedEvent()), *inbox]
        return pb.OrchestratorRequest(instanceId=self.instance_id, pastEvents=self.history, newEvents=new)

    def apply(self, request: pb.OrchestratorRequest, response: pb.OrchestratorResponse) -> None:
        """Commit the episode: new events, then confirmations of the actions, then OrchestratorCompleted."""
        self.history.extend(request.newEvents)
        now = self.clock
        for action in response.actions:
            kind = action.WhichOneof("orchestratorActionType")
            if kind == "scheduleTask":
                task = action.scheduleTask
                encoded = task.input.value if task.HasField("input") else None
                self.history.append(_event(now, action.id, taskScheduled=pb.TaskScheduledEvent(
                    name=task.name, input=task.input if task.HasField("input") else None)))
                self.attempts[(action.id, task.name)] += 1
                took, result, failure = _activity(task.name, encoded, self.attempts[(action.id, task.name)])
                if failure is None:
                    self._later(now + took, _event(now, taskCompleted=pb.TaskCompletedEvent(
                        taskScheduledId=action.id, result=_sv(result))))
                else:
                    self._later(now + took, _event(now, taskFailed=pb.TaskFailedEvent(
                        taskScheduledId=action.id, failureDetails=failure)))
            elif kind == "createTimer":
                fire_at = action.createTimer.fireAt
                self.history.append(_event(now, action.id, timerCreated=pb.TimerCreatedEvent(fireAt=fire_at)))
                self._later(fire_at.ToDatetime(), _event(now, timerFired=pb.TimerFiredEvent(
                    timerId=action.id, fireAt=fire_at)))
            elif kind == "createSubOrchestration":
                sub = action.createSubOrchestration
                encoded = sub.input.value if sub.HasField("input") else None
                self.history.append(_event(now, action.id, subOrchestrationInstanceCreated=(
                    pb.SubOrchestrationInstanceCreatedEvent(
                        instanceId=sub.instanceId, name=sub.name, input=sub.input if sub.HasField("input") else None,
                        version=sub.version if sub.HasField("version") else None))))
                self.attempts[(action.id, sub.name)] += 1
                result, failure = _sub_orchestration(sub.name, sub.instanceId, encoded,
                                                     self.attempts[(action.id, sub.name)])
                if failure is None:
                    self._later(now + SUB_ORCHESTRATION_TIME, _event(now, subOrchestrationInstanceCompleted=(
                        pb.SubOrchestrationInstanceCompletedEvent(taskScheduledId=action.id, result=_sv(result)))))
                else:
                    self._later(now + SUB_ORCHESTRATION_TIME, _event(now, subOrchestrationInstanceFailed=(
                        pb.SubOrchestrationInstanceFailedEvent(taskScheduledId=action.id, failureDetails=failure))))
            elif kind == "sendEvent":
                send = action.sendEvent
                self.sent.append(send)
                self.history.append(_event(now, action.id, eventSent=pb.EventSentEvent(
                    instanceId=send.instance.instanceId, name=send.name,
                    input=send.data if send.HasField("data") else None)))
            elif kind == "sendEntityMessage":
                message = action.sendEntityMessage
                which = message.WhichOneof("EntityMessageType")
                assert which is not None
                self.history.append(_event(now, action.id, **{which: getattr(message, which)}))
                if which == "entityOperationCalled":
                    call = message.entityOperationCalled
                    output, failure = _entity_operation(call.targetInstanceId.value, call.operation,
                                                        call.input.value if call.HasField("input") else None,
                                                        self.entity_states)
                    if failure is None:
                        self._later(now, _event(now, entityOperationCompleted=pb.EntityOperationCompletedEvent(
                            requestId=call.requestId, output=_sv(output))))
                    else:
                        self._later(now, _event(now, entityOperationFailed=pb.EntityOperationFailedEvent(
                            requestId=call.requestId, failureDetails=failure)))
                elif which == "entityLockRequested":
                    self._later(now, _event(now, entityLockGranted=pb.EntityLockGrantedEvent(
                        criticalSectionId=message.entityLockRequested.criticalSectionId)))
            elif kind == "completeOrchestration":
                self._complete(action.completeOrchestration)
                if self.status is None:  # continued as new: the history starts over
                    return
            else:
                raise AssertionError(f"unexpected action kind {kind!r} in {action}")
        self.history.append(_event(now, orchestratorCompleted=pb.OrchestratorCompletedEvent()))

    def _complete(self, done: pb.CompleteOrchestrationAction) -> None:
        status = done.orchestrationStatus
        if status == pb.ORCHESTRATION_STATUS_CONTINUED_AS_NEW:
            self.generation += 1
            self.history = []
            self.outbox = []  # work of the finished execution is dropped
            new_input = done.result.value if done.HasField("result") else None
            version = done.newVersion.value if done.HasField("newVersion") else None
            self.inbox = [self._started(new_input, version, raw=True), *done.carryoverEvents]
            return
        self.status = status
        self.output = done.result.value if done.HasField("result") else None
        self.failure = done.failureDetails if done.HasField("failureDetails") else None
        self.history.append(_event(self.clock, executionCompleted=pb.ExecutionCompletedEvent(
            orchestrationStatus=status, result=done.result if done.HasField("result") else None,
            failureDetails=self.failure)))


def _ours(name: str, request: pb.OrchestratorRequest) -> dict[str, Any]:
    return lockstep.answer({"scenario": name, "request": base64.b64encode(request.SerializeToString()).decode()})


def _decode(answer: dict[str, Any], who: str, name: str, episode: int) -> pb.OrchestratorResponse:
    if "error" in answer:
        pytest.fail(f"{name}, episode {episode}: the {who} engine raised:\n{answer['error']}")
    return pb.OrchestratorResponse.FromString(base64.b64decode(answer["response"]))


MAX_REPORTED_DIFFERENCES = 5


def run_lockstep(name: str, official: OfficialEngine) -> tuple[Backend, list[str]]:
    """Run a scenario to its end; return the backend and the episodes where the engines differed.

    After a difference the backend applies the official SDK's actions (an orchestration started by
    the official SDK continuing on ours is the case that matters), so that later differences show too.
    """
    scenario = SCENARIOS[name]
    backend = Backend(name, scenario)
    differences: list[str] = []
    for episode in range(scenario.max_episodes):
        request = backend.next_request(episode)
        if request is None:
            pytest.fail(f"{name}: stalled after {episode} episodes with nothing to deliver")
        theirs = _decode(official.ask({"scenario": name, "request": base64.b64encode(
            request.SerializeToString()).decode()}), "official", name, episode)
        ours = _decode(_ours(name, request), "our", name, episode)
        if (_normalized(ours).SerializeToString(deterministic=True)
                != _normalized(theirs).SerializeToString(deterministic=True)):
            new_events = "\n".join(text_format.MessageToString(e, as_one_line=True) for e in request.newEvents)
            differences.append(
                f"{name}, episode {episode} (generation {backend.generation}): the responses differ\n"
                f"new events:\n{new_events}\n"
                f"--- ours:\n{_show(_normalized(ours))}\n--- official:\n{_show(_normalized(theirs))}"
            )
            if len(differences) >= MAX_REPORTED_DIFFERENCES:
                break
        backend.apply(request, theirs)
        if backend.status is not None:
            return backend, differences
    else:
        differences.append(f"{name}: still running after {scenario.max_episodes} episodes")
    return backend, differences


def _params() -> list[Any]:
    out = []
    for name, scenario in SCENARIOS.items():
        marks = [pytest.mark.xfail(strict=True, reason=scenario.xfail)] if scenario.xfail else []
        out.append(pytest.param(name, id=name, marks=marks))
    return out


@pytest.mark.parametrize("name", _params())
def test_engines_agree_episode_by_episode(name: str, official: OfficialEngine) -> None:
    scenario = SCENARIOS[name]
    backend, differences = run_lockstep(name, official)
    if differences:
        pytest.fail(f"{len(differences)} episode(s) differ:\n\n" + "\n\n".join(differences), pytrace=False)
    assert backend.status == scenario.status, (backend.status, backend.output, backend.failure)
    assert backend.generation + 1 == scenario.generations


def test_a_difference_is_caught(official: OfficialEngine, monkeypatch: pytest.MonkeyPatch) -> None:
    """Self-test: our engine with another maximum timer interval (the official one keeps 3 days) differs."""
    monkeypatch.setitem(lockstep.MAXIMUM_TIMER_INTERVAL, "long_timer_chunks", timedelta(days=2).total_seconds())
    _, differences = run_lockstep("long_timer_chunks", official)
    assert differences
    assert differences[0].startswith("long_timer_chunks, episode 0 (generation 0): the responses differ")
    assert "seconds: 1704283200" in differences[0]  # ours: T0 + 2 days
    assert "seconds: 1704369600" in differences[0]  # official: T0 + 3 days


# ----------------------------------------------------------------------------- sessions (no official SDK needed)

# A kept session does not replay, so code that is not deterministic is caught only by a full replay.
_SESSION_DIFFERENCES = {"nondeterminism_detected"}


def _our_response(executor: Any, request: pb.OrchestratorRequest) -> pb.OrchestratorResponse:
    result = executor.execute(request.instanceId, list(request.pastEvents), list(request.newEvents))
    status = result.encoded_custom_status
    return pb.OrchestratorResponse(instanceId=request.instanceId, actions=result.actions,
                                   customStatus=None if status is None else wrappers_pb2.StringValue(value=status))


@pytest.mark.parametrize("name", sorted(set(SCENARIOS) - _SESSION_DIFFERENCES))
def test_a_worker_keeping_sessions_answers_as_a_full_replay(name: str) -> None:
    """Every scenario, episode by episode: an executor that resumes kept state sends what a full replay sends."""
    from durabletask.internal.replay.engine import OrchestrationExecutor

    scenario = SCENARIOS[name]
    registry = lockstep._get_registry()
    interval = lockstep._timer_interval(name)
    keeping = OrchestrationExecutor(registry, maximum_timer_interval=interval, maximum_cached_orchestrations=10)
    backend = Backend(name, scenario)
    episodes = 0
    for episode in range(scenario.max_episodes):
        request = backend.next_request(episode)
        assert request is not None, f"{name}: stalled after {episode} episodes"
        replayed = _our_response(OrchestrationExecutor(registry, maximum_timer_interval=interval), request)
        resumed = _our_response(keeping, request)
        assert (_normalized(resumed).SerializeToString(deterministic=True)
                == _normalized(replayed).SerializeToString(deterministic=True)), (
            f"{name}, episode {episode}:\n--- with sessions:\n{_show(_normalized(resumed))}\n"
            f"--- full replay:\n{_show(_normalized(replayed))}")
        episodes += 1
        backend.apply(request, replayed)
        if backend.status is not None:
            break
    sessions = keeping.sessions
    assert sessions is not None
    # Only the first episode of each execution replays; every later one resumes the kept state.
    assert (sessions.resumed, sessions.replayed) == (episodes - (backend.generation + 1), 0), (
        f"{name}: {episodes} episodes in {backend.generation + 1} execution(s): "
        f"{sessions.resumed} resumed, {sessions.replayed} replayed")
    assert len(sessions) == 0, "a finished orchestration's state must not be kept"
