#!/usr/bin/env python3
"""Wire corpus of the sidecar protocol: encode, decode and describe every message type.

Standalone on purpose (standard library + ``google.protobuf`` only): it runs under our interpreter
and under the official SDK's. In both, the generated module is importable as
``durabletask.internal.orchestrator_service_pb2``; whichever one the interpreter finds is "local".

Modes (JSON on stdout):

``encode [--dump]``
    For every message type of the file, nested types included, build instances in which every
    field is set -- one instance per oneof member, two elements per repeated field, two entries per
    map, nested messages filled down to a bounded depth -- with deterministic values derived from
    each field's message, name, number and type. Output ``{"messages": {full_name: [base64, ...]}}``;
    with ``--dump`` also ``"dumps"``: the local decode of those same bytes.
``decode``
    Read the JSON of ``encode`` on stdin, parse every blob with the local class of the same full
    name and print ``{"messages": {full_name: [dump, ...]}}``. A dump is canonical: field name ->
    value, walking the descriptor; unknown fields are listed under ``"__unknown__"``; a type the
    local file lacks becomes ``{"__missing_type__": true}``; a parse failure ``{"__error__": ...}``.
``describe``
    Descriptor facts: file name, package, every message with its fields (name, number, type,
    label, type_name, oneof), reserved ranges, every enum with its values, every service with its
    methods (input/output types and streaming flags).

The functions take a ``FileDescriptor`` so that tests can also run them on a descriptor loaded into
a private ``DescriptorPool`` (for example a deliberately corrupted copy of ours).
"""

from __future__ import annotations

import base64
import json
import sys
import zlib
from collections.abc import Callable, Iterator
from typing import Any

from google.protobuf import descriptor_pb2, message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor, FileDescriptor
from google.protobuf.message import DecodeError, Message

MODULE = "durabletask.internal.orchestrator_service_pb2"

# Nesting depth (below the top-level instance) down to which sub-messages are filled in.
MAX_DEPTH = 3

_WRAPPERS = {
    "google.protobuf.StringValue",
    "google.protobuf.BytesValue",
    "google.protobuf.BoolValue",
    "google.protobuf.Int32Value",
    "google.protobuf.Int64Value",
    "google.protobuf.UInt32Value",
    "google.protobuf.UInt64Value",
    "google.protobuf.FloatValue",
    "google.protobuf.DoubleValue",
}
_INT_TYPES = {
    FieldDescriptor.TYPE_INT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SINT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_INT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SINT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_UINT32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_FIXED32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_UINT64: (0, 2**64 - 1),
    FieldDescriptor.TYPE_FIXED64: (0, 2**64 - 1),
}
_TYPE_NAMES = {v: k for k, v in descriptor_pb2.FieldDescriptorProto.Type.items()}


# ---------------------------------------------------------------------------------------------
# deterministic values
# ---------------------------------------------------------------------------------------------

def _seed(field: FieldDescriptor, salt: str) -> int:
    key = f"{field.containing_type.full_name}.{field.name}#{field.number}:{field.type}/{salt}"
    return zlib.crc32(key.encode())


def _is_repeated(field: FieldDescriptor) -> bool:
    # FieldDescriptor.label is gone from recent protobuf runtimes; is_repeated is gone from old ones.
    flag = getattr(field, "is_repeated", None)
    if flag is not None:
        return bool(flag)
    return bool(field.label == FieldDescriptor.LABEL_REPEATED)


def _is_map(field: FieldDescriptor) -> bool:
    return (field.type == FieldDescriptor.TYPE_MESSAGE and _is_repeated(field)
            and field.message_type.GetOptions().map_entry)


def _scalar(field: FieldDescriptor, salt: str) -> Any:
    seed = _seed(field, salt)
    t = field.type
    if t == FieldDescriptor.TYPE_STRING:
        return f"{field.containing_type.name}.{field.name}-{seed % 10007}-\u00e9\u2603"
    if t == FieldDescriptor.TYPE_BYTES:
        return f"{field.name}:".encode() + seed.to_bytes(4, "big") + b"\x00\xff"
    if t == FieldDescriptor.TYPE_BOOL:
        return True
    if t in _INT_TYPES:
        lo, hi = _INT_TYPES[t]
        magnitude = 1 + seed % 100_000
        if hi > 2**32:
            magnitude = magnitude * 2**33 + 7  # needs more than 32 bits
        value = -magnitude if (lo < 0 and seed % 2) else magnitude
        return max(lo, min(hi, value))
    if t in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        return (1 + seed % 4096) / 8  # exactly representable in a float
    if t == FieldDescriptor.TYPE_ENUM:
        values = [v.number for v in field.enum_type.values if v.number != 0]
        return values[seed % len(values)] if values else 0
    raise TypeError(f"unsupported field type {t} of {field.full_name}")


# ---------------------------------------------------------------------------------------------
# building instances
# ---------------------------------------------------------------------------------------------

def _fill_well_known(msg: Message, seed: int) -> bool:
    """Fill a well-known type; return False if ``msg`` is not one."""
    name = msg.DESCRIPTOR.full_name
    fields = msg.DESCRIPTOR.fields_by_name
    if name in _WRAPPERS:
        value_field = fields["value"]
        if value_field.type == FieldDescriptor.TYPE_STRING and seed % 4 == 0:
            msg.SetInParent()  # present but empty: must stay distinguishable from absent
        else:
            msg.value = _scalar(value_field, str(seed))  # type: ignore[attr-defined]
        return True
    if name == "google.protobuf.Timestamp":
        msg.seconds = 1_600_000_000 + seed % 100_000_000
        msg.nanos = (seed % 999) * 1_000_000 + 123
        return True
    if name == "google.protobuf.Duration":
        msg.seconds = 1 + seed % 100_000
        msg.nanos = (seed % 997) * 1_000 + 5
        return True
    if name == "google.protobuf.Empty":
        msg.SetInParent()
        return True
    if name == "google.protobuf.Value":
        kind = seed % 3
        if kind == 0:
            msg.string_value = f"v{seed % 9973}"
        elif kind == 1:
            msg.number_value = (seed % 4096) / 4
        else:
            struct = msg.struct_value
            struct.fields["n"].number_value = 2.5
            struct.fields["b"].bool_value = True
            struct.fields["z"].null_value = 0
            items = struct.fields["l"].list_value
            items.values.add().string_value = "x"
            items.values.add().number_value = seed % 17
        return True
    return False


def _fill_field(msg: Message, field: FieldDescriptor, depth: int, salt: str) -> None:
    # The field's name goes into the salt of everything below it, so that sibling fields of the
    # same type (input/output wrappers, pastEvents/newEvents, ...) never carry equal values and a
    # swap of their numbers cannot go unnoticed.
    salt = f"{salt}>{field.name}"
    if _is_map(field):
        key_field = field.message_type.fields_by_name["key"]
        value_field = field.message_type.fields_by_name["value"]
        container = getattr(msg, field.name)
        for i in range(2):
            key = _scalar(key_field, f"{salt}/k{i}")
            if value_field.type == FieldDescriptor.TYPE_MESSAGE:
                _fill_message(container[key], depth + 1, f"{salt}/v{i}")
            else:
                container[key] = _scalar(value_field, f"{salt}/v{i}")
        return
    if field.type in (FieldDescriptor.TYPE_MESSAGE, FieldDescriptor.TYPE_GROUP):
        if _is_repeated(field):
            container = getattr(msg, field.name)
            for i in range(2):
                _fill_message(container.add(), depth + 1, f"{salt}/{i}")
        else:
            _fill_message(getattr(msg, field.name), depth + 1, salt)
        return
    if _is_repeated(field):
        getattr(msg, field.name).extend(_scalar(field, f"{salt}/{i}") for i in range(2))
    else:
        setattr(msg, field.name, _scalar(field, salt))


def _user_message_allowed(field: FieldDescriptor, depth: int) -> bool:
    if field.type != FieldDescriptor.TYPE_MESSAGE:
        return True
    target = field.message_type
    if _is_map(field):
        target = target.fields_by_name["value"].message_type or target
    if target.file.name.startswith("google/protobuf/"):
        return True  # well-known types are leaves, always filled
    return depth < MAX_DEPTH


def _fill_message(msg: Message, depth: int, salt: str, oneof_choice: int | None = None) -> None:
    desc = msg.DESCRIPTOR
    if _fill_well_known(msg, zlib.crc32(f"{desc.full_name}/{salt}".encode())):
        return
    msg.SetInParent()
    for field in desc.fields:
        oneof = field.containing_oneof
        if oneof is not None:
            members = list(oneof.fields)
            if oneof_choice is not None:
                pick = oneof_choice % len(members)
            else:
                pick = (zlib.crc32(oneof.full_name.encode()) + depth) % len(members)
            if members[pick] is not field:
                continue
        if not _user_message_allowed(field, depth):
            continue
        _fill_field(msg, field, depth, salt)


def iter_message_types(file: FileDescriptor) -> Iterator[Descriptor]:
    """Every message type of ``file``, nested ones (map entries included) after their parent."""
    def walk(desc: Descriptor) -> Iterator[Descriptor]:
        yield desc
        for nested in desc.nested_types:
            yield from walk(nested)
    for top in file.message_types_by_name.values():
        yield from walk(top)


def build_instances(desc: Descriptor) -> list[Message]:
    cls = message_factory.GetMessageClass(desc)
    count = max([len(o.fields) for o in desc.oneofs] or [1])
    instances = []
    for i in range(count):
        msg = cls()
        _fill_message(msg, 0, f"#{i}", oneof_choice=i)
        instances.append(msg)
    return instances


def encode_corpus(file: FileDescriptor) -> dict[str, list[bytes]]:
    return {desc.full_name: [m.SerializeToString(deterministic=True) for m in build_instances(desc)]
            for desc in iter_message_types(file)}


# ---------------------------------------------------------------------------------------------
# canonical dump
# ---------------------------------------------------------------------------------------------

def _unknown(msg: Message) -> list[list[int]]:
    try:
        from google.protobuf import unknown_fields
        return sorted([u.field_number, u.wire_type] for u in unknown_fields.UnknownFieldSet(msg))
    except ImportError:  # old runtimes
        return sorted([u.field_number, u.wire_type] for u in msg.UnknownFields())  # type: ignore[attr-defined]


def _dump_value(field: FieldDescriptor, value: Any) -> Any:
    if field.type in (FieldDescriptor.TYPE_MESSAGE, FieldDescriptor.TYPE_GROUP):
        return dump_message(value)
    if field.type == FieldDescriptor.TYPE_BYTES:
        return {"bytes": base64.b64encode(value).decode()}
    if field.type == FieldDescriptor.TYPE_ENUM:
        return int(value)
    if isinstance(value, float):
        return {"float": repr(value)}
    return value


def dump_message(msg: Message) -> dict[str, Any]:
    """Field name -> value for every field present on the wire (ListFields), recursively."""
    out: dict[str, Any] = {}
    for field, value in msg.ListFields():
        if _is_map(field):
            value_field = field.message_type.fields_by_name["value"]
            out[field.name] = {str(k): _dump_value(value_field, value[k]) for k in sorted(value)}
        elif _is_repeated(field):
            out[field.name] = [_dump_value(field, v) for v in value]
        else:
            out[field.name] = _dump_value(field, value)
    unknown = _unknown(msg)
    if unknown:
        out["__unknown__"] = unknown
    return out


def decode_corpus(file: FileDescriptor, blobs: dict[str, list[bytes]]) -> dict[str, list[dict[str, Any]]]:
    local = {d.full_name: d for d in iter_message_types(file)}
    out: dict[str, list[dict[str, Any]]] = {}
    for name, items in blobs.items():
        desc = local.get(name)
        if desc is None:
            out[name] = [{"__missing_type__": True} for _ in items]
            continue
        cls = message_factory.GetMessageClass(desc)
        dumps = []
        for data in items:
            msg = cls()
            try:
                msg.ParseFromString(data)
            except DecodeError as exc:
                dumps.append({"__error__": f"DecodeError: {exc}"})
                continue
            dumps.append(dump_message(msg))
        out[name] = dumps
    return out


# ---------------------------------------------------------------------------------------------
# descriptor facts
# ---------------------------------------------------------------------------------------------

def describe(file: FileDescriptor) -> dict[str, Any]:
    proto = descriptor_pb2.FileDescriptorProto()
    file.CopyToProto(proto)
    prefix = f"{proto.package}." if proto.package else ""
    labels = {v: k for k, v in descriptor_pb2.FieldDescriptorProto.Label.items()}
    messages: dict[str, Any] = {}
    enums: dict[str, Any] = {}

    def add_enum(e: descriptor_pb2.EnumDescriptorProto, full: str) -> None:
        enums[full] = {v.name: v.number for v in e.value}

    def add_message(m: descriptor_pb2.DescriptorProto, full: str) -> None:
        oneofs = [o.name for o in m.oneof_decl]
        messages[full] = {
            "fields": {
                f.name: {
                    "number": f.number,
                    "type": _TYPE_NAMES[f.type],
                    "label": labels[f.label],
                    "type_name": f.type_name,
                    "oneof": (oneofs[f.oneof_index] if f.HasField("oneof_index") and not f.proto3_optional
                              else None),
                    "proto3_optional": f.proto3_optional,
                }
                for f in m.field
            },
            "oneofs": oneofs,
            "map_entry": m.options.map_entry,
            "reserved": sorted([r.start, r.end] for r in m.reserved_range),
        }
        for nested in m.nested_type:
            add_message(nested, f"{full}.{nested.name}")
        for e in m.enum_type:
            add_enum(e, f"{full}.{e.name}")

    for m in proto.message_type:
        add_message(m, prefix + m.name)
    for e in proto.enum_type:
        add_enum(e, prefix + e.name)
    services = {
        prefix + s.name: {
            meth.name: {
                "input": meth.input_type,
                "output": meth.output_type,
                "client_streaming": meth.client_streaming,
                "server_streaming": meth.server_streaming,
            }
            for meth in s.method
        }
        for s in proto.service
    }
    return {
        "file": proto.name,
        "package": proto.package,
        "syntax": proto.syntax,
        "dependencies": list(proto.dependency),
        "messages": messages,
        "enums": enums,
        "services": services,
    }


# ---------------------------------------------------------------------------------------------
# JSON helpers and CLI
# ---------------------------------------------------------------------------------------------

def blobs_to_json(blobs: dict[str, list[bytes]]) -> dict[str, list[str]]:
    return {name: [base64.b64encode(b).decode() for b in items] for name, items in blobs.items()}


def blobs_from_json(data: dict[str, list[str]]) -> dict[str, list[bytes]]:
    return {name: [base64.b64decode(s) for s in items] for name, items in data.items()}


def _local_file() -> FileDescriptor:
    import importlib
    return importlib.import_module(MODULE).DESCRIPTOR  # type: ignore[no-any-return]


def main(argv: list[str] | None = None, file_loader: Callable[[], FileDescriptor] = _local_file) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] not in ("encode", "decode", "describe"):
        print("usage: wire_corpus.py encode [--dump] | decode < corpus.json | describe", file=sys.stderr)
        return 2
    file = file_loader()
    result: dict[str, Any]
    if args[0] == "encode":
        blobs = encode_corpus(file)
        result = {"file": file.name, "messages": blobs_to_json(blobs)}
        if "--dump" in args[1:]:
            result["dumps"] = decode_corpus(file, blobs)
    elif args[0] == "decode":
        request = json.load(sys.stdin)
        result = {"file": file.name, "messages": decode_corpus(file, blobs_from_json(request["messages"]))}
    else:
        result = describe(file)
    json.dump(result, sys.stdout, sort_keys=True, ensure_ascii=True)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
