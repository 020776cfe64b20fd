"""The replay engine's orchestration context: the state of one orchestration being replayed.

It implements `OrchestrationContext` for user code, drives the orchestrator's generator, and
keeps what history has not confirmed yet: pending actions (by sequence number), tasks waiting
for results, buffered external events, and the completion. History handlers
(`durabletask.internal.replay.handlers`) feed it events; `result()` turns it into the response.
"""

from __future__ import annotations

import logging
import uuid
from collections import deque
from collections.abc import Callable, Generator
from datetime import datetime, timedelta, timezone
from types import CoroutineType, GeneratorType
from typing import Any, cast

from durabletask.entities.entity_instance_id import EntityInstanceId, as_entity_id
from durabletask.internal import orchestrator_service_pb2 as pb
from durabletask.internal import type_discovery
from durabletask.internal.contexts import OrchestrationContext, get_name
from durabletask.internal.failures import (
    EventTimeoutError,
    OrchestrationStateError,
    OrchestratorNotRegisteredError,
    TaskCancelledError,
    failure_details_from_proto,
    failure_details_to_proto,
)
from durabletask.internal.registry import Registry, not_registered_message
from durabletask.internal.replay import actions as act
from durabletask.internal.replay import entities as ent
from durabletask.internal.retry import RetryPolicy
from durabletask.internal.tasks import (
    CancellableTask,
    CompletableTask,
    RetryableTask,
    Task,
    TimerTask,
)
from durabletask.serialization import DataConverter

logger = logging.getLogger("durabletask.orchestration")

_BEFORE_START = datetime(1000, 1, 1)
# Name-based UUIDs use the same namespace and name layout as the other Durable Task SDKs, so an
# instance that moves between SDKs keeps generating the same IDs on replay.
_UUID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_OID, "9e952958-5e33-4daf-827f-2fa12937b875")

COMPLETED = pb.ORCHESTRATION_STATUS_COMPLETED
FAILED = pb.ORCHESTRATION_STATUS_FAILED
TERMINATED = pb.ORCHESTRATION_STATUS_TERMINATED
CONTINUED_AS_NEW = pb.ORCHESTRATION_STATUS_CONTINUED_AS_NEW


class EventWaitTask(CancellableTask[Any]):
    """A wait for an external event, possibly bounded by a timeout timer."""

    __slots__ = ("_timer",)

    def __init__(self, expected_type: type | None) -> None:
        CancellableTask.__init__(self, expected_type)
        self._timer: TimeoutTimer | None = None


class TimeoutTimer(TimerTask):
    """The durable timer behind ``wait_for_external_event(..., timeout=...)``."""

    __slots__ = ("_event_name", "_event_task")

    def __init__(self, event_task: EventWaitTask, event_name: str) -> None:
        TimerTask.__init__(self)
        self._event_task = event_task
        self._event_name = event_name


class ReplayContext(OrchestrationContext):
    """One orchestration's replay state and the context its code runs with."""

    def __init__(
        self,
        instance_id: str,
        registry: Registry,
        converter: DataConverter,
        maximum_timer_interval: timedelta | None,
        default_version: str | None = None,
    ) -> None:
        self._instance_id = instance_id
        self._default_version = default_version
        self._registry = registry
        self._converter = converter
        self._deserialize = converter.deserialize
        self._maximum_timer_interval = maximum_timer_interval
        self._is_replaying = True
        # The latest OrchestratorStarted event; its timestamp is decoded only if code reads the time.
        self._clock_event: pb.HistoryEvent | None = None
        self._now: datetime = _BEFORE_START
        self._sequence = 0
        self._uuid_counter = 0
        self.name = ""
        self._version: str | None = None
        self._parent_instance_id: str | None = None
        self.started = False
        # What history has not confirmed yet, and who waits for what.
        self.pending_actions: dict[int, act.Action] = {}
        self.pending_tasks: dict[int, CompletableTask[Any]] = {}
        self.waiters: dict[str, deque[EventWaitTask]] = {}
        self.buffered_events: dict[str, deque[tuple[int, str, str | None]]] = {}
        self._event_arrivals = 0
        # The generator and the task it waits on.
        self._generator: Generator[Task[Any], Any, Any] | None = None
        self._waiting_on: Task[Any] | None = None
        # Completion.
        self.status: int | None = None
        self.completion_id = 0
        self.encoded_result: str | None = None
        self.failure: pb.TaskFailureDetails | None = None
        self._new_input: Any = None
        self._new_version: str | None = None
        self._save_events = False
        self.encoded_custom_status: str | None = None
        # Suspension buffers everything except resume and terminate.
        self.suspended = False
        self.suspended_events: list[pb.HistoryEvent] = []
        # Rewind (client-side flow): history ends in ExecutionCompleted and ExecutionRewound arrives.
        self.saw_execution_completed = False
        self.rewind_requested = False
        # Entity calls and the critical section, created on first use.
        self._entity_calls: ent.EntityCalls | None = None

    # ----------------------------------------------------------------- clock and identity

    @property
    def current_utc_datetime(self) -> datetime:
        event = self._clock_event
        if event is not None:
            self._now = act.from_timestamp(event.timestamp)
            self._clock_event = None
        return self._now

    @property
    def instance_id(self) -> str:
        return self._instance_id

    @property
    def parent_instance_id(self) -> str | None:
        return self._parent_instance_id

    @property
    def version(self) -> str | None:
        return self._version

    @property
    def is_replaying(self) -> bool:
        return self._is_replaying

    @property
    def is_complete(self) -> bool:
        return self.status is not None

    def next_sequence(self) -> int:
        self._sequence += 1
        return self._sequence

    def new_uuid(self) -> str:
        stamp = self.current_utc_datetime.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        name = f"{self._instance_id}_{stamp}_{self._uuid_counter}"
        self._uuid_counter += 1
        return str(uuid.uuid5(_UUID_NAMESPACE, name))

    def set_custom_status(self, custom_status: Any) -> None:
        self.encoded_custom_status = None if custom_status is None else self._converter.serialize(custom_status)

    # ----------------------------------------------------------------- scheduling work

    def _encoder(self) -> DataConverter | None:
        # During replay an action is nearly always confirmed by history, never sent: defer encoding.
        return None if self._is_replaying else self._converter

    def call_activity(self, activity: Any, *, input: Any = None, retry_policy: RetryPolicy | None = None,
                      tags: dict[str, str] | None = None, return_type: type | None = None) -> CompletableTask[Any]:
        seq = self._sequence = self._sequence + 1
        if isinstance(activity, str):
            name = activity
        else:
            name = get_name(activity)
            if return_type is None:
                return_type = type_discovery.activity_output_type(activity, self._converter)
        action = act.ScheduleTask(seq, name, input, None if self._is_replaying else self._converter, tags, None)
        return self._track(action, retry_policy, return_type)

    def _track(self, action: act.Action, retry_policy: RetryPolicy | None,
               return_type: type | None) -> CompletableTask[Any]:
        """Record an activity or sub-orchestration action and the task that waits for its result."""
        seq = action.id
        self.pending_actions[seq] = action
        task: CompletableTask[Any]
        if retry_policy is None:
            task = CompletableTask(return_type)
        else:
            is_sub = isinstance(action, act.CreateSubOrchestration)
            task = RetryableTask(retry_policy, action, self.current_utc_datetime, is_sub, return_type)
        self.pending_tasks[seq] = task
        return task

    def call_sub_orchestrator(self, orchestrator: Any, *, input: Any = None, instance_id: str | None = None,
                              retry_policy: RetryPolicy | None = None, version: str | None = None,
                              return_type: type | None = None) -> CompletableTask[Any]:
        seq = self.next_sequence()
        name = orchestrator if isinstance(orchestrator, str) else get_name(orchestrator)
        if instance_id is None:
            instance_id = f"{self._instance_id}:{seq:04x}"
        action = act.CreateSubOrchestration(seq, name, instance_id, input, self._encoder(),
                                            version or self._default_version)
        return self._track(action, retry_policy, return_type)

    def create_timer(self, fire_at: datetime | timedelta) -> TimerTask:
        return self._schedule_timer(fire_at, TimerTask())

    def _schedule_timer(self, fire_at: datetime | timedelta, timer: TimerTask) -> TimerTask:
        """Schedule ``timer``; a long one is split into chunks of at most the maximum interval."""
        now = self.current_utc_datetime
        if isinstance(fire_at, timedelta):
            final = now + fire_at
        else:
            final = fire_at
            if final.utcoffset() is not None:
                final = final.astimezone(timezone.utc).replace(tzinfo=None)
        limit = self._maximum_timer_interval
        first = final
        if limit is not None and limit > timedelta(0) and now + limit < final:
            timer._final_fire_at = final
            timer._maximum_timer_interval = limit
            first = now + limit
        self._add_timer(first, timer)
        return timer

    def _add_timer(self, fire_at: datetime, timer: TimerTask) -> None:
        seq = self.next_sequence()
        self.pending_actions[seq] = act.CreateTimer(seq, fire_at)
        self.pending_tasks[seq] = timer
        actions, tasks = self.pending_actions, self.pending_tasks

        def cancel() -> None:
            actions.pop(seq, None)
            tasks.pop(seq, None)

        timer.set_cancel_handler(cancel)

    def timer_fired(self, timer: TimerTask, fired_at: datetime) -> None:
        """Handle a fired timer: chain the next chunk, re-issue a retry, or complete it."""
        final = timer._final_fire_at
        if final is not None and fired_at < final:
            limit = timer._maximum_timer_interval
            self._add_timer(min(fired_at + limit, final), timer)
            return
        retried = timer._retryable_parent
        if retried is not None:
            # The back-off is over: issue the same action again, under its original number.
            action = retried._action
            self.pending_actions[action.id] = action
            self.pending_tasks[action.id] = retried
            return
        timer.complete(None)
        if isinstance(timer, TimeoutTimer):
            event_task = timer._event_task
            if not event_task._is_complete:
                self._forget_waiter(timer._event_name, event_task)
                event_task._exception = _event_timeout(timer._event_name)
                event_task._is_complete = True
                if event_task._parents:
                    event_task._notify_parents()
        self.resume()

    def task_failed(self, task: CompletableTask[Any], message: str, details: pb.TaskFailureDetails) -> None:
        """Fail ``task``, or schedule its next attempt if its retry policy says so."""
        if isinstance(task, RetryableTask) and self.status is None:
            delay = task._retry_policy.next_delay(
                task._attempt_count, task._start_time, self.current_utc_datetime,
                failure_details_from_proto(details),
            )
            if delay is not None:
                task.increment_attempt_count()
                backoff = TimerTask()
                backoff.set_retryable_parent(task)
                self._schedule_timer(delay, backoff)  # long back-offs are chunked like any timer
                return
        task.fail(message, details)
        self.resume()

    # ----------------------------------------------------------------- external events

    def wait_for_external_event(self, name: str, *, data_type: type | None = None,
                                timeout: timedelta | None = None) -> CancellableTask[Any]:
        key = name.casefold()
        task = EventWaitTask(data_type)
        buffered = self.buffered_events.get(key)
        if buffered:
            _, _, raw = buffered.popleft()
            if not buffered:
                del self.buffered_events[key]
            task.complete(self._decode(raw, data_type))
            return task
        if timeout is not None:
            if timeout < timedelta(0):
                raise ValueError(f"timeout must be >= 0, got {timeout}")
            timer = TimeoutTimer(task, name)
            self._add_timer(self.current_utc_datetime + timeout, timer)
            task._timer = timer
        waiting = self.waiters.get(key)
        if waiting is None:
            waiting = self.waiters[key] = deque()
        waiting.append(task)

        def cancel() -> None:
            self._forget_waiter(name, task)
            if task._timer is not None:
                task._timer.cancel()

        task.set_cancel_handler(cancel)
        return task

    def _forget_waiter(self, name: str, task: EventWaitTask) -> None:
        key = name.casefold()
        waiting = self.waiters.get(key)
        if waiting is not None and task in waiting:
            waiting.remove(task)
            if not waiting:
                del self.waiters[key]

    def event_raised(self, name: str, raw: str | None) -> None:
        """Deliver an event to the oldest waiter, or keep it for a later wait."""
        key = name.casefold()
        waiting = self.waiters.get(key)
        if waiting and self.status is None:
            task = waiting.popleft()
            if not waiting:
                del self.waiters[key]
            if task._timer is not None:
                task._timer.cancel()
            task.complete(self._decode(raw, task._expected_type))
            self.resume()
            return
        self._event_arrivals += 1
        queue = self.buffered_events.get(key)
        if queue is None:
            queue = self.buffered_events[key] = deque()
        queue.append((self._event_arrivals, name, raw))
        if not self._is_replaying:
            logger.debug("%s: buffered event '%s': nothing waits for it yet", self._instance_id, name)

    def send_event(self, instance_id: str, event_name: str, *, data: Any | None = None) -> None:
        if not instance_id or not instance_id.strip():
            raise ValueError("send_event() needs a target instance_id")
        if instance_id.startswith("@"):
            raise ValueError(
                f"'{instance_id}' is an entity ID (it starts with '@'): use signal_entity() to reach an entity"
            )
        if not event_name or not event_name.strip():
            raise ValueError("send_event() needs an event_name")
        seq = self.next_sequence()
        self.pending_actions[seq] = act.SendEvent(seq, instance_id, event_name, data, self._encoder())

    # ----------------------------------------------------------------- entities

    def entity_calls(self) -> ent.EntityCalls:
        calls = self._entity_calls
        if calls is None:
            calls = self._entity_calls = ent.EntityCalls()
        return calls

    def call_entity(self, entity: EntityInstanceId, operation: str, input: Any = None, *,
                    return_type: type | None = None) -> CompletableTask[Any]:
        seq = self.next_sequence()
        target = as_entity_id(entity, "call_entity()'s entity")
        calls = self.entity_calls()
        calls.check_call(target)
        request_id = self.new_uuid()
        self.pending_actions[seq] = ent.CallEntity(seq, str(target), operation, input, self._encoder(), request_id,
                                                   self._instance_id)
        task: CompletableTask[Any] = CompletableTask(return_type)
        self.pending_tasks[seq] = task
        calls.calls[request_id] = (seq, target, operation)
        return task

    def signal_entity(self, entity_id: EntityInstanceId, operation_name: str, input: Any = None,
                      signal_time: datetime | None = None) -> None:
        seq = self.next_sequence()
        target = as_entity_id(entity_id, "signal_entity()'s entity_id")
        self.entity_calls().check_signal(target)
        self.pending_actions[seq] = ent.SignalEntity(seq, str(target), operation_name, input, self._encoder(),
                                                     self.new_uuid(), signal_time)

    def lock_entities(self, entities: list[EntityInstanceId]) -> CompletableTask[Any]:
        seq = self.next_sequence()
        calls = self.entity_calls()
        calls.check_lock()
        section_id = self.new_uuid()
        targets = [as_entity_id(e, "each of lock_entities()'s entities") for e in entities]
        if not targets:
            raise ValueError("lock_entities() needs at least one entity to lock")
        lock_set = calls.enter(section_id, targets)
        self.pending_actions[seq] = ent.LockEntities(seq, section_id, [str(e) for e in lock_set], self._instance_id)
        task: CompletableTask[Any] = CompletableTask()
        self.pending_tasks[seq] = task
        calls.lock_requests[section_id] = seq
        return task

    def _exit_critical_section(self) -> None:
        calls = self._entity_calls
        if calls is None or calls.section_id is None:
            return
        section_id, locks = calls.section_id, calls.locks
        calls.section_id, calls.locks, calls.available, calls.pending_grant = None, [], [], False
        for entity in locks:
            seq = self.next_sequence()
            self.pending_actions[seq] = ent.UnlockEntity(seq, section_id, str(entity), self._instance_id)

    def _release_locks(self) -> None:
        """Locks must not outlive the orchestration: release them before it ends."""
        calls = self._entity_calls
        if calls is not None and calls.section_id is not None:
            self._exit_critical_section()

    def _decode(self, raw: str | None, target: type | None) -> Any:
        return self._converter.deserialize(raw, target) if raw else None

    # ----------------------------------------------------------------- running user code

    def start(self, event: pb.ExecutionStartedEvent) -> None:
        """Look the orchestrator up, decode its input and run it to its first yield."""
        self.started = True
        self.name = name = event.name
        fn = self._registry.get_orchestrator(name)
        if event.HasField("version"):
            self._version = event.version.value
        if event.HasField("parentInstance") and event.parentInstance.HasField("orchestrationInstance"):
            self._parent_instance_id = event.parentInstance.orchestrationInstance.instanceId
        if fn is None:
            raise OrchestratorNotRegisteredError(
                not_registered_message("orchestrator", name, self._registry.orchestrators)
            )
        raw = event.input.value
        value = None
        if raw:
            value = self._converter.deserialize(raw, type_discovery.orchestrator_input_type(fn, self._converter))
        output = fn(self, value)
        if isinstance(output, GeneratorType):
            self._generator = output
            try:
                first = next(output)
            except StopIteration as stop:
                self.complete(stop.value)
                return
            self._waiting_on = self._check_yield(first)
            self.resume()
        elif isinstance(output, CoroutineType):
            output.close()
            raise TypeError(
                f"orchestrator '{name}' is an 'async def' function; orchestrators must be generator "
                f"functions that yield tasks (use 'yield ctx.call_activity(...)', not 'await')"
            )
        else:
            self.complete(output)

    def _check_yield(self, value: Any) -> Task[Any]:
        if isinstance(value, Task):
            return value
        raise TypeError(
            f"orchestrator '{self.name}' yielded {value!r}, which is not a task: yield what "
            f"ctx.call_activity(), ctx.create_timer(), ctx.wait_for_external_event(), when_all() "
            f"or when_any() return"
        )

    def resume(self) -> None:
        """Send results into the generator for as long as the task it waits on is complete."""
        generator = self._generator
        task = self._waiting_on
        if generator is None or task is None:
            return
        while task._is_complete:
            try:
                exception = task._exception
                if exception is not None:
                    nxt = generator.throw(exception)
                elif getattr(task, "_is_cancelled", False):
                    nxt = generator.throw(TaskCancelledError("The task was cancelled."))
                else:
                    nxt = generator.send(task._result)
            except StopIteration as stop:
                self._waiting_on = None
                self.complete(stop.value)
                return
            except BaseException:
                self._waiting_on = None
                self._generator = None
                raise
            task = nxt if isinstance(nxt, Task) else self._check_yield(nxt)
        self._waiting_on = task

    # ----------------------------------------------------------------- completion

    def complete(self, result: Any) -> None:
        """The orchestrator returned: complete, unless it already asked to continue as new."""
        self._generator = None
        if self.status is not None:
            return
        try:
            encoded = None if result is None else self._converter.serialize(result)
        except Exception as ex:
            self.fail(ex)
            return
        self._release_locks()
        self.encoded_result = encoded
        self.status = COMPLETED
        self.completion_id = self.next_sequence()

    def fail(self, ex: BaseException) -> None:
        """The orchestrator raised (or replay found a problem): complete as FAILED."""
        self._generator = None
        if self.status is not None and self.status != CONTINUED_AS_NEW:
            return
        self._release_locks()
        self.failure = failure_details_to_proto(ex)
        self.encoded_result = None
        self.status = FAILED
        self.completion_id = self.next_sequence()

    def terminate(self, encoded_output: str | None) -> None:
        """Terminate wins over any other outcome of the episode; nothing new is started."""
        self._generator = None
        self.status = TERMINATED
        self.encoded_result = encoded_output
        self.failure = None
        if self._entity_calls is None:
            self.pending_actions.clear()
        else:  # releases of entity locks must still go out, or the entities stay locked
            unlocks = {k: a for k, a in self.pending_actions.items() if a.kind == ent.UNLOCK_SENT}
            self.pending_actions.clear()
            self.pending_actions.update(unlocks)
            self._release_locks()
        self.completion_id = self.next_sequence()

    def continue_as_new(self, new_input: Any, *, save_events: bool = False, new_version: str | None = None) -> None:
        if self.status is not None:
            return
        self._release_locks()
        self.status = CONTINUED_AS_NEW
        self._new_input = new_input
        self._save_events = save_events
        self._new_version = new_version

    def result_actions(self) -> list[pb.OrchestratorAction]:
        """The actions to send: every unconfirmed action, then the completion if there is one."""
        converter = self._converter
        out = [a.to_proto(converter) for a in self.pending_actions.values()]
        status = self.status
        if status is None:
            return out
        if status == CONTINUED_AS_NEW:
            carryover: list[pb.HistoryEvent] | None = None
            if self._save_events:
                arrivals = sorted(entry for queue in self.buffered_events.values() for entry in queue)
                carryover = [
                    pb.HistoryEvent(eventId=-1, eventRaised=pb.EventRaisedEvent(
                        name=name, input=None if raw is None else act._string_value(raw)))
                    for _, name, raw in arrivals
                ]
            out.append(act.complete_orchestration(
                self.next_sequence(), CONTINUED_AS_NEW, converter.serialize(self._new_input),
                carryover=carryover, new_version=self._new_version,
            ))
        else:
            out.append(act.complete_orchestration(
                self.completion_id, cast(Any, status), self.encoded_result, self.failure,
            ))
        return out

    def start_not_seen(self) -> OrchestrationStateError:
        return OrchestrationStateError(
            f"the history of instance '{self._instance_id}' has no executionStarted event"
        )


def _event_timeout(name: str) -> EventTimeoutError:
    timeout = TimeoutError(f"no event '{name}' arrived before the timeout")
    return EventTimeoutError(f"Timed out waiting for external event '{name}'", timeout)


Handler = Callable[[ReplayContext, pb.HistoryEvent], None]
