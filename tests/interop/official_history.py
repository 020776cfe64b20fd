#!/usr/bin/env python3
"""Describe history events converted by whichever ``durabletask`` is importable.

Standalone on purpose (standard library, ``google.protobuf`` and ``durabletask`` only). Run under
the official SDK's interpreter, it converts with the official ``durabletask.history``; imported by
our tests, `describe` is applied to events converted by ours.

Reads a JSON list of base64 ``HistoryEvent`` blobs on stdin and prints a JSON list with, for each
blob, either `describe` of the converted event or ``{"error": exception class name}``.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import sys
from typing import Any

from durabletask import history


def describe(event: Any) -> dict[str, Any]:
    """Class name, type name of every field's value, and ``to_dict`` as exact JSON text.

    The JSON text is compared as a string, so ``1`` versus ``1.0`` and the datetime format (with
    its UTC offset) count. Its keys are sorted for one reason only: dicts built from protobuf maps
    (``tags``, failure ``properties``, maps inside ``orchestration_state``) follow the map's
    iteration order, which the protobuf runtime leaves unspecified -- upb seeds its hash tables
    per process, so even two runs of the same SDK list those keys differently. The order of the
    keys that come from dataclass fields is not left out: ``key_order`` records it for the event
    and for every record nested in it.
    """
    as_dict = history.to_dict(event)
    key_order: dict[str, list[str]] = {}
    _key_orders(event, as_dict, "", key_order)
    return {
        "class": type(event).__name__,
        "field_types": {f.name: type(getattr(event, f.name)).__name__ for f in dataclasses.fields(event)},
        "to_dict": json.dumps(as_dict, ensure_ascii=False, sort_keys=True),
        "key_order": key_order,
        "method_matches_function": event.to_dict() == as_dict,
    }


def _key_orders(record: Any, as_dict: dict[str, Any], path: str, out: dict[str, list[str]]) -> None:
    out[path] = list(as_dict)
    for f in dataclasses.fields(record):
        value = getattr(record, f.name)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            _key_orders(value, as_dict[f.name], f"{path}.{f.name}", out)


def main() -> None:
    from durabletask.internal import orchestrator_service_pb2 as pb

    out: list[dict[str, Any]] = []
    for blob in json.load(sys.stdin):
        event = pb.HistoryEvent()
        event.ParseFromString(base64.b64decode(blob))
        try:
            converted = history._from_protobuf(event)
        except Exception as exc:  # reported, compared by the caller
            out.append({"error": type(exc).__name__})
            continue
        out.append(describe(converted))
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
