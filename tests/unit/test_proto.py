"""Smoke tests of the generated sidecar-protocol stubs."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
from google.protobuf import wrappers_pb2

from durabletask.internal import orchestrator_service_pb2 as pb
from durabletask.internal import orchestrator_service_pb2_grpc as pb_grpc

REPO = Path(__file__).resolve().parents[2]
GENERATED = [
    REPO / "durabletask" / "internal" / name
    for name in (
        "orchestrator_service_pb2.py",
        "orchestrator_service_pb2.pyi",
        "orchestrator_service_pb2_grpc.py",
    )
]


def test_descriptor_file_name_and_no_package() -> None:
    assert pb.DESCRIPTOR.name == "durabletask/internal/orchestrator_service.proto"
    assert pb.DESCRIPTOR.package == ""
    assert pb.HistoryEvent.DESCRIPTOR.full_name == "HistoryEvent"
    assert pb.WorkItem.DESCRIPTOR.full_name == "WorkItem"


def test_service_full_name_and_method_paths() -> None:
    service = pb.DESCRIPTOR.services_by_name["TaskHubSidecarService"]
    assert service.full_name == "TaskHubSidecarService"
    methods = {m.name: m for m in service.methods}
    expected_streams = {"GetWorkItems": "WorkItem", "StreamInstanceHistory": "HistoryChunk"}
    for name, output in expected_streams.items():
        method = methods[name]
        assert method.output_type.full_name == output
        assert not method.client_streaming
        assert method.server_streaming
    for name in ("Hello", "StartInstance", "CompleteOrchestratorTask", "SignalEntity"):
        assert not methods[name].server_streaming and not methods[name].client_streaming
    assert methods["Hello"].input_type.full_name == "google.protobuf.Empty"
    assert methods["StartInstance"].input_type.full_name == "CreateInstanceRequest"
    assert methods["WaitForInstanceCompletion"].output_type.full_name == "GetInstanceResponse"


def test_stub_uses_unqualified_method_paths() -> None:
    seen: dict[str, str] = {}

    class RecordingChannel:
        def _record(self, kind: str, path: str, *args: object, **kwargs: object) -> object:
            seen[path] = kind
            return object()

        def unary_unary(self, path: str, *args: object, **kwargs: object) -> object:
            return self._record("unary_unary", path)

        def unary_stream(self, path: str, *args: object, **kwargs: object) -> object:
            return self._record("unary_stream", path)

        def stream_unary(self, path: str, *args: object, **kwargs: object) -> object:
            return self._record("stream_unary", path)

        def stream_stream(self, path: str, *args: object, **kwargs: object) -> object:
            return self._record("stream_stream", path)

    pb_grpc.TaskHubSidecarServiceStub(RecordingChannel())
    assert seen["/TaskHubSidecarService/Hello"] == "unary_unary"
    assert seen["/TaskHubSidecarService/StartInstance"] == "unary_unary"
    assert seen["/TaskHubSidecarService/GetWorkItems"] == "unary_stream"
    assert seen["/TaskHubSidecarService/StreamInstanceHistory"] == "unary_stream"
    service = pb.DESCRIPTOR.services_by_name["TaskHubSidecarService"]
    assert set(seen) == {f"/TaskHubSidecarService/{m.name}" for m in service.methods}


def test_servicer_registration_builds_a_generic_handler() -> None:
    with ThreadPoolExecutor(max_workers=1) as pool:
        server = grpc.server(pool)
        pb_grpc.add_TaskHubSidecarServiceServicer_to_server(pb_grpc.TaskHubSidecarServiceServicer(), server)
        server.stop(None)


def test_wrapper_absent_differs_from_empty() -> None:
    absent = pb.EventRaisedEvent(name="approval")
    empty = pb.EventRaisedEvent(name="approval", input=wrappers_pb2.StringValue(value=""))
    assert absent.SerializeToString() != empty.SerializeToString()

    absent2 = pb.EventRaisedEvent.FromString(absent.SerializeToString())
    empty2 = pb.EventRaisedEvent.FromString(empty.SerializeToString())
    assert not absent2.HasField("input")
    assert empty2.HasField("input")
    assert empty2.input.value == ""


def test_history_event_round_trip() -> None:
    event = pb.HistoryEvent(eventId=-1)
    event.timestamp.FromSeconds(1_700_000_000)
    started = event.executionStarted
    started.name = "my_orchestrator"
    started.input.value = '"hello"'
    started.orchestrationInstance.instanceId = "abc"
    started.tags["k"] = "v"
    data = event.SerializeToString()

    back = pb.HistoryEvent.FromString(data)
    assert back == event
    assert back.WhichOneof("eventType") == "executionStarted"
    assert back.executionStarted.input.value == '"hello"'
    assert not back.executionStarted.HasField("version")
    assert not back.executionStarted.orchestrationInstance.HasField("executionId")
    assert dict(back.executionStarted.tags) == {"k": "v"}


def test_work_item_oneof_and_worker_fields() -> None:
    item = pb.WorkItem(completionToken="tok")
    item.activityRequest.name = "act"
    item.activityRequest.taskId = 7
    assert item.WhichOneof("request") == "activityRequest"
    item.healthPing.SetInParent()
    assert item.WhichOneof("request") == "healthPing"
    assert pb.WorkItem.FromString(item.SerializeToString()).WhichOneof("request") == "healthPing"

    request = pb.GetWorkItemsRequest(
        worker_instance_id="w1",
        capabilities=[pb.WORKER_CAPABILITY_HISTORY_STREAMING],
    )
    request.workItemFilters.orchestrations.add(name="o", versions=["1", "2"])
    assert pb.GetWorkItemsRequest.FromString(request.SerializeToString()) == request


def test_generated_files_carry_the_do_not_edit_header() -> None:
    for path in GENERATED:
        head = path.read_text(encoding="utf-8").splitlines()[:2]
        assert any("Generated by scripts/generate_protos.py" in line and "DO NOT EDIT" in line
                   for line in head), path
