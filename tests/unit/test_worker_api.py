"""Worker and client pieces that need no server: registration, options, addresses, versioning."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

import pytest

from durabletask import task
from durabletask.grpc_options import GrpcChannelOptions, GrpcRetryPolicyOptions
from durabletask.internal import orchestrator_service_pb2 as pb
from durabletask.internal.grpc.channels import parse_host_address
from durabletask.internal.registry import Registry
from durabletask.internal.replay.engine import OrchestrationExecutor
from durabletask.internal.runtime.options import compare_versions
from durabletask.internal.runtime.work_items import Abandon, run_activity, run_orchestration
from durabletask.serialization import DEFAULT_DATA_CONVERTER
from durabletask.worker import (
    ConcurrencyOptions,
    TaskHubGrpcWorker,
    VersionFailureStrategy,
    VersioningOptions,
    VersionMatchStrategy,
)
from tests.unit import histories as h

# ---------------------------------------------------------------- registration


def test_decorators_register_and_return_the_function_unchanged() -> None:
    worker = TaskHubGrpcWorker()

    @worker.orchestrator
    def plain(ctx: task.OrchestrationContext, _: Any) -> None:
        return None

    @worker.orchestrator(name="renamed")
    def other(ctx: task.OrchestrationContext, _: Any) -> None:
        return None

    @worker.activity
    async def fetch(ctx: task.ActivityContext, _: Any) -> int:
        return 1

    assert callable(plain) and plain.__name__ == "plain"
    assert set(worker._registry.orchestrators) == {"plain", "renamed"}
    assert worker._registry.activities == {"fetch": fetch}


def test_add_methods_return_names_like_the_official_sdk() -> None:
    worker = TaskHubGrpcWorker()

    def orch(ctx: task.OrchestrationContext, _: Any) -> None:
        return None

    assert worker.add_orchestrator(orch) == "orch"
    worker.add_named_activity("custom", lambda ctx, x: x)
    assert "custom" in worker._registry.activities


def test_registering_a_different_function_under_a_taken_name_is_an_error() -> None:
    worker = TaskHubGrpcWorker()
    worker.add_named_activity("same", lambda ctx, x: x)
    with pytest.raises(ValueError, match="'same' is already registered"):
        worker.add_named_activity("same", lambda ctx, x: x)


def test_passing_a_channel_to_the_worker_says_what_to_do() -> None:
    import grpc

    channel = grpc.insecure_channel("localhost:1")
    with pytest.raises(ValueError, match="host_address"):
        TaskHubGrpcWorker(channel=channel)
    channel.close()


# ---------------------------------------------------------------- options


@pytest.mark.parametrize("address,secure,expected", [
    ("localhost:8080", False, ("localhost:8080", False)),
    ("http://localhost:8080", True, ("localhost:8080", False)),
    ("https://x.westus2.durabletask.io", False, ("x.westus2.durabletask.io", True)),
    ("grpcs://host:443/", False, ("host:443", True)),
    ("grpc://host:1", True, ("host:1", False)),
    (None, False, ("localhost:4001", False)),
])
def test_host_address_rules(address: str | None, secure: bool, expected: tuple[str, bool]) -> None:
    assert tuple(parse_host_address(address, secure)) == expected


def test_empty_host_is_rejected_with_an_example() -> None:
    with pytest.raises(ValueError, match="localhost:8080"):
        parse_host_address("https://", False)


def test_channel_options_become_grpc_arguments() -> None:
    options = GrpcChannelOptions(max_receive_message_length=8 << 20, retry_policy=GrpcRetryPolicyOptions())
    args = dict(options.to_grpc_options())
    assert args["grpc.max_receive_message_length"] == 8 << 20
    assert "UNAVAILABLE" in args["grpc.service_config"]


def test_option_validation_names_the_field() -> None:
    with pytest.raises(ValueError, match="maximum_concurrent_activity_work_items"):
        ConcurrencyOptions(maximum_concurrent_activity_work_items=0)
    with pytest.raises(ValueError, match="max_attempts"):
        GrpcRetryPolicyOptions(max_attempts=9)


def test_result_batching_window_takes_a_timedelta_or_seconds_up_to_one_second() -> None:
    assert TaskHubGrpcWorker().result_batching_window == timedelta(milliseconds=10)
    assert TaskHubGrpcWorker(result_batching_window=0).result_batching_window == timedelta(0)
    assert TaskHubGrpcWorker(result_batching_window=0.25).result_batching_window == timedelta(milliseconds=250)
    assert TaskHubGrpcWorker(result_batching_window=timedelta(seconds=1)).result_batching_window == timedelta(seconds=1)
    for bad in (-0.001, 1.5, timedelta(minutes=1)):
        with pytest.raises(ValueError, match=r"result_batching_window must be between 0 .* and 1 second"):
            TaskHubGrpcWorker(result_batching_window=bad)
    for wrong in ("10ms", True, None):
        with pytest.raises(TypeError, match="result_batching_window must be a timedelta or a number of seconds"):
            TaskHubGrpcWorker(result_batching_window=wrong)  # type: ignore[arg-type]


@pytest.mark.parametrize("left,right,order", [
    ("1.10", "1.9", 1), ("2", "2.0.0", 0), ("v1.2", "1.3", -1), (None, "1", -1), ("1", None, 1),
    (None, None, 0), ("beta", "alpha", 1),
])
def test_version_comparison(left: str | None, right: str | None, order: int) -> None:
    assert compare_versions(left, right) == order


# ---------------------------------------------------------------- work items without a server


def _orchestration_request(version: str | None) -> pb.OrchestratorRequest:
    return pb.OrchestratorRequest(instanceId="abc", newEvents=[
        h.orchestrator_started(), h.execution_started("orch", version=version)])


def _executor() -> OrchestrationExecutor:
    registry = Registry()

    def orch(ctx: task.OrchestrationContext, _: Any) -> str:
        return "done"

    registry.add_orchestrator(orch)
    return OrchestrationExecutor(registry)


def test_strict_versioning_rejects_by_giving_the_item_back() -> None:
    versioning = VersioningOptions(version="2.0", match_strategy=VersionMatchStrategy.STRICT,
                                   failure_strategy=VersionFailureStrategy.REJECT)
    with pytest.raises(Abandon, match="does not match"):
        run_orchestration(_executor(), versioning, _orchestration_request("1.0"), [], "token")


def test_versioning_fail_strategy_fails_the_orchestration() -> None:
    versioning = VersioningOptions(version="1.0", match_strategy=VersionMatchStrategy.CURRENT_OR_OLDER,
                                   failure_strategy=VersionFailureStrategy.FAIL)
    response = run_orchestration(_executor(), versioning, _orchestration_request("1.5"), [], "token").response
    done = response.actions[-1].completeOrchestration
    assert done.orchestrationStatus == pb.ORCHESTRATION_STATUS_FAILED
    assert done.failureDetails.errorType == "VersionMismatch"
    assert response.completionToken == "token"


def test_matching_version_runs() -> None:
    versioning = VersioningOptions(version="1.0", match_strategy=VersionMatchStrategy.CURRENT_OR_OLDER)
    response = run_orchestration(_executor(), versioning, _orchestration_request("0.9"), [], "t").response
    assert response.actions[-1].completeOrchestration.result.value == '"done"'


def _activity(registry: Registry, name: str, input: Any) -> pb.ActivityResponse:
    request = pb.ActivityRequest(name=name, taskId=4, orchestrationInstance=pb.OrchestrationInstance(instanceId="i"))
    if input is not None:
        request.input.value = DEFAULT_DATA_CONVERTER.serialize(input) or ""
    with ThreadPoolExecutor(1) as pool:
        return asyncio.run(run_activity(registry, DEFAULT_DATA_CONVERTER, request, "tok", pool))


def test_sync_and_async_activities_run_and_echo_the_token() -> None:
    registry = Registry()
    registry.add_activity(lambda ctx, x: x + 1, "sync_inc")

    async def async_inc(ctx: task.ActivityContext, x: int) -> int:
        return x + ctx.task_id

    registry.add_activity(async_inc)
    assert _activity(registry, "sync_inc", 1).result.value == "2"
    response = _activity(registry, "async_inc", 1)
    assert (response.result.value, response.taskId, response.completionToken, response.instanceId) == (
        "5", 4, "tok", "i")


def test_activity_exception_becomes_failure_details() -> None:
    registry = Registry()

    def broken(ctx: task.ActivityContext, _: Any) -> None:
        raise task.NonRetriableError("card declined")

    registry.add_activity(broken)
    response = _activity(registry, "broken", None)
    assert response.HasField("failureDetails")
    assert response.failureDetails.errorMessage == "card declined"
    assert response.failureDetails.isNonRetriable


def test_unregistered_activity_failure_names_it_and_the_registered_ones() -> None:
    registry = Registry()
    registry.add_activity(lambda ctx, x: x, "known")
    message = _activity(registry, "missing", None).failureDetails.errorMessage
    assert "'missing'" in message and "'known'" in message
