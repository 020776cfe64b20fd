"""Discovery of the payload types that user functions name in their annotations.

When an orchestrator is written ``def order_flow(ctx, order: Order)`` the worker should hand it an
``Order``, not a ``dict``. These helpers read the annotation of the input parameter (position 1 of
``(ctx, input)``), an activity's return annotation, or an orchestrator's ``Generator[..., ...,
Result]`` return annotation, and return it *only* when the converter's
:meth:`~durabletask.serialization.DataConverter.can_reconstruct` claims it. Builtins and unknown
annotations yield ``None``, so those functions receive the plain decoded value exactly as under
the official SDK, and nothing the payload says can make the SDK construct an arbitrary class.

Discovery runs for every work item, replays included, so the converter-independent part -- the
callable's resolved annotations -- is memoized per function; only the cheap converter question
is asked per call. Every failure to inspect a callable means "no type" (``None``).
"""

from __future__ import annotations

import collections.abc
import functools
import inspect
import typing
from collections.abc import Callable
from typing import Any, Final, NamedTuple, cast

from durabletask.serialization import DEFAULT_DATA_CONVERTER, DataConverter

__all__ = [
    "activity_input_type",
    "activity_output_type",
    "clear_cache",
    "entity_input_type",
    "orchestrator_input_type",
    "orchestrator_output_type",
]

# "Nothing worth asking the converter about": absent, unannotated, ``Any`` or unresolvable.
_NOTHING: Final[Any] = object()
_CACHE_LIMIT: Final = 4096
_ITERATORS: Final = (collections.abc.Iterator, collections.abc.Iterable)


class _Shape(NamedTuple):
    """The resolved annotations of a callable, as seen by a caller (receiver already bound)."""

    positional: tuple[Any, ...]
    returns: Any


# Plain functions and the functions behind bound methods are cached separately, because the
# same function seen through a bound method has one positional parameter fewer.
_FUNCTIONS: dict[Any, _Shape | None] = {}
_METHODS: dict[Any, _Shape | None] = {}


def clear_cache() -> None:
    """Forget every memoized signature (for tests, or after redefining functions at runtime)."""
    _FUNCTIONS.clear()
    _METHODS.clear()


def _shape(fn: Any) -> _Shape | None:
    if inspect.ismethod(fn):
        cache, key = _METHODS, fn.__func__
    else:
        cache, key = _FUNCTIONS, fn
    try:
        return cache[key]
    except KeyError:
        pass
    except TypeError:  # an unhashable callable object: inspect it every time
        return _inspect(fn)
    shape = _inspect(fn)
    if len(cache) >= _CACHE_LIMIT:  # bound the cache if a worker registers closures dynamically
        cache.clear()
    cache[key] = shape
    return shape


def _inspect(fn: Any) -> _Shape | None:
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):
        return None
    hints = _hints(_annotated_function(fn))
    positional = tuple(
        _annotation(p.name, p.annotation, hints)
        for p in signature.parameters.values()
        if p.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    )
    returns = _annotation("return", signature.return_annotation, hints)
    if returns is None or returns is type(None):
        returns = _NOTHING
    return _Shape(positional, returns)


def _annotated_function(fn: Any) -> Any:
    """Find the object whose ``__annotations__`` and ``__globals__`` describe ``fn``'s signature."""
    while True:
        if inspect.ismethod(fn):
            fn = fn.__func__
        elif isinstance(fn, functools.partial):
            fn = fn.func
        elif inspect.isfunction(fn) or inspect.isbuiltin(fn):
            return fn
        elif isinstance(fn, type):
            return cast(Any, fn).__init__
        elif callable(fn):
            return type(fn).__call__  # a callable object: its __call__ carries the annotations
        else:
            return fn


def _hints(fn: Any) -> dict[str, Any]:
    """Resolve annotations, string ones (``from __future__ import annotations``) included.

    ``typing.get_type_hints`` gives up on the whole function if one name does not resolve; in that
    case each annotation is resolved on its own so that a bad hint elsewhere (say on ``ctx``)
    does not hide a perfectly good input type.
    """
    try:
        return typing.get_type_hints(fn)
    except Exception:
        pass
    raw = getattr(fn, "__annotations__", None)
    if not isinstance(raw, dict):
        return {}
    namespace = getattr(fn, "__globals__", {})
    resolved: dict[str, Any] = {}
    for name, annotation in raw.items():
        if isinstance(annotation, str):
            try:
                annotation = eval(annotation, namespace)  # the function author's own annotation
            except Exception:
                continue
        resolved[name] = annotation
    return resolved


def _annotation(name: str, raw: Any, hints: dict[str, Any]) -> Any:
    annotation = hints.get(name, raw)
    if annotation is inspect.Parameter.empty or annotation is Any or isinstance(annotation, str):
        return _NOTHING
    return annotation


def _claimed(annotation: Any, converter: DataConverter | None) -> Any | None:
    if annotation is _NOTHING:
        return None
    chosen = DEFAULT_DATA_CONVERTER if converter is None else converter
    return annotation if chosen.can_reconstruct(annotation) else None


def _input_at(fn: Any, position: int, converter: DataConverter | None) -> Any | None:
    shape = _shape(fn)
    if shape is None or position >= len(shape.positional):
        return None
    return _claimed(shape.positional[position], converter)


def orchestrator_input_type(fn: Callable[..., Any], converter: DataConverter | None = None) -> Any | None:
    """Return the reconstructable type of an orchestrator's input parameter, if it names one.

    Args:
        fn: An orchestrator ``(ctx, input)``: function, bound method or callable object.
        converter: The converter that will decode the payload; defaults to the SDK's default.

    Returns:
        The resolved annotation of ``input`` when ``converter`` can rebuild it, else ``None``.
    """
    return _input_at(fn, 1, converter)


def activity_input_type(fn: Callable[..., Any], converter: DataConverter | None = None) -> Any | None:
    """Return the reconstructable type of an activity's input parameter, if it names one.

    Args:
        fn: An activity ``(ctx, input)``: function, bound method or callable object.
        converter: The converter that will decode the payload; defaults to the SDK's default.

    Returns:
        The resolved annotation of ``input`` when ``converter`` can rebuild it, else ``None``.
    """
    return _input_at(fn, 1, converter)


def activity_output_type(fn: Any, converter: DataConverter | None = None) -> Any | None:
    """Return the reconstructable return type of an activity, so its result can be rebuilt.

    Args:
        fn: The activity as passed to ``call_activity``: a callable or a name (names yield ``None``).
        converter: The converter that will decode the result; defaults to the SDK's default.

    Returns:
        The resolved return annotation when ``converter`` can rebuild it, else ``None``.
    """
    if not callable(fn):
        return None
    shape = _shape(fn)
    return None if shape is None else _claimed(shape.returns, converter)


def orchestrator_output_type(fn: Any, converter: DataConverter | None = None) -> Any | None:
    """Return the reconstructable output type of an orchestrator (e.g. for a sub-orchestration).

    Orchestrators are generators, so ``-> Generator[Task[Any], Any, Receipt]`` names ``Receipt``
    as the output; ``Iterator``/``Iterable`` annotations cannot name one. A plain annotation such
    as ``-> Receipt`` (a non-generator orchestrator) is taken as is.

    Args:
        fn: The orchestrator callable; a name yields ``None``.
        converter: The converter that will decode the output; defaults to the SDK's default.

    Returns:
        The output type when ``converter`` can rebuild it, else ``None``.
    """
    if not callable(fn):
        return None
    shape = _shape(fn)
    if shape is None:
        return None
    returns = shape.returns
    origin = typing.get_origin(returns)
    if origin is collections.abc.Generator:
        args = typing.get_args(returns)
        returns = args[2] if len(args) == 3 and args[2] is not type(None) else _NOTHING
    elif origin in _ITERATORS or returns in _ITERATORS or returns is collections.abc.Generator:
        returns = _NOTHING  # a generator annotated without its return type names no output
    return _claimed(returns, converter)


def entity_input_type(fn: Any, operation: str, converter: DataConverter | None = None) -> Any | None:
    """Return the reconstructable input type of an entity operation.

    Args:
        fn: A class-based entity (the class; ``operation`` names a method ``(self, input)``) or a
            function-based entity ``(ctx, input)``.
        operation: The operation name; used only for class-based entities.
        converter: The converter that will decode the payload; defaults to the SDK's default.

    Returns:
        The resolved input annotation when ``converter`` can rebuild it, else ``None``.
    """
    if isinstance(fn, type):
        method = getattr(fn, operation, None)
        if method is None or not callable(method):
            return None
        return _input_at(method, 1, converter)  # unbound: ``self`` is position 0
    return _input_at(fn, 1, converter)
