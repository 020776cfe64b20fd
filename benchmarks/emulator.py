"""Emulator benchmark: the official worker and client against two backends, in one run.

    python benchmarks/emulator.py                 # 200 orchestrations x 5 activities, 3 rounds
    python benchmarks/emulator.py --count 500 --rounds 1
    python benchmarks/emulator.py --json
    python benchmarks/emulator.py --memory --grpcio   # also the memory store, and the grpc.aio server

Backends, each in its own process:

* ``official``: the official SDK's in-memory backend (``durabletask.testing.create_test_backend``);
* ``emulator``: our emulator, ``python -m durabletask.emulator`` on a fresh SQLite file (durable).

The load is the official SDK's worker and client (``official_emulator_load.py``, one process): N
orchestrations of 5 chained activities, all scheduled at once, then awaited. Measured: wall time
(orchestrations per second) and the backend process's CPU time (user + system, from
``/proc/<pid>/stat``) during the load, per orchestration. Rounds alternate between the backends
and the best round of each is reported. Target: the emulator needs at most half the backend CPU
per orchestration of the official in-memory backend. A benchmark prints figures; it is not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from tests.support.official import OFFICIAL_VERSION, official_python, venv_dir  # noqa: E402

HELPER = Path(__file__).resolve().parent / "official_emulator_load.py"
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def official(*args: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    return subprocess.Popen([str(official_python()), "-I", str(HELPER), *args], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, env=env, cwd=str(venv_dir()))


def wait_for(proc: subprocess.Popen[str], text: str) -> None:
    assert proc.stdout is not None
    while True:
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError(f"process exited before printing {text!r}")
        if text in line:
            return


def start_backend(kind: str, port: int, workdir: Path) -> subprocess.Popen[str]:
    if kind == "official":
        proc = official("backend", str(port))
        wait_for(proc, "ready")
        return proc
    storage = ["--memory"] if kind == "emulator-memory" else ["--db", str(workdir / f"emulator-{port}.db")]
    if kind == "emulator-grpcio":
        storage += ["--transport", "grpcio"]
    proc = subprocess.Popen([sys.executable, "-m", "durabletask.emulator", "--port", str(port), *storage,
                             "--log-level", "WARNING"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    wait_for(proc, "Ctrl-C")
    return proc


def one_round(kind: str, count: int, warmup: int, workdir: Path) -> dict[str, Any]:
    port = free_port()
    backend = start_backend(kind, port, workdir)
    driver = official("drive", f"localhost:{port}", str(count), str(warmup))
    try:
        wait_for(driver, "ready")
        before = cpu_seconds(backend.pid)
        assert driver.stdin is not None and driver.stdout is not None
        driver.stdin.write("go\n")
        driver.stdin.flush()
        result = json.loads(driver.stdout.readline())
        cpu = cpu_seconds(backend.pid) - before
        driver.wait(timeout=60)
    finally:
        for proc in (driver, backend):
            if proc.poll() is None:
                if proc is backend and kind != "official":
                    proc.terminate()
                else:
                    proc.kill()
            proc.wait()
    return {
        "backend": kind,
        "orchestrations": count,
        "seconds": result["seconds"],
        "orchestrations_per_second": count / result["seconds"],
        "backend_cpu_seconds": cpu,
        "backend_cpu_ms_per_orchestration": 1000 * cpu / count,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=200, help="orchestrations per round (default 200)")
    parser.add_argument("--warmup", type=int, default=20, help="untimed orchestrations first (default 20)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per backend (default 3)")
    parser.add_argument("--memory", action="store_true", help="also run the emulator with --memory")
    parser.add_argument("--grpcio", action="store_true",
                        help="also run the emulator on SQLite with --transport grpcio (its grpc.aio server)")
    parser.add_argument("--json", action="store_true", help="print a JSON report")
    args = parser.parse_args()
    kinds = ["official", "emulator", *(["emulator-memory"] if args.memory else []),
             *(["emulator-grpcio"] if args.grpcio else [])]

    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.rounds):
            for kind in kinds:
                runs.append(one_round(kind, args.count, args.warmup, Path(tmp)))
    best = {kind: min((r for r in runs if r["backend"] == kind), key=lambda r: r["backend_cpu_seconds"])
            for kind in kinds}
    ratio = best["emulator"]["backend_cpu_seconds"] / max(best["official"]["backend_cpu_seconds"], 1e-9)
    report = {"official_sdk": OFFICIAL_VERSION, "python": sys.version.split()[0], "rounds": runs, "best": best,
              "cpu_ratio": ratio, "target_met": ratio <= 0.5}
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(f"Official SDK {OFFICIAL_VERSION} worker + client; {args.count} orchestrations x 5 chained activities; "
          f"best of {args.rounds} round(s) by backend CPU")
    print(f"{'backend':<34} {'orch/s':>8} {'CPU s':>8} {'CPU ms/orch':>12}")
    labels = {"official": "official in-memory backend", "emulator": "durabletask emulator (SQLite)",
              "emulator-memory": "durabletask emulator (--memory)",
              "emulator-grpcio": "durabletask emulator (grpc.aio)"}
    for kind in kinds:
        r = best[kind]
        print(f"{labels[kind]:<34} {r['orchestrations_per_second']:>8.1f} {r['backend_cpu_seconds']:>8.2f} "
              f"{r['backend_cpu_ms_per_orchestration']:>12.2f}")
    verdict = "met" if ratio <= 0.5 else "NOT met"
    print(f"emulator CPU / official CPU = {ratio:.2f} (target <= 0.50: {verdict})")


if __name__ == "__main__":
    main()
