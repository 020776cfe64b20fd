"""Failure details: conversion to and from the wire, and matching by type."""

from __future__ import annotations

import pytest

from durabletask import task
from durabletask.internal import orchestrator_service_pb2 as pb
from durabletask.internal.failures import failure_details_from_proto, failure_details_to_proto


class PaymentError(Exception):
    pass


class CardDeclined(PaymentError):
    pass


def _raise_chain() -> BaseException:
    try:
        try:
            raise KeyError("card")
        except KeyError as inner:
            raise CardDeclined("declined") from inner
    except CardDeclined as outer:
        return outer


def test_exception_becomes_wire_details_with_qualified_type_cause_and_stack() -> None:
    details = failure_details_to_proto(_raise_chain())
    assert details.errorType == f"{__name__}.CardDeclined"
    assert details.errorMessage == "declined"
    assert "_raise_chain" in details.stackTrace.value
    assert details.innerFailure.errorType == "builtins.KeyError"
    assert not details.isNonRetriable


def test_non_retriable_error_is_marked_on_the_wire() -> None:
    class Fatal(task.NonRetriableError):
        pass

    assert failure_details_to_proto(Fatal("stop")).isNonRetriable
    assert failure_details_from_proto(failure_details_to_proto(Fatal("stop"))).is_non_retriable


def test_wire_details_become_public_failure_details() -> None:
    wire = pb.TaskFailureDetails(errorType="builtins.ValueError", errorMessage="bad",
                                 innerFailure=pb.TaskFailureDetails(errorType="x.Y", errorMessage="root"))
    wire.properties["attempt"].number_value = 3
    details = failure_details_from_proto(wire)
    assert (details.message, details.error_type, details.stack_trace) == ("bad", "builtins.ValueError", None)
    assert details.inner_failure is not None and details.inner_failure.message == "root"
    assert details.properties == {"attempt": 3}


@pytest.mark.parametrize("error_type,query,expected", [
    (f"{__name__}.CardDeclined", PaymentError, True),          # subclass of the asked type
    (f"{__name__}.CardDeclined", CardDeclined, True),
    (f"{__name__}.PaymentError", CardDeclined, False),         # base is not caused by subclass
    ("CardDeclined", CardDeclined, True),                      # unqualified name from another SDK
    ("builtins.ValueError", "ValueError", True),               # by name
    ("builtins.ValueError", "builtins.ValueError", True),
    ("other.ValueError", "builtins.ValueError", False),        # both qualified: must match exactly
    ("", ValueError, False),
])
def test_is_caused_by(error_type: str, query: str | type[BaseException], expected: bool) -> None:
    details = task.FailureDetails("m", error_type, None)
    assert details.is_caused_by(query) is expected


def test_is_caused_by_rejects_non_exception_types() -> None:
    with pytest.raises(TypeError, match="exception class"):
        task.FailureDetails("m", "builtins.int", None).is_caused_by(int)  # type: ignore[arg-type]


def test_task_failed_error_wraps_an_exception_or_wire_details() -> None:
    from_exception = task.TaskFailedError("activity failed", ValueError("nope"))
    assert from_exception.details.error_type == "builtins.ValueError"
    from_wire = task.TaskFailedError("activity failed", pb.TaskFailureDetails(errorType="a.B", errorMessage="c"))
    assert (from_wire.details.error_type, from_wire.details.message, str(from_wire)) == ("a.B", "c", "activity failed")


def test_orchestration_failing_with_task_failed_error_keeps_the_task_failure_as_inner() -> None:
    inner = pb.TaskFailureDetails(errorType="builtins.ValueError", errorMessage="root cause")
    details = failure_details_to_proto(task.TaskFailedError("Activity task #1 failed: root cause", inner))
    assert details.errorType.endswith("TaskFailedError")
    assert details.innerFailure == inner
