"""What the client returns: orchestration status and state, query options, pages, purge results."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from typing import Any, Generic, TypeVar, overload

from durabletask.internal import orchestrator_service_pb2 as pb
from durabletask.internal.failures import FailureDetails, failure_details_from_proto
from durabletask.internal.replay.actions import from_timestamp
from durabletask.serialization import DEFAULT_DATA_CONVERTER, DataConverter

T = TypeVar("T")
TItem = TypeVar("TItem")


class OrchestrationStatus(Enum):
    """The runtime status of an orchestration instance."""

    RUNNING = pb.ORCHESTRATION_STATUS_RUNNING
    COMPLETED = pb.ORCHESTRATION_STATUS_COMPLETED
    CONTINUED_AS_NEW = pb.ORCHESTRATION_STATUS_CONTINUED_AS_NEW
    FAILED = pb.ORCHESTRATION_STATUS_FAILED
    CANCELED = pb.ORCHESTRATION_STATUS_CANCELED
    TERMINATED = pb.ORCHESTRATION_STATUS_TERMINATED
    PENDING = pb.ORCHESTRATION_STATUS_PENDING
    SUSPENDED = pb.ORCHESTRATION_STATUS_SUSPENDED

    def __str__(self) -> str:
        return self.name

    @property
    def is_terminal(self) -> bool:
        """True for statuses an instance never leaves on its own (completed, failed, terminated)."""
        return self in (OrchestrationStatus.COMPLETED, OrchestrationStatus.FAILED,
                        OrchestrationStatus.TERMINATED, OrchestrationStatus.CANCELED)


class OrchestrationFailedError(Exception):
    """Raised by `OrchestrationState.raise_if_failed` for a failed orchestration."""

    def __init__(self, message: str, failure_details: FailureDetails) -> None:
        super().__init__(message)
        self._failure_details = failure_details

    @property
    def failure_details(self) -> FailureDetails:
        """Why the orchestration failed."""
        return self._failure_details


@dataclass
class OrchestrationState:
    """A snapshot of an orchestration instance.

    The first fields match the official SDK's; the ones after ``failure_details`` are additions.
    Payloads are kept encoded; ``get_input``/``get_output``/``get_custom_status`` decode them.
    """

    instance_id: str
    name: str
    runtime_status: OrchestrationStatus
    created_at: datetime
    last_updated_at: datetime
    serialized_input: str | None
    serialized_output: str | None
    serialized_custom_status: str | None
    failure_details: FailureDetails | None
    version: str | None = None
    tags: dict[str, str] = field(default_factory=dict)
    parent_instance_id: str | None = None
    execution_id: str | None = None
    completed_at: datetime | None = None
    scheduled_start_at: datetime | None = None
    _data_converter: DataConverter = field(default=DEFAULT_DATA_CONVERTER, compare=False, repr=False)

    @overload
    def get_input(self, expected_type: type[T]) -> T | None: ...
    @overload
    def get_input(self, expected_type: None = ...) -> Any: ...
    def get_input(self, expected_type: type | None = None) -> Any:
        """Decode the input, into ``expected_type`` if given; None if there is no input."""
        return self._decode(self.serialized_input, expected_type)

    @overload
    def get_output(self, expected_type: type[T]) -> T | None: ...
    @overload
    def get_output(self, expected_type: None = ...) -> Any: ...
    def get_output(self, expected_type: type | None = None) -> Any:
        """Decode the output, into ``expected_type`` if given; None if there is no output."""
        return self._decode(self.serialized_output, expected_type)

    @overload
    def get_custom_status(self, expected_type: type[T]) -> T | None: ...
    @overload
    def get_custom_status(self, expected_type: None = ...) -> Any: ...
    def get_custom_status(self, expected_type: type | None = None) -> Any:
        """Decode the custom status, into ``expected_type`` if given; None if there is none."""
        return self._decode(self.serialized_custom_status, expected_type)

    def raise_if_failed(self) -> None:
        """Raise `OrchestrationFailedError` if the orchestration failed."""
        if self.failure_details is not None:
            raise OrchestrationFailedError(
                f"Orchestration '{self.instance_id}' failed: {self.failure_details.message}", self.failure_details
            )

    def _decode(self, data: str | None, expected_type: type | None) -> Any:
        return None if data is None else self._data_converter.deserialize(data, expected_type)


@dataclass
class OrchestrationQuery:
    """Filters for querying orchestration instances.

    Attributes:
        created_time_from: Only instances created at or after this time.
        created_time_to: Only instances created at or before this time.
        runtime_status: Only instances in one of these statuses.
        max_instance_count: Page size asked of the backend.
        fetch_inputs_and_outputs: Include payloads in the results.
        instance_id_prefix: Only instances whose ID starts with this.
    """

    created_time_from: datetime | None = None
    created_time_to: datetime | None = None
    runtime_status: list[OrchestrationStatus] | None = None
    max_instance_count: int | None = (1 << 31) - 1
    fetch_inputs_and_outputs: bool = False
    instance_id_prefix: str | None = None


@dataclass
class EntityQuery:
    """Filters for querying entities.

    Attributes:
        instance_id_starts_with: Only entities whose ID starts with this (e.g. ``"@counter@"``
            for every counter; a prefix without the leading ``@`` is taken as a name prefix).
        last_modified_from: Only entities changed at or after this time.
        last_modified_to: Only entities changed at or before this time.
        include_state: Return each entity's state.
        include_transient: Also return entities without state that have queued operations or a lock.
        page_size: Entities per page asked of the backend (None: the backend decides).
    """

    instance_id_starts_with: str | None = None
    last_modified_from: datetime | None = None
    last_modified_to: datetime | None = None
    include_state: bool = True
    include_transient: bool = False
    page_size: int | None = None


@dataclass
class CleanEntityStorageResult:
    """What `clean_entity_storage` did."""

    empty_entities_removed: int
    orphaned_locks_released: int


@dataclass
class PurgeInstancesResult:
    """How many instances a purge deleted; ``is_complete`` is None when the backend does not say."""

    deleted_instance_count: int
    is_complete: bool | None


@dataclass
class Page(Generic[TItem]):
    """One page of results; pass ``continuation_token`` back to get the next (None: last page)."""

    items: list[TItem]
    continuation_token: str | None


def _string(value: Any, present: bool) -> str | None:
    return value.value if present else None


def parse_orchestration_state(state: pb.OrchestrationState,
                              data_converter: DataConverter | None = None) -> OrchestrationState:
    """Convert the wire's OrchestrationState into the public one."""
    failure = None
    if state.HasField("failureDetails") and (state.failureDetails.errorType or state.failureDetails.errorMessage):
        failure = failure_details_from_proto(state.failureDetails)
    return OrchestrationState(
        instance_id=state.instanceId,
        name=state.name,
        runtime_status=OrchestrationStatus(state.orchestrationStatus),
        created_at=from_timestamp(state.createdTimestamp),
        last_updated_at=from_timestamp(state.lastUpdatedTimestamp),
        serialized_input=state.input.value if state.input.value else None,
        serialized_output=state.output.value if state.output.value else None,
        serialized_custom_status=state.customStatus.value if state.HasField("customStatus") else None,
        failure_details=failure,
        version=_string(state.version, state.HasField("version")),
        tags=dict(state.tags),
        parent_instance_id=_string(state.parentInstanceId, state.HasField("parentInstanceId")),
        execution_id=_string(state.executionId, state.HasField("executionId")),
        completed_at=from_timestamp(state.completedTimestamp) if state.HasField("completedTimestamp") else None,
        scheduled_start_at=(from_timestamp(state.scheduledStartTimestamp)
                            if state.HasField("scheduledStartTimestamp") else None),
        _data_converter=data_converter or DEFAULT_DATA_CONVERTER,
    )


def new_orchestration_state(instance_id: str, response: pb.GetInstanceResponse,
                            data_converter: DataConverter | None = None) -> OrchestrationState | None:
    """The state in a GetInstance response, or None if the instance does not exist."""
    if not response.exists:
        return None
    state = parse_orchestration_state(response.orchestrationState, data_converter)
    state.instance_id = instance_id
    return state
