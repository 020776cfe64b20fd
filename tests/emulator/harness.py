"""Raw-stub helpers: play the worker's and the client's part by hand against an in-process emulator."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import grpc
from google.protobuf import wrappers_pb2

from durabletask.emulator import Emulator
from durabletask.internal import orchestrator_service_pb2 as pb
from durabletask.internal import orchestrator_service_pb2_grpc as stubs

COMPLETED = pb.ORCHESTRATION_STATUS_COMPLETED
FAILED = pb.ORCHESTRATION_STATUS_FAILED


def sv(value: str) -> wrappers_pb2.StringValue:
    return wrappers_pb2.StringValue(value=value)


def kinds(events: Any) -> list[str]:
    return [e.WhichOneof("eventType") for e in events]


class WorkItems:
    """A ``GetWorkItems`` stream read on a thread, so tests can wait for items with a timeout."""

    def __init__(self, stub: stubs.TaskHubSidecarServiceStub, request: pb.GetWorkItemsRequest | None = None,
                 metadata: list[tuple[str, str]] | None = None, pings: bool = False) -> None:
        self.call = stub.GetWorkItems(request or pb.GetWorkItemsRequest(), metadata=metadata)
        self.items: queue.Queue[pb.WorkItem | BaseException] = queue.Queue()
        self.pings = pings
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        try:
            for item in self.call:
                if item.HasField("healthPing") and not self.pings:
                    continue
                self.items.put(item)
        except BaseException as error:
            self.items.put(error)

    def next(self, timeout: float = 5.0) -> pb.WorkItem:
        item = self.items.get(timeout=timeout)
        if isinstance(item, BaseException):
            raise item
        return item

    def none(self, timeout: float = 0.3) -> None:
        try:
            item = self.items.get(timeout=timeout)
        except queue.Empty:
            return
        raise AssertionError(f"unexpected work item: {item}")

    def close(self) -> None:
        self.call.cancel()


class Harness:
    def __init__(self, emulator: Emulator) -> None:
        self.emulator = emulator
        self.channel = grpc.insecure_channel(emulator.address)
        self.stub = stubs.TaskHubSidecarServiceStub(self.channel)
        self.streams: list[WorkItems] = []

    def stream(self, **kwargs: Any) -> WorkItems:
        items = WorkItems(self.stub, **kwargs)
        self.streams.append(items)
        return items

    def start(self, name: str = "orch", input: str | None = None, **kwargs: Any) -> str:
        request = pb.CreateInstanceRequest(name=name, input=sv(input) if input is not None else None, **kwargs)
        return self.stub.StartInstance(request).instanceId

    def state(self, instance_id: str, payloads: bool = True) -> pb.OrchestrationState:
        response = self.stub.GetInstance(pb.GetInstanceRequest(instanceId=instance_id, getInputsAndOutputs=payloads))
        assert response.exists, instance_id
        return response.orchestrationState

    def wait(self, instance_id: str, timeout: float = 5.0) -> pb.OrchestrationState:
        response = self.stub.WaitForInstanceCompletion(
            pb.GetInstanceRequest(instanceId=instance_id, getInputsAndOutputs=True), timeout=timeout)
        return response.orchestrationState

    def history(self, instance_id: str) -> list[pb.HistoryEvent]:
        chunks = self.stub.StreamInstanceHistory(pb.StreamInstanceHistoryRequest(instanceId=instance_id))
        return [e for chunk in chunks for e in chunk.events]

    def complete(self, item: pb.WorkItem, *actions: pb.OrchestratorAction, **kwargs: Any) -> None:
        self.stub.CompleteOrchestratorTask(pb.OrchestratorResponse(
            instanceId=item.orchestratorRequest.instanceId, completionToken=item.completionToken,
            actions=list(actions), **kwargs))

    def finish_activity(self, item: pb.WorkItem, result: str | None = None, **kwargs: Any) -> None:
        request = item.activityRequest
        self.stub.CompleteActivityTask(pb.ActivityResponse(
            instanceId=request.orchestrationInstance.instanceId, taskId=request.taskId,
            result=sv(result) if result is not None else None, completionToken=item.completionToken, **kwargs))

    def close(self) -> None:
        for items in self.streams:
            items.close()
        self.channel.close()


@contextmanager
def harness(**kwargs: Any) -> Iterator[Harness]:
    kwargs.setdefault("memory", True)
    with Emulator(**kwargs) as emulator:
        h = Harness(emulator)
        try:
            yield h
        finally:
            h.close()


# -- actions


def schedule(action_id: int, name: str = "act", input: str | None = None) -> pb.OrchestratorAction:
    return pb.OrchestratorAction(id=action_id, scheduleTask=pb.ScheduleTaskAction(
        name=name, input=sv(input) if input is not None else None))


def finish(action_id: int, result: str | None = None, status: int = COMPLETED,
           failure: pb.TaskFailureDetails | None = None) -> pb.OrchestratorAction:
    return pb.OrchestratorAction(id=action_id, completeOrchestration=pb.CompleteOrchestrationAction(
        orchestrationStatus=status, result=sv(result) if result is not None else None,  # type: ignore[arg-type]
        failureDetails=failure))


def timer(action_id: int, fire_at: Any) -> pb.OrchestratorAction:
    return pb.OrchestratorAction(id=action_id, createTimer=pb.CreateTimerAction(fireAt=fire_at))


def sub(action_id: int, instance_id: str, name: str = "child", input: str | None = None) -> pb.OrchestratorAction:
    return pb.OrchestratorAction(id=action_id, createSubOrchestration=pb.CreateSubOrchestrationAction(
        instanceId=instance_id, name=name, input=sv(input) if input is not None else None))


def continue_as_new(action_id: int, input: str,
                    carryover: list[pb.HistoryEvent] | None = None) -> pb.OrchestratorAction:
    return pb.OrchestratorAction(id=action_id, completeOrchestration=pb.CompleteOrchestrationAction(
        orchestrationStatus=pb.ORCHESTRATION_STATUS_CONTINUED_AS_NEW, result=sv(input),
        carryoverEvents=carryover or []))
