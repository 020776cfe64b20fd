"""Failure details and the exceptions an orchestration sees.

`FailureDetails` is the public, immutable view of the wire's `TaskFailureDetails`. Conversion in
both directions lives here so that the activity runner, the replay engine and the client all
describe a failure the same way.
"""

from __future__ import annotations

import traceback
from dataclasses import dataclass
from typing import Any

from google.protobuf import struct_pb2, wrappers_pb2

from durabletask.internal import orchestrator_service_pb2 as pb

_MAX_INNER_DEPTH = 10


def qualified_name(t: type) -> str:
    """Return ``module.QualName`` for a type, keeping ``builtins.`` as other SDKs keep ``System.``."""
    module = getattr(t, "__module__", None)
    name = getattr(t, "__qualname__", None) or getattr(t, "__name__", None) or repr(t)
    return f"{module}.{name}" if module else name


@dataclass(frozen=True)
class FailureDetails:
    """What is known about a failed activity, sub-orchestration or orchestration.

    Attributes:
        message: The error message (``str(exception)`` for Python failures).
        error_type: The fully qualified type name, e.g. ``builtins.ValueError``.
        stack_trace: The formatted stack trace, if the failing side sent one.
        inner_failure: The failure that caused this one, if any.
        properties: Extra structured data attached to the failure.
        is_non_retriable: True when the failing code asked not to be retried (see
            `NonRetriableError`); retry policies then give up at once.
    """

    message: str
    error_type: str
    stack_trace: str | None
    inner_failure: FailureDetails | None = None
    properties: dict[str, Any] | None = None
    is_non_retriable: bool = False

    def is_caused_by(self, error_type: str | type[BaseException]) -> bool:
        """Tell whether this failure was raised as ``error_type`` (or a subclass of it).

        Args:
            error_type: An exception class, matched together with every subclass of it that is
                already imported (no type is ever imported by name), or a type name, matched by
                name: a qualified name must match exactly unless one side is unqualified, in
                which case the class names are compared.

        Raises:
            TypeError: ``error_type`` is neither an exception class nor a string.
        """
        if isinstance(error_type, str):
            return _names_match(self.error_type, error_type)
        if not (isinstance(error_type, type) and issubclass(error_type, BaseException)):
            raise TypeError(
                f"is_caused_by() takes an exception class or a type name, not {error_type!r}"
            )
        stored = self.error_type
        if not stored:
            return False
        seen: set[type] = set()
        pending: list[type] = [error_type]
        while pending:
            candidate = pending.pop()
            if candidate in seen:
                continue
            seen.add(candidate)
            full = qualified_name(candidate)
            if stored == full or ("." not in stored and stored == full.rsplit(".", 1)[-1]):
                return True
            pending.extend(candidate.__subclasses__())
        return False


def _names_match(stored: str, wanted: str) -> bool:
    if not stored or not wanted:
        return False
    if stored == wanted:
        return True
    if "." in stored and "." in wanted:
        return False
    return stored.rsplit(".", 1)[-1] == wanted.rsplit(".", 1)[-1]


class TaskFailedError(Exception):
    """Raised into an orchestrator when a task it waits on has failed.

    Args:
        message: The message of this exception.
        details: The failure, either as the wire's ``TaskFailureDetails`` or as the exception
            that caused it.
    """

    def __init__(self, message: str, details: pb.TaskFailureDetails | BaseException) -> None:
        super().__init__(message)
        if isinstance(details, BaseException):
            details = failure_details_to_proto(details)
        self._failure_details = details
        self._details: FailureDetails | None = None

    @property
    def details(self) -> FailureDetails:
        """The failure that made the task fail."""
        if self._details is None:
            self._details = failure_details_from_proto(self._failure_details)
        return self._details


class NonDeterminismError(Exception):
    """The orchestrator did not repeat, during replay, what its history records."""


class OrchestrationStateError(Exception):
    """The history handed to the replay engine is malformed."""


class TaskCancelledError(Exception):
    """Raised by ``get_result()`` of a task that was cancelled."""


class NonRetriableError(Exception):
    """Raise this (or a subclass) from an activity to fail it without any retry.

    Retry policies stop at once on a failure marked non-retriable, whatever attempts remain.
    """




class EventTimeoutError(TaskFailedError, TimeoutError):
    """Raised into an orchestrator when ``wait_for_external_event(..., timeout=...)`` expires.

    It is both a `TaskFailedError` (like every task failure) and a `TimeoutError`, so either
    ``except`` clause catches it.
    """


class OrchestratorNotRegisteredError(Exception):
    """The history names an orchestrator that this worker does not have."""


def failure_details_to_proto(ex: BaseException, *, _depth: int = 0) -> pb.TaskFailureDetails:
    """Describe an exception as wire failure details, including its cause chain."""
    details = pb.TaskFailureDetails(
        errorType=qualified_name(type(ex)),
        errorMessage=str(ex),
        stackTrace=wrappers_pb2.StringValue(value="".join(traceback.format_tb(ex.__traceback__))),
        isNonRetriable=isinstance(ex, NonRetriableError),
    )
    if isinstance(ex, TaskFailedError):
        details.innerFailure.CopyFrom(ex._failure_details)
        return details
    cause = ex.__cause__ or ex.__context__
    if cause is not None and cause is not ex and _depth < _MAX_INNER_DEPTH:
        details.innerFailure.CopyFrom(failure_details_to_proto(cause, _depth=_depth + 1))
    return details


def failure_details_from_proto(details: pb.TaskFailureDetails) -> FailureDetails:
    """Build the public view of wire failure details."""
    properties: dict[str, Any] | None = None
    if details.properties:
        properties = {key: _plain(value) for key, value in details.properties.items()}
    return FailureDetails(
        message=details.errorMessage,
        error_type=details.errorType,
        stack_trace=details.stackTrace.value if details.HasField("stackTrace") else None,
        inner_failure=(
            failure_details_from_proto(details.innerFailure) if details.HasField("innerFailure") else None
        ),
        properties=properties,
        is_non_retriable=details.isNonRetriable,
    )


def _plain(value: struct_pb2.Value) -> Any:
    """A protobuf ``Value`` as a plain JSON-like value (numbers stay floats, as on the wire)."""
    kind = value.WhichOneof("kind")
    if kind == "struct_value":
        return {key: _plain(item) for key, item in value.struct_value.fields.items()}
    if kind == "list_value":
        return [_plain(item) for item in value.list_value.values]
    if kind is None:
        return str(value)  # no kind set: its text form, "" for an empty value (as the official SDK does)
    return None if kind == "null_value" else getattr(value, kind)


# These classes are public in durabletask.task (and the worker module); report them under those
# names, which is also what the official SDK writes into failure details (``errorType``).
for _public in (TaskFailedError, NonDeterminismError, OrchestrationStateError, TaskCancelledError,
                NonRetriableError, EventTimeoutError, FailureDetails):
    _public.__module__ = "durabletask.task"
OrchestratorNotRegisteredError.__module__ = "durabletask.worker"
