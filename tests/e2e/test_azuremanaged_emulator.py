"""The DTS client, async client and worker against our emulator, in-process.

* Two task hubs on one emulator: instances, work items and queries never cross hubs.
* Built from ``Endpoint=http://localhost:PORT;Authentication=None;TaskHub=default`` (and from the
  environment variables of the public samples), a client and a worker run an orchestration.
* With ``require_auth``, a client and worker with a (fake) credential work, tokens renewed on the way
  are accepted, and a client or worker without a credential is refused.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import grpc
import pytest
from azure.core.credentials import AccessToken

from durabletask import task
from durabletask.azuremanaged import (
    AsyncDurableTaskSchedulerClient,
    DurableTaskSchedulerClient,
    DurableTaskSchedulerWorker,
)
from durabletask.client import OrchestrationStatus
from durabletask.emulator import Emulator
from durabletask.emulator.auth import fingerprint
from durabletask.grpc_options import GrpcWorkerResiliencyOptions

FAST = GrpcWorkerResiliencyOptions(reconnect_backoff_base_seconds=0.05, reconnect_backoff_cap_seconds=0.2)


class FakeCredential:
    """A synchronous azure-identity-like credential; tokens ``<prefix>-1``, ``<prefix>-2``, ..."""

    def __init__(self, prefix: str, lifetime: float = 3600) -> None:
        self.prefix, self.lifetime = prefix, lifetime
        self.issued: list[str] = []
        self._lock = threading.Lock()

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        assert scopes == ("https://durabletask.io/.default",)
        with self._lock:
            token = f"{self.prefix}-{len(self.issued) + 1}"
            self.issued.append(token)
        return AccessToken(token, int(time.time() + self.lifetime))


class AsyncFakeCredential(FakeCredential):
    async def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:  # type: ignore[override]
        await asyncio.sleep(0)
        return super().get_token(*scopes, **kwargs)


def wait_status(client: DurableTaskSchedulerClient, instance_id: str, status: OrchestrationStatus,
                timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = client.get_orchestration_state(instance_id)
        if state is not None and state.runtime_status == status:
            return
        time.sleep(0.02)
    raise AssertionError(f"{instance_id} did not reach {status.name}")


# ----------------------------------------------------------------- two task hubs


def hub_worker(emulator: Emulator, hub: str, ran: Counter[str]) -> DurableTaskSchedulerWorker:
    """A worker whose ``who`` orchestrator answers with the hub it runs in (through an activity)."""
    worker = DurableTaskSchedulerWorker(host_address=emulator.endpoint, taskhub=hub, token_credential=None,
                                        resiliency_options=FAST)

    def tag(ctx: task.ActivityContext, value: str) -> str:
        ran[hub] += 1
        return f"{hub}:{value}"

    def who(ctx: task.OrchestrationContext, value: str) -> Any:
        result = yield ctx.call_activity("tag", input=value)
        return result

    def waiter(ctx: task.OrchestrationContext, _: Any) -> Any:
        got = yield ctx.wait_for_external_event("go")
        return f"{hub}:{got}"

    worker.add_activity(tag, name="tag")
    worker.add_orchestrator(who, name="who")
    worker.add_orchestrator(waiter, name="waiter")
    return worker


@pytest.fixture(scope="module")
def two_hubs() -> Iterator[Emulator]:
    with Emulator(memory=True, task_hubs=["hub-a", "hub-b"]) as emulator:
        yield emulator


def test_instances_work_items_and_queries_never_cross_hubs(two_hubs: Emulator) -> None:
    ran: Counter[str] = Counter()
    worker_a, worker_b = hub_worker(two_hubs, "hub-a", ran), hub_worker(two_hubs, "hub-b", ran)
    a = DurableTaskSchedulerClient(host_address=two_hubs.endpoint, taskhub="hub-a", token_credential=None)
    b = DurableTaskSchedulerClient(host_address=two_hubs.endpoint, taskhub="hub-b", token_credential=None)
    try:
        worker_a.start()
        assert worker_a.wait_until_connected(10)

        # The same instance ID in both hubs: two instances. Only hub A has a worker yet.
        assert b.schedule_new_orchestration("who", input="x", instance_id="shared") == "shared"
        assert a.schedule_new_orchestration("who", input="x", instance_id="shared") == "shared"
        b.schedule_new_orchestration("waiter", instance_id="only-b")
        state_a = a.wait_for_orchestration_completion("shared", timeout=20)
        assert state_a is not None and state_a.runtime_status == OrchestrationStatus.COMPLETED
        assert state_a.serialized_output == '"hub-a:x"'
        time.sleep(0.5)  # give a wrongly routed work item every chance to show up
        for instance_id in ("shared", "only-b"):
            state_b = b.get_orchestration_state(instance_id)
            assert state_b is not None and state_b.runtime_status == OrchestrationStatus.PENDING, instance_id
        assert ran == Counter({"hub-a": 1})

        # Reads and queries see one hub only.
        assert a.get_orchestration_state("only-b") is None
        assert {s.instance_id for s in a.get_all_orchestration_states()} == {"shared"}
        assert {s.instance_id for s in b.get_all_orchestration_states()} == {"shared", "only-b"}

        # Management calls naming an instance of the other hub do not reach it.
        with pytest.raises(grpc.RpcError):
            a.raise_orchestration_event("only-b", "go", data="from-a")
        with pytest.raises(grpc.RpcError):
            a.terminate_orchestration("only-b")
        assert a.purge_orchestration("shared").deleted_instance_count == 1
        still_b = b.get_orchestration_state("shared")
        assert still_b is not None and still_b.runtime_status == OrchestrationStatus.PENDING

        # Hub B's worker runs hub B's work, with hub B's results.
        worker_b.start()
        assert worker_b.wait_until_connected(10)
        state_b = b.wait_for_orchestration_completion("shared", timeout=20)
        assert state_b is not None and state_b.serialized_output == '"hub-b:x"'
        b.raise_orchestration_event("only-b", "go", data="from-b")
        done = b.wait_for_orchestration_completion("only-b", timeout=20)
        assert done is not None and done.serialized_output == '"hub-b:from-b"'
        assert ran == Counter({"hub-a": 1, "hub-b": 1})
        assert a.get_orchestration_state("shared") is None  # purged in A only

        async def histories() -> tuple[int, int]:
            async with AsyncDurableTaskSchedulerClient(host_address=two_hubs.endpoint, taskhub="hub-b",
                                                       token_credential=None) as async_b, \
                    AsyncDurableTaskSchedulerClient(host_address=two_hubs.endpoint, taskhub="hub-a",
                                                    token_credential=None) as async_a:
                assert await async_a.get_orchestration_state("only-b") is None
                events = await async_b.get_orchestration_history("only-b")  # a server stream
                query = await async_b.get_all_orchestration_states()
                return len(events), len(query)

        event_count, instance_count = asyncio.run(histories())
        assert event_count > 0 and instance_count == 2
    finally:
        worker_a.stop(2)
        worker_b.stop(2)
        a.close()
        b.close()


# ----------------------------------------------------------------- connection strings and environment


def greet(ctx: task.ActivityContext, name: str) -> str:
    return f"Hello, {name}!"


def greeting(ctx: task.OrchestrationContext, name: str) -> Any:
    first = yield ctx.call_activity(greet, input=name)
    yield ctx.create_timer(timedelta(milliseconds=50))
    return first


def test_connection_string_client_and_worker_run_an_orchestration() -> None:
    with Emulator(memory=True) as emulator:
        connection_string = f"Endpoint=http://localhost:{emulator.port};Authentication=None;TaskHub=default"
        worker = DurableTaskSchedulerWorker.from_connection_string(connection_string, resiliency_options=FAST)
        worker.add_activity(greet)
        worker.add_orchestrator(greeting)
        with worker, DurableTaskSchedulerClient.from_connection_string(connection_string) as client:
            worker.start()
            instance_id = client.schedule_new_orchestration(greeting, input="Tokyo")
            state = client.wait_for_orchestration_completion(instance_id, timeout=20)
            assert state is not None and state.runtime_status == OrchestrationStatus.COMPLETED
            assert state.serialized_output == '"Hello, Tokyo!"'

            async def from_async() -> Any:
                async with AsyncDurableTaskSchedulerClient.from_connection_string(connection_string) as async_client:
                    started = await async_client.schedule_new_orchestration(greeting, input="Seattle")
                    return await async_client.wait_for_orchestration_completion(started, timeout=20)

            async_state = asyncio.run(from_async())
            assert async_state is not None and async_state.serialized_output == '"Hello, Seattle!"'


def test_environment_variables_of_the_samples() -> None:
    with Emulator(memory=True, task_hubs=["samples"]) as emulator:
        for environ in ({"ENDPOINT": emulator.endpoint, "TASKHUB": "samples"},
                        {"DURABLE_TASK_SCHEDULER_CONNECTION_STRING": emulator.connection_string("samples")}):
            worker = DurableTaskSchedulerWorker.from_environment(environ, resiliency_options=FAST)
            worker.add_activity(greet)
            worker.add_orchestrator(greeting)
            with worker, DurableTaskSchedulerClient.from_environment(environ) as client:
                assert client.token_source is None  # a loopback endpoint: no token, like the samples
                worker.start()
                instance_id = client.schedule_new_orchestration(greeting, input="env")
                state = client.wait_for_orchestration_completion(instance_id, timeout=20)
                assert state is not None and state.serialized_output == '"Hello, env!"'


# ----------------------------------------------------------------- bearer tokens required


@pytest.fixture()
def auth_emulator() -> Iterator[Emulator]:
    with Emulator(memory=True, require_auth=True) as emulator:
        yield emulator


def test_with_credentials_everything_works(auth_emulator: Emulator) -> None:
    client_credential = FakeCredential("client")
    worker_credential = AsyncFakeCredential("worker")
    worker = DurableTaskSchedulerWorker(host_address=auth_emulator.endpoint, taskhub="default",
                                        token_credential=worker_credential, resiliency_options=FAST)
    worker.add_activity(greet)
    worker.add_orchestrator(greeting)
    with worker, DurableTaskSchedulerClient(host_address=auth_emulator.endpoint, taskhub="default",
                                            token_credential=client_credential) as client:
        worker.start()
        assert worker.wait_until_connected(10)
        instance_id = client.schedule_new_orchestration(greeting, input="auth")
        state = client.wait_for_orchestration_completion(instance_id, timeout=20)
        assert state is not None and state.serialized_output == '"Hello, auth!"'
        assert client.get_orchestration_history(instance_id)

        async def from_async() -> Any:
            async with AsyncDurableTaskSchedulerClient(host_address=auth_emulator.endpoint, taskhub="default",
                                                       token_credential=AsyncFakeCredential("async")) as async_client:
                history = await async_client.get_orchestration_history(instance_id)
                return await async_client.get_orchestration_state(instance_id), history

        async_state, history = asyncio.run(from_async())
        assert async_state is not None and async_state.runtime_status == OrchestrationStatus.COMPLETED
        assert history
    auth = auth_emulator.auth
    assert auth is not None and auth.refused == 0 and auth.accepted > 0
    assert client_credential.issued == ["client-1"] and worker_credential.issued == ["worker-1"]
    assert {fingerprint("client-1"), fingerprint("worker-1"), fingerprint("async-1")} <= set(auth.fingerprints)


def test_renewed_tokens_are_sent_and_accepted(auth_emulator: Emulator) -> None:
    # Tokens that live 4 s are renewed at half-life: several renewals during this test.
    client_credential = FakeCredential("short-client", lifetime=4)
    worker_credential = FakeCredential("short-worker", lifetime=4)
    worker = DurableTaskSchedulerWorker(host_address=auth_emulator.endpoint, taskhub="default",
                                        token_credential=worker_credential, resiliency_options=FAST)
    worker.add_activity(greet)
    worker.add_orchestrator(greeting)
    with worker, DurableTaskSchedulerClient(host_address=auth_emulator.endpoint, taskhub="default",
                                            token_credential=client_credential) as client:
        worker.start()
        deadline = time.monotonic() + 5.5
        outputs = []
        while time.monotonic() < deadline:
            instance_id = client.schedule_new_orchestration(greeting, input="again")
            state = client.wait_for_orchestration_completion(instance_id, timeout=20)
            assert state is not None
            outputs.append(state.serialized_output)
            time.sleep(0.2)
    assert set(outputs) == {'"Hello, again!"'}
    assert len(client_credential.issued) >= 2 and len(worker_credential.issued) >= 2
    auth = auth_emulator.auth
    assert auth is not None and auth.refused == 0
    seen = set(auth.fingerprints)
    assert {fingerprint(t) for t in client_credential.issued[:2] + worker_credential.issued[:2]} <= seen


def test_without_a_credential_clients_are_refused(auth_emulator: Emulator) -> None:
    with DurableTaskSchedulerClient(host_address=auth_emulator.endpoint, taskhub="default",
                                    token_credential=None) as client, pytest.raises(grpc.RpcError) as info:
        client.schedule_new_orchestration("anything")
    error: Any = info.value
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "bearer token is required" in error.details()

    async def from_async() -> None:
        async with AsyncDurableTaskSchedulerClient(host_address=auth_emulator.endpoint, taskhub="default",
                                                   token_credential=None) as async_client:
            await async_client.get_orchestration_history("anything")  # a server stream is refused too

    with pytest.raises(grpc.aio.AioRpcError) as async_info:
        asyncio.run(from_async())
    assert async_info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    auth = auth_emulator.auth
    assert auth is not None and auth.refused >= 2 and auth.accepted == 0


def test_without_a_credential_a_worker_never_gets_work(auth_emulator: Emulator) -> None:
    ran: list[str] = []

    def lonely(ctx: task.OrchestrationContext, _: Any) -> str:
        ran.append(ctx.instance_id)
        return "ran"

    worker = DurableTaskSchedulerWorker(host_address=auth_emulator.endpoint, taskhub="default",
                                        token_credential=None, resiliency_options=FAST)
    worker.add_orchestrator(lonely)
    with worker, DurableTaskSchedulerClient(host_address=auth_emulator.endpoint, taskhub="default",
                                            token_credential=FakeCredential("client")) as client:
        worker.start()
        instance_id = client.schedule_new_orchestration(lonely)
        assert not worker.wait_until_connected(1.5)
        assert worker.is_running  # refused, backing off, still trying
        state = client.get_orchestration_state(instance_id)
        assert state is not None and state.runtime_status == OrchestrationStatus.PENDING
    assert ran == []
    auth = auth_emulator.auth
    assert auth is not None and auth.refused >= 2
