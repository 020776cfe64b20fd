"""HTTP/2 frame layout and constants (RFC 9113), and the building of the frames servers and clients send."""

from __future__ import annotations

import struct

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

# Frame types (PRIORITY, 0x2, and unknown types are read and ignored).
DATA = 0x0
HEADERS = 0x1
RST_STREAM = 0x3
SETTINGS = 0x4
PUSH_PROMISE = 0x5
PING = 0x6
GOAWAY = 0x7
WINDOW_UPDATE = 0x8
CONTINUATION = 0x9

# Flags.
END_STREAM = 0x1
ACK = 0x1
END_HEADERS = 0x4
PADDED = 0x8
PRIORITY_FLAG = 0x20

# Error codes (RST_STREAM and GOAWAY).
NO_ERROR = 0x0
PROTOCOL_ERROR = 0x1
INTERNAL_ERROR = 0x2
FLOW_CONTROL_ERROR = 0x3
SETTINGS_TIMEOUT = 0x4
STREAM_CLOSED = 0x5
FRAME_SIZE_ERROR = 0x6
REFUSED_STREAM = 0x7
CANCEL = 0x8
COMPRESSION_ERROR = 0x9
CONNECT_ERROR = 0xA
ENHANCE_YOUR_CALM = 0xB
INADEQUATE_SECURITY = 0xC
HTTP_1_1_REQUIRED = 0xD

# Settings.
SETTINGS_HEADER_TABLE_SIZE = 0x1
SETTINGS_ENABLE_PUSH = 0x2
SETTINGS_MAX_CONCURRENT_STREAMS = 0x3
SETTINGS_INITIAL_WINDOW_SIZE = 0x4
SETTINGS_MAX_FRAME_SIZE = 0x5
SETTINGS_MAX_HEADER_LIST_SIZE = 0x6

DEFAULT_WINDOW = 65_535
MAX_WINDOW = 2**31 - 1
DEFAULT_MAX_FRAME = 16_384
MAX_FRAME_LIMIT = 2**24 - 1

# Length (24 bits) and type share the first 4 bytes; then flags and the stream id.
_HEAD = struct.Struct(">IBI")
_SETTING = struct.Struct(">HI")
_WINDOW = struct.Struct(">I")
_GOAWAY = struct.Struct(">II")


class ProtocolError(Exception):
    """The peer broke HTTP/2: the connection ends with GOAWAY carrying ``code``."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


def frame(kind: int, flags: int, stream_id: int, payload: bytes = b"") -> bytes:
    return head(kind, flags, stream_id, len(payload)) + payload


def head(kind: int, flags: int, stream_id: int, length: int) -> bytes:
    """The 9-byte header of a frame whose payload is written separately."""
    return _HEAD.pack((length << 8) | kind, flags, stream_id)


def parse_head(buffer: bytes | bytearray, pos: int) -> tuple[int, int, int, int]:
    """``(length, type, flags, stream id)`` of the frame header at ``pos``."""
    first, flags, stream_id = _HEAD.unpack_from(buffer, pos)
    return first >> 8, first & 0xFF, flags, stream_id & 0x7FFF_FFFF


def settings(values: dict[int, int]) -> bytes:
    return frame(SETTINGS, 0, 0, b"".join(_SETTING.pack(key, value) for key, value in values.items()))


def parse_settings(payload: bytes) -> list[tuple[int, int]]:
    """The ``(key, value)`` pairs of a SETTINGS frame, checked as RFC 9113 6.5.2 asks.

    Raises:
        ProtocolError: a wrong length, or a window or frame size out of range.
    """
    if len(payload) % 6:
        raise ProtocolError(FRAME_SIZE_ERROR, "a SETTINGS frame's length must be a multiple of 6")
    pairs = [_SETTING.unpack_from(payload, pos) for pos in range(0, len(payload), 6)]
    for key, value in pairs:
        if key == SETTINGS_INITIAL_WINDOW_SIZE and value > MAX_WINDOW:
            raise ProtocolError(FLOW_CONTROL_ERROR, "SETTINGS_INITIAL_WINDOW_SIZE is above 2^31-1")
        if key == SETTINGS_MAX_FRAME_SIZE and not DEFAULT_MAX_FRAME <= value <= MAX_FRAME_LIMIT:
            raise ProtocolError(PROTOCOL_ERROR, f"SETTINGS_MAX_FRAME_SIZE {value} is out of range")
    return pairs


def window_update(stream_id: int, increment: int) -> bytes:
    return frame(WINDOW_UPDATE, 0, stream_id, _WINDOW.pack(increment))


def parse_window_update(payload: bytes) -> int:
    """The increment of a WINDOW_UPDATE frame.

    Raises:
        ProtocolError: the frame does not carry exactly 4 bytes.
    """
    if len(payload) != 4:
        raise ProtocolError(FRAME_SIZE_ERROR, "a WINDOW_UPDATE frame must carry 4 bytes")
    return int(_WINDOW.unpack(payload)[0]) & 0x7FFF_FFFF


def rst_stream(stream_id: int, code: int) -> bytes:
    return frame(RST_STREAM, 0, stream_id, _WINDOW.pack(code))


def parse_error_code(payload: bytes) -> int:
    return int(_WINDOW.unpack_from(payload, 0)[0])


def goaway(last_stream_id: int, code: int, debug: str = "") -> bytes:
    return frame(GOAWAY, 0, 0, _GOAWAY.pack(last_stream_id, code) + debug.encode("utf-8", "replace"))


def parse_goaway(payload: bytes) -> tuple[int, int, bytes]:
    """``(last stream id, error code, debug data)`` of a GOAWAY payload (at least 8 bytes)."""
    last_stream_id, code = _GOAWAY.unpack_from(payload, 0)
    return int(last_stream_id) & 0x7FFF_FFFF, int(code), bytes(payload[8:])


def header_frames(stream_id: int, block: bytes, max_frame: int, *, end_stream: bool) -> list[bytes]:
    """A header block as HEADERS (plus CONTINUATION frames when it is larger than ``max_frame``)."""
    flags = END_STREAM if end_stream else 0
    if len(block) <= max_frame:
        return [head(HEADERS, flags | END_HEADERS, stream_id, len(block)), block]
    out = [head(HEADERS, flags, stream_id, max_frame), block[:max_frame]]
    pos = max_frame
    while pos < len(block):
        chunk = block[pos:pos + max_frame]
        pos += len(chunk)
        out += [head(CONTINUATION, END_HEADERS if pos >= len(block) else 0, stream_id, len(chunk)), chunk]
    return out
