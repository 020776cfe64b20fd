"""Rewind: take a FAILED orchestration back to its last good point and re-run only what failed.

Two ways to get the cleaned history, both supported (``Engine(rewind_mode=...)``):

* ``"server"`` (default): the emulator rewrites the history itself, as Durable Task Scheduler does,
  and dispatches ``[orchestratorStarted, executionRewound]`` on top of it. Every worker then just
  replays and re-schedules the removed work; .NET and Java workers, which never produce a rewind
  action, work too.
* ``"worker"``: the reference flow of the Python SDK. The emulator delivers ``executionRewound``
  on top of the failed history; the worker answers with a ``rewindOrchestration`` action carrying
  the new history, which the emulator installs and replays.

A ``rewindOrchestration`` action is honoured in either mode. The cleaning rules are the Python
worker's: drop ``taskFailed`` events with their ``taskScheduled``, ``subOrchestrationInstanceFailed``
and ``executionCompleted``; give the execution a new id. Sub-orchestrations created but not
completed are rewound too (or re-created if they were purged).
"""

from __future__ import annotations

import logging

from google.protobuf import wrappers_pb2

from durabletask.emulator import delivery, wire
from durabletask.emulator.state import EXECUTION_REWOUND, WAKE_UP, Instance
from durabletask.emulator.store.base import FAILED, RUNNING
from durabletask.emulator.tx import Tx
from durabletask.internal import orchestrator_service_pb2 as pb
from durabletask.internal.replay.rewind import clean_history

logger = logging.getLogger("durabletask.emulator.engine")

SERVER = "server"
WORKER = "worker"
MODES = (SERVER, WORKER)


def start_rewind(tx: Tx, instance: Instance, reason: str | None, *, parent_execution_id: str | None = None) -> None:
    """Reopen a FAILED instance (the caller checked the status and that its history is loaded)."""
    record = instance.record
    rewound = pb.ExecutionRewoundEvent(reason=wire.string_value(reason))
    if parent_execution_id is not None:
        rewound.parentExecutionId.CopyFrom(wrappers_pb2.StringValue(value=parent_execution_id))
        rewound.instanceId.CopyFrom(wrappers_pb2.StringValue(value=record.instance_id))
    logger.info("instance %r: rewinding (%s side)", record.instance_id, tx.engine.rewind_mode)
    _reopen(instance)
    if tx.engine.rewind_mode == SERVER:
        events = [wire.parse_event(data) for data in instance.history or ()]
        execution_id = delivery.new_execution_id()
        cleaned = clean_history(events, execution_id, parent_execution_id)
        tx.replace_history(instance, [e.SerializeToString() for e in cleaned])
        _adopt_execution(tx, instance, execution_id)
        _rewind_children(tx, instance, cleaned, reason)
    tx.send(instance, EXECUTION_REWOUND, wire.event_bytes(tx.now, executionRewound=rewound))
    tx.save(instance)


def apply_rewind_action(tx: Tx, instance: Instance, new_history: list[pb.HistoryEvent]) -> None:
    """Install the history a worker rewrote, re-run the instance, and rewind its failed children."""
    # Workers replay this history; never hand them bookkeeping events they cannot handle.
    new_history = [e for e in new_history if e.WhichOneof("eventType") not in ("historyState", "continueAsNew")]
    logger.info("instance %r: installing the history its worker rewound (%d events)", instance.instance_id,
                len(new_history))
    started = next(e.executionStarted for e in new_history if e.HasField("executionStarted"))
    execution_id = started.orchestrationInstance.executionId.value or delivery.new_execution_id()
    _reopen(instance)
    tx.replace_history(instance, [e.SerializeToString() for e in new_history])
    _adopt_execution(tx, instance, execution_id)
    reason = None
    for event in reversed(new_history):
        if event.HasField("executionRewound"):
            reason = event.executionRewound.reason.value if event.executionRewound.HasField("reason") else None
            break
    _rewind_children(tx, instance, new_history, reason)
    tx.send(instance, WAKE_UP, b"")  # a plain replay of the new history
    tx.save(instance)


def _reopen(instance: Instance) -> None:
    record = instance.record
    record.status = RUNNING
    record.output = None
    record.failure = None
    record.completed_at = None
    instance.not_before = 0.0
    instance.abandons = 0


def _adopt_execution(tx: Tx, instance: Instance, execution_id: str) -> None:
    """Switch to a new execution id; children keep reporting to it."""
    record = instance.record
    old = record.execution_id
    record.execution_id = execution_id
    instance.children = None
    for child in tx.hub.instances.values():
        if child.record.parent_instance_id == record.instance_id and child.record.parent_execution_id == old:
            child.record.parent_execution_id = execution_id
            tx.save(child)


def _rewind_children(tx: Tx, parent: Instance, history: list[pb.HistoryEvent], reason: str | None) -> None:
    created: dict[int, pb.SubOrchestrationInstanceCreatedEvent] = {}
    completed: set[int] = set()
    for event in history:
        if event.HasField("subOrchestrationInstanceCreated"):
            created[event.eventId] = event.subOrchestrationInstanceCreated
        elif event.HasField("subOrchestrationInstanceCompleted"):
            completed.add(event.subOrchestrationInstanceCompleted.taskScheduledId)
    record = parent.record
    for task_id, sub in created.items():
        if task_id in completed:
            continue
        child = tx.hub.instances.get(sub.instanceId)
        if child is None:
            logger.info("re-creating purged sub-orchestration %r of %r", sub.instanceId, record.instance_id)
            delivery.create_instance(
                tx, instance_id=sub.instanceId, name=sub.name,
                version=sub.version.value if sub.HasField("version") else None,
                input=sub.input.value if sub.HasField("input") else None, tags=dict(sub.tags),
                parent=delivery.ParentRef(record.instance_id, record.execution_id, task_id, record.name,
                                          record.version),
            )
        elif child.record.status == FAILED and child.history is not None:
            start_rewind(tx, child, reason, parent_execution_id=record.execution_id)
