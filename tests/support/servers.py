"""Backends for tests that need a real gRPC server: the official SDK's in-memory backend."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

from tests.support.official import official_python, venv_dir


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def official_in_memory_backend() -> Iterator[str]:
    """Start the official SDK's in-memory backend in its own process; yield ``localhost:PORT``."""
    port = free_port()
    script = Path(__file__).with_name("official_backend_server.py")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    proc = subprocess.Popen([str(official_python()), "-I", str(script), str(port)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, cwd=str(venv_dir()))
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if b"ready" not in line:
            raise RuntimeError(f"the official in-memory backend did not start (exit code {proc.poll()})")
        yield f"localhost:{port}"
    finally:
        if proc.stdin is not None:
            proc.stdin.close()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
