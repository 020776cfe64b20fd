"""Discovery of payload types from the annotations of orchestrators, activities and entities."""

from __future__ import annotations  # annotations are strings, as in most user code

import dataclasses
import functools
from collections.abc import Generator, Iterator
from typing import Any, Optional

import pytest

from durabletask.internal import type_discovery as td
from durabletask.serialization import JsonDataConverter


@dataclasses.dataclass
class Order:
    id: int


@dataclasses.dataclass
class Receipt:
    total: float


class Money:
    @classmethod
    def from_json(cls, value: Any) -> Money:
        return cls()


class Model:
    """Stands for a third-party model type only a custom converter knows how to build."""


class ModelConverter(JsonDataConverter):
    def can_reconstruct(self, target_type: Any) -> bool:
        return target_type is Model or super().can_reconstruct(target_type)


def typed_orchestrator(ctx: Any, order: Order) -> Generator[Any, Any, Receipt]:
    yield None
    return Receipt(1.0)


def optional_input(ctx: Any, order: Optional[Order]) -> list[Receipt]:
    return []


def builtin_input(ctx: Any, n: int) -> int:
    return n


def dict_input(ctx: Any, orders: dict[str, Order]) -> dict[str, Receipt]:
    return {}


def untyped(ctx, order):  # type: ignore[no-untyped-def]
    return order


def any_input(ctx: Any, order: Any) -> Any:
    return order


def no_input(ctx: Any) -> None:
    return None


def broken_ctx_annotation(ctx: NotDefinedAnywhere, order: Order) -> Receipt:  # type: ignore[name-defined]  # noqa: F821
    return Receipt(0)


def model_input(ctx: Any, m: Model) -> Model:
    return m


def iterator_orchestrator(ctx: Any, order: Order) -> Iterator[Any]:
    yield None


def generator_without_result(ctx: Any, order: Order) -> Generator[Any, Any, None]:
    yield None


def money_activity(ctx: Any, m: Money) -> Money:
    return m


class Service:
    def orchestrate(self, ctx: Any, order: Order) -> Generator[Any, Any, Receipt]:
        yield None
        return Receipt(0)

    def activity(self, ctx: Any, order: Order) -> Receipt:
        return Receipt(0)

    @classmethod
    def class_activity(cls, ctx: Any, order: Order) -> Receipt:
        return Receipt(0)

    @staticmethod
    def static_activity(ctx: Any, order: Order) -> Receipt:
        return Receipt(0)


class CallableActivity:
    def __call__(self, ctx: Any, order: Order) -> Receipt:
        return Receipt(0)


class UnhashableActivity(CallableActivity):
    __hash__ = None  # type: ignore[assignment]

    def __eq__(self, other: object) -> bool:
        return other is self


class Counter:
    """A class-based entity: operations are methods taking (self, input)."""

    def add(self, order: Order) -> None: ...

    def reset(self) -> None: ...

    def count(self, n: int) -> None: ...

    label = "not callable"


def function_entity(ctx: Any, order: Optional[Order]) -> None: ...


def test_input_types_of_functions() -> None:
    assert td.orchestrator_input_type(typed_orchestrator) is Order
    assert td.activity_input_type(optional_input) == Optional[Order]
    assert td.activity_input_type(money_activity) is Money


@pytest.mark.parametrize("fn", [builtin_input, dict_input, untyped, any_input, no_input, model_input])
def test_nothing_reconstructable_means_none(fn: Any) -> None:
    assert td.orchestrator_input_type(fn) is None
    assert td.activity_input_type(fn) is None
    assert td.activity_output_type(fn) is None


def test_activity_output_types() -> None:
    assert td.activity_output_type(optional_input) == list[Receipt]
    assert td.activity_output_type(money_activity) is Money
    assert td.activity_output_type(no_input) is None
    assert td.activity_output_type("activity_name") is None
    assert td.activity_output_type(None) is None


def test_orchestrator_output_type_reads_the_generator_return_type() -> None:
    assert td.orchestrator_output_type(typed_orchestrator) is Receipt
    assert td.orchestrator_output_type(Service().orchestrate) is Receipt
    assert td.orchestrator_output_type(iterator_orchestrator) is None
    assert td.orchestrator_output_type(generator_without_result) is None
    assert td.orchestrator_output_type(optional_input) == list[Receipt]  # not a generator: taken as is
    assert td.orchestrator_output_type("name") is None


def test_one_unresolvable_annotation_does_not_hide_the_others() -> None:
    assert td.activity_input_type(broken_ctx_annotation) is Order
    assert td.activity_output_type(broken_ctx_annotation) is Receipt


@pytest.mark.parametrize("fn", [
    Service().activity, Service.class_activity, Service.static_activity, Service().static_activity,
    CallableActivity(), UnhashableActivity(), functools.partial(Service.activity, Service()),
])
def test_methods_and_callable_objects(fn: Any) -> None:
    assert td.activity_input_type(fn) is Order
    assert td.activity_output_type(fn) is Receipt
    assert td.activity_input_type(fn) is Order  # memoized answer is the same


def test_entity_operations() -> None:
    assert td.entity_input_type(Counter, "add") is Order
    assert td.entity_input_type(Counter, "reset") is None
    assert td.entity_input_type(Counter, "count") is None
    assert td.entity_input_type(Counter, "missing") is None
    assert td.entity_input_type(Counter, "label") is None
    assert td.entity_input_type(function_entity, "anything") == Optional[Order]


def test_the_converter_decides_what_is_reconstructable() -> None:
    custom = ModelConverter()
    assert td.activity_input_type(model_input, custom) is Model
    assert td.activity_output_type(model_input, custom) is Model
    assert td.activity_input_type(model_input) is None  # same function, default converter
    assert td.activity_input_type(typed_orchestrator, custom) is Order


def test_uninspectable_callables_yield_none() -> None:
    assert td.activity_input_type(print) is None
    assert td.orchestrator_input_type(len) is None
    assert td.activity_input_type(42) is None  # type: ignore[arg-type]


def test_signatures_are_inspected_once_per_function(monkeypatch: pytest.MonkeyPatch) -> None:
    td.clear_cache()
    calls: list[Any] = []
    real = td._inspect

    def counting(fn: Any) -> Any:
        calls.append(fn)
        return real(fn)

    monkeypatch.setattr(td, "_inspect", counting)
    for _ in range(3):
        td.orchestrator_input_type(typed_orchestrator)
        td.activity_output_type(typed_orchestrator)
        td.activity_input_type(Service().activity)  # a new bound method each time
    assert len(calls) == 2
