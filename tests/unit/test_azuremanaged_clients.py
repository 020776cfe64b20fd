"""The DTS client, async client and worker: arguments, headers on the wire, the clear-text rule.

Headers are checked on a small recording gRPC server on loopback (no emulator needed).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from datetime import timedelta
from typing import Any

import grpc
import pytest
from azure.core.credentials import AccessToken
from google.protobuf import empty_pb2

import durabletask
import durabletask.azuremanaged as azuremanaged
from durabletask.azuremanaged import (
    AsyncDurableTaskSchedulerClient,
    DurableTaskSchedulerClient,
    DurableTaskSchedulerWorker,
)
from durabletask.azuremanaged.internal.calls import check_token_transport, is_loopback
from durabletask.client import AsyncTaskHubGrpcClient, TaskHubGrpcClient
from durabletask.grpc_options import GrpcWorkerResiliencyOptions
from durabletask.internal import orchestrator_service_pb2 as pb
from durabletask.worker import TaskHubGrpcWorker
from tests.support.polling import wait_until

USER_AGENT = f"durabletask-python/{durabletask.__version__}"


class Credential:
    def __init__(self, fail: BaseException | None = None) -> None:
        self.calls = 0
        self.fail = fail
        self.scopes: list[tuple[str, ...]] = []

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        self.scopes.append(scopes)
        self.calls += 1
        if self.fail is not None:
            raise self.fail
        return AccessToken(f"secret-{self.calls}", int(time.time()) + 3600)


class AsyncCredential:
    def __init__(self) -> None:
        self.calls = 0

    async def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        self.calls += 1
        await asyncio.sleep(0)
        return AccessToken(f"async-secret-{self.calls}", int(time.time()) + 3600)

    async def close(self) -> None:
        pass


class Recorder:
    """A loopback gRPC server answering GetInstance, Hello and GetWorkItems, keeping each call's metadata."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, list[str]]]] = []
        self._lock = threading.Lock()
        self.server = grpc.server(futures.ThreadPoolExecutor(8))
        handlers = {
            "GetInstance": grpc.unary_unary_rpc_method_handler(
                self._get_instance, request_deserializer=pb.GetInstanceRequest.FromString,
                response_serializer=pb.GetInstanceResponse.SerializeToString),
            "Hello": grpc.unary_unary_rpc_method_handler(
                self._hello, request_deserializer=empty_pb2.Empty.FromString,
                response_serializer=empty_pb2.Empty.SerializeToString),
            "StreamInstanceHistory": grpc.unary_stream_rpc_method_handler(
                self._history, request_deserializer=pb.StreamInstanceHistoryRequest.FromString,
                response_serializer=pb.HistoryChunk.SerializeToString),
            "GetWorkItems": grpc.unary_stream_rpc_method_handler(
                self._work_items, request_deserializer=pb.GetWorkItemsRequest.FromString,
                response_serializer=pb.WorkItem.SerializeToString),
        }
        self.server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("TaskHubSidecarService", handlers),))
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()

    def _record(self, method: str, context: grpc.ServicerContext) -> None:
        metadata: dict[str, list[str]] = {}
        for key, value in context.invocation_metadata():
            metadata.setdefault(key, []).append(value if isinstance(value, str) else value.decode())
        with self._lock:
            self.calls.append((method, metadata))

    def _get_instance(self, request: Any, context: grpc.ServicerContext) -> pb.GetInstanceResponse:
        self._record("GetInstance", context)
        return pb.GetInstanceResponse(exists=False)

    def _hello(self, request: Any, context: grpc.ServicerContext) -> empty_pb2.Empty:
        self._record("Hello", context)
        return empty_pb2.Empty()

    def _history(self, request: Any, context: grpc.ServicerContext) -> Iterator[pb.HistoryChunk]:
        self._record("StreamInstanceHistory", context)
        return iter([pb.HistoryChunk()])

    def _work_items(self, request: Any, context: grpc.ServicerContext) -> Iterator[pb.WorkItem]:
        self._record("GetWorkItems", context)
        while context.is_active():
            time.sleep(0.02)
        return iter(())

    def wait_for(self, method: str, timeout: float = 10) -> None:
        wait_until(lambda: self.of(method), timeout=timeout)

    def of(self, method: str) -> list[dict[str, list[str]]]:
        with self._lock:
            return [m for name, m in self.calls if name == method]

    @property
    def address(self) -> str:
        return f"http://localhost:{self.port}"


@pytest.fixture()
def recorder() -> Iterator[Recorder]:
    server = Recorder()
    yield server
    server.server.stop(0)


def _fast() -> GrpcWorkerResiliencyOptions:
    return GrpcWorkerResiliencyOptions(reconnect_backoff_base_seconds=0.05, reconnect_backoff_cap_seconds=0.1)


# ----------------------------------------------------------------- the public surface


def test_importable_from_the_package_and_subclasses_of_ours() -> None:
    assert set(azuremanaged.__all__) >= {"DurableTaskSchedulerClient", "AsyncDurableTaskSchedulerClient",
                                         "DurableTaskSchedulerWorker"}
    assert issubclass(DurableTaskSchedulerClient, TaskHubGrpcClient)
    assert issubclass(AsyncDurableTaskSchedulerClient, AsyncTaskHubGrpcClient)
    assert issubclass(DurableTaskSchedulerWorker, TaskHubGrpcWorker)
    from durabletask.azuremanaged.client import DurableTaskSchedulerClient as FromModule
    from durabletask.azuremanaged.worker import DurableTaskSchedulerWorker as WorkerFromModule
    assert FromModule is DurableTaskSchedulerClient and WorkerFromModule is DurableTaskSchedulerWorker


def test_worker_does_not_chunk_timers_and_defaults_to_tls() -> None:
    worker = DurableTaskSchedulerWorker(host_address="myscheduler.westus2.durabletask.io", taskhub="h",
                                        token_credential=Credential())
    assert worker.maximum_timer_interval is None
    chunked = DurableTaskSchedulerWorker(host_address="localhost:1", taskhub="h", token_credential=None,
                                         maximum_timer_interval=timedelta(days=1))
    assert chunked.maximum_timer_interval == timedelta(days=1)


@pytest.mark.parametrize("cls", [DurableTaskSchedulerClient, AsyncDurableTaskSchedulerClient,
                                 DurableTaskSchedulerWorker])
@pytest.mark.parametrize("taskhub", ["", "   "])
def test_empty_taskhub_is_refused(cls: Any, taskhub: str) -> None:
    with pytest.raises(ValueError, match="taskhub"):
        cls(host_address="http://localhost:8080", taskhub=taskhub, token_credential=None)


@pytest.mark.parametrize("cls", [DurableTaskSchedulerClient, AsyncDurableTaskSchedulerClient,
                                 DurableTaskSchedulerWorker])
def test_empty_host_address_and_bad_resource_id_are_refused(cls: Any) -> None:
    with pytest.raises(ValueError, match="host_address"):
        cls(host_address="", taskhub="h", token_credential=None)
    with pytest.raises(ValueError, match="resource_id"):
        cls(host_address="http://localhost:1", taskhub="h", token_credential=None, resource_id="/")


def test_sync_client_refuses_an_async_credential() -> None:
    with pytest.raises(TypeError, match="AsyncDurableTaskSchedulerClient"):
        DurableTaskSchedulerClient(host_address="http://localhost:1", taskhub="h",
                                   token_credential=AsyncCredential())  # type: ignore[arg-type]


def test_resource_id_sets_the_scope() -> None:
    client = DurableTaskSchedulerClient(host_address="https://x.example", taskhub="h", token_credential=Credential(),
                                        resource_id="https://durabletask.example/")
    assert client.token_source is not None
    assert client.token_source.scope == "https://durabletask.example/.default"


# ----------------------------------------------------------------- never a token in clear text to another host


REMOTE_PLAINTEXT = [
    ("http://scheduler.example.com:8080", True),
    ("grpc://scheduler.example.com:8080", True),
    ("scheduler.example.com:8080", False),
    ("http://10.0.0.4:8080", True),
    ("http://0.0.0.0:8080", True),
    ("http://localhost.example.com:8080", True),
    ("http://[2001:db8::1]:8080", True),
]
LOCAL_OR_SECURE = [
    ("http://localhost:8080", True),
    ("http://LOCALHOST:8080", True),
    ("localhost:8080", False),
    ("http://127.0.0.1:8080", True),
    ("http://127.8.9.10:8080", True),
    ("http://[::1]:8080", True),
    ("https://scheduler.example.com", True),
    ("scheduler.example.com:443", True),
    ("grpcs://scheduler.example.com:443", False),
]


@pytest.mark.parametrize("cls", [DurableTaskSchedulerClient, AsyncDurableTaskSchedulerClient,
                                 DurableTaskSchedulerWorker])
@pytest.mark.parametrize(("address", "secure"), REMOTE_PLAINTEXT)
def test_token_over_plaintext_to_a_remote_host_is_refused(cls: Any, address: str, secure: bool) -> None:
    with pytest.raises(ValueError, match="https://") as info:
        cls(host_address=address, taskhub="h", token_credential=Credential(), secure_channel=secure)
    assert "clear text" in str(info.value)
    cls(host_address=address, taskhub="h", token_credential=None, secure_channel=secure)  # no token: fine


@pytest.mark.parametrize("cls", [DurableTaskSchedulerClient, AsyncDurableTaskSchedulerClient,
                                 DurableTaskSchedulerWorker])
@pytest.mark.parametrize(("address", "secure"), LOCAL_OR_SECURE)
def test_loopback_or_tls_with_a_token_is_fine(cls: Any, address: str, secure: bool) -> None:
    cls(host_address=address, taskhub="h", token_credential=Credential(), secure_channel=secure)


@pytest.mark.parametrize(("target", "local"), [
    ("localhost", True), ("localhost:1", True), ("localhost.:1", True), ("127.0.0.1", True),
    ("[::1]", True), ("::1", True), ("[::ffff:127.0.0.1]:80", True), ("unix:/tmp/sock", True),
    ("unix-abstract:x", True), ("dns:///localhost:80", True), ("dns://8.8.8.8/localhost:80", True),
    ("ipv4:127.0.0.1:1,127.0.0.2:2", True), ("ipv6:[::1]:1", True),
    ("ipv4:127.0.0.1:1,10.0.0.1:2", False), ("dns:///example.com:80", False), ("example.com", False),
    ("127.0.0.1.example.com:80", False), ("[fe80::1]:80", False), ("0.0.0.0:80", False), ("ipv4:", False),
])
def test_is_loopback(target: str, local: bool) -> None:
    assert is_loopback(target) is local


def test_check_token_transport_message() -> None:
    with pytest.raises(ValueError, match=r"'example\.com:80'.*https://"):
        check_token_transport("http://example.com:80", True)


# ----------------------------------------------------------------- headers on the wire


def test_sync_client_headers(recorder: Recorder) -> None:
    credential = Credential()
    with DurableTaskSchedulerClient(host_address=recorder.address, taskhub="hub-a", token_credential=credential,
                                    metadata=[("x-extra", "1")]) as client:
        assert credential.calls == 0  # nothing before the first call
        for _ in range(3):
            assert client.get_orchestration_state("nope") is None
    assert credential.calls == 1
    assert credential.scopes == [("https://durabletask.io/.default",)]
    for metadata in recorder.of("GetInstance"):
        assert metadata["taskhub"] == ["hub-a"]
        assert metadata["x-user-agent"] == [USER_AGENT]
        assert metadata["authorization"] == ["Bearer secret-1"]
        assert metadata["x-extra"] == ["1"]
        assert "workerid" not in metadata
    assert len(recorder.of("GetInstance")) == 3


def test_sync_client_without_credential_sends_no_authorization(recorder: Recorder) -> None:
    with DurableTaskSchedulerClient(host_address=recorder.address, taskhub="default", token_credential=None) as client:
        client.get_orchestration_state("nope")
    (metadata,) = recorder.of("GetInstance")
    assert metadata["taskhub"] == ["default"] and "authorization" not in metadata


def test_sync_client_credential_error_reaches_the_caller(recorder: Recorder) -> None:
    client = DurableTaskSchedulerClient(host_address=recorder.address, taskhub="h",
                                        token_credential=Credential(fail=PermissionError("no identity")))
    with pytest.raises(PermissionError, match="no identity"):
        client.get_orchestration_state("x")
    client.close()
    assert recorder.of("GetInstance") == []


def test_sync_client_user_interceptors_still_run(recorder: Recorder) -> None:
    seen: list[str] = []

    class Spy(grpc.UnaryUnaryClientInterceptor):
        def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
            seen.append(details.method)
            return continuation(details, request)

    with DurableTaskSchedulerClient(host_address=recorder.address, taskhub="h", token_credential=Credential(),
                                    interceptors=[Spy()]) as client:
        client.get_orchestration_state("x")
    assert seen == ["/TaskHubSidecarService/GetInstance"]
    assert recorder.of("GetInstance")[0]["authorization"] == ["Bearer secret-1"]


@pytest.mark.parametrize("make", [AsyncCredential, Credential])
def test_async_client_headers_with_async_and_sync_credentials(recorder: Recorder, make: Any) -> None:
    credential = make()

    async def main() -> None:
        async with AsyncDurableTaskSchedulerClient(host_address=recorder.address, taskhub="hub-b",
                                                   token_credential=credential) as client:
            await asyncio.gather(*(client.get_orchestration_state(f"i{n}") for n in range(10)))
            assert await client.get_orchestration_history("i0") == []  # a server-streaming call

    asyncio.run(main())
    assert credential.calls == 1
    calls = recorder.of("GetInstance") + recorder.of("StreamInstanceHistory")
    assert len(calls) == 11
    prefix = "async-secret" if make is AsyncCredential else "secret"
    for metadata in calls:
        assert metadata["taskhub"] == ["hub-b"]
        assert metadata["x-user-agent"] == [USER_AGENT]
        assert metadata["authorization"] == [f"Bearer {prefix}-1"]


def test_async_client_without_credential_sends_the_taskhub_on_streams_too(recorder: Recorder) -> None:
    async def main() -> None:
        async with AsyncDurableTaskSchedulerClient(host_address=recorder.address, taskhub="hub-c",
                                                   token_credential=None, metadata=[("x-extra", "2")]) as client:
            await client.get_orchestration_state("x")
            await client.get_orchestration_history("x")

    asyncio.run(main())
    for metadata in recorder.of("GetInstance") + recorder.of("StreamInstanceHistory"):
        assert metadata["taskhub"] == ["hub-c"] and metadata["x-extra"] == ["2"]
        assert "authorization" not in metadata
    assert len(recorder.of("StreamInstanceHistory")) == 1


@pytest.mark.parametrize("make", [AsyncCredential, Credential])
def test_worker_headers(recorder: Recorder, make: Any) -> None:
    credential = make()
    worker = DurableTaskSchedulerWorker(host_address=recorder.address, taskhub="hub-w", token_credential=credential,
                                        resiliency_options=_fast())
    worker.start()
    try:
        assert worker.wait_until_connected(10)
        recorder.wait_for("GetWorkItems")
    finally:
        worker.stop(1)
    prefix = "async-secret" if make is AsyncCredential else "secret"
    for method in ("Hello", "GetWorkItems"):
        (metadata, *_) = recorder.of(method)
        assert metadata["taskhub"] == ["hub-w"]
        assert metadata["x-user-agent"] == [USER_AGENT]
        assert metadata["authorization"] == [f"Bearer {prefix}-1"]
        assert len(metadata["workerid"]) == 1 and metadata["workerid"][0]
    assert credential.calls == 1


def test_worker_survives_credential_errors_and_connects_once_they_stop(recorder: Recorder,
                                                                       caplog: pytest.LogCaptureFixture) -> None:
    credential = Credential(fail=PermissionError("identity not ready"))
    worker = DurableTaskSchedulerWorker(host_address=recorder.address, taskhub="h", token_credential=credential,
                                        resiliency_options=_fast())
    worker.start()
    try:
        assert not worker.wait_until_connected(0.5)
        assert worker.is_running
        assert credential.calls >= 2  # it keeps trying
        assert recorder.of("Hello") == []  # nothing was sent without a token
        credential.fail = None
        assert worker.wait_until_connected(10)
    finally:
        worker.stop(1)
    assert "identity not ready" in caplog.text
    assert recorder.of("Hello")[0]["authorization"][0].startswith("Bearer secret-")
    assert "secret-" not in caplog.text
