"""Messages for non-determinism: what history says versus what the orchestrator did."""

from __future__ import annotations

from durabletask.internal.failures import NonDeterminismError
from durabletask.internal.replay.actions import Action

_HINT = (
    "The orchestrator code must make the same calls in the same order on every replay; "
    "was it changed while this instance was running?"
)


def missing_action(seq: int, recorded: str) -> NonDeterminismError:
    """History confirms action ``seq`` but the orchestrator did not create any action with it."""
    return NonDeterminismError(
        f"Non-deterministic orchestrator: history records action #{seq} as {recorded}, "
        f"but during replay the orchestrator created no action #{seq}. {_HINT}"
    )


def mismatch(seq: int, recorded: str, actual: Action) -> NonDeterminismError:
    """History confirms another kind of action, or another target, than the orchestrator created."""
    return NonDeterminismError(
        f"Non-deterministic orchestrator: history records action #{seq} as {recorded}, "
        f"but during replay the orchestrator called {actual.describe()} as action #{seq}. {_HINT}"
    )
