"""Wire compatibility of our generated protocol module with the official SDK's (1.12.0).

Every message type is encoded with every field set (see ``wire_corpus.py``) by one side and decoded
by the other; the canonical dumps must match field by field, with no unknown fields. The
descriptor facts (messages, fields, enums, RPCs) are compared as well. A self-test loads corrupted
copies of our descriptor into a private pool and shows that the comparison catches them.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import (
    descriptor_pb2,
    descriptor_pool,
    duration_pb2,
    empty_pb2,
    message_factory,
    struct_pb2,
    timestamp_pb2,
    wrappers_pb2,
)
from google.protobuf.descriptor import FileDescriptor

from durabletask.internal import orchestrator_service_pb2 as pb
from tests.interop import wire_corpus
from tests.support.official import run_official

pytestmark = pytest.mark.interop

CORPUS_SCRIPT = Path(wire_corpus.__file__).resolve()

# In the upstream contract (microsoft/durabletask-protobuf) but not in the official Python SDK
# 1.12.0: large-payload garbage collection. Anything else that only we have is an error.
ANCHOR_ONLY_MESSAGES = {
    "TombstonedPayload",
    "PayloadPurgeAck",
    "GetTombstonedPayloadsRequest",
    "GetTombstonedPayloadsResponse",
    "AckPurgedPayloadsRequest",
    "AckPurgedPayloadsResponse",
}
ANCHOR_ONLY_RPCS = {("TaskHubSidecarService", "GetTombstonedPayloads"),
                    ("TaskHubSidecarService", "AckPurgedPayloads")}

Dumps = dict[str, list[dict[str, Any]]]


# ---------------------------------------------------------------------------------------------
# comparison helpers
# ---------------------------------------------------------------------------------------------

def _short(value: Any, limit: int = 80) -> str:
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _diff(sent: Any, got: Any, path: str, out: list[str]) -> None:
    if isinstance(sent, dict) and isinstance(got, dict):
        for key in sorted(set(sent) | set(got)):
            if key == "__unknown__":
                if got.get(key) != sent.get(key):
                    out.append(f"{path}: decoder found unknown fields [number, wire type] "
                               f"{got.get(key, [])} (sender had {sent.get(key, [])})")
            elif key not in got:
                out.append(f"{path}.{key}: sent {_short(sent[key])}, decoded as absent")
            elif key not in sent:
                out.append(f"{path}.{key}: not sent, decoded as {_short(got[key])}")
            else:
                _diff(sent[key], got[key], f"{path}.{key}", out)
    elif isinstance(sent, list) and isinstance(got, list):
        if len(sent) != len(got):
            out.append(f"{path}: sent {len(sent)} elements, decoded {len(got)}")
        for i, (s, g) in enumerate(zip(sent, got, strict=False)):
            _diff(s, g, f"{path}[{i}]", out)
    elif sent != got or type(sent) is not type(got):
        out.append(f"{path}: sent {_short(sent)}, decoded {_short(got)}")


def compare_dumps(sent: Dumps, decoded: Dumps, *, may_be_missing: Collection[str] = ()) -> list[str]:
    """Differences between the sender's view and the receiver's view, one line per field."""
    out: list[str] = []
    for name in sorted(sent):
        got = decoded.get(name)
        if got is None:
            out.append(f"{name}: not decoded at all")
            continue
        if got and all(d.get("__missing_type__") for d in got):
            if name not in may_be_missing:
                out.append(f"{name}: message type missing on the receiving side")
            continue
        if len(got) != len(sent[name]):
            out.append(f"{name}: {len(sent[name])} instances sent, {len(got)} decoded")
        for i, (s, g) in enumerate(zip(sent[name], got, strict=False)):
            _diff(s, g, f"{name}[{i}]", out)
    return out


def compare_descriptors(official: dict[str, Any], ours: dict[str, Any]) -> list[str]:
    """Every official fact must hold in ours; anything only ours has must be from the anchor proto."""
    out: list[str] = []
    for key in ("file", "package", "syntax"):
        if official[key] != ours[key]:
            out.append(f"file {key}: official {official[key]!r}, ours {ours[key]!r}")

    for name, their_msg in official["messages"].items():
        our_msg = ours["messages"].get(name)
        if our_msg is None:
            out.append(f"message {name}: missing in ours")
            continue
        for field, facts in their_msg["fields"].items():
            our_facts = our_msg["fields"].get(field)
            if our_facts is None:
                out.append(f"message {name} field {field}: missing in ours")
                continue
            for fact, value in facts.items():
                if our_facts[fact] != value:
                    out.append(f"message {name} field {field}: {fact} official {value!r}, "
                               f"ours {our_facts[fact]!r}")
        for field in our_msg["fields"].keys() - their_msg["fields"].keys():
            number = our_msg["fields"][field]["number"]
            out.append(f"message {name} field {field}: only in ours (number {number})")
        for fact in ("oneofs", "map_entry"):
            if their_msg[fact] != our_msg[fact]:
                out.append(f"message {name}: {fact} official {their_msg[fact]!r}, ours {our_msg[fact]!r}")
        missing_reserved = [r for r in their_msg["reserved"] if r not in our_msg["reserved"]]
        if missing_reserved:
            out.append(f"message {name}: reserved ranges {missing_reserved} missing in ours")
    for name in sorted(ours["messages"].keys() - official["messages"].keys()):
        if name not in ANCHOR_ONLY_MESSAGES:
            out.append(f"message {name}: only in ours and not in the anchor proto")

    for name, values in official["enums"].items():
        our_values = ours["enums"].get(name)
        if our_values is None:
            out.append(f"enum {name}: missing in ours")
            continue
        for value, number in values.items():
            if our_values.get(value) != number:
                out.append(f"enum {name} value {value}: official {number}, ours {our_values.get(value)}")
        for value in our_values.keys() - values.keys():
            out.append(f"enum {name} value {value}: only in ours")
    for name in ours["enums"].keys() - official["enums"].keys():
        out.append(f"enum {name}: only in ours")

    for service, methods in official["services"].items():
        our_methods = ours["services"].get(service)
        if our_methods is None:
            out.append(f"service {service}: missing in ours")
            continue
        for method, facts in methods.items():
            if method not in our_methods:
                out.append(f"rpc {service}.{method}: missing in ours")
            elif our_methods[method] != facts:
                out.append(f"rpc {service}.{method}: official {facts}, ours {our_methods[method]}")
        for method in our_methods.keys() - methods.keys():
            if (service, method) not in ANCHOR_ONLY_RPCS:
                out.append(f"rpc {service}.{method}: only in ours and not in the anchor proto")
    for service in ours["services"].keys() - official["services"].keys():
        out.append(f"service {service}: only in ours")
    return out


def _fail_with(diffs: list[str], what: str) -> None:
    if diffs:
        shown = "\n  ".join(diffs[:60])
        more = f"\n  ... and {len(diffs) - 60} more" if len(diffs) > 60 else ""
        pytest.fail(f"{what}: {len(diffs)} difference(s)\n  {shown}{more}")


# ---------------------------------------------------------------------------------------------
# the official side (one subprocess per call, results cached for the module)
# ---------------------------------------------------------------------------------------------

def _official_json(*args: str, payload: dict[str, Any] | None = None) -> dict[str, Any]:
    data = None if payload is None else json.dumps(payload).encode()
    proc = run_official(CORPUS_SCRIPT, *args, input_bytes=data, timeout=120)
    result: dict[str, Any] = json.loads(proc.stdout)
    return result


def official_decode(blobs: dict[str, list[bytes]]) -> Dumps:
    result = _official_json("decode", payload={"messages": wire_corpus.blobs_to_json(blobs)})
    assert result["file"] == "durabletask/internal/orchestrator_service.proto"
    return result["messages"]  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def official_describe() -> dict[str, Any]:
    return _official_json("describe")


@pytest.fixture(scope="module")
def official_encoded() -> dict[str, Any]:
    return _official_json("encode", "--dump")


@pytest.fixture(scope="module")
def our_blobs() -> dict[str, list[bytes]]:
    return wire_corpus.encode_corpus(pb.DESCRIPTOR)


# ---------------------------------------------------------------------------------------------
# tests
# ---------------------------------------------------------------------------------------------

def test_corpus_sets_every_field(our_blobs: dict[str, list[bytes]]) -> None:
    dumps = wire_corpus.decode_corpus(pb.DESCRIPTOR, our_blobs)
    missing = []
    for desc in wire_corpus.iter_message_types(pb.DESCRIPTOR):
        present = set().union(*(d.keys() for d in dumps[desc.full_name]))
        for field in desc.fields:
            if field.name not in present:
                missing.append(f"{desc.full_name}.{field.name}")
        assert not any("__unknown__" in d for d in dumps[desc.full_name])
    assert not missing, f"corpus leaves fields unset: {missing}"
    assert len(our_blobs) >= 130


def test_describe_matches_official(official_describe: dict[str, Any]) -> None:
    ours = wire_corpus.describe(pb.DESCRIPTOR)
    assert ours["package"] == "" and ours["file"] == "durabletask/internal/orchestrator_service.proto"
    assert "TaskHubSidecarService" in ours["services"]
    _fail_with(compare_descriptors(official_describe, ours), "descriptor facts (official vs ours)")


def test_ours_encode_official_decodes(our_blobs: dict[str, list[bytes]]) -> None:
    sent = wire_corpus.decode_corpus(pb.DESCRIPTOR, our_blobs)
    decoded = official_decode(our_blobs)
    _fail_with(compare_dumps(sent, decoded, may_be_missing=ANCHOR_ONLY_MESSAGES),
               "our encoding as decoded by the official SDK")


def test_official_encode_ours_decodes(official_encoded: dict[str, Any]) -> None:
    blobs = wire_corpus.blobs_from_json(official_encoded["messages"])
    assert set(blobs) == set(official_encoded["dumps"])
    sent: Dumps = official_encoded["dumps"]
    decoded = wire_corpus.decode_corpus(pb.DESCRIPTOR, blobs)
    _fail_with(compare_dumps(sent, decoded), "the official SDK's encoding as decoded by ours")
    # and ours re-serialises their bytes identically (nothing dropped, nothing reordered)
    changed = []
    for desc in wire_corpus.iter_message_types(pb.DESCRIPTOR):
        cls = message_factory.GetMessageClass(desc)
        for i, data in enumerate(blobs.get(desc.full_name, [])):
            if cls.FromString(data).SerializeToString(deterministic=True) != data:
                changed.append(f"{desc.full_name}[{i}]")
    assert not changed, f"re-encoding by ours changed the bytes of {changed}"


# -- self-test: the comparison has teeth --------------------------------------------------------

def _load_mutated(mutate: Callable[[descriptor_pb2.FileDescriptorProto], None]) -> FileDescriptor:
    """A copy of our file descriptor, passed through ``mutate``, in a private descriptor pool."""
    proto = descriptor_pb2.FileDescriptorProto()
    pb.DESCRIPTOR.CopyToProto(proto)
    mutate(proto)
    pool = descriptor_pool.DescriptorPool()
    for dep in (timestamp_pb2, duration_pb2, wrappers_pb2, empty_pb2, struct_pb2):
        dep_proto = descriptor_pb2.FileDescriptorProto()
        dep.DESCRIPTOR.CopyToProto(dep_proto)
        pool.Add(dep_proto)
    pool.Add(proto)
    return pool.FindFileByName(proto.name)


def _field(proto: descriptor_pb2.FileDescriptorProto, message: str,
           field: str) -> descriptor_pb2.FieldDescriptorProto:
    msg = next(m for m in proto.message_type if m.name == message)
    return next(f for f in msg.field if f.name == field)


def _no_change(proto: descriptor_pb2.FileDescriptorProto) -> None:
    pass


def _renumber_task_id(proto: descriptor_pb2.FileDescriptorProto) -> None:
    _field(proto, "ActivityRequest", "taskId").number = 15


def _retype_event_name(proto: descriptor_pb2.FileDescriptorProto) -> None:
    _field(proto, "EventRaisedEvent", "name").type = descriptor_pb2.FieldDescriptorProto.TYPE_INT64


def _swap_input_output(proto: descriptor_pb2.FileDescriptorProto) -> None:
    # same type, numbers swapped: only distinct values per field can reveal this one
    _field(proto, "OrchestrationState", "input").number = 9
    _field(proto, "OrchestrationState", "output").number = 8


MUTATIONS = {
    "renumbered ActivityRequest.taskId": (_renumber_task_id, "ActivityRequest", "taskId"),
    "retyped EventRaisedEvent.name": (_retype_event_name, "EventRaisedEvent", "name"),
    "swapped OrchestrationState.input/output": (_swap_input_output, "OrchestrationState", "input"),
}


def test_self_check_private_pool_copy_is_clean(official_describe: dict[str, Any]) -> None:
    """Control: an unmodified copy loaded the same way produces no differences."""
    file = _load_mutated(_no_change)
    blobs = wire_corpus.encode_corpus(file)
    sent = wire_corpus.decode_corpus(file, blobs)
    assert compare_dumps(sent, official_decode(blobs), may_be_missing=ANCHOR_ONLY_MESSAGES) == []
    assert compare_descriptors(official_describe, wire_corpus.describe(file)) == []


@pytest.mark.parametrize("mutation", sorted(MUTATIONS))
def test_self_check_detects_mutation(mutation: str, official_describe: dict[str, Any]) -> None:
    mutate, message, field = MUTATIONS[mutation]
    file = _load_mutated(mutate)
    blobs = wire_corpus.encode_corpus(file)
    sent = wire_corpus.decode_corpus(file, blobs)

    wire_diffs = compare_dumps(sent, official_decode(blobs), may_be_missing=ANCHOR_ONLY_MESSAGES)
    direct = [d for d in wire_diffs if d.startswith(f"{message}[") and f".{field}" in d]
    assert direct, f"{mutation}: wire comparison did not notice; diffs were {wire_diffs[:10]}"

    fact_diffs = compare_descriptors(official_describe, wire_corpus.describe(file))
    assert any(f"message {message} field {field}:" in d for d in fact_diffs), (
        f"{mutation}: descriptor comparison did not notice; diffs were {fact_diffs}"
    )
