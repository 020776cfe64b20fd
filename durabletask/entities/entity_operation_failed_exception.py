"""`EntityOperationFailedException`: an entity operation called from an orchestration failed."""

from __future__ import annotations

from durabletask.entities.entity_instance_id import EntityInstanceId
from durabletask.internal import orchestrator_service_pb2 as pb


class EntityOperationFailedException(Exception):
    """An entity operation failed; orchestrations see it as the cause of a `TaskFailedError`.

    Args:
        entity_instance_id: The entity whose operation failed.
        operation_name: The operation.
        failure_details: What the entity's code raised, as the backend reported it.
    """

    def __init__(self, entity_instance_id: EntityInstanceId, operation_name: str,
                 failure_details: pb.TaskFailureDetails) -> None:
        super().__init__()
        self.entity_instance_id = entity_instance_id
        self.operation_name = operation_name
        self.failure_details = failure_details

    def __str__(self) -> str:
        return (f"Operation '{self.operation_name}' on entity '{self.entity_instance_id}' failed with error: "
                f"{self.failure_details.errorMessage}")
