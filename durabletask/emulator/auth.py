"""``--require-auth``: the emulator refuses calls that carry no bearer token.

The Durable Task Scheduler wants ``authorization: Bearer <token>`` on every call; the DTS emulator
wants nothing. This mode sits in between so that a client's or worker's token handling (the header,
renewal) can be proven end to end on this machine: every call must carry a non-empty bearer token,
whose value is not checked. A call without one fails with ``UNAUTHENTICATED``.

The check is `BearerTokenRequired`: its ``check`` runs in the emulator's own server, and it is also a
``grpc.aio`` server interceptor for ``transport="grpcio"``. It keeps counts, and short
SHA-256 fingerprints (never the tokens) of the last distinct tokens it accepted, for tests.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, TypeVar

import grpc
import grpc.aio

MISSING = ("a bearer token is required: this emulator runs with --require-auth, so every call needs the "
           "metadata 'authorization: Bearer <token>' (any non-empty token is accepted here)")
MALFORMED = ("a bearer token is required: the 'authorization' metadata must be 'Bearer <token>' with a "
             "non-empty token")
_KEEP_FINGERPRINTS = 256

Req = TypeVar("Req")
Resp = TypeVar("Resp")


def fingerprint(token: str) -> str:
    """The first 16 hex digits of the token's SHA-256: how `BearerTokenRequired` remembers tokens."""
    return hashlib.sha256(token.encode()).hexdigest()[:16]


def bearer_problem(metadata: Sequence[tuple[str, Any]] | None) -> tuple[str | None, str | None]:
    """``(token, None)`` for a call with a non-empty bearer token, else ``(None, what is wrong)``."""
    values = [v for k, v in (metadata or ()) if k.lower() == "authorization"]
    if not values:
        return None, MISSING
    value = values[-1]
    text = value.decode(errors="replace") if isinstance(value, bytes) else str(value)
    scheme, _, token = text.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None, MALFORMED
    return token.strip(), None


class BearerTokenRequired(grpc.aio.ServerInterceptor):
    """Refuses, with ``UNAUTHENTICATED``, every call without ``authorization: Bearer <non-empty token>``."""

    def __init__(self) -> None:
        self.accepted = 0
        self.refused = 0
        self._fingerprints: OrderedDict[str, None] = OrderedDict()

    @property
    def fingerprints(self) -> list[str]:
        """`fingerprint` of the distinct tokens accepted lately, oldest first."""
        return list(self._fingerprints)

    async def intercept_service(
        self, continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Req, Resp] | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Req, Resp] | None:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler  # an unknown method: UNIMPLEMENTED, as without the check
        problem = self.check(handler_call_details.invocation_metadata)
        return handler if problem is None else _refusal(handler, problem)

    def check(self, metadata: Sequence[tuple[str, Any]] | None) -> str | None:
        """None if the call may go on (counted as accepted), else why it is refused (counted as refused)."""
        token, problem = bearer_problem(metadata)
        if token is None:
            self.refused += 1
            return problem
        self.accepted += 1
        key = fingerprint(token)
        self._fingerprints.pop(key, None)
        self._fingerprints[key] = None
        while len(self._fingerprints) > _KEEP_FINGERPRINTS:
            self._fingerprints.popitem(last=False)
        return None


def _refusal(handler: grpc.RpcMethodHandler[Req, Resp], message: str) -> grpc.RpcMethodHandler[Req, Resp]:
    """A handler of the same shape as ``handler`` that fails the call with ``UNAUTHENTICATED``."""
    code = grpc.StatusCode.UNAUTHENTICATED

    async def unary(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        await context.abort(code, message)

    async def streaming(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
        await context.abort(code, message)
        yield None  # pragma: no cover - abort raises

    h: Any = handler
    serializers = {"request_deserializer": h.request_deserializer, "response_serializer": h.response_serializer}
    if h.unary_unary is not None:
        return grpc.unary_unary_rpc_method_handler(unary, **serializers)
    if h.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(streaming, **serializers)
    if h.stream_unary is not None:
        return grpc.stream_unary_rpc_method_handler(unary, **serializers)
    return grpc.stream_stream_rpc_method_handler(streaming, **serializers)
