"""Payload JSON is interchangeable with the official SDK's, in both directions.

The corpus lives in ``official_json.py``, which runs unchanged under the official SDK's interpreter
(a subprocess) and, imported here, under ours. Encodings must be equal string for string; every
encoding, whichever side produced it, must decode to the same typed value on both sides.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.interop import official_json as corpus
from tests.support.official import run_official

pytestmark = pytest.mark.interop

SCRIPT = Path(corpus.__file__)


def _official(mode: str, payload: Any = None) -> Any:
    stdin = None if payload is None else json.dumps(payload).encode()
    return json.loads(run_official(SCRIPT, mode, input_bytes=stdin).stdout)


@pytest.fixture(scope="module")
def official_encodings() -> dict[str, Any]:
    return _official("encode")  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def our_encodings() -> dict[str, Any]:
    return corpus.encode_all()


def test_encodings_are_identical(official_encodings: dict[str, Any], our_encodings: dict[str, Any]) -> None:
    assert set(official_encodings) == set(corpus.CASES)
    mismatches = {
        name: (official_encodings[name], ours)
        for name, ours in our_encodings.items()
        if "json" in ours and official_encodings[name] != ours
    }
    assert mismatches == {}


def test_unserializable_values_fail_on_both_sides_with_compatible_exceptions(
        official_encodings: dict[str, Any], our_encodings: dict[str, Any]) -> None:
    failing = {name for name, result in official_encodings.items() if "error" in result}
    assert failing == {"datetime", "set", "bytes", "tuple_key", "unserializable_nested", "circular"}
    for name in failing:
        official_error, our_error = official_encodings[name]["error"], our_encodings[name]["error"]
        assert our_error[0] == "SerializationError"
        # ours subclasses what the official raises, so existing except clauses still catch it
        assert official_error[0] in our_error


def _requests(encodings: dict[str, Any]) -> list[list[Any]]:
    requests: list[list[Any]] = []
    for name, (_, target) in corpus.CASES.items():
        if "json" in encodings[name]:
            requests.append([name, encodings[name]["json"], target])
            requests.append([f"{name}/untyped", encodings[name]["json"], None])
    for name, (data, target) in corpus.LEGACY.items():
        requests.append([name, data, target])
    return requests


def _compare_decodings(requests: list[list[Any]]) -> None:
    theirs = _official("decode", requests)
    ours = corpus.decode_all(requests)
    differences = {
        label: {"official": t, "ours": o}
        for (label, *_), t, o in zip(requests, theirs, ours, strict=True)
        if t != o
    }
    assert differences == {}


def test_official_encodings_decode_identically(official_encodings: dict[str, Any]) -> None:
    _compare_decodings(_requests(official_encodings))


def test_our_encodings_decode_identically(our_encodings: dict[str, Any]) -> None:
    _compare_decodings(_requests(our_encodings))


def test_typed_decoding_rebuilds_the_named_types(official_encodings: dict[str, Any]) -> None:
    # Guard against the corpus silently degrading to plain dicts on both sides.
    picks = ["nested_dataclass", "recursive", "hooks_nested", "hook_with_converter", "str_enum", "frozen"]
    described = corpus.decode_all([[n, official_encodings[n]["json"], corpus.CASES[n][1]] for n in picks])
    kinds = [d["value"][0] for d in described]
    assert kinds == ["dataclass:Customer", "dataclass:Tree", "dataclass:Invoice", "object:Envelope",
                     "enum:Color", "dataclass:Frozen"]
    customer = described[0]["value"][1]
    assert customer["address"][0] == "dataclass:Address"
    assert customer["tags"][1][0][1][0] == "dataclass:Address"
    assert customer["size"] == ["enum:Size", ["float", "2.5"]]


# Payloads whose decoding deliberately differs from the official SDK, which converts them by
# calling the target type and so loses information. Ours keeps the decoded JSON instead (or, for a
# named tuple, builds it field by field). Each entry: data, target, official result, our result.
DEVIATIONS = {
    "dict_as_str": ('{"a": 1}', "str", ["str", "{'a': 1}"], ["dict", [[["str", "a"], ["int", 1]]]]),
    "fraction_as_int": ("1.7", "int", ["int", 1], ["float", "1.7"]),
    "string_as_bool": ('"false"', "bool", ["bool", True], ["str", "false"]),
    "dict_as_list": ('{"a": 1}', "list", ["list", [["str", "a"]]], ["dict", [[["str", "a"], ["int", 1]]]]),
    "array_as_namedtuple": ("[1, 2]", "Point", ["list", [["int", 1], ["int", 2]]],
                            ["namedtuple:Point", [["int", 1], ["int", 2]]]),
}


def test_documented_deviations() -> None:
    requests = [[name, data, target] for name, (data, target, _, _) in DEVIATIONS.items()]
    theirs = _official("decode", requests)
    ours = corpus.decode_all(requests)
    for (name, *_), t, o in zip(requests, theirs, ours, strict=True):
        assert t == {"value": DEVIATIONS[name][2]}, name
        assert o == {"value": DEVIATIONS[name][3]}, name
