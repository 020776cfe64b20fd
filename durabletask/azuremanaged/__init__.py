"""Azure Durable Task Scheduler (DTS): client, asyncio client and worker, connection strings.

``from durabletask.azuremanaged import DurableTaskSchedulerClient, DurableTaskSchedulerWorker`` works
(the submodules ``client``, ``worker`` and ``connection`` hold the same names). See
``docs/azure-managed.md``.
"""

from __future__ import annotations

from durabletask.azuremanaged.client import AsyncDurableTaskSchedulerClient, DurableTaskSchedulerClient
from durabletask.azuremanaged.connection import ConnectionString
from durabletask.azuremanaged.worker import DurableTaskSchedulerWorker

__all__ = [
    "AsyncDurableTaskSchedulerClient",
    "ConnectionString",
    "DurableTaskSchedulerClient",
    "DurableTaskSchedulerWorker",
]
