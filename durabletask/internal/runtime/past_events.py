"""Orchestrator work items whose past events are parsed only when they are read.

An orchestrator work item carries the orchestration's whole history in ``pastEvents``. When the
worker has kept the orchestration's state since its last episode (a session, see
`durabletask.internal.replay.sessions`), the episode reads only a few of those events: three
landmarks that show the history is the one already processed, and the events committed since.
Building every past event as a message anyway costs time in proportion to the history, in every
episode: about 0.2 ms per episode of a fan-out of 1,000 activities, more than the episode itself.

`WORK_ITEM_VIEW` parses the GetWorkItems stream instead of ``WorkItem``. It is ``WorkItem`` with one
difference: the orchestrator request's ``pastEvents`` is declared ``repeated bytes``. On the wire a
message field and a ``bytes`` field are the same (a length and the bytes), so the view reads the
same data and keeps each past event as its encoded bytes. Every other field, including
``newEvents`` and the activity and entity requests, has its usual message type, so the view's
requests are used as the real ones are. `past_events` then gives the replay engine a `PastEvents`
sequence: an index or a slice parses just those events, and iterating parses all of them at once
(by handing the request's encoding to the real ``OrchestratorRequest``, which costs what parsing
the work item used to).

The view's descriptors are derived at import from the generated ones, so they follow the .proto.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, overload

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from durabletask.internal import orchestrator_service_pb2 as pb

_PACKAGE = "durabletask.internal.view"
_FILE = "durabletask/internal/work_item_view.proto"


def _view_file() -> descriptor_pb2.FileDescriptorProto:
    real = pb.DESCRIPTOR
    file = descriptor_pb2.FileDescriptorProto(
        name=_FILE, package=_PACKAGE, syntax="proto3",
        dependency=[real.name, *(dependency.name for dependency in real.dependencies)])
    request = file.message_type.add()
    pb.OrchestratorRequest.DESCRIPTOR.CopyToProto(request)
    request.name = "OrchestratorRequestView"
    nested = f".{pb.OrchestratorRequest.DESCRIPTOR.full_name}."
    for field in request.field:
        if field.name == "pastEvents":
            field.type = descriptor_pb2.FieldDescriptorProto.TYPE_BYTES
            field.ClearField("type_name")
        elif field.type_name.startswith(nested):  # the map entry of ``properties``
            field.type_name = f".{_PACKAGE}.{request.name}.{field.type_name[len(nested):]}"
    item = file.message_type.add()
    pb.WorkItem.DESCRIPTOR.CopyToProto(item)
    item.name = "WorkItemView"
    for field in item.field:
        if field.name == "orchestratorRequest":
            field.type_name = f".{_PACKAGE}.{request.name}"
    return file


def _view_classes() -> tuple[Any, Any]:
    pool = descriptor_pool.Default()
    try:
        pool.FindFileByName(_FILE)
    except KeyError:
        pool.Add(_view_file())
    return (message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{_PACKAGE}.WorkItemView")),
            message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{_PACKAGE}.OrchestratorRequestView")))


WORK_ITEM_VIEW, ORCHESTRATOR_REQUEST_VIEW = _view_classes()
"""``WorkItem`` and ``OrchestratorRequest`` with the past events left encoded (message classes)."""

_parse_event = pb.HistoryEvent.FromString


class PastEvents(Sequence[pb.HistoryEvent]):
    """The past events of an `ORCHESTRATOR_REQUEST_VIEW` request, parsed when read."""

    __slots__ = ("_encoded", "_events", "_request")

    def __init__(self, request: Any) -> None:
        self._request = request
        self._encoded: Sequence[bytes] = request.pastEvents
        self._events: Sequence[pb.HistoryEvent] | None = None

    def __len__(self) -> int:
        return len(self._encoded)

    @overload
    def __getitem__(self, index: int) -> pb.HistoryEvent: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[pb.HistoryEvent]: ...

    def __getitem__(self, index: int | slice) -> pb.HistoryEvent | Sequence[pb.HistoryEvent]:
        events = self._events
        if events is not None:
            return events[index]
        if isinstance(index, slice):
            return [_parse_event(encoded) for encoded in self._encoded[index]]
        return _parse_event(self._encoded[index])

    def __iter__(self) -> Iterator[pb.HistoryEvent]:
        return iter(self.parsed())

    def parsed(self) -> Sequence[pb.HistoryEvent]:
        """All the events, parsed in one go (once)."""
        if self._events is None:
            self._events = pb.OrchestratorRequest.FromString(self._request.SerializeToString()).pastEvents
        return self._events


def past_events(request: Any) -> Sequence[pb.HistoryEvent]:
    """The past events of an orchestrator request: parsed when read for a view, as they are otherwise."""
    if isinstance(request, ORCHESTRATOR_REQUEST_VIEW):
        return PastEvents(request)
    events: Sequence[pb.HistoryEvent] = request.pastEvents
    return events
