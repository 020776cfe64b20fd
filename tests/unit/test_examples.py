"""The examples run and print what they promise."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_replay_walkthrough_completes_the_orchestration() -> None:
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / "replay_walkthrough.py")],
                          capture_output=True, text=True, timeout=60, check=True)
    assert "status: ORCHESTRATION_STATUS_COMPLETED" in proc.stdout
    assert "'Hello, Tokyo!'" in proc.stdout and "'Hello, LONDON!'" in proc.stdout


def test_hello_runs_an_orchestration_on_the_in_process_emulator() -> None:
    env = {k: v for k, v in __import__("os").environ.items() if k not in ("ENDPOINT", "TASKHUB")}
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / "hello.py")],
                          capture_output=True, text=True, timeout=120, check=True, env=env)
    assert "started the emulator in-process" in proc.stdout
    assert "completed: ['HELLO, TOKYO!', 'HELLO, SEATTLE!', 'HELLO, LONDON!']" in proc.stdout


def test_entities_runs_on_the_in_process_emulator() -> None:
    env = {k: v for k, v in __import__("os").environ.items() if k not in ("ENDPOINT", "TASKHUB")}
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / "entities.py")],
                          capture_output=True, text=True, timeout=120, check=True, env=env)
    assert "started the emulator in-process" in proc.stdout
    assert "transfer of 60: done" in proc.stdout
    assert ("transfer of 60: declined: Operation 'withdraw' on entity '@account@alice' failed with error: "
            "insufficient funds (40 < 60)") in proc.stdout
    assert "@account@alice: 40" in proc.stdout and "@account@bob: 60" in proc.stdout
    assert "transfers done: 1" in proc.stdout
