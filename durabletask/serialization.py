"""Conversion of user payloads to and from the JSON text carried on the wire.

Every user value that leaves a process -- orchestrator, activity and entity inputs and outputs,
external event data, custom status, entity state -- passes through a :class:`DataConverter`.
Worker and client share one converter, so a single object decides how Python values become
strings and how they come back.

The default, :class:`JsonDataConverter`, produces byte-for-byte the same JSON as the official
``durabletask`` SDK (so histories written by either SDK replay under the other) and reads
everything the official SDK writes, including the legacy ``__durabletask_autoobject__`` marker
of older releases. Reading is *type-directed*: the caller names the type it wants
(``deserialize(data, Order)``) and the payload never chooses which Python class gets built.

Serialization sits on the replay hot path (once per history event), so the common cases are
short-circuited: JSON-native scalars are formatted directly, containers go through one C
encoder built at import time, and untyped reads call the C scanner directly.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import json.decoder
import json.encoder
import logging
import types
import typing
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from types import SimpleNamespace
from typing import Any, Final, cast

from durabletask.internal.json_coercion import plan_for, type_name

__all__ = [
    "DEFAULT_DATA_CONVERTER",
    "DataConverter",
    "DeserializationError",
    "JsonDataConverter",
    "SerializationError",
]

logger = logging.getLogger("durabletask")

# Older SDK releases tagged auto-serialized objects with this key. Nothing emits it any more,
# but histories recorded by those releases still contain it, so the reader must honour it.
_AUTO_SERIALIZED: Final = "__durabletask_autoobject__"


class SerializationError(TypeError, ValueError):
    """A value could not be encoded as a JSON payload.

    It derives from both ``TypeError`` (what the official SDK raises for an unsupported type) and
    ``ValueError`` (what it raises for a circular reference), so ``except`` clauses written
    against the official SDK keep catching it.

    Attributes:
        value_type: The type of the innermost value that could not be encoded, when known.
        path: Where that value sits inside the top-level value, e.g. ``"$.items[2].due"``.
    """

    def __init__(self, message: str, *, value_type: type | None = None, path: str | None = None) -> None:
        super().__init__(message)
        self.value_type = value_type
        self.path = path


class DeserializationError(TypeError, ValueError):
    """A payload could not be reconstructed as the requested type.

    Only a converter created with ``JsonDataConverter(strict=True)`` raises it; the default
    converter is best-effort like the official SDK's and hands back the plain decoded JSON instead.

    Attributes:
        target_type: The type the caller asked for.
    """

    def __init__(self, message: str, *, target_type: Any = None) -> None:
        super().__init__(message)
        self.target_type = target_type


class DataConverter(ABC):
    """Strategy that turns payload values into strings and back.

    Implementations must be deterministic -- the same value must always produce the same string --
    because orchestrations compare replayed actions with recorded ones.
    """

    @abstractmethod
    def serialize(self, value: Any) -> str | None:
        """Encode ``value``.

        Args:
            value: Any payload value.

        Returns:
            The encoded text, or ``None`` when ``value`` is ``None`` (the payload is absent).
        """

    @abstractmethod
    def deserialize(self, data: str | None, target_type: type | None = None) -> Any:
        """Decode ``data``, reconstructing it as ``target_type`` when one is given.

        Args:
            data: Encoded text; ``None`` or ``""`` means there is no payload.
            target_type: The type the caller expects, or ``None`` for plain decoded values. It is
                always chosen by the caller, never read from the payload.

        Returns:
            The decoded value, or ``None`` when there is no payload. Whether a value that does not
            fit ``target_type`` raises or comes back undecorated is up to the implementation.
        """

    @abstractmethod
    def coerce(self, value: Any, target_type: type | None = None) -> Any:
        """Reconstruct an already decoded value (e.g. entity state held in memory) as ``target_type``.

        Args:
            value: A plain decoded value such as a ``dict``.
            target_type: The type wanted; ``None`` returns ``value`` unchanged.

        Returns:
            The reconstructed value, following the same failure policy as :meth:`deserialize`.
        """

    def can_reconstruct(self, target_type: Any) -> bool:
        """Tell type discovery whether an annotation is worth passing to :meth:`deserialize`.

        The SDK reads the input annotation of orchestrators, activities and entities (and the
        return annotation of activities) and only asks the converter to rebuild types for which
        this returns ``True``; for anything else the function receives the plain decoded value.
        The base class makes no claims; override it to teach the SDK about your own model types.

        Args:
            target_type: A resolved annotation.

        Returns:
            ``True`` if this converter can rebuild the type from a payload.
        """
        return False


class JsonDataConverter(DataConverter):
    """The default converter: JSON identical to the official SDK's.

    Encoding: JSON-native values as themselves (tuples and named tuples as arrays); objects whose
    type has a ``to_json()`` hook via ``type(obj).to_json(obj)``; enum members as their value;
    dataclasses as an object of their fields (recursively); ``SimpleNamespace`` as its attributes.
    Anything else raises :class:`SerializationError` naming the type and the remedy.

    Decoding into a target type: dataclasses (nested ones too, and unknown keys are ignored so
    that older payloads keep loading after a field is removed), ``from_json()`` classmethods
    (which receive this converter when their second parameter is named ``converter``), enums,
    named tuples, ``Optional``/``Union``, ``list``/``Sequence``, ``dict``/``Mapping``, ``tuple``,
    ``set``, ``Annotated``, ``NewType`` and forward references.

    Args:
        strict: When ``False`` (the default, as in the official SDK) a payload that cannot be
            rebuilt as the requested type is returned as plain decoded JSON and a warning is logged
            once per type. When ``True``, :class:`DeserializationError` is raised instead.
    """

    def __init__(self, *, strict: bool = False) -> None:
        self._strict = strict

    @property
    def strict(self) -> bool:
        """Whether a payload that does not fit the requested type raises instead of falling back."""
        return self._strict

    def serialize(self, value: Any) -> str | None:
        """Encode ``value`` as the official SDK would. See :meth:`DataConverter.serialize`.

        Raises:
            SerializationError: ``value`` (or something inside it) has no JSON form.
        """
        if value is None:
            return None
        kind = type(value)
        try:
            if kind is str:
                return _encode_str(value)
            if kind is int:
                return str(value)  # exactly int, so str() is int's repr, as json writes it
            if kind is bool:
                return "true" if value else "false"
            return _join(_encode_chunks(value, 0))
        except (TypeError, ValueError, RecursionError) as exc:
            raise _describe_failure(value, exc) from exc

    def deserialize(self, data: str | None, target_type: type | None = None) -> Any:
        """Decode ``data``. See :meth:`DataConverter.deserialize`.

        Raises:
            json.JSONDecodeError: ``data`` is not JSON.
            DeserializationError: Strict mode only, the payload does not fit ``target_type``.
        """
        if not data:
            return None
        if target_type is None:
            if type(data) is str and _AUTO_SERIALIZED not in data:  # the hot path, inlined
                try:
                    value, end = _scan_once(data, 0)
                    if end == len(data):
                        return value
                except StopIteration:
                    pass
            return _loads(data)
        raw = _loads(data) if type(data) is str and _AUTO_SERIALIZED not in data else _loads_ignoring_marker(data)
        try:
            return plan_for(target_type)(raw, self)
        except Exception as exc:
            # The official SDK falls back to a fresh, marker-aware decode; a from_json hook may
            # have mutated ``raw`` before failing, so decode again rather than reuse it.
            return self._coercion_failed(target_type, exc, lambda: _loads(data))

    def coerce(self, value: Any, target_type: type | None = None) -> Any:
        """Rebuild an already decoded value. See :meth:`DataConverter.coerce`."""
        if target_type is None or value is None:
            return value
        try:
            return plan_for(target_type)(value, self)
        except Exception as exc:
            return self._coercion_failed(target_type, exc, lambda: value)

    def can_reconstruct(self, target_type: Any) -> bool:
        """Claim dataclasses and ``from_json()`` types, alone or inside ``Optional``/``list``.

        This is exactly the official SDK's policy, so a function annotated with, say, an enum or
        ``int`` receives the same value under either SDK.
        """
        if type(self).can_reconstruct is not JsonDataConverter.can_reconstruct:
            return _claims(self, target_type)
        try:
            return _CLAIMS[target_type]
        except KeyError:
            if len(_CLAIMS) >= _CACHE_LIMIT:
                _CLAIMS.clear()
            answer = _CLAIMS[target_type] = _claims(self, target_type)
            return answer
        except TypeError:  # unhashable annotation
            return _claims(self, target_type)

    def _coercion_failed(self, target_type: Any, exc: Exception, fallback: Callable[[], Any]) -> Any:
        name = type_name(target_type)
        if self._strict:
            raise DeserializationError(
                f"Could not reconstruct the payload as '{name}': {exc}", target_type=target_type
            ) from exc
        level = logging.DEBUG if name in _WARNED else logging.WARNING
        _WARNED.add(name)
        logger.log(level, "Could not reconstruct a payload as '%s' (%s); using the plain decoded JSON "
                   "instead. Pass JsonDataConverter(strict=True) to make this an error.", name, exc)
        return fallback()


#: The converter used when none is supplied to a worker or client.
DEFAULT_DATA_CONVERTER: DataConverter = JsonDataConverter()

_WARNED: set[str] = set()
_CLAIMS: dict[Any, bool] = {}
_CACHE_LIMIT: Final = 4096


def _claims(converter: DataConverter, target_type: Any) -> bool:
    origin = typing.get_origin(target_type)
    if origin is not None:
        args = typing.get_args(target_type)
        if origin is typing.Union or origin is types.UnionType:
            return any(converter.can_reconstruct(a) for a in args if a is not type(None))
        if origin is list or origin is Sequence:
            return any(converter.can_reconstruct(a) for a in args)
        return False
    if not isinstance(target_type, type):
        return False
    return dataclasses.is_dataclass(target_type) or callable(getattr(target_type, "from_json", None))


# --------------------------------------------------------------------------------------- encoding


def _encode_default(obj: Any) -> Any:
    """Give the JSON encoder a native stand-in for a value it cannot encode itself."""
    kind = type(obj)
    stand_in = _STAND_INS.get(kind)
    if stand_in is None:
        stand_in = _stand_in_for(kind)
        if len(_STAND_INS) >= _CACHE_LIMIT:
            _STAND_INS.clear()
        _STAND_INS[kind] = stand_in
    return stand_in(obj)


def _stand_in_for(kind: type) -> Callable[[Any], Any]:
    """Decide once per type how its instances are encoded (same precedence as the official SDK)."""
    hook = getattr(kind, "to_json", None)
    if callable(hook):
        return cast(Callable[[Any], Any], hook)  # type(obj).to_json(obj): instance or static method
    if issubclass(kind, enum.Enum):
        return lambda obj: obj.value
    if dataclasses.is_dataclass(kind):
        # Shallow on purpose: the encoder recurses into the field values itself, so nested values
        # still reach this hook (and their own to_json) instead of being flattened by asdict().
        names = tuple(f.name for f in dataclasses.fields(kind))
        return lambda obj: {name: getattr(obj, name) for name in names}
    if issubclass(kind, SimpleNamespace):
        return vars

    def unsupported(obj: Any) -> Any:
        raise SerializationError(f"Object of type '{kind.__qualname__}' is not JSON serializable",
                                 value_type=kind)

    return unsupported


_STAND_INS: dict[type, Callable[[Any], Any]] = {}


def _make_encoder() -> Callable[[Any, int], Iterable[str]]:
    """Build the container encoder once; its chunks join to ``json.dumps(value, default=...)``.

    ``json.dumps`` constructs a fresh C encoder on every call, which costs more than encoding a
    small payload. The one built here is reused; it skips the circular-reference bookkeeping
    (a shared table would not be thread-safe), so a cycle surfaces as ``RecursionError`` and is
    reported by :func:`_describe_failure`.
    """
    portable = json.JSONEncoder(default=_encode_default).encode
    make = getattr(json.encoder, "c_make_encoder", None)
    quote = getattr(json.encoder, "c_encode_basestring_ascii", None)
    try:
        if make is not None and quote is not None:
            chunks = make(None, _encode_default, quote, None, ": ", ", ", False, False, True)
            probe = {"k": [1, 2.5, "\u00e9\n", None, True, float("inf")], "t": (1,)}
            if "".join(chunks(probe, 0)) == json.dumps(probe):
                return cast(Callable[[Any, int], Iterable[str]], chunks)
    except Exception:  # an interpreter whose private encoder API differs
        pass
    return lambda value, _level: (portable(value),)


_encode_chunks: Final = _make_encoder()
_join: Final = "".join
_encode_str: Final[Callable[[str], str]] = getattr(
    json.encoder, "c_encode_basestring_ascii", None) or json.encoder.py_encode_basestring_ascii

# Remedies for common non-JSON types, keyed by "module.qualname" so that the modules need not be
# imported just in case (this table is consulted only after a failure).
_HINTS: Final[dict[str, str]] = {
    **dict.fromkeys(("datetime.datetime", "datetime.date", "datetime.time"),
                    "convert it to an ISO 8601 string with .isoformat() and back with fromisoformat()"),
    "datetime.timedelta": "convert it to a number, e.g. .total_seconds()",
    **dict.fromkeys(("builtins.set", "builtins.frozenset"), "convert it to a list, e.g. sorted(value)"),
    **dict.fromkeys(("builtins.bytes", "builtins.bytearray", "builtins.memoryview"),
                    "encode it as text, e.g. base64.b64encode(value).decode()"),
    **dict.fromkeys(("decimal.Decimal", "uuid.UUID", "pathlib.PurePath"), "convert it with str(value)"),
}
_GENERIC_HINT: Final = ("make it a dataclass, give its class a to_json() method (and a from_json() "
                        "classmethod to read it back), convert it to JSON-native values (str, int, "
                        "float, bool, None, list, dict), or pass a custom data_converter= to the "
                        "worker and the client")
_KEY_TYPES: Final = (str, int, float, bool, type(None))


def _describe_failure(value: Any, exc: BaseException) -> SerializationError:
    """Explain an encoding failure: which value, where inside the payload, and how to fix it.

    Runs only after the fast encoder has failed, so it can afford a slow walk of the value.
    """
    top = type(value).__qualname__
    try:
        found = _find_unencodable(value, "$", set(), 0)
    except RecursionError:
        found = None
    if found is None:
        return SerializationError(f"Failed to serialize object of type '{top}' to JSON: {exc}",
                                  value_type=type(value))
    path, culprit, problem = found
    kind = type(culprit)
    name = kind.__qualname__
    where = "" if path == "$" else f" at {path} of a value of type '{top}'"
    if problem == "key":
        message = (f"Dictionary key of type '{name}'{where} is not JSON serializable: JSON object keys "
                   "must be str, int, float, bool or None; convert the keys to strings")
    elif problem == "cycle":
        message = (f"Circular reference detected{where or ' in a value of type ' + repr(top)}: JSON "
                   "cannot represent cycles; break the cycle or give the type a to_json() method")
    elif problem == "deep":
        message = f"Value of type '{top}' is nested too deeply to serialize as JSON{where}"
    elif isinstance(problem, BaseException):
        message = f"to_json() of type '{name}'{where} failed: {problem!r}"
    else:
        names = (f"{k.__module__}.{k.__qualname__}" for k in kind.__mro__)
        hint = next((_HINTS[n] for n in names if n in _HINTS), _GENERIC_HINT)
        message = f"Object of type '{name}'{where} is not JSON serializable: {hint}"
    return SerializationError(message, value_type=kind, path=path)


def _find_unencodable(obj: Any, path: str, active: set[int], depth: int) -> tuple[str, Any, Any] | None:
    if isinstance(obj, _KEY_TYPES):
        return None
    if depth > 400:
        return path, obj, "deep"
    if id(obj) in active:
        return path, obj, "cycle"
    active.add(id(obj))
    try:
        if isinstance(obj, (list, tuple)):
            for index, item in enumerate(obj):
                found = _find_unencodable(item, f"{path}[{index}]", active, depth + 1)
                if found:
                    return found
        elif isinstance(obj, dict):
            for key, item in obj.items():
                if not isinstance(key, _KEY_TYPES):
                    return path, key, "key"
                step = f".{key}" if isinstance(key, str) and key.isidentifier() else f"[{key!r}]"
                found = _find_unencodable(item, path + step, active, depth + 1)
                if found:
                    return found
        else:
            try:
                stand_in = _encode_default(obj)
            except SerializationError:
                return path, obj, "type"
            except Exception as hook_error:
                return path, obj, hook_error
            return _find_unencodable(stand_in, path, active, depth + 1)
        return None
    finally:
        active.discard(id(obj))


# --------------------------------------------------------------------------------------- decoding


def _legacy_object(d: dict[str, Any]) -> Any:
    # Same test as the official reader: a truthy marker means "rebuild as a namespace".
    if d.pop(_AUTO_SERIALIZED, False):
        return SimpleNamespace(**d)
    return d


def _drop_marker(d: dict[str, Any]) -> dict[str, Any]:
    d.pop(_AUTO_SERIALIZED, None)
    return d


_scan_once: Final[Callable[[str, int], tuple[Any, int]]] = cast(Any, json.decoder.JSONDecoder()).scan_once
_legacy_decode: Final = json.decoder.JSONDecoder(object_hook=_legacy_object).decode
_marker_free_decode: Final = json.decoder.JSONDecoder(object_hook=_drop_marker).decode


def _may_carry_marker(data: str | bytes | bytearray) -> bool:
    return not isinstance(data, str) or _AUTO_SERIALIZED in data


def _loads(data: str | bytes | bytearray) -> Any:
    """``json.loads`` with the legacy object hook, minus ``json.loads``' per-call overhead."""
    if type(data) is not str:
        return json.loads(data, object_hook=_legacy_object)
    if _AUTO_SERIALIZED in data:
        return _legacy_decode(data)
    try:
        value, end = _scan_once(data, 0)
    except StopIteration:
        return json.loads(data)  # leading whitespace, a BOM or not JSON: let json decide / explain
    if end == len(data):
        return value
    return json.loads(data)  # trailing whitespace or extra data


def _loads_ignoring_marker(data: str | bytes | bytearray) -> Any:
    if isinstance(data, str):
        return _marker_free_decode(data)
    return json.loads(data, object_hook=_drop_marker)


# ----------------------------------------------------------------- official-compatible helpers
#
# The official SDK's internal modules call these by name; they raise instead of falling back.


def _to_json(obj: Any) -> str:
    encoded = JsonDataConverter().serialize(obj)
    return "null" if encoded is None else encoded


def _from_json(json_str: str | bytes | bytearray, expected_type: Any = None,
               converter: DataConverter | None = None) -> Any:
    if expected_type is None:
        return _loads(json_str)
    raw = _loads_ignoring_marker(json_str) if _may_carry_marker(json_str) else _loads(json_str)
    return plan_for(expected_type)(raw, converter)


def _coerce_to_type(value: Any, expected_type: Any, converter: DataConverter | None = None) -> Any:
    return plan_for(expected_type)(value, converter) if expected_type is not None else value
