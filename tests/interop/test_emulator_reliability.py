"""Crashes: the emulator killed with SIGKILL under load, and a worker killed in the middle of an activity.

Workers and clients are the official SDK (``emulator_load.py``) in subprocesses; the checks read the
emulator's state with raw stub calls.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc
import pytest
from google.protobuf import wrappers_pb2

from durabletask.emulator import Emulator
from durabletask.internal import orchestrator_service_pb2 as pb
from durabletask.internal import orchestrator_service_pb2_grpc as stubs
from tests.support.official import official_python, run_official, venv_dir

LOAD = Path(__file__).with_name("emulator_load.py")
COUNT = 60

pytestmark = pytest.mark.interop


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def official_process(*args: str) -> subprocess.Popen[str]:
    """Start an official-SDK script without waiting for it (same isolation as ``run_official``)."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    return subprocess.Popen([str(official_python()), "-I", str(LOAD), *args], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env,
                            cwd=str(venv_dir()))


def wait_for_line(proc: subprocess.Popen[str], text: str, timeout: float = 60) -> None:
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if text in line:
            return
        if not line and proc.poll() is not None:
            break
    raise AssertionError(f"{text!r} never printed")


def emulator_process(port: int, db: Path) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-m", "durabletask.emulator", "--port", str(port), "--db", str(db),
                             "--log-level", "WARNING"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            text=True)
    wait_for_line(proc, "Ctrl-C")
    return proc


@contextmanager
def stopping(*procs: subprocess.Popen[str]) -> Iterator[None]:
    try:
        yield
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait()


def statuses(stub: stubs.TaskHubSidecarServiceStub, prefix: str) -> dict[str, int]:
    query = pb.InstanceQuery(instanceIdPrefix=wrappers_pb2.StringValue(value=prefix))
    response = stub.QueryInstances(pb.QueryInstancesRequest(query=query), timeout=10)
    return {s.instanceId: s.orchestrationStatus for s in response.orchestrationState}


def check_all_completed(address: str, prefix: str) -> None:
    with grpc.insecure_channel(address) as channel:
        stub = stubs.TaskHubSidecarServiceStub(channel)
        for i in range(COUNT):
            response = stub.WaitForInstanceCompletion(
                pb.GetInstanceRequest(instanceId=f"{prefix}-{i}", getInputsAndOutputs=True), timeout=90)
            state = response.orchestrationState
            assert response.exists, f"{prefix}-{i} was lost"
            assert state.orchestrationStatus == pb.ORCHESTRATION_STATUS_COMPLETED, (i, state)
            assert state.output.value == str(i + 50), (i, state.output)


def test_emulator_killed_under_load_loses_nothing(tmp_path: Path) -> None:
    port = free_port()
    address = f"localhost:{port}"
    db = tmp_path / "emulator.db"
    emulator = emulator_process(port, db)
    worker = official_process("worker", address)
    with stopping(worker, emulator):
        wait_for_line(worker, "worker-ready")
        run_official(LOAD, "start", address, str(COUNT), "load", timeout=120)
        with grpc.insecure_channel(address) as channel:
            stub = stubs.TaskHubSidecarServiceStub(channel)
            deadline = time.monotonic() + 60
            while True:  # wait until most orchestrations are under way, none finished
                seen = statuses(stub, "load")
                in_flight = sum(1 for s in seen.values() if s == pb.ORCHESTRATION_STATUS_RUNNING)
                if in_flight >= 50:
                    break
                assert time.monotonic() < deadline, seen
                time.sleep(0.02)
        emulator.send_signal(signal.SIGKILL)
        emulator.wait()
        assert len(seen) == COUNT
        emulator = emulator_process(port, db)  # same file, same port: the worker reconnects
        with stopping(emulator):
            check_all_completed(address, "load")


def test_a_dead_workers_activity_is_redelivered_to_another_worker() -> None:
    with Emulator(memory=True) as emulator:
        doomed = official_process("worker", emulator.address, "--slow")
        with stopping(doomed):
            wait_for_line(doomed, "worker-ready")
            run_official(LOAD, "start", emulator.address, "1", "dead", timeout=120)
            wait_for_line(doomed, "step-started")
            doomed.send_signal(signal.SIGKILL)
            doomed.wait()
        rescuer = official_process("worker", emulator.address)
        with stopping(rescuer):
            wait_for_line(rescuer, "worker-ready")
            with grpc.insecure_channel(emulator.address) as channel:
                stub = stubs.TaskHubSidecarServiceStub(channel)
                response = stub.WaitForInstanceCompletion(
                    pb.GetInstanceRequest(instanceId="dead-0", getInputsAndOutputs=True), timeout=60)
            assert response.orchestrationState.orchestrationStatus == pb.ORCHESTRATION_STATUS_COMPLETED
            assert response.orchestrationState.output.value == "50"
            rescuer.stdin.close()  # type: ignore[union-attr]
