"""The public names of the official SDK's modules exist here, so user code moves over unchanged."""

from __future__ import annotations

import importlib
import inspect

import pytest

OFFICIAL_TASK_NAMES = [
    "OrchestrationContext", "ActivityContext", "Task", "CompletableTask", "CancellableTask", "RetryableTask",
    "TimerTask", "CompositeTask", "WhenAllTask", "WhenAnyTask", "when_all", "when_any", "RetryPolicy",
    "FailureDetails", "TaskFailedError", "NonDeterminismError", "OrchestrationStateError", "TaskCancelledError",
    "ReplaySafeLogger", "Orchestrator", "Activity", "get_name",
]


@pytest.mark.parametrize("name", OFFICIAL_TASK_NAMES)
def test_task_module_has_official_name(name: str) -> None:
    assert hasattr(importlib.import_module("durabletask.task"), name)


def test_serialization_module_has_official_names() -> None:
    module = importlib.import_module("durabletask.serialization")
    for name in ("DataConverter", "JsonDataConverter", "DEFAULT_DATA_CONVERTER"):
        assert hasattr(module, name), name


def test_context_method_signatures_match_the_official_argument_names() -> None:
    from durabletask.task import OrchestrationContext

    def params(name: str) -> list[str]:
        return list(inspect.signature(getattr(OrchestrationContext, name)).parameters)

    assert params("call_activity") == ["self", "activity", "input", "retry_policy", "tags", "return_type"]
    assert params("call_sub_orchestrator") == ["self", "orchestrator", "input", "instance_id", "retry_policy",
                                               "version", "return_type"]
    assert params("wait_for_external_event")[:3] == ["self", "name", "data_type"]
    assert params("continue_as_new") == ["self", "new_input", "save_events", "new_version"]
    assert params("send_event") == ["self", "instance_id", "event_name", "data"]
    assert params("create_timer") == ["self", "fire_at"]


def test_retry_policy_keywords_match_the_official_ones() -> None:
    from durabletask.task import RetryPolicy

    names = list(inspect.signature(RetryPolicy).parameters)
    assert names[:5] == ["first_retry_interval", "max_number_of_attempts", "backoff_coefficient",
                         "max_retry_interval", "retry_timeout"]


def test_generated_stubs_live_where_user_code_imports_them() -> None:
    pb = importlib.import_module("durabletask.internal.orchestrator_service_pb2")
    assert pb.OrchestrationIdReusePolicy.DESCRIPTOR.full_name == "OrchestrationIdReusePolicy"
