"""What a Durable Task Scheduler client or worker adds to the base classes: metadata and the bearer token.

* `scheduler_metadata`: the fixed ``taskhub`` and ``x-user-agent`` headers (workers add ``workerid``
  themselves). They go through the base classes' ``metadata``, which costs nothing per call.
* `BearerTokenInterceptor` (blocking channels) and `async_header_interceptors` (asyncio channels) add
  ``authorization: Bearer <token>`` to every call, taking the token from an `AccessTokenSource`. The
  asyncio ones also carry the fixed headers of the asyncio client: the base classes' metadata
  interceptor for ``grpc.aio`` covers unary-unary calls only, and history streams need ``taskhub``.
* `check_token_transport`: a token is never sent in clear text, except to this machine.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Sequence
from typing import Any

import grpc
import grpc.aio

from durabletask.azuremanaged.internal.tokens import AccessTokenSource
from durabletask.internal.grpc.channels import CallDetails, parse_host_address

logger = logging.getLogger("durabletask.azuremanaged")

AUTHORIZATION = "authorization"


def user_agent() -> str:
    """``durabletask-python/<version of this SDK>``."""
    from durabletask import __version__

    return f"durabletask-python/{__version__}"


def scheduler_metadata(taskhub: str, extra: Sequence[tuple[str, str]] | None = None) -> list[tuple[str, str]]:
    """The headers of every call: ``taskhub``, ``x-user-agent`` (``user-agent`` is reserved by gRPC), then
    ``extra`` (the caller's own metadata)."""
    return [("taskhub", taskhub), ("x-user-agent", user_agent()), *(extra or ())]


def check_taskhub(taskhub: str) -> None:
    if not isinstance(taskhub, str) or not taskhub.strip():
        raise ValueError("taskhub cannot be empty: pass the task hub name (the emulator's is 'default')")


def is_loopback(address: str) -> bool:
    """Whether a gRPC target is on this machine: ``localhost``, 127.0.0.0/8, ``::1`` or a Unix socket.

    ``address`` is a target as gRPC takes it (no ``http://`` prefix): ``host:port``, ``[::1]:port``,
    ``dns:///host:port``, ``ipv4:a.b.c.d:port,...``, ``ipv6:[addr]:port,...`` or ``unix:path``.
    """
    target = address.strip()
    lowered = target.lower()
    if lowered.startswith(("unix:", "unix-abstract:")):
        return True
    if lowered.startswith("dns:"):
        rest = target[len("dns:"):]
        if rest.startswith("//"):  # dns://[authority]/host:port
            rest = rest[2:].split("/", 1)[1] if "/" in rest[2:] else ""
        return _host_is_loopback(rest)
    for scheme in ("ipv4:", "ipv6:"):
        if lowered.startswith(scheme):
            hosts = [h for h in target[len(scheme):].split(",") if h.strip()]
            return bool(hosts) and all(_host_is_loopback(h) for h in hosts)
    return _host_is_loopback(target)


def _host_is_loopback(host_port: str) -> bool:
    text = host_port.strip()
    if text.startswith("["):
        host = text[1:].split("]", 1)[0]
    elif text.count(":") == 1:
        host = text.split(":", 1)[0]
    else:
        host = text  # a bare name or address, or a bare IPv6 address
    host = host.rstrip(".").lower()
    if host == "localhost":
        return True
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped.is_loopback
    return ip.is_loopback


def check_token_transport(host_address: str, secure_channel: bool) -> None:
    """Refuse a plaintext connection to another machine when a token would be sent on it.

    Raises:
        ValueError: The address means plaintext (``http://``, ``grpc://``, or no scheme with
            ``secure_channel=False``) and the host is not a loopback one.
    """
    target = parse_host_address(host_address, secure_channel)
    if target.secure or is_loopback(target.address):
        return
    raise ValueError(
        f"refusing to send Durable Task Scheduler access tokens in clear text to {target.address!r}: use an "
        f"https:// endpoint (e.g. 'https://myscheduler.westus2.durabletask.io') or secure_channel=True. "
        f"Plaintext (http://) is only for emulators on this machine (localhost, 127.0.0.0/8, ::1), or without a "
        f"credential (token_credential=None, Authentication=None)")


# ----------------------------------------------------------------- interceptors


def _without_authorization(metadata: Any) -> list[tuple[str, Any]]:
    return [(k, v) for k, v in (metadata or ()) if k.lower() != AUTHORIZATION]


class BearerTokenInterceptor(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor,
                             grpc.StreamUnaryClientInterceptor, grpc.StreamStreamClientInterceptor):
    """Adds ``authorization: Bearer <token>`` to every call of a blocking channel.

    The token is fetched in the calling thread when it is due; a credential error reaches the caller.
    """

    def __init__(self, source: AccessTokenSource) -> None:
        self.source = source

    def _details(self, details: Any) -> CallDetails:
        metadata = _without_authorization(details.metadata)
        metadata.append((AUTHORIZATION, f"Bearer {self.source.get_token()}"))
        return CallDetails(details.method, details.timeout, metadata, details.credentials,
                            getattr(details, "wait_for_ready", None), getattr(details, "compression", None))

    def intercept_unary_unary(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
        return continuation(self._details(client_call_details), request)

    def intercept_unary_stream(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
        return continuation(self._details(client_call_details), request)

    def intercept_stream_unary(self, continuation: Any, client_call_details: Any, request_iterator: Any) -> Any:
        return continuation(self._details(client_call_details), request_iterator)

    def intercept_stream_stream(self, continuation: Any, client_call_details: Any, request_iterator: Any) -> Any:
        return continuation(self._details(client_call_details), request_iterator)


class AsyncHeaders:
    """Adds fixed metadata and, with a token source, ``authorization: Bearer <token>`` to asyncio calls.

    ``grpc.aio`` files an interceptor under the first call kind it implements only, so this base is
    used through `async_header_interceptors`: one instance per call kind, sharing the token source. The
    event loop is never blocked: an asynchronous credential is awaited, a synchronous one runs in a
    thread.

    Args:
        metadata: Fixed ``(key, value)`` pairs to add to every call.
        source: Where the token comes from (None: no ``authorization`` header).
        errors_as_status: Turn a credential error into an ``UNAUTHENTICATED`` call error (the worker
            then backs off and reconnects as for any failed call) instead of raising it as it is.
    """

    def __init__(self, metadata: Sequence[tuple[str, str]], source: AccessTokenSource | None, *,
                 errors_as_status: bool = False) -> None:
        self.metadata = list(metadata)
        self.source = source
        self._errors_as_status = errors_as_status

    async def _details(self, details: Any) -> grpc.aio.ClientCallDetails:
        extra = list(self.metadata)
        if self.source is not None:
            extra.append((AUTHORIZATION, f"Bearer {await self._token(self.source)}"))
            existing = _without_authorization(details.metadata)
        else:
            existing = list(details.metadata or ())
        metadata = grpc.aio.Metadata(*existing, *extra)
        return grpc.aio.ClientCallDetails(details.method, details.timeout, metadata, details.credentials,
                                          details.wait_for_ready)

    async def _token(self, source: AccessTokenSource) -> str:
        try:
            return await source.get_token_async()
        except Exception as error:
            if not self._errors_as_status:
                raise
            message = (f"could not get an access token for {source.scope} from "
                       f"{type(source.credential).__name__}: {type(error).__name__}: {error}")
            logger.warning("%s", message)
            raise grpc.aio.AioRpcError(grpc.StatusCode.UNAUTHENTICATED, grpc.aio.Metadata(), grpc.aio.Metadata(),
                                       details=message) from error


class _AsyncUnaryUnary(AsyncHeaders, grpc.aio.UnaryUnaryClientInterceptor):
    async def intercept_unary_unary(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
        return await continuation(await self._details(client_call_details), request)


class _AsyncUnaryStream(AsyncHeaders, grpc.aio.UnaryStreamClientInterceptor):
    async def intercept_unary_stream(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
        return await continuation(await self._details(client_call_details), request)


class _AsyncStreamUnary(AsyncHeaders, grpc.aio.StreamUnaryClientInterceptor):
    async def intercept_stream_unary(self, continuation: Any, client_call_details: Any,
                                     request_iterator: Any) -> Any:
        return await continuation(await self._details(client_call_details), request_iterator)


class _AsyncStreamStream(AsyncHeaders, grpc.aio.StreamStreamClientInterceptor):
    async def intercept_stream_stream(self, continuation: Any, client_call_details: Any,
                                      request_iterator: Any) -> Any:
        return await continuation(await self._details(client_call_details), request_iterator)


def async_header_interceptors(metadata: Sequence[tuple[str, str]], source: AccessTokenSource | None, *,
                              errors_as_status: bool = False) -> list[AsyncHeaders]:
    """One `AsyncHeaders` per call kind (unary and streaming, either way), for a ``grpc.aio`` channel."""
    return [kind(metadata, source, errors_as_status=errors_as_status)
            for kind in (_AsyncUnaryUnary, _AsyncUnaryStream, _AsyncStreamUnary, _AsyncStreamStream)]
