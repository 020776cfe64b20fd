"""`InMemoryOrchestrationBackend`: our emulator, in memory, on a fixed local port."""

from __future__ import annotations

import logging

from durabletask.emulator import Emulator

logger = logging.getLogger("durabletask.testing")


class InMemoryOrchestrationBackend:
    """A Durable Task backend for tests, served in-process on ``localhost:<port>``.

    Args:
        max_history_size: Accepted for compatibility with the official class; histories are not
            capped.
        port: The TCP port to listen on (0 picks a free one; see `address` after `start`).
    """

    def __init__(self, max_history_size: int = 10000, port: int = 50051) -> None:
        self.max_history_size = max_history_size
        self._port = port
        self._emulator: Emulator | None = None

    @property
    def port(self) -> int:
        """The port served (the chosen one once started, when 0 was asked for)."""
        return self._emulator.port if self._emulator is not None else self._port

    @property
    def address(self) -> str:
        """``localhost:<port>``, for ``host_address=``."""
        return f"localhost:{self.port}"

    def start(self) -> str:
        """Start serving and return the address to connect to (``localhost:<port>``).

        Raises:
            RuntimeError: It is already running.
        """
        if self._emulator is not None:
            raise RuntimeError("the backend is already running; call stop() first")
        self._emulator = Emulator(port=self._port, memory=True).start()
        self._port = self._emulator.port
        return self.address

    def stop(self, grace: float | None = None) -> None:
        """Stop serving. State is lost (it lives in memory)."""
        if self._emulator is not None:
            self._emulator.stop()
            self._emulator = None

    def reset(self) -> None:
        """Forget every instance; a running backend keeps serving on the same port."""
        if self._emulator is not None:
            self.stop()
            self.start()

    def __enter__(self) -> InMemoryOrchestrationBackend:
        if self._emulator is None:
            self.start()
        return self

    def __exit__(self, *args: object) -> None:
        self.stop()


def create_test_backend(port: int = 50051, max_history_size: int = 10000) -> InMemoryOrchestrationBackend:
    """Create and start an `InMemoryOrchestrationBackend` on ``port``."""
    backend = InMemoryOrchestrationBackend(max_history_size=max_history_size, port=port)
    backend.start()
    return backend
