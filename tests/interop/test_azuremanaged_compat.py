"""Our DTS classes against the official ``durabletask-azuremanaged`` 1.12.0.

* Every constructor parameter of the official ``DurableTaskSchedulerClient``,
  ``AsyncDurableTaskSchedulerClient`` and ``DurableTaskSchedulerWorker`` is accepted here, keyword-only
  like theirs, optional wherever theirs is, with the same simple defaults.
* The official client, with a credential, works against our emulator in ``require_auth`` mode (its
  headers are what the emulator checks); without one it is refused with UNAUTHENTICATED.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from durabletask.azuremanaged import (
    AsyncDurableTaskSchedulerClient,
    DurableTaskSchedulerClient,
    DurableTaskSchedulerWorker,
)
from durabletask.emulator import Emulator
from durabletask.emulator.auth import fingerprint
from tests.support.official import run_official

pytestmark = pytest.mark.interop

SCRIPT = Path(__file__).with_name("official_azuremanaged.py")
OURS = {cls.__name__: cls for cls in (DurableTaskSchedulerClient, AsyncDurableTaskSchedulerClient,
                                      DurableTaskSchedulerWorker)}
# Defaults compared by value: the ones a caller could rely on by leaving the argument out.
SIMPLE = ("None", "True", "False")


@pytest.fixture(scope="module")
def official() -> dict[str, list[dict[str, Any]]]:
    result: dict[str, list[dict[str, Any]]] = json.loads(run_official(SCRIPT, "signatures").stdout)
    return result


@pytest.mark.parametrize("name", sorted(OURS))
def test_every_official_constructor_parameter_is_accepted(official: dict[str, list[dict[str, Any]]],
                                                          name: str) -> None:
    ours = inspect.signature(OURS[name].__init__).parameters
    problems = []
    for param in official[name]:
        mine = ours.get(param["name"])
        if mine is None:
            problems.append(f"{param['name']}: missing")
            continue
        if mine.kind.name != param["kind"]:
            problems.append(f"{param['name']}: {mine.kind.name}, official {param['kind']}")
        has_default = mine.default is not inspect.Parameter.empty
        if not param["required"] and not has_default:
            problems.append(f"{param['name']}: required here, optional in the official SDK")
        if not param["required"] and param["default"] in SIMPLE and repr(mine.default) != param["default"]:
            problems.append(f"{param['name']}: default {mine.default!r}, official {param['default']}")
    assert not problems, f"{name}: {problems}"
    assert official[name], "the official signature was not read"


def test_the_official_secure_channel_default_is_kept(official: dict[str, list[dict[str, Any]]]) -> None:
    for name in OURS:
        (secure,) = [p for p in official[name] if p["name"] == "secure_channel"]
        assert secure["default"] == "True"
        assert inspect.signature(OURS[name].__init__).parameters["secure_channel"].default is True


@pytest.fixture()
def auth_emulator() -> Iterator[Emulator]:
    with Emulator(memory=True, require_auth=True) as emulator:
        yield emulator


def test_official_client_against_our_emulator_with_require_auth(auth_emulator: Emulator) -> None:
    ok = json.loads(run_official(SCRIPT, "call", auth_emulator.endpoint, "default", "official-token").stdout)
    assert ok == {"ok": True, "status": "PENDING", "scopes": [["https://durabletask.io/.default"]]}
    auth = auth_emulator.auth
    assert auth is not None and fingerprint("official-token") in auth.fingerprints
    refused = json.loads(run_official(SCRIPT, "call", auth_emulator.endpoint, "default", "-").stdout)
    assert refused["ok"] is False and refused["code"] == "UNAUTHENTICATED"
    assert "bearer token is required" in refused["details"]
