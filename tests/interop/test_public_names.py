"""Every public name of the official SDK's modules that this package covers so far exists here."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import pytest

from tests.support.official import run_official

pytestmark = pytest.mark.interop

MODULES = ["durabletask.task", "durabletask.serialization", "durabletask.entities"]
NOT_YET: set[str] = set()


def test_official_public_names_exist_here() -> None:
    script = Path(__file__).with_name("official_names.py")
    official = json.loads(run_official(script, *MODULES).stdout)
    missing = []
    for module_name, names in official.items():
        ours = importlib.import_module(module_name)
        missing += [f"{module_name}.{n}" for n in names if n not in NOT_YET and not hasattr(ours, n)]
    assert not missing, f"official public names missing here: {missing}"
