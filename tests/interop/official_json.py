#!/usr/bin/env python3
"""Payload JSON corpus: encode and decode the same values with whichever ``durabletask`` is importable.

Standalone on purpose (standard library + ``durabletask.serialization`` only). Run under the
official SDK's interpreter it exercises the official converter; imported by our tests it exercises
ours. Both sides define the very same classes, so their results can be compared as data.

Modes (JSON on stdout):

``encode``
    ``{case: {"json": text}}`` for every case of :data:`CASES`, or ``{case: {"error": [class names
    of the exception's MRO]}}`` when serialization fails.
``decode``
    Read ``[[label, data, target_name_or_null], ...]`` on stdin, decode each ``data`` with the
    target from :data:`TARGETS` and print ``[description, ...]`` where a description (see
    :func:`describe`) spells out types as well as values so that ``1`` and ``1.0``, a list and a
    tuple, or a dict and a dataclass never compare equal by accident.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import math
import sys
from types import SimpleNamespace
from typing import Any, NamedTuple, Optional, Union  # noqa: F401 - named by TARGETS strings

from durabletask.serialization import JsonDataConverter


class Color(str, enum.Enum):
    RED = "red"
    GREEN = "green"


class Size(enum.Enum):
    SMALL = 1
    LARGE = 2.5


class Priority(enum.IntEnum):
    LOW = 1
    HIGH = 2


class Perm(enum.Flag):
    R = 1
    W = 2


class Point(NamedTuple):
    x: int
    y: int


@dataclasses.dataclass
class Address:
    street: str
    city: str = "Paris"


@dataclasses.dataclass
class Customer:
    name: str
    address: Address
    previous: list[Address] = dataclasses.field(default_factory=list)
    billing: Optional[Address] = None
    tags: dict[str, Address] = dataclasses.field(default_factory=dict)
    color: Color = Color.RED
    size: Size = Size.SMALL
    priority: Priority = Priority.LOW


@dataclasses.dataclass(frozen=True)
class Frozen:
    a: int
    b: tuple[int, ...] = ()


@dataclasses.dataclass
class WithDerived:
    width: int
    height: int
    area: int = dataclasses.field(init=False, default=0)

    def __post_init__(self) -> None:
        self.area = self.width * self.height


@dataclasses.dataclass
class Tree:
    value: int
    children: list[Tree] = dataclasses.field(default_factory=list)


class Money:
    """Encoded as a string through to_json/from_json hooks."""

    def __init__(self, cents: int, currency: str) -> None:
        self.cents = cents
        self.currency = currency

    def to_json(self) -> str:
        return f"{self.cents} {self.currency}"

    @classmethod
    def from_json(cls, value: str) -> Money:
        cents, currency = value.split()
        return cls(int(cents), currency)


@dataclasses.dataclass
class Invoice:
    total: Money
    lines: list[Money]


class Envelope:
    """A from_json hook that asks for the converter to rebuild its nested dataclass."""

    def __init__(self, customer: Customer) -> None:
        self.customer = customer

    def to_json(self) -> dict[str, Any]:
        return {"customer": self.customer}

    @classmethod
    def from_json(cls, value: dict[str, Any], converter: Any) -> Envelope:
        return cls(converter.coerce(value["customer"], Customer))


CYCLE: list[Any] = []
CYCLE.append(CYCLE)

ADDRESS = Address("1 Main St", "Lyon")
CUSTOMER = Customer("Ada", ADDRESS, [Address("2 Old Rd")], Address("3 Bill Ave"), {"home": ADDRESS},
                    Color.GREEN, Size.LARGE, Priority.HIGH)

# name -> (value to encode, target type name for decoding)
CASES: dict[str, tuple[Any, str | None]] = {
    "int": (42, "int"),
    "negative": (-7, None),
    "big_int": (2**70, "int"),
    "float": (1.5, "float"),
    "float_exp": (1e300, None),
    "float_tiny": (5e-324, None),
    "nan": (math.nan, None),
    "inf": (-math.inf, "float"),
    "true": (True, "bool"),
    "false": (False, None),
    "str": ("hello", "str"),
    "empty_str": ("", "str"),
    "unicode": ("caf\u00e9 \u2028 \U0001f600 \x00 \"q\" \\", "str"),
    "empty_list": ([], "list"),
    "empty_dict": ({}, "dict"),
    "nested": ({"a": [1, 2.0, None, {"b": [True, "x"]}], "c": {}}, None),
    "int_keys": ({1: "a", 2.5: "b", False: "c", None: "d"}, None),
    "unicode_keys": ({"cl\u00e9": "v"}, "dict[str, str]"),
    "tuple": ((1, "a", None), "tuple[int, str, None]"),
    "tuple_var": ((1, 2, 3), "tuple[int, ...]"),
    "namedtuple": (Point(1, 2), None),
    "str_enum": (Color.GREEN, "Color"),
    "plain_enum": (Size.LARGE, "Size"),
    "int_enum": (Priority.HIGH, "Priority"),
    "flag": (Perm.R | Perm.W, "Perm"),
    "enum_in_dict": ({"c": Color.RED, "s": Size.SMALL}, None),
    "dataclass": (ADDRESS, "Address"),
    "nested_dataclass": (CUSTOMER, "Customer"),
    "dataclass_untyped": (CUSTOMER, None),
    "list_of_dataclass": ([ADDRESS, Address("x")], "list[Address]"),
    "optional_dataclass": (ADDRESS, "Optional[Address]"),
    "optional_none_member": ([None, ADDRESS], "list[Optional[Address]]"),
    "dict_of_dataclass": ({"a": ADDRESS}, "dict[str, Address]"),
    "tuple_of_dataclass": ((ADDRESS, 3), "tuple[Address, int]"),
    "frozen": (Frozen(1, (2, 3)), "Frozen"),
    "non_init_field": (WithDerived(2, 3), "WithDerived"),
    "recursive": (Tree(1, [Tree(2, [Tree(3)]), Tree(4)]), "Tree"),
    "to_json_hook": (Money(1250, "EUR"), "Money"),
    "hooks_nested": (Invoice(Money(1, "USD"), [Money(2, "USD")]), "Invoice"),
    "hook_with_converter": (Envelope(CUSTOMER), "Envelope"),
    "namespace": (SimpleNamespace(a=1, b=SimpleNamespace(c=[1])), None),
    "union_keeps_value": ({"street": "s"}, "Union[Address, Customer]"),
    "union_member_match": (5, "Union[int, Address]"),
    "int_to_float": (3, "float"),
    "number_to_str": (12, "str"),
    "str_to_int": ("12", "int"),
    "any_target": ({"k": 1}, "Any"),
    "missing_field": ({"city": "x"}, "Address"),
    "extra_field": ({"street": "s", "zip": "75001"}, "Address"),
    "wrong_enum_value": ("purple", "Color"),
    "datetime": (__import__("datetime").datetime(2024, 1, 2, 3, 4, 5), None),
    "set": ({1, 2}, None),
    "bytes": (b"x", None),
    "tuple_key": ({(1, 2): 3}, None),
    "unserializable_nested": ({"a": [object()]}, None),
    "circular": (CYCLE, None),
}

# Decode-only payloads written by older SDK releases (legacy auto-object marker).
LEGACY: dict[str, tuple[str, str | None]] = {
    "legacy_untyped": ('{"__durabletask_autoobject__": true, "street": "s", '
                       '"inner": {"__durabletask_autoobject__": true, "x": 1}}', None),
    "legacy_typed": ('{"__durabletask_autoobject__": true, "street": "s", "city": "c"}', "Address"),
    "legacy_false_marker": ('{"__durabletask_autoobject__": false, "a": 1}', None),
    "legacy_in_list": ('[{"__durabletask_autoobject__": true, "street": "s"}]', "list[Address]"),
    "whitespace": (' \n {"a" : [1 , 2]} \t', None),
    "whitespace_typed": (' {"street": "s"} ', "Address"),
}

TARGETS: dict[str, Any] = {
    name: eval(name, globals())  # the names above are this file's own type expressions
    for name in {t for _, t in [*CASES.values(), *LEGACY.values()] if t is not None} | {"Point"}
}


def describe(value: Any) -> Any:
    """Spell out a decoded value with its types, as plain JSON comparable across interpreters."""
    if value is None:
        return None
    kind = type(value)
    if isinstance(value, enum.Enum):
        return [f"enum:{kind.__qualname__}", describe(value.value)]
    if kind is float:
        return ["float", repr(value)]
    if kind in (bool, int, str):
        return [kind.__name__, value]
    if dataclasses.is_dataclass(value):
        return [f"dataclass:{kind.__qualname__}",
                {f.name: describe(getattr(value, f.name)) for f in dataclasses.fields(value)}]
    if isinstance(value, tuple) and hasattr(value, "_fields"):
        return [f"namedtuple:{kind.__qualname__}", [describe(v) for v in value]]
    if kind in (list, tuple):
        return [kind.__name__, [describe(v) for v in value]]
    if kind in (set, frozenset):
        return [kind.__name__, sorted((describe(v) for v in value), key=repr)]
    if kind is dict:
        return ["dict", [[describe(k), describe(v)] for k, v in value.items()]]
    if kind is SimpleNamespace:
        return ["namespace", describe(vars(value))]
    state = describe(vars(value)) if hasattr(value, "__dict__") else repr(value)
    return [f"object:{kind.__qualname__}", state]


def encode_all() -> dict[str, Any]:
    converter = JsonDataConverter()
    out: dict[str, Any] = {}
    for name, (value, _) in CASES.items():
        try:
            out[name] = {"json": converter.serialize(value)}
        except Exception as exc:
            out[name] = {"error": [c.__name__ for c in type(exc).__mro__]}
    return out


def decode_all(requests: list[list[Any]]) -> list[Any]:
    converter = JsonDataConverter()
    results: list[Any] = []
    for _label, data, target in requests:
        try:
            decoded = converter.deserialize(data, TARGETS[target] if target else None)
            results.append({"value": describe(decoded)})
        except Exception as exc:
            results.append({"error": [c.__name__ for c in type(exc).__mro__]})
    return results


def main(argv: list[str]) -> int:
    if argv[1:] == ["encode"]:
        json.dump(encode_all(), sys.stdout)
    elif argv[1:] == ["decode"]:
        json.dump(decode_all(json.load(sys.stdin)), sys.stdout)
    else:
        print("usage: official_json.py encode|decode", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
