"""A worker killed (SIGKILL) in the middle of an entity batch loses no operation: the batch goes to another worker.

Workers and the client are the official SDK (``emulator_entity_load.py``) in subprocesses; the check
reads the entity with raw stub calls.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import grpc
import pytest

from durabletask.emulator import Emulator
from durabletask.internal import orchestrator_service_pb2 as pb
from durabletask.internal import orchestrator_service_pb2_grpc as stubs
from tests.interop.test_emulator_reliability import stopping, wait_for_line
from tests.support.official import official_python, run_official, venv_dir

LOAD = Path(__file__).with_name("emulator_entity_load.py")
COUNT = 10

pytestmark = pytest.mark.interop


def entity_worker(address: str, *args: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    return subprocess.Popen([str(official_python()), "-I", str(LOAD), "worker", address, *args],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            env=env, cwd=str(venv_dir()))


def test_a_worker_killed_in_the_middle_of_an_entity_batch_loses_no_operation(tmp_path: Path) -> None:
    with Emulator(db_path=tmp_path / "emulator.db") as emulator:
        doomed = entity_worker(emulator.address, "--slow")
        with stopping(doomed):
            wait_for_line(doomed, "worker-ready")
            run_official(LOAD, "signal", emulator.address, "crash", str(COUNT), timeout=120)
            wait_for_line(doomed, "op-started")
            doomed.send_signal(signal.SIGKILL)
            doomed.wait()
        rescuer = entity_worker(emulator.address)
        with stopping(rescuer), grpc.insecure_channel(emulator.address) as channel:
            wait_for_line(rescuer, "worker-ready")
            stub = stubs.TaskHubSidecarServiceStub(channel)
            deadline = time.monotonic() + 60
            while True:
                response = stub.GetEntity(pb.GetEntityRequest(instanceId="@counter@crash", includeState=True))
                state = response.entity.serializedState.value if response.exists else None
                if state == str(COUNT) and response.entity.backlogQueueSize == 0:
                    break
                assert time.monotonic() < deadline, (state, response)
                time.sleep(0.05)
            time.sleep(0.3)  # nothing runs twice either
            response = stub.GetEntity(pb.GetEntityRequest(instanceId="@counter@crash", includeState=True))
            assert response.entity.serializedState.value == str(COUNT)
            rescuer.stdin.close()  # type: ignore[union-attr]
