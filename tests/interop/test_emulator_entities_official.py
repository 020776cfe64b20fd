"""The official SDK's client and worker, unmodified, use durable entities against our emulator.

One official subprocess runs every scenario of ``emulator_entity_scenarios.py`` in parallel against
an emulator on SQLite (the default store) and reports JSON; each scenario is one test here.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from durabletask.emulator import Emulator
from tests.support.official import run_official

SCRIPT = Path(__file__).with_name("emulator_entity_scenarios.py")
SCENARIOS = [
    "class_entity_call_result_and_failure", "clean_entity_storage", "client_signal_time", "counter_critical_sections",
    "entity_queries", "entity_starts_orchestration_and_signals", "function_entity", "get_entity",
    "lock_entities_critical_section", "operation_failure_rolls_back", "orchestration_signals",
]

pytestmark = pytest.mark.interop


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, dict[str, object]]]:
    db = tmp_path_factory.mktemp("emulator") / "emulator.db"
    with Emulator(db_path=db) as emulator:
        proc = run_official(SCRIPT, emulator.address, timeout=240)
        yield json.loads(proc.stdout.decode().strip().splitlines()[-1])


def test_every_scenario_is_listed(results: dict[str, dict[str, object]]) -> None:
    assert sorted(results) == sorted(SCENARIOS)


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_official_sdk_entity_scenario(results: dict[str, dict[str, object]], scenario: str) -> None:
    outcome = results[scenario]
    assert outcome["ok"], outcome["detail"]
