"""Type-directed reconstruction of decoded JSON: the engine behind ``JsonDataConverter``.

Reading a payload "as ``Order``" means walking the decoded JSON alongside the target type. The walk
is compiled once per target type into a *plan* -- a function ``(value, converter) -> value`` -- so
that decoding the same type again (once per history event during replay) costs a dict lookup plus
the conversions themselves. Plans raise ``TypeError`` (or whatever a user hook raises) on a value
that does not fit; the converter decides whether that is an error or a fallback.

The target type is always chosen by the caller; nothing in the payload selects a class.
"""

from __future__ import annotations

import dataclasses
import inspect
import sys
import types
import typing
from collections.abc import Callable, Mapping, MutableMapping, MutableSequence, Sequence
from typing import Any, Final, cast

__all__ = ["Plan", "plan_for", "type_name"]

_CACHE_LIMIT: Final = 4096

#: A compiled reconstruction: ``plan(value, converter) -> value``.
Plan = Callable[[Any, Any], Any]
_PLANS: dict[Any, Plan] = {}


def plan_for(target: Any) -> Plan:
    """Return the (memoized) plan that rebuilds decoded JSON as ``target``.

    Args:
        target: A type or type hint; ``None``, ``Any`` and unresolvable forward references give
            a plan that returns values unchanged.

    Returns:
        A function ``(value, converter) -> value``. ``converter`` is handed to ``from_json``
        hooks that ask for it and may be ``None``.
    """
    try:
        return _PLANS[target]
    except KeyError:
        pass
    except TypeError:  # unhashable annotation, e.g. Literal[[1]]
        return _build_plan(target)
    plan = _build_plan(target)
    if len(_PLANS) >= _CACHE_LIMIT:
        _PLANS.clear()
    _PLANS[target] = plan
    return plan


def _identity(value: Any, converter: Any) -> Any:
    return value


def type_name(target: Any) -> str:
    """Name a target type for messages: ``Order``, ``list[Order]``, ``Optional[Order]``."""
    if isinstance(target, type) and typing.get_origin(target) is None:
        return target.__qualname__
    return str(target).replace("typing.", "")


def _json_kind(value: Any) -> str:
    for kinds, name in ((bool, "boolean"), ((int, float), "number"), (str, "string"),
                        (list, "array"), (dict, "object")):
        if isinstance(value, kinds):
            return f"JSON {name}"
    return f"value of type '{type(value).__qualname__}'"


def _build_plan(target: Any) -> Plan:
    if target is None or target is Any or isinstance(target, (str, typing.ForwardRef)):
        return _identity  # nothing to do, or a forward reference nobody could resolve
    if isinstance(target, typing.NewType):
        return plan_for(target.__supertype__)
    origin = typing.get_origin(target)
    if origin is not None:
        return _generic_plan(target, origin, typing.get_args(target))
    if not isinstance(target, type):
        return _identity  # TypeVar, Literal without args, other special forms
    return _class_plan(target)


def _generic_plan(target: Any, origin: Any, args: tuple[Any, ...]) -> Plan:
    if origin is typing.Union or origin is types.UnionType:
        return _union_plan(args)
    if origin is typing.Annotated:
        return plan_for(args[0])
    if origin in (list, Sequence, MutableSequence):
        item = plan_for(args[0]) if args else _identity
        return lambda v, c: [item(x, c) for x in v] if isinstance(v, list) else v
    if origin in (dict, Mapping, MutableMapping):
        if len(args) != 2:
            return _identity
        member = plan_for(args[1])  # JSON keys are always strings; only values carry types
        return lambda v, c: {k: member(x, c) for k, x in v.items()} if isinstance(v, dict) else v
    if origin is tuple:
        return _tuple_plan(args)
    if origin in (set, frozenset):
        item = plan_for(args[0]) if args else _identity
        return lambda v, c: origin(item(x, c) for x in v) if isinstance(v, (list, tuple)) else v
    if isinstance(origin, type) and (dataclasses.is_dataclass(origin) or hasattr(origin, "from_json")):
        return plan_for(origin)  # a parametrised user generic, e.g. Page[Order]
    return _identity  # Literal, Callable, type[...] and the like stay as decoded


def _union_plan(args: tuple[Any, ...]) -> Plan:
    members = [a for a in args if a is not type(None)]
    if any(a is Any for a in members):
        return _identity
    exact = tuple(a for a in members if isinstance(a, type) and typing.get_origin(a) is None)
    # Only Optional[T] is coerced. For a real Union the payload does not say which member it
    # was, and guessing could quietly build the wrong type, so the decoded value is kept.
    single = plan_for(members[0]) if len(members) == 1 else None

    def coerce(value: Any, converter: Any) -> Any:
        if value is None or (exact and isinstance(value, exact)):
            return value
        return single(value, converter) if single is not None else value

    return coerce


def _tuple_plan(args: tuple[Any, ...]) -> Plan:
    if not args:
        return lambda v, c: tuple(v) if isinstance(v, list) else v
    if len(args) == 2 and args[1] is Ellipsis:
        item = plan_for(args[0])
        return lambda v, c: tuple(item(x, c) for x in v) if isinstance(v, (list, tuple)) else v
    plans = [plan_for(a) for a in args]

    def coerce(value: Any, converter: Any) -> Any:
        if not isinstance(value, (list, tuple)):
            return value
        if len(value) != len(plans):
            raise TypeError(f"a JSON array of length {len(value)} does not fit a {len(plans)}-tuple")
        return tuple(p(x, converter) for p, x in zip(plans, value, strict=True))

    return coerce


def _class_plan(cls: type) -> Plan:
    hook = getattr(cls, "from_json", None)
    if callable(hook):
        convert = _from_json_caller(hook)
    elif dataclasses.is_dataclass(cls):
        convert = _dataclass_builder(cls)
    elif issubclass(cls, tuple) and hasattr(cls, "_fields"):
        convert = _namedtuple_builder(cls)
    else:
        convert = _constructor(cls)

    def coerce(value: Any, converter: Any) -> Any:
        if value is None or isinstance(value, cls):
            return value
        return convert(value, converter)

    return coerce


def _from_json_caller(hook: Callable[..., Any]) -> Plan:
    """Call ``from_json(value)``, or ``from_json(value, converter)`` if its 2nd parameter asks for it."""
    try:
        params = [p for p in inspect.signature(hook).parameters.values()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        wants_converter = len(params) >= 2 and params[1].name == "converter"
    except (TypeError, ValueError):
        wants_converter = False
    if wants_converter:
        return lambda v, c: hook(v, c) if c is not None else hook(v)
    return lambda v, c: hook(v)


def _constructor(cls: type) -> Plan:
    """Build ``cls(value)`` as the official SDK does, refusing conversions that drop information."""

    def construct(value: Any, converter: Any) -> Any:
        lossy = (
            cls is bool  # bool("false") is True
            or (cls is int and isinstance(value, float) and not value.is_integer())
            or (cls is str and isinstance(value, (list, dict)))  # would be a Python repr
            or (cls in (list, tuple, set, frozenset) and isinstance(value, (dict, str)))
        )
        if not lossy:
            try:
                return cast(Any, cls)(value)
            except Exception as exc:
                raise TypeError(f"Cannot convert {_json_kind(value)} to '{cls.__qualname__}': {exc}") from exc
        raise TypeError(f"Cannot convert {_json_kind(value)} to '{cls.__qualname__}' without losing data")

    return construct


class _Never:
    """A type no decoded value has: marks fields whose values always need their plan."""


# (field name, plan or None when values pass through unchanged, type that needs no conversion)
_FieldSpec = tuple[str, Plan | None, type]


def _dataclass_builder(cls: type) -> Plan:
    specs: list[_FieldSpec] | None = None
    fallback = _constructor(cls)

    def build(value: Any, converter: Any) -> Any:
        nonlocal specs
        if not isinstance(value, dict):
            return fallback(value, converter)  # e.g. a one-field dataclass from a scalar
        fields = specs
        if fields is None:
            fields, complete = _dataclass_specs(cls)
            if complete:  # retry unresolved forward references on the next call
                specs = fields
        kwargs = {}
        for name, plan, exact in fields:
            if name in value:
                item = value[name]
                # Skipping the call for values already of the field's type halves decode time.
                kwargs[name] = item if plan is None or type(item) is exact else plan(item, converter)
        try:
            return cls(**kwargs)
        except TypeError as exc:
            raise TypeError(f"Cannot build '{cls.__qualname__}' from a JSON object with keys "
                            f"{sorted(value)}: {exc}") from exc

    return build


def _dataclass_specs(cls: type) -> tuple[list[_FieldSpec], bool]:
    hints, complete = _field_types(cls, {f.name: f.type for f in dataclasses.fields(cls)})
    accepts = _init_keywords(cls)
    specs: list[_FieldSpec] = []
    for f in dataclasses.fields(cls):
        if f.init or accepts is None or f.name in accepts:
            hint, plan = hints[f.name], plan_for(hints[f.name])
            exact = hint if isinstance(hint, type) and typing.get_origin(hint) is None else _Never
            specs.append((f.name, None if plan is _identity else plan, exact))
    return specs, complete


def _namedtuple_builder(cls: type) -> Plan:
    raw: dict[str, Any] = dict(getattr(cls, "__annotations__", {}))
    field_names: tuple[str, ...] = getattr(cls, "_fields", ())
    cache: list[Plan] = []

    def build(value: Any, converter: Any) -> Any:
        if not cache:
            hints, _ = _field_types(cls, {name: raw.get(name) for name in field_names})
            cache.extend(plan_for(hints[name]) for name in field_names)
        if isinstance(value, list):
            return cls(*(p(x, converter) for p, x in zip(cache, value, strict=False)))
        if isinstance(value, dict):
            plans = dict(zip(field_names, cache, strict=True))
            return cls(**{k: plans[k](x, converter) if k in plans else x for k, x in value.items()})
        raise TypeError(f"Cannot convert {_json_kind(value)} to '{cls.__qualname__}'")

    return build


def _field_types(cls: type, declared: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """Resolve field annotations, including forward references inside generic arguments.

    Returns the hints and whether every one of them resolved (unresolved ones are retried later).
    """
    try:
        hints: dict[str, Any] = typing.get_type_hints(cls)
    except Exception:  # one bad annotation must not hide the others
        hints = {}
    module = sys.modules.get(cls.__module__)
    namespace: dict[str, Any] = dict(vars(module)) if module is not None else {}
    namespace.setdefault(cls.__name__, cls)
    resolved: dict[str, Any] = {}
    complete = True
    for name, annotation in declared.items():
        hint, ok = _resolve(hints.get(name, annotation), namespace)
        resolved[name] = hint
        complete = complete and ok
    return resolved, complete


def _resolve(hint: Any, namespace: dict[str, Any]) -> tuple[Any, bool]:
    if isinstance(hint, (str, typing.ForwardRef)):
        source = hint if isinstance(hint, str) else hint.__forward_arg__
        try:
            hint = eval(source, namespace)  # annotations are code written by the class's author
        except Exception:
            return hint, False
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin is None or not args or origin is typing.Literal:
        return hint, True
    pairs = [_resolve(a, namespace) for a in args]
    complete = all(ok for _, ok in pairs)
    new_args = tuple(a for a, _ in pairs)
    if all(a is b for a, b in zip(new_args, args, strict=True)):
        return hint, complete
    try:
        if origin is typing.Union or origin is types.UnionType:
            return typing.Union[new_args], complete
        return origin[new_args if len(new_args) > 1 else new_args[0]], complete
    except TypeError:
        return hint, False


def _init_keywords(cls: type) -> frozenset[str] | None:
    """Keyword names a dataclass initializer accepts, or ``None`` if it takes ``**kwargs``/is opaque.

    Fields declared ``init=False`` are passed only if a hand-written ``__init__`` accepts them;
    the implicit receiver (``self``) never counts.
    """
    init = cast(Any, cls).__init__
    try:
        params = list(inspect.signature(init, follow_wrapped=False).parameters.values())
    except (TypeError, ValueError):
        return None
    if ((inspect.isfunction(init) or inspect.ismethoddescriptor(init))
            and not isinstance(inspect.getattr_static(cls, "__init__"), staticmethod)
            and params and params[0].kind is inspect.Parameter.POSITIONAL_OR_KEYWORD):
        params = params[1:]
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return None
    return frozenset(p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY))
