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
