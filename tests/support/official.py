"""The official Durable Task SDK, installed from the package registry into its own virtual environment.

Our package has the same import name (``durabletask``), so the official SDK can never share an
interpreter with ours. Interop tests and benchmarks run it as a subprocess of the Python found here.

The environment lives in ``$DURABLETASK_OFFICIAL_VENV`` or, by default, in
``~/.cache/durabletask-py/official-<version>`` and is reused between runs: it is built once, and
rebuilt only when the marker file with the pinned requirements is missing or different.
"""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
import venv
from pathlib import Path

OFFICIAL_VERSION = "1.12.0"
REQUIREMENTS = (f"durabletask=={OFFICIAL_VERSION}", f"durabletask-azuremanaged=={OFFICIAL_VERSION}")
_MARKER = "durabletask-py-official.json"


def venv_dir() -> Path:
    configured = os.environ.get("DURABLETASK_OFFICIAL_VENV")
    if configured:
        return Path(configured)
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return cache / "durabletask-py" / f"official-{OFFICIAL_VERSION}"


def _python_in(env: Path) -> Path:
    return env / ("Scripts/python.exe" if sys.platform == "win32" else "bin/python")


def official_python() -> Path:
    """Return the interpreter of the official SDK's environment, creating it if needed."""
    env = venv_dir()
    env.parent.mkdir(parents=True, exist_ok=True)
    marker = env / _MARKER
    wanted = {"requirements": list(REQUIREMENTS)}
    with open(env.parent / f".{env.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if marker.exists() and json.loads(marker.read_text()) == wanted and _python_in(env).exists():
            return _python_in(env)
        venv.EnvBuilder(with_pip=True, clear=True).create(env)
        subprocess.run(
            [str(_python_in(env)), "-m", "pip", "install", "-q", "--disable-pip-version-check", *REQUIREMENTS],
            check=True,
        )
        marker.write_text(json.dumps(wanted))
    return _python_in(env)


def run_official(script: str | Path, *args: str, input_bytes: bytes | None = None,
                 timeout: float = 300) -> subprocess.CompletedProcess[bytes]:
    """Run ``script`` with the official SDK's interpreter; raise with its stderr if it fails.

    The script runs from a neutral working directory with a clean ``PYTHONPATH`` so that it can
    never import our package by accident.
    """
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    proc = subprocess.run(
        [str(official_python()), "-I", str(script), *args],
        input=input_bytes,
        capture_output=True,
        timeout=timeout,
        env=env,
        cwd=str(venv_dir()),
    )
    if proc.returncode != 0:
        raise RuntimeError(
            f"official SDK script {script} failed with exit code {proc.returncode}:\n"
            f"{proc.stderr.decode(errors='replace')}"
        )
    return proc
