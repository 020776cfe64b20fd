"""HPACK (RFC 7541): the header compression of HTTP/2, as much as a gRPC server needs.

`Decoder` reads request header blocks: indexed fields, literals with and without indexing, dynamic
table size updates, Huffman-coded strings. It keeps the connection's dynamic table, so every
header block of a connection must go through the same decoder, in order, even for refused streams.

The server's own header blocks, and the SDK client's, use `literal` and `literal_indexed_name`
(literals without indexing, plain strings): decoders need no state for them, and the common blocks
are built once and reused as bytes.
"""

from __future__ import annotations

from collections import deque

from durabletask.internal.h2 import huffman

STATIC_TABLE: tuple[tuple[str, str], ...] = (
    (":authority", ""),
    (":method", "GET"),
    (":method", "POST"),
    (":path", "/"),
    (":path", "/index.html"),
    (":scheme", "http"),
    (":scheme", "https"),
    (":status", "200"),
    (":status", "204"),
    (":status", "206"),
    (":status", "304"),
    (":status", "400"),
    (":status", "404"),
    (":status", "500"),
    ("accept-charset", ""),
    ("accept-encoding", "gzip, deflate"),
    ("accept-language", ""),
    ("accept-ranges", ""),
    ("accept", ""),
    ("access-control-allow-origin", ""),
    ("age", ""),
    ("allow", ""),
    ("authorization", ""),
    ("cache-control", ""),
    ("content-disposition", ""),
    ("content-encoding", ""),
    ("content-language", ""),
    ("content-length", ""),
    ("content-location", ""),
    ("content-range", ""),
    ("content-type", ""),
    ("cookie", ""),
    ("date", ""),
    ("etag", ""),
    ("expect", ""),
    ("expires", ""),
    ("from", ""),
    ("host", ""),
    ("if-match", ""),
    ("if-modified-since", ""),
    ("if-none-match", ""),
    ("if-range", ""),
    ("if-unmodified-since", ""),
    ("last-modified", ""),
    ("link", ""),
    ("location", ""),
    ("max-forwards", ""),
    ("proxy-authenticate", ""),
    ("proxy-authorization", ""),
    ("range", ""),
    ("referer", ""),
    ("refresh", ""),
    ("retry-after", ""),
    ("server", ""),
    ("set-cookie", ""),
    ("strict-transport-security", ""),
    ("transfer-encoding", ""),
    ("user-agent", ""),
    ("vary", ""),
    ("via", ""),
    ("www-authenticate", ""),
)
_STATIC_LEN = len(STATIC_TABLE)
DEFAULT_TABLE_SIZE = 4096
_ENTRY_OVERHEAD = 32
_HUFFMAN_CACHE_LIMIT = 512
_BLOCK_CACHE_LIMIT = 256
_BLOCK_CACHE_BYTES = 512


class HpackError(ValueError):
    """A header block that cannot be decoded; the connection must end (COMPRESSION_ERROR)."""


class Decoder:
    """Decodes the header blocks of one connection, keeping its dynamic table."""

    def __init__(self, max_table_size: int = DEFAULT_TABLE_SIZE) -> None:
        self._limit = max_table_size  # what we allowed the peer (SETTINGS_HEADER_TABLE_SIZE)
        self._max = max_table_size  # what the peer chose, at most the limit
        self._size = 0
        self._dynamic: deque[tuple[str, str]] = deque()
        self._huffman_cache: dict[bytes, str] = {}
        self._generation = 0  # changes whenever the dynamic table does
        self._blocks: dict[bytes, tuple[int, list[tuple[str, str]]]] = {}

    def decode(self, block: bytes) -> list[tuple[str, str]]:
        """The header fields of ``block``, in order; raises `HpackError`.

        A peer that indexes its headers sends the same few bytes for every call of a method, and
        such a block means the same fields as long as the dynamic table is unchanged: those blocks
        are decoded once.
        """
        cached = self._blocks.get(block)
        if cached is not None and cached[0] == self._generation:
            return list(cached[1])
        generation = self._generation
        headers = self._decode(block)
        if self._generation == generation and len(block) <= _BLOCK_CACHE_BYTES:
            if len(self._blocks) >= _BLOCK_CACHE_LIMIT:
                self._blocks.clear()
            self._blocks[block] = (generation, list(headers))
        return headers

    def _decode(self, block: bytes) -> list[tuple[str, str]]:
        headers: list[tuple[str, str]] = []
        pos = 0
        end = len(block)
        try:
            while pos < end:
                first = block[pos]
                if first & 0x80:  # indexed field
                    index, pos = _integer(block, pos, 0x7F)
                    headers.append(self._entry(index))
                elif first & 0x40:  # literal, added to the table
                    index, pos = _integer(block, pos, 0x3F)
                    if index:
                        name = self._entry(index)[0]
                    else:
                        name, pos = self._string(block, pos)
                    value, pos = self._string(block, pos)
                    self._add(name, value)
                    headers.append((name, value))
                elif first & 0x20:  # dynamic table size update
                    size, pos = _integer(block, pos, 0x1F)
                    if size > self._limit:
                        raise HpackError(f"dynamic table size update to {size} exceeds the allowed {self._limit}")
                    self._max = size
                    self._generation += 1
                    self._evict()
                else:  # literal without indexing (0000) or never indexed (0001)
                    index, pos = _integer(block, pos, 0x0F)
                    if index:
                        name = self._entry(index)[0]
                    else:
                        name, pos = self._string(block, pos)
                    value, pos = self._string(block, pos)
                    headers.append((name, value))
        except IndexError:
            raise HpackError("a header block ends in the middle of a field") from None
        return headers

    def _entry(self, index: int) -> tuple[str, str]:
        if 0 < index <= _STATIC_LEN:
            return STATIC_TABLE[index - 1]
        dynamic = index - _STATIC_LEN - 1
        if index == 0 or dynamic >= len(self._dynamic):
            raise HpackError(f"header table index {index} does not exist")
        return self._dynamic[dynamic]

    def _string(self, block: bytes, pos: int) -> tuple[str, int]:
        coded = block[pos] & 0x80
        length, pos = _integer(block, pos, 0x7F)
        end = pos + length
        if end > len(block):
            raise HpackError("a header string runs past the end of its block")
        raw = block[pos:end]
        if not coded:
            return raw.decode("latin-1"), end
        cached = self._huffman_cache.get(raw)
        if cached is None:
            try:
                cached = huffman.decode(raw).decode("latin-1")
            except huffman.HuffmanError as error:
                raise HpackError(str(error)) from None
            if len(self._huffman_cache) >= _HUFFMAN_CACHE_LIMIT:
                self._huffman_cache.clear()
            self._huffman_cache[raw] = cached
        return cached, end

    def _add(self, name: str, value: str) -> None:
        self._generation += 1
        self._dynamic.appendleft((name, value))
        self._size += len(name) + len(value) + _ENTRY_OVERHEAD
        self._evict()

    def _evict(self) -> None:
        while self._size > self._max:
            name, value = self._dynamic.pop()
            self._size -= len(name) + len(value) + _ENTRY_OVERHEAD


def _integer(block: bytes, pos: int, mask: int) -> tuple[int, int]:
    value = block[pos] & mask
    pos += 1
    if value < mask:
        return value, pos
    shift = 0
    while True:
        byte = block[pos]
        pos += 1
        value += (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
        if shift > 28:
            raise HpackError("a header integer is too large")


def integer(value: int, prefix_bits: int, first: int = 0) -> bytes:
    """``value`` as an HPACK integer with an N-bit prefix; ``first`` holds the pattern bits above it."""
    mask = (1 << prefix_bits) - 1
    if value < mask:
        return bytes((first | value,))
    out = bytearray((first | mask,))
    value -= mask
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def literal(name: str, value: str) -> bytes:
    """A literal field without indexing, name and value as plain (not Huffman-coded) strings."""
    raw_name = name.encode("latin-1")
    raw_value = value.encode("latin-1")
    return b"\x00" + integer(len(raw_name), 7) + raw_name + integer(len(raw_value), 7) + raw_value


def literal_indexed_name(index: int, value: str) -> bytes:
    """A literal field without indexing whose name is static table entry ``index`` (1-based)."""
    raw_value = value.encode("latin-1")
    return integer(index, 4) + integer(len(raw_value), 7) + raw_value


def indexed(index: int) -> bytes:
    """A field that is static table entry ``index`` (name and value), such as 3 for ``:method: POST``."""
    return integer(index, 7, 0x80)


def table_size_update(size: int) -> bytes:
    """A dynamic table size update (RFC 7541, 6.3), sent at the start of a header block."""
    return integer(size, 5, 0x20)
