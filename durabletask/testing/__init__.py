"""Test helpers with the official SDK's names: an in-process backend on a local port.

``create_test_backend(port)`` and ``InMemoryOrchestrationBackend`` behave like the official ones
(start, stop, reset), but run our emulator with its in-memory store, so tests written for the
official SDK run unchanged, with durable timers, leases and redelivery that behave like a real
backend.
"""

from durabletask.testing.in_memory_backend import InMemoryOrchestrationBackend, create_test_backend

__all__ = ["InMemoryOrchestrationBackend", "create_test_backend"]
