"""User-visible behaviour of the payload converter (``durabletask.serialization``)."""

from __future__ import annotations  # every annotation below is a string: forward refs get exercised

import dataclasses
import datetime
import enum
import json
import logging
import threading
from collections.abc import Sequence
from types import SimpleNamespace
from typing import Annotated, Any, Generic, NamedTuple, NewType, Optional, TypeVar, Union

import pytest

from durabletask.serialization import (
    DEFAULT_DATA_CONVERTER,
    DataConverter,
    DeserializationError,
    JsonDataConverter,
    SerializationError,
)

T = TypeVar("T")
UserId = NewType("UserId", int)


class Color(str, enum.Enum):
    RED = "red"
    BLUE = "blue"


class Level(enum.Enum):
    LOW = 1
    HIGH = 2.5


class Perm(enum.Flag):
    R = 1
    W = 2


class Pair(NamedTuple):
    left: int
    right: Address


@dataclasses.dataclass
class Address:
    street: str
    zip: str = "00000"


@dataclasses.dataclass
class Person:
    name: str
    home: Address
    others: list[Address] = dataclasses.field(default_factory=list)
    work: Optional[Address] = None
    by_label: dict[str, Address] = dataclasses.field(default_factory=dict)
    color: Color = Color.RED
    coords: tuple[float, float] = (0.0, 0.0)


@dataclasses.dataclass
class Node:
    value: int
    children: list[Node] = dataclasses.field(default_factory=list)
    parent_value: Optional[int] = None


@dataclasses.dataclass
class Rect:
    w: int
    h: int
    area: int = dataclasses.field(init=False, default=0)

    def __post_init__(self) -> None:
        self.area = self.w * self.h


@dataclasses.dataclass(init=False)
class Restored:
    a: int
    restored: bool = dataclasses.field(init=False, default=False)

    def __init__(self, a: int, restored: bool = False) -> None:
        self.a = a
        self.restored = restored


@dataclasses.dataclass
class Page(Generic[T]):
    items: list[T]
    total: int


class Money:
    def __init__(self, cents: int) -> None:
        self.cents = cents

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Money) and other.cents == self.cents

    def to_json(self) -> str:
        return f"{self.cents / 100:.2f}"

    @classmethod
    def from_json(cls, value: str) -> Money:
        return cls(round(float(value) * 100))


@dataclasses.dataclass
class Cart:
    total: Money
    owner: Person


class Wrapper:
    """from_json receives the converter when its second parameter is named ``converter``."""

    def __init__(self, people: list[Person]) -> None:
        self.people = people

    def to_json(self) -> dict[str, Any]:
        return {"people": self.people}

    @classmethod
    def from_json(cls, value: dict[str, Any], converter: DataConverter) -> Wrapper:
        return cls([converter.coerce(p, Person) for p in value["people"]])


class StaticHook:
    def __init__(self, v: int) -> None:
        self.v = v

    @staticmethod
    def to_json(obj: StaticHook) -> list[int]:
        return [obj.v]


class Opaque:
    pass


PERSON = Person("Ada", Address("1 Main"), [Address("2 Old", "75001")], Address("3 Work"),
                {"home": Address("1 Main")}, Color.BLUE, (1.5, -2.0))

conv = JsonDataConverter()


def roundtrip(value: Any, target: Any = None) -> Any:
    return conv.deserialize(conv.serialize(value), target)


# ----------------------------------------------------------------------------- absent payloads


def test_none_and_empty_payloads_mean_no_payload() -> None:
    assert conv.serialize(None) is None
    assert conv.deserialize(None) is None
    assert conv.deserialize("") is None
    assert conv.deserialize(None, Person) is None
    assert conv.deserialize("", int) is None
    assert conv.deserialize("null", Person) is None
    assert conv.coerce(None, Person) is None


def test_empty_values_are_not_absent() -> None:
    assert conv.serialize("") == '""'
    assert conv.serialize([]) == "[]"
    assert conv.serialize({}) == "{}"
    assert conv.serialize(0) == "0"
    assert conv.serialize(False) == "false"
    assert conv.deserialize('""') == ""
    assert conv.deserialize("0") == 0


# ----------------------------------------------------------------------------- plain JSON


@pytest.mark.parametrize("value", [
    0, -1, 2**80, 1.5, 1e300, True, False, "text", "caf\u00e9 \U0001f600 \n \"", [], {},
    [1, "a", None, [2.5, {"k": [True]}]], {"a": {"b": {"c": []}}},
])
def test_json_native_values_round_trip_and_match_json_dumps(value: Any) -> None:
    encoded = conv.serialize(value)
    assert encoded == json.dumps(value)
    assert conv.deserialize(encoded) == value


def test_non_finite_floats_use_the_json_module_spelling() -> None:
    assert conv.serialize(float("inf")) == "Infinity"
    assert conv.serialize([float("-inf")]) == "[-Infinity]"
    assert conv.serialize(float("nan")) == "NaN"
    assert conv.deserialize("NaN") != conv.deserialize("NaN")


def test_untyped_decoding_returns_plain_json() -> None:
    assert conv.deserialize(conv.serialize(PERSON)) == {
        "name": "Ada", "home": {"street": "1 Main", "zip": "00000"},
        "others": [{"street": "2 Old", "zip": "75001"}], "work": {"street": "3 Work", "zip": "00000"},
        "by_label": {"home": {"street": "1 Main", "zip": "00000"}}, "color": "blue", "coords": [1.5, -2.0],
    }


def test_surrounding_whitespace_and_bytes_are_accepted() -> None:
    assert conv.deserialize(' \n{"a": [1, 2]} \t') == {"a": [1, 2]}
    assert conv.deserialize(b'{"a": 1}') == {"a": 1}  # type: ignore[arg-type]
    assert conv.deserialize(' {"street": "s"} ', Address) == Address("s")


@pytest.mark.parametrize("bad", ["{", "[1,]", "1 2", "\ufeff1", "nope"])
def test_invalid_json_raises_json_decode_error(bad: str) -> None:
    with pytest.raises(json.JSONDecodeError):
        conv.deserialize(bad)
    with pytest.raises(json.JSONDecodeError):
        conv.deserialize(bad, Address)


def test_dict_keys_are_stringified_like_json_dumps() -> None:
    encoded = conv.serialize({1: "a", 2.5: "b", None: "c", False: "d"})
    assert encoded == '{"1": "a", "2.5": "b", "null": "c", "false": "d"}'


# ----------------------------------------------------------------------------- custom types


def test_tuples_and_named_tuples_are_arrays() -> None:
    assert conv.serialize((1, "a")) == '[1, "a"]'
    assert conv.serialize(Pair(1, Address("s"))) == '[1, {"street": "s", "zip": "00000"}]'
    assert roundtrip((1, "a")) == [1, "a"]
    assert roundtrip((1, "a"), tuple[int, str]) == (1, "a")
    assert roundtrip((1, 2, 3), tuple[int, ...]) == (1, 2, 3)
    assert roundtrip(Pair(1, Address("s")), Pair) == Pair(1, Address("s"))
    assert conv.deserialize('{"left": 1, "right": {"street": "s"}}', Pair) == Pair(1, Address("s"))


def test_enums_are_encoded_as_their_values_and_rebuilt_by_type() -> None:
    assert conv.serialize(Color.BLUE) == '"blue"'
    assert conv.serialize(Level.HIGH) == "2.5"
    assert conv.serialize(Perm.R | Perm.W) == "3"
    assert conv.serialize({"c": Level.LOW}) == '{"c": 1}'
    assert roundtrip(Color.BLUE, Color) is Color.BLUE
    assert roundtrip(Level.HIGH, Level) is Level.HIGH
    assert roundtrip(Perm.R | Perm.W, Perm) == Perm.R | Perm.W
    assert roundtrip([Level.LOW], list[Level]) == [Level.LOW]


def test_dataclasses_round_trip_with_nested_types() -> None:
    assert conv.serialize(Address("s")) == '{"street": "s", "zip": "00000"}'
    assert roundtrip(PERSON, Person) == PERSON
    assert roundtrip([PERSON], list[Person]) == [PERSON]
    assert roundtrip({"a": PERSON}, dict[str, Person]) == {"a": PERSON}
    assert roundtrip(PERSON, Optional[Person]) == PERSON
    assert roundtrip(PERSON, Union[Person, None]) == PERSON


def test_self_referencing_dataclass() -> None:
    tree = Node(1, [Node(2, [Node(3)], 1), Node(4, [], 1)])
    assert roundtrip(tree, Node) == tree


def test_unknown_keys_are_ignored_and_missing_keys_use_defaults() -> None:
    # Lets payloads recorded by an older version of a class keep loading after fields change.
    assert conv.deserialize('{"street": "s", "removed_field": 1}', Address) == Address("s")
    assert conv.deserialize('{"name": "n", "home": {"street": "s"}}', Person) == Person("n", Address("s"))


def test_fields_excluded_from_init() -> None:
    assert conv.serialize(Rect(2, 3)) == '{"w": 2, "h": 3, "area": 6}'
    assert roundtrip(Rect(2, 3), Rect) == Rect(2, 3)  # recomputed by __post_init__
    restored = Restored(1, True)
    assert roundtrip(restored, Restored).restored is True  # handwritten __init__ accepts it


def test_to_json_and_from_json_hooks() -> None:
    cart = Cart(Money(1250), PERSON)
    assert conv.serialize(Money(1250)) == '"12.50"'
    assert json.loads(conv.serialize(cart) or "")["total"] == "12.50"
    assert roundtrip(Money(5), Money) == Money(5)
    assert roundtrip(cart, Cart) == cart
    assert conv.serialize(StaticHook(3)) == "[3]"


def test_from_json_hook_receives_the_converter_when_it_asks_for_it() -> None:
    rebuilt = roundtrip(Wrapper([PERSON]), Wrapper)
    assert isinstance(rebuilt, Wrapper) and rebuilt.people == [PERSON]


def test_simple_namespace_is_encoded_as_an_object() -> None:
    assert conv.serialize(SimpleNamespace(a=1, b=SimpleNamespace(c=[2]))) == '{"a": 1, "b": {"c": [2]}}'


def test_generics_and_special_forms() -> None:
    assert conv.deserialize("[1, 2]", set[int]) == {1, 2}
    assert conv.deserialize("[1, 2]", frozenset[int]) == frozenset({1, 2})
    assert conv.deserialize('[{"street": "s"}]', Sequence[Address]) == [Address("s")]
    assert conv.deserialize('{"street": "s"}', Annotated[Address, "meta"]) == Address("s")
    assert conv.deserialize("7", UserId) == 7
    assert conv.deserialize('{"k": [1]}', Any) == {"k": [1]}
    assert conv.deserialize('{"items": [1], "total": 1}', Page[int]) == Page([1], 1)
    assert conv.deserialize('"x"', Union[int, str]) == "x"


def test_union_of_several_classes_keeps_the_decoded_value() -> None:
    # The payload does not say which member it was, so nothing is guessed.
    assert conv.deserialize('{"street": "s"}', Union[Address, Person]) == {"street": "s"}


def test_scalar_conversions() -> None:
    assert conv.deserialize("3", float) == 3.0 and isinstance(conv.deserialize("3", float), float)
    assert conv.deserialize('"12"', int) == 12
    assert conv.deserialize("12", str) == "12"
    assert conv.deserialize("2.0", int) == 2


def test_legacy_auto_object_marker() -> None:
    legacy = '{"__durabletask_autoobject__": true, "street": "s", "x": {"__durabletask_autoobject__": true}}'
    untyped = conv.deserialize(legacy)
    assert isinstance(untyped, SimpleNamespace) and untyped.street == "s"
    assert untyped.x == SimpleNamespace()
    assert conv.deserialize('{"__durabletask_autoobject__": false, "a": 1}') == {"a": 1}
    assert conv.deserialize('{"__durabletask_autoobject__": true, "street": "s"}', Address) == Address("s")


def test_coerce_rebuilds_live_values() -> None:
    assert conv.coerce({"street": "s"}, Address) == Address("s")
    assert conv.coerce([{"street": "s"}], list[Address]) == [Address("s")]
    state = {"street": "s"}
    assert conv.coerce(state, None) is state
    assert conv.coerce(Address("s"), Address) == Address("s")


# ----------------------------------------------------------------------------- wrong shapes


def test_wrong_shape_falls_back_to_decoded_json_and_warns_once(caplog: pytest.LogCaptureFixture) -> None:
    class Fresh(enum.Enum):
        A = "a"

    with caplog.at_level(logging.DEBUG, logger="durabletask"):
        assert conv.deserialize('"zzz"', Fresh) == "zzz"
        assert conv.deserialize('"zzz"', Fresh) == "zzz"
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "Fresh" in warnings[0].getMessage()


@pytest.mark.parametrize(("data", "target"), [
    ('{"a": 1}', str), ("1.7", int), ('"false"', bool), ("1", bool), ('{"a": 1}', list), ('"ab"', list),
])
def test_conversions_that_would_lose_data_are_refused(data: str, target: type) -> None:
    assert conv.deserialize(data, target) == json.loads(data)
    with pytest.raises(DeserializationError):
        JsonDataConverter(strict=True).deserialize(data, target)


def test_strict_mode_raises_an_error_naming_the_target_type() -> None:
    strict = JsonDataConverter(strict=True)
    assert strict.strict and not conv.strict
    with pytest.raises(DeserializationError, match=r"'Address'.*street") as info:
        strict.deserialize('{"zip": "1"}', Address)
    assert info.value.target_type is Address
    assert isinstance(info.value, TypeError) and isinstance(info.value, ValueError)
    with pytest.raises(DeserializationError, match=r"tuple\[int, int\]"):
        strict.deserialize("[1, 2, 3]", tuple[int, int])
    with pytest.raises(DeserializationError, match="Color"):
        strict.coerce("green", Color)
    assert strict.deserialize('{"street": "s"}', Address) == Address("s")


def test_fallback_returns_an_unmodified_payload_even_if_a_hook_mutated_it() -> None:
    class Greedy:
        @classmethod
        def from_json(cls, value: dict[str, Any]) -> Greedy:
            value.clear()
            raise ValueError("no")

    assert conv.deserialize('{"a": 1}', Greedy) == {"a": 1}


# ----------------------------------------------------------------------------- encoding errors


def test_unsupported_type_error_names_the_type_and_the_fix() -> None:
    with pytest.raises(SerializationError) as info:
        conv.serialize(Opaque())
    message = str(info.value)
    assert "'Opaque'" in message and "dataclass" in message and "to_json()" in message
    assert "data_converter=" in message
    assert info.value.value_type is Opaque
    assert isinstance(info.value, TypeError) and isinstance(info.value, ValueError)
    assert info.value.__cause__ is not None


def test_error_locates_the_offending_value_inside_the_payload() -> None:
    value = {"orders": [Address("s"), {"when": datetime.datetime(2024, 1, 1)}]}
    with pytest.raises(SerializationError, match=r"'datetime' at \$\.orders\[1\]\.when of a value of type "
                                                 r"'dict'.*isoformat") as info:
        conv.serialize(value)
    assert info.value.path == "$.orders[1].when"
    with pytest.raises(SerializationError, match=r"'set' at \$\.home\.zip.*sorted"):
        conv.serialize(Person("n", Address("s", {"1"})))  # type: ignore[arg-type]


@pytest.mark.parametrize(("value", "pattern"), [
    (b"x", "'bytes'.*base64"),
    ({(1, 2): 3}, "key of type 'tuple'.*strings"),
    (datetime.timedelta(1), "'timedelta'.*total_seconds"),
])
def test_specific_hints(value: Any, pattern: str) -> None:
    with pytest.raises(SerializationError, match=pattern):
        conv.serialize(value)


def test_circular_reference() -> None:
    cycle: list[Any] = [1]
    cycle.append({"again": cycle})
    with pytest.raises(ValueError, match=r"Circular reference detected at \$\[1\]\.again"):
        conv.serialize(cycle)


def test_failing_to_json_hook_is_reported() -> None:
    class Broken:
        def to_json(self) -> Any:
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):  # not a conversion problem: propagated as is
        conv.serialize(Broken())

    class BadValue:
        def to_json(self) -> Any:
            raise ValueError("bad state")

    with pytest.raises(SerializationError, match=r"to_json\(\) of type .*BadValue.*bad state"):
        conv.serialize([BadValue()])


# ----------------------------------------------------------------------------- converter API


def test_can_reconstruct_follows_the_official_policy() -> None:
    assert conv.can_reconstruct(Address) and conv.can_reconstruct(Money)
    assert conv.can_reconstruct(Optional[Address]) and conv.can_reconstruct(list[Address])
    assert conv.can_reconstruct(Sequence[Money]) and conv.can_reconstruct(Union[int, Address])
    unclaimed = (int, str, dict, Color, Pair, dict[str, Address], tuple[Address], Any, "Address", None)
    for not_claimed in unclaimed:
        assert not conv.can_reconstruct(not_claimed), not_claimed


def test_subclass_override_of_can_reconstruct_is_consulted_for_members() -> None:
    class Model:
        pass

    class ModelConverter(JsonDataConverter):
        def can_reconstruct(self, target_type: Any) -> bool:
            return target_type is Model or super().can_reconstruct(target_type)

    assert ModelConverter().can_reconstruct(Optional[Model])
    assert not conv.can_reconstruct(Optional[Model])


def test_data_converter_is_an_abstract_strategy() -> None:
    with pytest.raises(TypeError):
        DataConverter()  # type: ignore[abstract]

    class Upper(DataConverter):
        def serialize(self, value: Any) -> str | None:
            return None if value is None else str(value).upper()

        def deserialize(self, data: str | None, target_type: type | None = None) -> Any:
            return data

        def coerce(self, value: Any, target_type: type | None = None) -> Any:
            return value

    assert Upper().serialize("a") == "A"
    assert Upper().can_reconstruct(Address) is False
    assert isinstance(DEFAULT_DATA_CONVERTER, JsonDataConverter)


def test_concurrent_encoding_of_a_shared_value() -> None:
    shared = {"people": [PERSON] * 20}
    expected = conv.serialize(shared)
    failures: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(200):
                assert conv.serialize(shared) == expected
        except BaseException as exc:  # pragma: no cover - reported below
            failures.append(exc)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []
