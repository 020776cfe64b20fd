"""The official SDK's client and worker, unmodified, run every emulator feature against our emulator.

One official subprocess runs all scenarios of ``emulator_scenarios.py`` in parallel and reports
JSON; each scenario is one test here. The main emulator uses SQLite (the default store) and serves
two task hubs; a second one, in memory, uses the worker-side rewind flow.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from durabletask.emulator import Emulator
from tests.support.official import run_official

SCRIPT = Path(__file__).with_name("emulator_scenarios.py")
SCENARIOS = [
    "activity_failure", "chain", "continue_as_new", "custom_status", "delayed_start", "external_event", "fanout",
    "filters", "history", "purge", "query_and_list", "restart", "retry", "reuse_policy", "rewind_server",
    "rewind_worker", "send_event", "sub_orchestration", "sub_orchestration_conflict", "suspend_resume",
    "task_hubs", "terminate_pending", "terminate_recursive", "timer", "unknown_instance",
]

pytestmark = pytest.mark.interop


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, dict[str, object]]]:
    db = tmp_path_factory.mktemp("emulator") / "emulator.db"
    with Emulator(db_path=db, task_hubs=["default", "hub2"]) as main, \
            Emulator(memory=True, rewind_mode="worker") as worker_rewind:
        proc = run_official(SCRIPT, main.address, worker_rewind.address, timeout=240)
        yield json.loads(proc.stdout.decode().strip().splitlines()[-1])


def test_every_scenario_is_listed(results: dict[str, dict[str, object]]) -> None:
    assert sorted(results) == sorted(SCENARIOS)


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_official_sdk_scenario(results: dict[str, dict[str, object]], scenario: str) -> None:
    outcome = results[scenario]
    assert outcome["ok"], outcome["detail"]
