"""`durabletask.testing` used the way the official SDK's documentation shows it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from durabletask import task
from durabletask.client import OrchestrationStatus, TaskHubGrpcClient
from durabletask.testing import InMemoryOrchestrationBackend, create_test_backend
from durabletask.worker import TaskHubGrpcWorker
from tests.support.servers import free_port


def double(ctx: task.ActivityContext, x: int) -> int:
    return 2 * x


def orchestration(ctx: task.OrchestrationContext, x: int) -> Any:
    result = yield ctx.call_activity(double, input=x)
    return result


@pytest.fixture()
def backend_port() -> Iterator[int]:
    port = free_port()
    backend = create_test_backend(port=port)
    yield port
    backend.stop()
    backend.reset()


def test_official_style_fixture(backend_port: int) -> None:
    client = TaskHubGrpcClient(host_address=f"localhost:{backend_port}")
    worker = TaskHubGrpcWorker(host_address=f"localhost:{backend_port}")
    worker.add_orchestrator(orchestration)
    worker.add_activity(double)
    with worker:
        worker.start()
        instance_id = client.schedule_new_orchestration(orchestration, input=21)
        state = client.wait_for_orchestration_completion(instance_id, timeout=10)
    client.close()
    assert state is not None and state.runtime_status == OrchestrationStatus.COMPLETED
    assert state.get_output() == 42


def test_reset_forgets_instances_and_keeps_serving() -> None:
    with InMemoryOrchestrationBackend(port=0) as backend:
        with TaskHubGrpcClient(host_address=backend.address) as client:
            instance_id = client.schedule_new_orchestration("anything", instance_id="kept?")
            assert client.get_orchestration_state(instance_id) is not None
            backend.reset()
        with TaskHubGrpcClient(host_address=backend.address) as client:
            assert client.get_orchestration_state("kept?") is None


def test_starting_twice_is_an_error() -> None:
    backend = create_test_backend(port=0)
    try:
        with pytest.raises(RuntimeError, match="already running"):
            backend.start()
    finally:
        backend.stop()
