"""``durabletask emulator`` and ``python -m durabletask.emulator``: arguments, banner, clean shutdown."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest

from durabletask.cli import build_parser
from durabletask.emulator.server import default_db_path
from durabletask.internal import orchestrator_service_pb2 as pb
from durabletask.internal import orchestrator_service_pb2_grpc as stubs


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_emulator_defaults() -> None:
    args = build_parser().parse_args(["emulator"])
    assert (args.host, args.port, args.db, args.memory, args.taskhubs) == ("127.0.0.1", 8080, None, False, None)


def test_db_and_memory_are_exclusive(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["emulator", "--db", "x.db", "--memory"])
    assert "not allowed with" in capsys.readouterr().err


def test_a_subcommand_is_required(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args([])


def test_default_db_path_follows_xdg(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    assert default_db_path() == tmp_path / "durabletask" / "emulator.db"
    monkeypatch.delenv("XDG_DATA_HOME")
    assert default_db_path() == Path.home() / ".local" / "share" / "durabletask" / "emulator.db"


def start(args: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "durabletask.emulator", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env={**os.environ, **(env or {})})


def read_banner(proc: subprocess.Popen[str]) -> str:
    assert proc.stdout is not None
    lines = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if "Ctrl-C" in line:
            return "".join(lines)
    proc.kill()
    raise AssertionError("no banner:\n" + "".join(lines))


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_module_entry_point_serves_and_stops_cleanly(tmp_path: Path, sig: signal.Signals) -> None:
    port = free_port()
    db = tmp_path / "state.db"
    proc = start(["--port", str(port), "--db", str(db)], env={"DTS_TASK_HUB_NAMES": "alpha,beta"})
    try:
        banner = read_banner(proc)
        assert f"localhost:{port}" in banner
        assert "alpha, beta" in banner and str(db) in banner
        assert f"Endpoint=http://localhost:{port};Authentication=None;TaskHub=alpha" in banner
        with grpc.insecure_channel(f"localhost:{port}") as channel:
            stub = stubs.TaskHubSidecarServiceStub(channel)
            iid = stub.StartInstance(pb.CreateInstanceRequest(name="o"), metadata=[("taskhub", "beta")]).instanceId
            state = stub.GetInstance(pb.GetInstanceRequest(instanceId=iid), metadata=[("taskhub", "beta")])
            assert state.exists
            with pytest.raises(grpc.RpcError) as error:  # no header, and no 'default' hub here
                stub.GetInstance(pb.GetInstanceRequest(instanceId=iid))
            assert error.value.code() == grpc.StatusCode.NOT_FOUND
            assert "alpha, beta" in (error.value.details() or "")
        proc.send_signal(sig)
        out, _ = proc.communicate(timeout=30)
        assert proc.returncode == 0, out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert db.exists()


def test_the_console_script_exists() -> None:
    script = Path(sys.executable).with_name("durabletask")
    if not script.exists():
        pytest.skip("package not installed with its console script")
    out = subprocess.run([str(script), "emulator", "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "--taskhubs" in out.stdout


def test_a_busy_port_is_reported(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        proc = subprocess.run([sys.executable, "-m", "durabletask.emulator", "--port", str(port), "--memory"],
                              capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in proc.stderr
