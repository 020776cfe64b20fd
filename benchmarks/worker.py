"""Worker benchmark: our worker vs the official SDK's worker, on the same backend, in one run.

Run from the repository root, with our package installed::

    python benchmarks/worker.py                     # full run (both backends when the emulator exists), 3 rounds
    python benchmarks/worker.py --rounds 1          # one round per backend
    python benchmarks/worker.py --quick             # smaller runs
    python benchmarks/worker.py --json              # machine-readable report on stdout
    python benchmarks/worker.py --backend official  # official | emulator | both
    python benchmarks/worker.py --profile           # also cProfile our worker during the chain run

Each worker runs in its own process (``benchmarks/worker_process.py``, under our interpreter or
the official SDK's), so its CPU time can be measured on its own. The load comes from this process,
with our client for both workers. Every worker gets a fresh backend. Figures:

1. ``chain``: 200 orchestrations of 5 chained activities, all scheduled, then all awaited:
   orchestrations per second;
2. ``fan``: one orchestration fanning out 1,000 activities joined with ``when_all``: wall time;
3. ``round trip``: one trivial orchestration (one activity) scheduled and awaited, one at a time,
   200 times after a warm-up: p50 and p99;
4. worker CPU per work item: the worker process's CPU time (user + system, all threads) over the
   three runs, divided by the work items it ran there (orchestration episodes + activities, both
   counted in the worker process, see ``worker_process.py``).

Each backend gets 3 rounds (``--rounds``), alternating which worker goes first; each worker's
figures are from its round with the least worker CPU per work item, and every round's CPU per work
item is printed too.

This is a benchmark, not a test: it prints figures and never fails on a missed target.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import json
import os
import platform
import queue
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from durabletask.client import OrchestrationStatus, TaskHubGrpcClient  # noqa: E402
from tests.support.official import OFFICIAL_VERSION, official_python, venv_dir  # noqa: E402
from tests.support.servers import free_port, official_in_memory_backend  # noqa: E402

WORKER_SCRIPT = Path(__file__).resolve().parent / "worker_process.py"

FULL = {"chain": 200, "chain_length": 5, "fan": 1000, "round_trips": 200, "warmup": 20}
QUICK = {"chain": 50, "chain_length": 5, "fan": 300, "round_trips": 50, "warmup": 10}

TARGET_CPU_RATIO = 4.0  # ours uses at least 4x less worker CPU per work item
TARGET_P50_MS = 2.0  # single round trip on our emulator
WAIT_TIMEOUT = 120.0


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# Backends


def emulator_available() -> bool:
    try:
        return importlib.util.find_spec("durabletask.emulator.__main__") is not None
    except (ImportError, ValueError):
        return False


def _proc_cpu(pid: int) -> float | None:
    """CPU seconds (user + system) of a process, from /proc; None where that is not available."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def _children_matching(marker: str) -> list[int]:
    """PIDs of our child processes whose command line contains ``marker`` (Linux only)."""
    found = []
    with contextlib.suppress(OSError):
        for task_dir in Path("/proc/self/task").iterdir():
            for pid in (task_dir / "children").read_text().split():
                with contextlib.suppress(OSError):
                    if marker.encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                        found.append(int(pid))
    return found


@contextlib.contextmanager
def official_backend() -> Iterator[tuple[str, int | None]]:
    """The official SDK's in-memory backend; yields its address and (if found) its PID."""
    with official_in_memory_backend() as address:
        pids = _children_matching("official_backend_server.py")
        yield address, pids[0] if pids else None


@contextlib.contextmanager
def emulator_backend() -> Iterator[tuple[str, int | None]]:
    """Our emulator (``python -m durabletask.emulator``) with in-memory storage, on a free port."""
    import grpc

    port = free_port()
    help_text = subprocess.run([sys.executable, "-m", "durabletask.emulator", "--help"], capture_output=True,
                               text=True, timeout=30, cwd=str(REPO_ROOT)).stdout
    args = [sys.executable, "-m", "durabletask.emulator", "--port", str(port)]
    if "--memory" in help_text:
        args.append("--memory")
    proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            cwd=str(REPO_ROOT))
    address = f"localhost:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
                raise RuntimeError(f"the emulator exited with code {proc.returncode}:\n{err[-2000:]}")
            with grpc.insecure_channel(address) as channel:
                try:
                    grpc.channel_ready_future(channel).result(timeout=0.5)
                    break
                except grpc.FutureTimeoutError:
                    if time.monotonic() > deadline:
                        raise RuntimeError("the emulator did not start listening within 30 s") from None
        yield address, proc.pid
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()


BACKENDS: dict[str, tuple[str, Callable[[], contextlib.AbstractContextManager[tuple[str, int | None]]]]] = {
    "official": (f"official in-memory backend (durabletask.testing {OFFICIAL_VERSION})", official_backend),
    "emulator": ("our emulator (python -m durabletask.emulator, in memory)", emulator_backend),
}


# ---------------------------------------------------------------------------------------------
# Worker processes


class WorkerProcess:
    """A worker (``ours`` or ``official``) in its own process, driven over stdin/stdout."""

    def __init__(self, sdk: str, address: str, profile: str | None = None, sdk_logging: bool = False) -> None:
        self.sdk = sdk
        args = [str(WORKER_SCRIPT), "--address", address]
        if profile:
            args += ["--profile", profile]
        if sdk_logging:
            args.append("--sdk-logging")
        if sdk == "official":
            env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
            command, cwd = [str(official_python()), "-I", *args], str(venv_dir())
        else:
            env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT),
                                                                             os.environ.get("PYTHONPATH")]))}
            command, cwd = [sys.executable, *args], str(REPO_ROOT)
        self._stderr: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115 (closed by stop)
        self.proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr,
                                     env=env, cwd=cwd, text=True, bufsize=1)
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.info = self._next(60)

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def _next(self, timeout: float) -> dict[str, Any]:
        while True:
            try:
                line = self._lines.get(timeout=timeout)
            except queue.Empty:
                raise RuntimeError(f"the {self.sdk} worker did not answer within {timeout} s"
                                   f"{self.stderr_tail()}") from None
            if line is None:
                raise RuntimeError(f"the {self.sdk} worker exited (code {self.proc.wait()}){self.stderr_tail()}")
            with contextlib.suppress(ValueError):
                return dict(json.loads(line))

    def stderr_tail(self) -> str:
        self._stderr.seek(0)
        text = self._stderr.read().decode(errors="replace").strip()
        return f":\n{text[-3000:]}" if text else ""

    def _send(self, command: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()

    def stats(self) -> dict[str, Any]:
        self._send("stats")
        return self._next(30)

    def stop(self, timeout: float = 60) -> dict[str, Any] | None:
        """Stop the worker cleanly (kill it if it does not exit); its final stats, if it said them."""
        final = None
        try:
            if self.proc.poll() is None:
                self._send("stop")
                assert self.proc.stdin is not None
                self.proc.stdin.close()
                final = self._next(timeout)
            self.proc.wait(timeout=10)
        except (RuntimeError, OSError, subprocess.TimeoutExpired) as error:
            log(f"warning: the {self.sdk} worker did not stop cleanly ({error}); killing it")
            self.proc.kill()
            self.proc.wait()
        finally:
            self._stderr.close()
        return final


# ---------------------------------------------------------------------------------------------
# Scenarios


def _check(state: Any, expected: Any, errors: list[str], what: str) -> None:
    if state is None or state.runtime_status != OrchestrationStatus.COMPLETED:
        status = None if state is None else state.runtime_status.name
        details = getattr(getattr(state, "failure_details", None), "message", "")
        errors.append(f"{what}: status {status} {details}".strip())
    elif state.get_output() != expected:
        errors.append(f"{what}: output {state.serialized_output!r}, expected {expected!r}")


def run_orchestration(client: TaskHubGrpcClient, name: str, value: Any, expected: Any, errors: list[str]) -> None:
    instance_id = client.schedule_new_orchestration(name, input=value)
    _check(client.wait_for_orchestration_completion(instance_id, timeout=WAIT_TIMEOUT), expected, errors, name)


def measure(sdk: str, address: str, backend_pid: int | None, sizes: dict[str, int],
            profile: str | None = None, only_chain: bool = False, sdk_logging: bool = False) -> dict[str, Any]:
    """Run the scenarios against one worker process; its figures, with CPU and work-item deltas."""
    worker = WorkerProcess(sdk, address, profile=profile, sdk_logging=sdk_logging)
    result: dict[str, Any] = {"sdk": sdk, "worker": {k: worker.info.get(k) for k in ("version", "python", "sdk")},
                              "errors": []}
    errors: list[str] = result["errors"]
    phases: dict[str, dict[str, Any]] = {}
    try:
        with TaskHubGrpcClient(host_address=address) as client:
            # Warm-up: the worker connects, both sides fill their caches.
            for _ in range(sizes["warmup"] // 2):
                run_orchestration(client, "single", 1, 2, errors)
            run_orchestration(client, "chain", sizes["chain_length"], sizes["chain_length"], errors)

            def phase(name: str, body: Callable[[], None]) -> None:
                before, backend_before = worker.stats(), _proc_cpu(backend_pid) if backend_pid else None
                start = time.perf_counter()
                body()
                wall = time.perf_counter() - start
                after, backend_after = worker.stats(), _proc_cpu(backend_pid) if backend_pid else None
                phases[name] = {
                    "wall_s": wall,
                    "worker_cpu_s": after["cpu"] - before["cpu"],
                    "episodes": after["orchestrator_calls"] - before["orchestrator_calls"],
                    "activities": after["activities"] - before["activities"],
                    "backend_cpu_s": (backend_after - backend_before
                                      if backend_before is not None and backend_after is not None else None),
                    "thread_cpu_s": {t: max(0.0, cpu - before["threads"].get(t, 0.0))
                                     for t, cpu in after.get("threads", {}).items()},
                }

            n, k = sizes["chain"], sizes["chain_length"]

            def chain() -> None:
                ids = [client.schedule_new_orchestration("chain", input=k) for _ in range(n)]
                for instance_id in ids:
                    _check(client.wait_for_orchestration_completion(instance_id, timeout=WAIT_TIMEOUT),
                           k, errors, "chain")

            phase("chain", chain)
            phases["chain"]["orchestrations_per_s"] = n / phases["chain"]["wall_s"]
            phases["chain"]["expected"] = {"episodes": n * (k + 1), "activities": n * k}

            if not only_chain:
                fan_n = sizes["fan"]
                phase("fan", lambda: run_orchestration(client, "fan", fan_n, fan_n * (fan_n + 1) // 2, errors))
                phases["fan"]["expected"] = {"episodes": None, "activities": fan_n}

                for _ in range(sizes["warmup"]):
                    run_orchestration(client, "single", 1, 2, errors)
                latencies: list[float] = []

                def round_trips() -> None:
                    for i in range(sizes["round_trips"]):
                        start = time.perf_counter()
                        run_orchestration(client, "single", i, i + 1, errors)
                        latencies.append(time.perf_counter() - start)

                phase("round_trip", round_trips)
                latencies.sort()
                phases["round_trip"].update({
                    "p50_ms": statistics.median(latencies) * 1e3,
                    "p99_ms": latencies[min(len(latencies) - 1, round(0.99 * (len(latencies) - 1)))] * 1e3,
                    "mean_ms": statistics.fmean(latencies) * 1e3,
                    "expected": {"episodes": 2 * len(latencies), "activities": len(latencies)},
                })
    finally:
        final = worker.stop()
    result["phases"] = phases
    result["shutdown"] = "clean" if final is not None and worker.proc.returncode == 0 else "killed"
    result["process_cpu_s"] = None if final is None else final["cpu"]
    cpu = sum(p["worker_cpu_s"] for p in phases.values())
    items = sum(p["episodes"] + p["activities"] for p in phases.values())
    result["total"] = {"worker_cpu_s": cpu, "work_items": items,
                       "cpu_ms_per_item": cpu / items * 1e3 if items else None}
    for name, p in phases.items():
        p["work_items"] = p["episodes"] + p["activities"]
        p["cpu_ms_per_item"] = p["worker_cpu_s"] / p["work_items"] * 1e3 if p["work_items"] else None
        exp = p["expected"]
        if p["activities"] != exp["activities"] or (exp["episodes"] is not None and p["episodes"] != exp["episodes"]):
            errors.append(f"{name}: counted {p['episodes']} episodes + {p['activities']} activities, "
                          f"expected {exp['episodes']} + {exp['activities']}")
    return result


def run_backend(key: str, sizes: dict[str, int], sdk_logging: bool, rounds: int = 1) -> dict[str, Any]:
    """Measure both workers ``rounds`` times on ``key``; each worker's figures are its best round.

    Rounds alternate which worker goes first, so that a busy spell of the machine does not always
    land on the same one. A worker's best round is the one with the least worker CPU per work item:
    the machine's other load only ever adds CPU, so the least is the closest to the worker's own cost.
    """
    label, factory = BACKENDS[key]
    runs: dict[str, list[dict[str, Any]]] = {"ours": [], "official": []}
    for number in range(rounds):
        order = ("ours", "official") if number % 2 == 0 else ("official", "ours")
        for sdk in order:
            log(f"[{key}] round {number + 1}/{rounds}: {sdk} worker ...")
            try:
                with factory() as (address, pid):
                    runs[sdk].append(measure(sdk, address, pid, sizes, sdk_logging=sdk_logging))
            except Exception as error:  # a benchmark reports what went wrong and carries on
                runs[sdk].append({"sdk": sdk, "failed": f"{type(error).__name__}: {error}"})
    return {"backend": key, "label": label, "rounds": runs,
            "workers": {sdk: best_round(results) for sdk, results in runs.items()}}


def best_round(results: list[dict[str, Any]]) -> dict[str, Any]:
    """The round with the least worker CPU per work item (a failed round only when all failed)."""
    measured = [r for r in results if (r.get("total") or {}).get("cpu_ms_per_item") is not None]
    if not measured:
        return results[0]
    return min(measured, key=lambda r: r["total"]["cpu_ms_per_item"])


def profile_ours(key: str, sizes: dict[str, int], top: int = 15, keep: str | None = None) -> str:
    """cProfile our worker process (all its threads) during the chain run; top functions as text."""
    import pstats

    _, factory = BACKENDS[key]
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "worker.prof")
        with factory() as (address, pid):
            result = measure("ours", address, pid, sizes, profile=path, only_chain=True)
        if not os.path.exists(path):
            return "no profile was written"
        if keep:
            shutil.copyfile(path, keep)
        out = io.StringIO()
        stats = pstats.Stats(path, stream=out)
        stats.strip_dirs().sort_stats("tottime").print_stats(top)
        stats.sort_stats("cumulative").print_stats(top)
        profiled_cpu = stats.total_tt  # type: ignore[attr-defined]
    chain = result["phases"]["chain"]
    process_cpu = result.get("process_cpu_s")
    head = (f"cProfile of our worker process (every worker thread, timer: thread CPU time) over warm-up + "
            f"chain {sizes['chain']}x{sizes['chain_length']} on the {key} backend.\n"
            f"Profiled run: {chain['orchestrations_per_s']:.0f} orch/s, {chain['cpu_ms_per_item']:.3f} ms worker CPU "
            f"per work item (profiler overhead included).\n"
            f"Python threads' CPU seen by the profiler: {profiled_cpu:.2f} s; whole worker process over its "
            f"lifetime: {_fmt(process_cpu, '.2f')} s (the difference: start-up and imports on the main thread, "
            f"gRPC C-core threads).\n")
    return head + out.getvalue()


# ---------------------------------------------------------------------------------------------
# Report


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _ratio(ours: float | None, official: float | None, higher_is_better: bool) -> str:
    if not ours or not official:
        return "-"
    r = ours / official if higher_is_better else official / ours
    return f"{r:.2f}x"


def verdicts(reports: list[dict[str, Any]], emulator_ok: bool) -> list[dict[str, Any]]:
    out = []
    for report in reports:
        ours, off = report["workers"].get("ours", {}), report["workers"].get("official", {})
        a = ours.get("total", {}).get("cpu_ms_per_item")
        b = off.get("total", {}).get("cpu_ms_per_item")
        ratio = b / a if a and b else None
        out.append({"target": f"worker CPU per work item, {report['backend']} backend: ours >= "
                              f"{TARGET_CPU_RATIO:g}x less than the official",
                    "value": None if ratio is None else f"{ratio:.2f}x less",
                    "met": None if ratio is None else ratio >= TARGET_CPU_RATIO})
    p50 = None
    for report in reports:
        if report["backend"] == "emulator":
            p50 = report["workers"].get("ours", {}).get("phases", {}).get("round_trip", {}).get("p50_ms")
    note = None if emulator_ok else "not measured: the emulator is not available"
    out.append({"target": f"round trip p50 on our emulator, our worker: <= {TARGET_P50_MS:g} ms",
                "value": note if p50 is None else f"{p50:.2f} ms",
                "met": None if p50 is None else p50 <= TARGET_P50_MS})
    return out


def print_report(report: dict[str, Any], sizes: dict[str, int]) -> None:
    print(f"\nBackend: {report['label']}")
    ours, off = report["workers"]["ours"], report["workers"]["official"]
    for w in (ours, off):
        if "failed" in w:
            print(f"  {w['sdk']} worker FAILED: {w['failed']}")
    if "failed" in ours or "failed" in off:
        return
    po, pf = ours["phases"], off["phases"]
    n, k = sizes["chain"], sizes["chain_length"]
    rows: list[tuple[str, str, str, str]] = [
        (f"chain {n}x{k}: orchestrations/s", _fmt(po["chain"]["orchestrations_per_s"], ".1f"),
         _fmt(pf["chain"]["orchestrations_per_s"], ".1f"),
         _ratio(po["chain"]["orchestrations_per_s"], pf["chain"]["orchestrations_per_s"], True)),
        (f"fan-out {sizes['fan']}: wall s", _fmt(po["fan"]["wall_s"], ".3f"), _fmt(pf["fan"]["wall_s"], ".3f"),
         _ratio(po["fan"]["wall_s"], pf["fan"]["wall_s"], False)),
        (f"round trip x{sizes['round_trips']}: p50 ms", _fmt(po["round_trip"]["p50_ms"], ".2f"),
         _fmt(pf["round_trip"]["p50_ms"], ".2f"),
         _ratio(po["round_trip"]["p50_ms"], pf["round_trip"]["p50_ms"], False)),
        ("round trip: p99 ms", _fmt(po["round_trip"]["p99_ms"], ".2f"), _fmt(pf["round_trip"]["p99_ms"], ".2f"),
         _ratio(po["round_trip"]["p99_ms"], pf["round_trip"]["p99_ms"], False)),
    ]
    for name in ("chain", "fan", "round_trip"):
        rows.append((f"worker CPU ms/work item: {name}", _fmt(po[name]["cpu_ms_per_item"], ".3f"),
                     _fmt(pf[name]["cpu_ms_per_item"], ".3f"),
                     _ratio(po[name]["cpu_ms_per_item"], pf[name]["cpu_ms_per_item"], False)))
    to, tf = ours["total"], off["total"]
    rows.append(("worker CPU ms/work item: all", _fmt(to["cpu_ms_per_item"], ".3f"), _fmt(tf["cpu_ms_per_item"], ".3f"),
                 _ratio(to["cpu_ms_per_item"], tf["cpu_ms_per_item"], False)))
    runs = report.get("rounds", {})
    if len(runs.get("ours", [])) > 1 or len(runs.get("official", [])) > 1:
        each = [" ".join(_fmt((r.get("total") or {}).get("cpu_ms_per_item"), ".3f") for r in runs.get(sdk, []))
                for sdk in ("ours", "official")]
        rows.append(("  all, CPU ms/work item each round", each[0], each[1], ""))
    rows.append(("  worker CPU s / work items", f"{to['worker_cpu_s']:.2f}/{to['work_items']}",
                 f"{tf['worker_cpu_s']:.2f}/{tf['work_items']}", ""))
    rows.append(("  fan-out episodes", str(po["fan"]["episodes"]), str(pf["fan"]["episodes"]), ""))
    backend_cpu = [sum(p.get("backend_cpu_s") or 0 for p in ph.values()) if all(
        p.get("backend_cpu_s") is not None for p in ph.values()) else None for ph in (po, pf)]
    rows.append(("  backend CPU s (same runs)", _fmt(backend_cpu[0], ".2f"), _fmt(backend_cpu[1], ".2f"), ""))
    width = max(12, *(len(row[1]) for row in rows), *(len(row[2]) for row in rows))
    print(f"  {'':38} {'ours':>{width}} {'official':>{width}} {'ours better by':>15}")
    for label, a, b, r in rows:
        print(f"  {label:38} {a:>{width}} {b:>{width}} {r:>15}")
    for w in (ours, off):
        threads = sorted(w["phases"]["chain"]["thread_cpu_s"].items(), key=lambda kv: -kv[1])
        shown = ", ".join(f"{name} {cpu:.2f}" for name, cpu in threads if cpu >= 0.005)
        if shown:
            print(f"  {w['sdk']} worker CPU s by thread, chain run: {shown}")
    for w in (ours, off):
        for e in w["errors"][:5]:
            print(f"  ERROR ({w['sdk']}): {e}")
        if len(w["errors"]) > 5:
            print(f"  ERROR ({w['sdk']}): ... {len(w['errors']) - 5} more")
        if w["shutdown"] != "clean":
            print(f"  warning: the {w['sdk']} worker process did not shut down cleanly")


def main() -> None:
    parser = argparse.ArgumentParser(description="Our worker vs the official SDK's worker on the same backend.")
    parser.add_argument("--quick", action="store_true", help="smaller runs (under 30 s)")
    parser.add_argument("--json", action="store_true", help="print a JSON report on stdout instead of the table")
    parser.add_argument("--backend", choices=("official", "emulator", "both"), default=None,
                        help="default: both when our emulator is available, else official")
    parser.add_argument("--profile", action="store_true",
                        help="also cProfile our worker process during the chain run (top 15 functions)")
    parser.add_argument("--profile-out", metavar="FILE", help="with --profile: also save the pstats file here")
    parser.add_argument("--rounds", type=int, default=None, metavar="N",
                        help="rounds per backend, alternating which worker goes first; each worker's figures are "
                             "its round with the least worker CPU per work item (default 3, 1 with --quick)")
    parser.add_argument("--sdk-logging", action="store_true",
                        help="keep each SDK's default logging (the official worker logs every episode at INFO)")
    args = parser.parse_args()

    sizes = QUICK if args.quick else FULL
    rounds = args.rounds if args.rounds is not None else (1 if args.quick else 3)
    if rounds < 1:
        parser.error(f"--rounds must be 1 or more, got {rounds}")
    emulator_ok = emulator_available()
    wanted = args.backend or ("both" if emulator_ok else "official")
    keys = ["official", "emulator"] if wanted == "both" else [wanted]
    notes = []
    if "emulator" in keys and not emulator_ok:
        notes.append("our emulator (durabletask.emulator) is not available yet: official backend only")
        keys = ["official"]
    elif not emulator_ok:
        notes.append("our emulator (durabletask.emulator) is not available yet: official backend only")

    started = time.perf_counter()
    official_python()  # build the official venv first (once), outside any timing
    reports = [run_backend(key, sizes, args.sdk_logging, rounds) for key in keys]
    targets = verdicts(reports, emulator_ok)
    profile_text = profile_ours(keys[-1], sizes, keep=args.profile_out) if args.profile else None
    elapsed = time.perf_counter() - started

    if args.json:
        print(json.dumps({"sizes": sizes, "rounds": rounds, "notes": notes, "reports": reports, "targets": targets,
                          "python": platform.python_version(), "official_version": OFFICIAL_VERSION,
                          "profile": profile_text, "elapsed_s": elapsed}, indent=2))
        return

    print(f"Worker benchmark: our worker vs the official durabletask {OFFICIAL_VERSION} worker "
          f"(each in its own process, same backend, load from our client)")
    print(f"Python {platform.python_version()} on {platform.machine()}, {os.cpu_count()} CPUs; "
          f"{'quick' if args.quick else 'full'} run; official SDK logging "
          f"{'at its defaults' if args.sdk_logging else 'at WARNING'}")
    if rounds > 1:
        print(f"{rounds} rounds per backend, alternating which worker goes first; each worker's figures below "
              f"are from its round with the least worker CPU per work item")
    for note in notes:
        print(f"Note: {note}")
    for report in reports:
        print_report(report, sizes)
    print("\nTargets:")
    for t in targets:
        mark = "n/a" if t["met"] is None else ("met" if t["met"] else "NOT met")
        print(f"  {t['target']}: {t['value'] or '-'} -> {mark}")
    print(f"\n(total time {elapsed:.1f} s)")
    if profile_text:
        print("\n" + profile_text)


if __name__ == "__main__":
    main()
