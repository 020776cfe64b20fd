"""Building gRPC requests for the SDK's own HTTP/2 client: header blocks, metadata, message framing.

Shared by the asyncio channel (`h2_channel.H2Channel`) and the blocking one
(`h2_sync_channel.SyncH2Channel`). Header blocks are HPACK literals without indexing (no encoder
state to keep in step with the server) and the constant part of each method's block is built once.
"""

from __future__ import annotations

import base64
import gzip
import sys
import zlib
from collections.abc import Iterable
from typing import Any

import grpc

from durabletask import __version__
from durabletask.internal.grpc.h2_calls import rpc_error
from durabletask.internal.h2 import hpack

DEFAULT_MAX_RECEIVE = 4 << 20
_NO_LIMIT = sys.maxsize
_USER_AGENT = f"grpc-python-durabletask/{__version__} (h2)"
# Static table entries (RFC 7541, Appendix A).
_METHOD_POST = 3
_SCHEME_HTTP = 6
_PATH = 4
_AUTHORITY = 1
_CONTENT_TYPE = 31
_USER_AGENT_NAME = 58
_RESERVED = frozenset({"content-type", "te", "grpc-timeout", "grpc-encoding", "grpc-accept-encoding", "user-agent",
                       "host", "connection"})
_ENCODINGS = {grpc.Compression.Gzip: "gzip", grpc.Compression.Deflate: "deflate"}
_METADATA_CACHE_LIMIT = 64
_TIMEOUT_UNITS = (("n", 1e9), ("u", 1e6), ("m", 1e3), ("S", 1.0), ("M", 1 / 60), ("H", 1 / 3600))

Metadata = Iterable[tuple[str, Any]]


def split_target(target: str) -> tuple[str, int] | None:
    """``(host, port)`` of a ``host:port`` or ``[v6-address]:port`` target, or None for other forms."""
    if "/" in target or target.count(":") == 0:
        return None
    if target.startswith("["):
        host, _, rest = target[1:].partition("]")
        if not rest.startswith(":"):
            return None
        port = rest[1:]
    else:
        host, _, port = target.rpartition(":")
        if ":" in host:  # an IPv6 address without brackets, or a scheme such as unix:
            return None
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        return None
    if host.lower() in ("unix", "unix-abstract", "vsock", "dns", "ipv4", "ipv6", "xds"):
        return None
    return host, int(port)


def _timeout_field(timeout: float) -> bytes:
    """The ``grpc-timeout`` header: at most 8 digits, in the finest unit that fits, rounded up."""
    field = _timeout_fields.get(timeout)
    if field is None:
        if len(_timeout_fields) >= _METADATA_CACHE_LIMIT:
            _timeout_fields.clear()
        field = _timeout_fields[timeout] = _encode_timeout(timeout)
    return field


_timeout_fields: dict[float, bytes] = {}  # the same few timeouts come back on every call


def _encode_timeout(timeout: float) -> bytes:
    for unit, per_second in _TIMEOUT_UNITS:
        value = -int(-timeout * per_second // 1)
        if value < 100_000_000:
            return hpack.literal("grpc-timeout", f"{max(value, 1)}{unit}")
    return hpack.literal("grpc-timeout", "99999999H")


def encode_metadata(metadata: Metadata) -> bytes:
    """Per-call metadata as header fields: keys lower-case, ``-bin`` values base64 without padding."""
    out = bytearray()
    for key, value in metadata:
        name = key.lower()
        if name[:1] == ":" or name in _RESERVED:
            continue
        if name.endswith("-bin"):
            raw = value if isinstance(value, (bytes, bytearray)) else str(value).encode("utf-8")
            text = base64.b64encode(raw).decode("ascii").rstrip("=")
        else:
            text = value.decode("latin-1") if isinstance(value, (bytes, bytearray)) else str(value)
        out += hpack.literal(name, text)
    return bytes(out)


class RequestEncoder:
    """What a channel needs to turn calls into HTTP/2 requests for one target."""

    def __init__(self, target: str, *, metadata: Metadata = (), max_receive_message_length: int | None = None,
                 max_send_message_length: int | None = None) -> None:
        """
        Args:
            target: ``host:port`` (or ``[v6-address]:port``) of a cleartext gRPC server.
            metadata: Added to every call, before the call's own metadata.
            max_receive_message_length: Largest response message accepted (default 4 MiB, -1 for no limit).
            max_send_message_length: Largest request message sent (default and -1: no limit).
        """
        address = split_target(target)
        if address is None:
            raise ValueError(f"target {target!r} is not host:port; use grpc for other target forms")
        self._host, self._port = address
        self._target = target
        self._metadata_block = encode_metadata(metadata)
        self.max_receive = _limit(max_receive_message_length, DEFAULT_MAX_RECEIVE)
        self.max_send = _limit(max_send_message_length, _NO_LIMIT)
        self._base_block = (hpack.indexed(_METHOD_POST) + hpack.indexed(_SCHEME_HTTP)
                            + hpack.literal_indexed_name(_AUTHORITY, target)
                            + hpack.literal_indexed_name(_CONTENT_TYPE, "application/grpc")
                            + hpack.literal("te", "trailers")
                            + hpack.literal_indexed_name(_USER_AGENT_NAME, _USER_AGENT))
        self._metadata_cache: dict[Any, bytes] = {}

    def request_block(self, method: str) -> bytes:
        """The constant part of a method's request header block."""
        return self._base_block[:2] + hpack.literal_indexed_name(_PATH, method) + self._base_block[2:]

    def header_block(self, prefix: bytes, timeout: float | None, metadata: Metadata | None,
                     encoding: str | None) -> bytes:
        block = prefix
        if timeout is not None:
            block += _timeout_field(timeout)
        if encoding is not None:
            block += hpack.literal("grpc-encoding", encoding)
        if self._metadata_block:
            block += self._metadata_block
        if metadata:
            block += self._encoded(metadata)
        return block

    def _encoded(self, metadata: Metadata) -> bytes:
        if not isinstance(metadata, tuple):
            return encode_metadata(metadata)
        cached = self._metadata_cache.get(metadata)
        if cached is None:
            cached = encode_metadata(metadata)
            if len(self._metadata_cache) >= _METADATA_CACHE_LIMIT:
                self._metadata_cache.clear()
            self._metadata_cache[metadata] = cached
        return cached

    def body(self, data: bytes, compression: grpc.Compression | None) -> tuple[bytes, str | None]:
        """A request message with its 5-byte gRPC prefix, compressed if asked; and its grpc-encoding."""
        if len(data) > self.max_send:
            raise rpc_error(grpc.StatusCode.RESOURCE_EXHAUSTED,
                            f"Sent message larger than max ({len(data)} vs. {self.max_send})")
        encoding = _ENCODINGS.get(compression) if compression is not None else None
        if encoding == "gzip":
            return b"\x01" + _compressed(gzip.compress(data)), encoding
        if encoding == "deflate":
            return b"\x01" + _compressed(zlib.compress(data)), encoding
        return b"\x00" + len(data).to_bytes(4, "big") + data, None


def _compressed(data: bytes) -> bytes:
    return len(data).to_bytes(4, "big") + data


def _limit(value: int | None, default: int) -> int:
    if value is None:
        return default
    return _NO_LIMIT if value < 0 else value
