"""Running one orchestration through a worker under test, start to finish."""

from __future__ import annotations

from typing import Any

from durabletask.client import OrchestrationState, TaskHubGrpcClient


def run_once(worker: Any, address: str, orchestrator: Any, input: Any = None, *, timeout: float = 10.0,
             **client_options: Any) -> OrchestrationState:
    """Start ``worker``, run ``orchestrator`` to its end with a client of ``address`` (``client_options`` go to
    the client), stop the worker; the orchestration's final state."""
    worker.start()
    try:
        with TaskHubGrpcClient(host_address=address, **client_options) as client:
            instance_id = client.schedule_new_orchestration(orchestrator, input=input)
            state = client.wait_for_orchestration_completion(instance_id, timeout=timeout)
    finally:
        worker.stop(2)
    assert state is not None, f"instance {instance_id} is gone"
    return state
