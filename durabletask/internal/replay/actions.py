"""Actions an orchestrator asks for, kept as light records until they are sent.

During replay almost every action is confirmed by history and never sent, so building protobuf
messages for them would be wasted work. A record keeps the input as the user passed it when it
is created during replay, and encodes it only if the action is actually sent; actions created
while processing new events are encoded at once, so the value sent is the value at call time.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from google.protobuf import timestamp_pb2, wrappers_pb2

from durabletask.internal import orchestrator_service_pb2 as pb
from durabletask.serialization import DataConverter

_UNSET: Any = object()


class Action:
    """An action with a sequence number; subclasses know their wire shape and user-facing name."""

    __slots__ = ("id", "name")

    method: str = ""  # the OrchestrationContext method that creates it, for error messages
    kind: str = ""  # the OrchestratorAction oneof field

    def __init__(self, id: int, name: str = "") -> None:
        self.id = id
        self.name = name

    def describe(self) -> str:
        return f"{self.method}('{self.name}')" if self.name else f"{self.method}()"

    def to_proto(self, converter: DataConverter) -> pb.OrchestratorAction:
        raise NotImplementedError


class _WithInput(Action):
    __slots__ = ("_encoded", "_input")

    def __init__(self, id: int, name: str, data: Any, converter: DataConverter | None) -> None:
        self.id = id
        self.name = name
        if converter is None:  # created during replay: encode only if ever sent
            self._input = data
            self._encoded = _UNSET
        else:
            self._input = None
            self._encoded = converter.serialize(data)

    def encoded_input(self, converter: DataConverter) -> str | None:
        if self._encoded is _UNSET:
            self._encoded = converter.serialize(self._input)
            self._input = None
        encoded: str | None = self._encoded
        return encoded


def _string_value(value: str | None) -> wrappers_pb2.StringValue | None:
    return None if value is None else wrappers_pb2.StringValue(value=value)


class ScheduleTask(_WithInput):
    __slots__ = ("tags", "version")
    method = "call_activity"
    kind = "scheduleTask"

    def __init__(self, id: int, name: str, data: Any, converter: DataConverter | None,
                 tags: dict[str, str] | None, version: str | None) -> None:
        # Flattened rather than calling _WithInput.__init__: one of these is made per activity call.
        self.id = id
        self.name = name
        if converter is None:
            self._input = data
            self._encoded = _UNSET
        else:
            self._input = None
            self._encoded = converter.serialize(data)
        self.tags = tags
        self.version = version

    def to_proto(self, converter: DataConverter) -> pb.OrchestratorAction:
        return pb.OrchestratorAction(id=self.id, scheduleTask=pb.ScheduleTaskAction(
            name=self.name,
            input=_string_value(self.encoded_input(converter)),
            tags=self.tags,
            version=_string_value(self.version),
        ))


class CreateSubOrchestration(_WithInput):
    __slots__ = ("instance_id", "version")
    method = "call_sub_orchestrator"
    kind = "createSubOrchestration"

    def __init__(self, id: int, name: str, instance_id: str, data: Any, converter: DataConverter | None,
                 version: str | None) -> None:
        _WithInput.__init__(self, id, name, data, converter)
        self.instance_id = instance_id
        self.version = version

    def to_proto(self, converter: DataConverter) -> pb.OrchestratorAction:
        return pb.OrchestratorAction(id=self.id, createSubOrchestration=pb.CreateSubOrchestrationAction(
            name=self.name,
            instanceId=self.instance_id,
            input=_string_value(self.encoded_input(converter)),
            version=_string_value(self.version),
        ))


class SendEvent(_WithInput):
    __slots__ = ("instance_id",)
    method = "send_event"
    kind = "sendEvent"

    def __init__(self, id: int, instance_id: str, name: str, data: Any, converter: DataConverter | None) -> None:
        _WithInput.__init__(self, id, name, data, converter)
        self.instance_id = instance_id

    def describe(self) -> str:
        return f"send_event('{self.instance_id}', '{self.name}')"

    def to_proto(self, converter: DataConverter) -> pb.OrchestratorAction:
        return pb.OrchestratorAction(id=self.id, sendEvent=pb.SendEventAction(
            instance=pb.OrchestrationInstance(instanceId=self.instance_id),
            name=self.name,
            data=_string_value(self.encoded_input(converter)),
        ))


class CreateTimer(Action):
    __slots__ = ("fire_at",)
    method = "create_timer"
    kind = "createTimer"

    def __init__(self, id: int, fire_at: datetime) -> None:
        self.id = id
        self.name = ""
        self.fire_at = fire_at

    def to_proto(self, converter: DataConverter) -> pb.OrchestratorAction:
        return pb.OrchestratorAction(id=self.id, createTimer=pb.CreateTimerAction(fireAt=to_timestamp(self.fire_at)))


_EPOCH = datetime(1970, 1, 1)


def from_timestamp(ts: timestamp_pb2.Timestamp) -> datetime:
    """Decode a protobuf Timestamp as a naive UTC datetime (microsecond precision)."""
    return _EPOCH + timedelta(seconds=ts.seconds, microseconds=ts.nanos // 1000)


def to_timestamp(value: datetime) -> timestamp_pb2.Timestamp:
    """Encode a naive-UTC (or aware) datetime as a protobuf Timestamp."""
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(value)
    return ts


def complete_orchestration(
    id: int,
    status: int,
    result: str | None = None,
    failure: pb.TaskFailureDetails | None = None,
    carryover: list[pb.HistoryEvent] | None = None,
    new_version: str | None = None,
) -> pb.OrchestratorAction:
    """Build the action that ends (or continues-as-new) the orchestration."""
    return pb.OrchestratorAction(id=id, completeOrchestration=pb.CompleteOrchestrationAction(
        orchestrationStatus=status,  # type: ignore[arg-type]
        result=_string_value(result),
        failureDetails=failure,
        carryoverEvents=carryover,
        newVersion=_string_value(new_version),
    ))
