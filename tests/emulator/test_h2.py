"""The emulator's own HTTP/2 gRPC server: HPACK, flow control, errors, deadlines, cancellation.

Two kinds of client: grpcio's C-core (what the Python SDKs use), and a raw socket client written
here that sends exactly the frames a test needs (Huffman-coded headers, padding, CONTINUATION,
tiny windows), encoded with the independent ``hpack`` package.
"""

from __future__ import annotations

import asyncio
import gzip
import random
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Any

import grpc
import hpack as reference_hpack
import pytest

from durabletask.emulator.h2.call import shape_of
from durabletask.emulator.h2.server import GrpcServer, Route
from durabletask.emulator.turn import turn_end
from durabletask.internal.h2 import frames as f
from durabletask.internal.h2 import huffman
from durabletask.internal.h2.hpack import Decoder, HpackError, literal

# -- HPACK and Huffman


def test_huffman_matches_the_rfc_example_and_round_trips_every_byte() -> None:
    assert huffman.encode(b"www.example.com").hex() == "f1e3c2e5f23a6ba0ab90f4ff"  # RFC 7541 C.4.1
    assert huffman.decode(bytes.fromhex("f1e3c2e5f23a6ba0ab90f4ff")) == b"www.example.com"
    everything = bytes(range(256)) * 2
    assert huffman.decode(huffman.encode(everything)) == everything


def test_huffman_refuses_bad_padding_and_eos() -> None:
    with pytest.raises(huffman.HuffmanError, match="padding"):
        huffman.decode(huffman.encode(b"a")[:-1] + b"\x00")  # padding of zeros
    with pytest.raises(huffman.HuffmanError, match="EOS"):
        huffman.decode(b"\xff\xff\xff\xff")  # the 30-bit EOS code


def test_decoder_agrees_with_an_independent_encoder_with_and_without_huffman() -> None:
    rng = random.Random(7)
    for use_huffman in (True, False):
        encoder = reference_hpack.Encoder()
        decoder = Decoder()
        for i in range(300):
            headers = [(":method", "POST"), (":scheme", "http"), (":path", f"/TaskHubSidecarService/M{i % 7}"),
                       ("content-type", "application/grpc"), ("te", "trailers"),
                       ("grpc-timeout", f"{rng.randint(1, 99_999_999)}m"), ("taskhub", rng.choice(["a", "b"])),
                       ("x-note", "é" * rng.randint(0, 40)), ("user-agent", "grpc-go/1.6 " + "x" * rng.randint(0, 300))]
            encoded = encoder.encode([(n, v.encode("latin-1")) for n, v in headers], huffman=use_huffman)
            assert decoder.decode(encoded) == headers


def test_decoder_applies_table_size_updates_and_evicts() -> None:
    encoder = reference_hpack.Encoder()
    decoder = Decoder()
    decoder.decode(encoder.encode([("a", "1" * 100)]))
    encoder.header_table_size = 0  # next block starts with a size update to 0: the entry goes
    block = encoder.encode([("a", "1" * 100)])
    assert decoder.decode(block) == [("a", "1" * 100)]
    with pytest.raises(HpackError, match="index 62 does not exist"):
        decoder.decode(b"\xbe")  # indexed field 62: the dynamic table is empty now


def test_a_repeated_indexed_block_follows_the_dynamic_table() -> None:
    decoder = Decoder()
    decoder.decode(b"\x40\x03x-a\x011")  # literal with indexing: ("x-a", "1") becomes entry 62
    assert decoder.decode(b"\xbe") == [("x-a", "1")]
    assert decoder.decode(b"\xbe") == [("x-a", "1")]  # same bytes, same table: same fields
    decoder.decode(b"\x40\x03x-b\x012")  # ("x-b", "2") is entry 62 now
    assert decoder.decode(b"\xbe") == [("x-b", "2")]
    decoder.decode(b"\x20")  # table size 0: both entries evicted
    with pytest.raises(HpackError, match="index 62 does not exist"):
        decoder.decode(b"\xbe")


def test_decoder_refuses_truncated_and_oversized_input() -> None:
    with pytest.raises(HpackError, match="past the end"):
        Decoder().decode(b"\x40\x05ab")
    with pytest.raises(HpackError, match="middle of a field"):
        Decoder().decode(b"\x40")
    with pytest.raises(HpackError, match="size update"):
        Decoder().decode(b"\x3f\xe1\x7f")  # table size 16384 > 4096 allowed


# -- a generic server to test the transport with its own routes


class _Echo:
    """Handlers for the tests' routes."""

    def __init__(self) -> None:
        self.cancelled = threading.Event()
        self.metadata: Any = None

    async def echo(self, request: bytes, context: Any) -> bytes:
        self.metadata = context.invocation_metadata()
        return request

    async def fail(self, request: bytes, context: Any) -> bytes:
        await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "naïve request: 100% wrong")
        raise AssertionError("abort returns")

    async def slow(self, request: bytes, context: Any) -> bytes:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            self.cancelled.set()
            raise
        return b""

    async def crash(self, request: bytes, context: Any) -> bytes:
        raise KeyError("boom")

    async def wrong_type(self, request: bytes, context: Any) -> Any:
        return "a str, which the route cannot serialize"

    async def many(self, request: bytes, context: Any) -> AsyncIterator[bytes]:
        count, size = (int(x) for x in request.decode().split(","))
        for i in range(count):
            yield bytes([i % 256]) * size

    async def pushed(self, request: bytes, context: Any) -> AsyncIterator[bytes]:
        """Like ``many``, but each message is first offered to ``send_now`` (what GetWorkItems does)."""
        count, size = (int(x) for x in request.decode().split(","))
        self.sent_now: list[bool] = []
        for i in range(count):
            message = bytes([i % 256]) * size
            self.sent_now.append(context.send_now(message))
            if not self.sent_now[-1]:
                yield message


    async def listen(self, request: bytes, context: Any) -> AsyncIterator[bytes]:
        """A stream that only carries what `notify` pushes on it (as the work-item stream does)."""
        self.listener = context
        await asyncio.sleep(30)
        yield b""

    def notify(self, request: bytes, context: Any) -> tuple[None, bytes]:
        """An immediate call whose answer is written now and whose push to the listener at the end of the
        turn (what a start or a completion does: answered by its commit, the work item pumped after it)."""
        turn_end(asyncio.get_running_loop()).add(lambda: self.listener.send_now(b"pushed:" + request))
        return None, b"answered:" + request


def _routes(echo: _Echo) -> list[Route]:
    def route(name: str, behaviour: Any, streaming: bool = False, immediate: Any = None) -> Route:
        return Route(path=f"/test.Echo/{name}", behaviour=behaviour, deserialize=bytes, serialize=bytes,
                     streaming=streaming, request_name="bytes", immediate=immediate)
    return [route("Echo", echo.echo), route("Fail", echo.fail), route("Slow", echo.slow),
            route("Crash", echo.crash), route("WrongType", echo.wrong_type), route("Many", echo.many, streaming=True),
            route("Pushed", echo.pushed, streaming=True), route("Listen", echo.listen, streaming=True),
            route("Notify", echo.echo, immediate=echo.notify)]


@contextmanager
def _serve(max_message_bytes: int = 4 << 20) -> Iterator[tuple[int, _Echo]]:
    echo = _Echo()
    loop = asyncio.new_event_loop()
    server = GrpcServer(_routes(echo), max_message_bytes=max_message_bytes)
    echo.server = server
    port = loop.run_until_complete(server.start("127.0.0.1", 0))
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield port, echo
    finally:
        asyncio.run_coroutine_threadsafe(server.stop(0.5), loop).result(5)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()


def _identity(x: bytes) -> bytes:
    return x


@pytest.fixture
def served() -> Iterator[tuple[grpc.Channel, _Echo, int]]:
    with _serve() as (port, echo):
        channel = grpc.insecure_channel(f"localhost:{port}", options=[("grpc.max_receive_message_length", 64 << 20),
                                                                       ("grpc.max_send_message_length", 64 << 20)])
        yield channel, echo, port
        channel.close()


def _unary(channel: grpc.Channel, name: str) -> Any:
    return channel.unary_unary(f"/test.Echo/{name}", request_serializer=_identity, response_deserializer=_identity)


# -- with grpcio's client


def test_unary_calls_carry_messages_and_metadata_both_ways(served: tuple[grpc.Channel, _Echo, int]) -> None:
    channel, echo, _ = served
    payload = bytes(range(256)) * 40
    assert _unary(channel, "Echo")(payload, metadata=[("taskhub", "hub-1"), ("trace-bin", b"\x00\xff")]) == payload
    assert ("taskhub", "hub-1") in echo.metadata and ("trace-bin", b"\x00\xff") in echo.metadata
    assert _unary(channel, "Echo")(b"") == b""


def test_large_messages_pass_flow_control_both_ways(served: tuple[grpc.Channel, _Echo, int]) -> None:
    channel, _, _ = served
    big = random.Random(1).randbytes(3 << 20)
    assert _unary(channel, "Echo")(big, timeout=30) == big
    stream = channel.unary_stream("/test.Echo/Many", request_serializer=_identity, response_deserializer=_identity)
    items = list(stream(b"40,200000", timeout=30))  # 8 MB, far past the client's initial windows
    assert [len(i) for i in items] == [200_000] * 40 and all(item[0] == i for i, item in enumerate(items))


def test_abort_sends_the_code_and_the_message_percent_encoded(served: tuple[grpc.Channel, _Echo, int]) -> None:
    channel, _, _ = served
    with pytest.raises(grpc.RpcError) as caught:
        _unary(channel, "Fail")(b"x")
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert caught.value.details() == "naïve request: 100% wrong"


def test_a_crashing_handler_gives_unknown_and_the_server_goes_on(served: tuple[grpc.Channel, _Echo, int]) -> None:
    channel, _, _ = served
    with pytest.raises(grpc.RpcError) as caught:
        _unary(channel, "Crash")(b"x")
    assert caught.value.code() == grpc.StatusCode.UNKNOWN and "KeyError" in (caught.value.details() or "")
    with pytest.raises(grpc.RpcError) as caught:
        _unary(channel, "WrongType")(b"x", timeout=5)  # an answer that cannot be serialized still ends the call
    assert caught.value.code() == grpc.StatusCode.UNKNOWN and "TypeError" in (caught.value.details() or "")
    assert _unary(channel, "Echo")(b"still here") == b"still here"


def test_unknown_methods_get_unimplemented(served: tuple[grpc.Channel, _Echo, int]) -> None:
    channel, _, _ = served
    with pytest.raises(grpc.RpcError) as caught:
        _unary(channel, "Nope")(b"x")
    assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED and "/test.Echo/Nope" in (caught.value.details() or "")


def test_deadline_ends_the_call_and_cancels_the_handler(served: tuple[grpc.Channel, _Echo, int]) -> None:
    channel, echo, _ = served
    began = time.monotonic()
    with pytest.raises(grpc.RpcError) as caught:
        _unary(channel, "Slow")(b"x", timeout=0.3)
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert time.monotonic() - began < 5
    assert echo.cancelled.wait(5), "the handler was not cancelled at the deadline"


def test_client_cancellation_cancels_the_handler(served: tuple[grpc.Channel, _Echo, int]) -> None:
    channel, echo, _ = served
    future = _unary(channel, "Slow").future(b"x")
    time.sleep(0.2)
    future.cancel()
    assert echo.cancelled.wait(5), "RST_STREAM did not cancel the handler"
    assert _unary(channel, "Echo")(b"ok") == b"ok"


def test_many_concurrent_calls_on_one_connection(served: tuple[grpc.Channel, _Echo, int]) -> None:
    channel, _, _ = served
    futures = [_unary(channel, "Echo").future(str(i).encode() * 100) for i in range(300)]
    assert [fut.result(timeout=30) for fut in futures] == [str(i).encode() * 100 for i in range(300)]


def test_oversized_requests_get_resource_exhausted() -> None:
    with _serve(max_message_bytes=1000) as (port, _):
        channel = grpc.insecure_channel(f"localhost:{port}")
        with pytest.raises(grpc.RpcError) as caught:
            _unary(channel, "Echo")(b"x" * 5000)
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "1000" in (caught.value.details() or "")
        assert _unary(channel, "Echo")(b"small") == b"small"
        channel.close()


def test_gzip_compressed_requests_are_accepted(served: tuple[grpc.Channel, _Echo, int]) -> None:
    channel, _, _ = served
    payload = b"compress me " * 1000
    assert _unary(channel, "Echo")(payload, compression=grpc.Compression.Gzip) == payload


# -- with a raw socket client


class _RawClient:
    """Sends hand-made frames and reads the server's, for what grpcio never sends."""

    def __init__(self, port: int, settings: dict[int, int] | None = None) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.encoder = reference_hpack.Encoder()
        self.decoder = reference_hpack.Decoder()
        self.buffer = b""
        self.sock.sendall(f.PREFACE + f.settings(settings or {}))

    def headers(self, stream_id: int, path: str, *, end_stream: bool = False, huffman: bool = True,
                extra: list[tuple[str, str]] | None = None, split: bool = False, padded: bool = False) -> None:
        fields = [(":method", "POST"), (":scheme", "http"), (":path", path), (":authority", "localhost"),
                  ("content-type", "application/grpc"), ("te", "trailers"), *(extra or [])]
        block = self.encoder.encode(fields, huffman=huffman)
        flags = f.END_STREAM if end_stream else 0
        if split:
            self.sock.sendall(f.frame(f.HEADERS, flags, stream_id, block[:3])
                              + f.frame(f.CONTINUATION, 0, stream_id, block[3:6])
                              + f.frame(f.CONTINUATION, f.END_HEADERS, stream_id, block[6:]))
        elif padded:
            self.sock.sendall(f.frame(f.HEADERS, flags | f.END_HEADERS | f.PADDED, stream_id,
                                      b"\x04" + block + b"\x00" * 4))
        else:
            self.sock.sendall(f.frame(f.HEADERS, flags | f.END_HEADERS, stream_id, block))

    def message(self, stream_id: int, payload: bytes, *, end_stream: bool = True) -> None:
        body = b"\x00" + len(payload).to_bytes(4, "big") + payload
        self.sock.sendall(f.frame(f.DATA, f.END_STREAM if end_stream else 0, stream_id, body))

    def read_frame(self) -> tuple[int, int, int, bytes]:
        while len(self.buffer) < 9 or len(self.buffer) < 9 + f.parse_head(self.buffer, 0)[0]:
            chunk = self.sock.recv(1 << 20)
            if not chunk:
                raise ConnectionError("the server closed the connection")
            self.buffer += chunk
        length, kind, flags, stream_id = f.parse_head(self.buffer, 0)
        payload, self.buffer = self.buffer[9:9 + length], self.buffer[9 + length:]
        return kind, flags, stream_id, payload

    def frames_until(self, stream_id: int, kind: int, flags: int) -> list[tuple[int, int, int, bytes]]:
        seen = []
        while True:
            frame = self.read_frame()
            seen.append(frame)
            if frame[0] == kind and frame[2] == stream_id and frame[1] & flags == flags:
                return seen

    def data_within(self, stream_id: int, seconds: float) -> int:
        """DATA bytes received on ``stream_id`` during the next ``seconds`` (other frames are read and dropped)."""
        received = 0
        self.sock.settimeout(0.2)
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                kind, _, sid, payload = self.read_frame()
            except TimeoutError:
                continue
            if kind == f.DATA and sid == stream_id:
                received += len(payload)
        self.sock.settimeout(5)
        return received

    def close(self) -> None:
        self.sock.close()


def _status(client: _RawClient, frames: list[tuple[int, int, int, bytes]]) -> dict[str, str]:
    last = frames[-1]
    assert last[0] == f.HEADERS and last[1] & f.END_STREAM
    return dict((n.decode() if isinstance(n, bytes) else n, v.decode() if isinstance(v, bytes) else v)
                for n, v in client.decoder.decode(last[3]))


def test_huffman_headers_padding_and_continuation_from_a_raw_client() -> None:
    with _serve() as (port, _):
        client = _RawClient(port)
        for stream_id, kwargs in ((1, {"huffman": True}), (3, {"split": True}), (5, {"padded": True})):
            client.headers(stream_id, "/test.Echo/Echo", **kwargs)  # type: ignore[arg-type]
            client.message(stream_id, b"hi %d" % stream_id)
            frames = client.frames_until(stream_id, f.HEADERS, f.END_STREAM)
            data = b"".join(p for kind, _, sid, p in frames if kind == f.DATA and sid == stream_id)
            assert data == b"\x00\x00\x00\x00\x04" + b"hi %d" % stream_id
            assert _status(client, frames)["grpc-status"] == "0"
        client.close()


def test_ping_is_acknowledged_with_its_payload() -> None:
    with _serve() as (port, _):
        client = _RawClient(port)
        client.sock.sendall(f.frame(f.PING, 0, 0, b"12345678"))
        frames = client.frames_until(0, f.PING, f.ACK)
        assert frames[-1][3] == b"12345678"
        client.close()


def test_streamed_data_waits_for_the_clients_window() -> None:
    with _serve() as (port, _):
        client = _RawClient(port, {f.SETTINGS_INITIAL_WINDOW_SIZE: 1000})
        client.headers(1, "/test.Echo/Many", end_stream=False)
        client.message(1, b"3,2000")
        received = client.data_within(1, 1.0)
        assert received == 1000  # the server may send only 1000 bytes, then must wait
        client.sock.sendall(f.window_update(1, 10_000))
        frames = client.frames_until(1, f.HEADERS, f.END_STREAM)
        received += sum(len(p) for kind, _, sid, p in frames if kind == f.DATA and sid == 1)
        assert received == 3 * (2000 + 5)
        assert _status(client, frames)["grpc-status"] == "0"
        client.close()


def test_messages_sent_now_keep_their_order_and_wait_for_the_window_like_yielded_ones() -> None:
    with _serve() as (port, echo):
        client = _RawClient(port, {f.SETTINGS_INITIAL_WINDOW_SIZE: 1000})
        client.headers(1, "/test.Echo/Pushed", end_stream=False)
        client.message(1, b"3,2000")
        time.sleep(0.3)
        assert echo.sent_now[0] is True  # nothing was waiting: written at once
        client.sock.sendall(f.window_update(1, 10_000))
        frames = client.frames_until(1, f.HEADERS, f.END_STREAM)
        data = b"".join(p for kind, _, sid, p in frames if kind == f.DATA and sid == 1)
        assert echo.sent_now[:2] == [True, False]  # the second found the first waiting for the window
        assert data == b"".join(b"\x00" + (2000).to_bytes(4, "big") + bytes([i]) * 2000 for i in range(3))
        assert _status(client, frames)["grpc-status"] == "0"
        client.close()


class _RecordedTransport:
    """Passes writes on to a server connection's transport and notes which connection wrote what, in order."""

    def __init__(self, transport: Any, name: str, log: list[tuple[str, bytes]]) -> None:
        self._transport, self._name, self._log = transport, name, log

    def write(self, data: bytes) -> None:
        self._log.append((self._name, bytes(data)))
        self._transport.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


def _wait_for(condition: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_a_message_pushed_on_a_stream_leaves_before_answers_written_earlier_in_the_turn() -> None:
    with _serve() as (port, echo):
        writes: list[tuple[str, bytes]] = []
        listener = _RawClient(port)
        listener.headers(1, "/test.Echo/Listen")
        listener.message(1, b"")
        _wait_for(lambda: getattr(echo, "listener", None) is not None)
        (listening,) = echo.server.connections
        listening._transport = _RecordedTransport(listening._transport, "listener", writes)
        caller = _RawClient(port)
        caller.headers(1, "/test.Echo/Notify")
        caller.message(1, b"")  # handshake first, so that the call is the caller's only write in its turn
        caller.frames_until(1, f.HEADERS, f.END_STREAM)
        (calling,) = echo.server.connections - {listening}
        calling._transport = _RecordedTransport(calling._transport, "caller", writes)
        listener.frames_until(1, f.DATA, 0)
        writes.clear()
        caller.headers(3, "/test.Echo/Notify")
        caller.message(3, b"42")
        pushed = listener.frames_until(1, f.DATA, 0)
        answer = caller.frames_until(3, f.HEADERS, f.END_STREAM)
        assert pushed[-1][3].endswith(b"pushed:42")
        assert any(p.endswith(b"answered:42") for kind, _, sid, p in answer if kind == f.DATA)
        who = [name for name, data in writes if b"42" in data]
        assert who == ["listener", "caller"]  # the push went out first although the answer was written first
        listener.close()
        caller.close()


def test_the_server_ends_each_call_at_its_own_deadline_whatever_the_order_they_came_in() -> None:
    with _serve() as (port, _echo):
        client = _RawClient(port)  # unlike grpcio, it never gives up on a call itself: the server must
        began = time.monotonic()
        for stream_id, timeout in ((1, "2000m"), (3, "300m"), (5, "700m"), (7, "300m")):
            client.headers(stream_id, "/test.Echo/Slow", extra=[("grpc-timeout", timeout)])
            client.message(stream_id, b"x")
        ended: list[tuple[int, float, str]] = []
        while len(ended) < 4:
            kind, flags, stream_id, payload = client.read_frame()
            if kind == f.HEADERS and flags & f.END_STREAM:
                fields = {n.decode() if isinstance(n, bytes) else n: v.decode() if isinstance(v, bytes) else v
                          for n, v in client.decoder.decode(payload)}
                ended.append((stream_id, time.monotonic() - began, fields["grpc-status"]))
            elif kind == f.HEADERS:
                client.decoder.decode(payload)
        assert [e[0] for e in ended][:2] in ([3, 7], [7, 3]) and [e[0] for e in ended][2:] == [5, 1]
        assert all(status == str(grpc.StatusCode.DEADLINE_EXCEEDED.value[0]) for _, _, status in ended)
        at = {stream_id: seconds for stream_id, seconds, _ in ended}
        assert 0.25 <= at[3] < 0.6 and 0.65 <= at[5] < 1.1 and 1.9 <= at[1] < 2.6
        client.close()


def test_a_broken_header_block_closes_the_connection_with_compression_error() -> None:
    with _serve() as (port, _):
        client = _RawClient(port)
        client.sock.sendall(f.frame(f.HEADERS, f.END_HEADERS | f.END_STREAM, 1, b"\xff\xff\xff\xff\x0f"))
        while True:
            kind, _, _, payload = client.read_frame()
            if kind == f.GOAWAY:
                assert f.parse_error_code(payload[4:8]) == f.COMPRESSION_ERROR
                break
        client.close()


def test_http1_requests_get_a_plain_answer() -> None:
    with _serve() as (port, _):
        sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        sock.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        answer = b""
        while chunk := sock.recv(4096):
            answer += chunk
        assert answer.startswith(b"HTTP/1.1 400") and b"gRPC" in answer
        sock.close()


def test_compressed_request_with_an_unknown_encoding_is_refused() -> None:
    with _serve() as (port, _):
        client = _RawClient(port)
        client.headers(1, "/test.Echo/Echo", extra=[("grpc-encoding", "snappy")])
        payload = gzip.compress(b"x")
        client.sock.sendall(f.frame(f.DATA, f.END_STREAM, 1, b"\x01" + len(payload).to_bytes(4, "big") + payload))
        status = _status(client, client.frames_until(1, f.HEADERS, f.END_STREAM))
        assert status["grpc-status"] == str(grpc.StatusCode.UNIMPLEMENTED.value[0])
        assert "snappy" in status["grpc-message"]
        client.close()


def test_stop_lets_calls_in_flight_finish() -> None:
    echo = _Echo()
    loop = asyncio.new_event_loop()

    async def scenario() -> bytes:
        server = GrpcServer(_routes(echo), max_message_bytes=1 << 20)
        port = await server.start("127.0.0.1", 0)
        channel = grpc.aio.insecure_channel(f"localhost:{port}")
        call = channel.unary_unary("/test.Echo/Echo", request_serializer=_identity, response_deserializer=_identity)
        answer = await call(b"before stop")
        stopping = asyncio.ensure_future(server.stop(2))
        await stopping
        await channel.close()
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return bytes(answer)

    try:
        assert loop.run_until_complete(scenario()) == b"before stop"
    finally:
        loop.close()


def test_literal_encoding_is_read_by_an_independent_decoder() -> None:
    block = literal("grpc-status", "0") + literal("grpc-message", "x%20y")
    assert reference_hpack.Decoder().decode(block) == [("grpc-status", "0"), ("grpc-message", "x%20y")]


# -- the per-connection cache of what a request's headers mean


_CT_NOT_INDEXED = b"\x0f\x10\x10application/grpc"  # content-type (static 31), literal without indexing


def _indexed_path(path: str) -> bytes:
    """``:path`` (static name 4) as a literal added to the dynamic table (it becomes entry 62)."""
    return b"\x44" + bytes([len(path)]) + path.encode()


def test_the_same_header_bytes_reach_the_method_they_mean_after_the_table_changed() -> None:
    post_http = b"\x83\x86"  # :method POST, :scheme http (static 3 and 6)
    again = post_http + b"\xbe" + _CT_NOT_INDEXED  # :path is dynamic entry 62, whatever it holds now
    with _serve() as (port, _):
        client = _RawClient(port)

        def call(stream_id: int, block: bytes) -> dict[str, str]:
            client.sock.sendall(f.frame(f.HEADERS, f.END_HEADERS, stream_id, block))
            client.message(stream_id, b"x")
            return _status(client, client.frames_until(stream_id, f.HEADERS, f.END_STREAM))

        assert call(1, post_http + _indexed_path("/test.Echo/Echo") + _CT_NOT_INDEXED)["grpc-status"] == "0"
        assert call(3, again)["grpc-status"] == "0"  # entry 62 is Echo's path
        failed = str(grpc.StatusCode.FAILED_PRECONDITION.value[0])
        assert call(5, post_http + _indexed_path("/test.Echo/Fail") + _CT_NOT_INDEXED)["grpc-status"] == failed
        assert call(7, again)["grpc-status"] == failed  # same bytes as stream 3, but entry 62 is Fail's path now
        client.close()


def test_window_updates_on_the_connection_release_waiting_data() -> None:
    with _serve() as (port, _):
        client = _RawClient(port, {f.SETTINGS_INITIAL_WINDOW_SIZE: 1 << 20})
        client.headers(1, "/test.Echo/Many", end_stream=False)
        client.message(1, b"2,40000")  # 80,010 bytes, more than the connection's window of 65,535
        received = client.data_within(1, 1.0)
        assert received == f.DEFAULT_WINDOW
        client.sock.sendall(f.window_update(0, 100_000))
        frames = client.frames_until(1, f.HEADERS, f.END_STREAM)
        received += sum(len(p) for kind, _, sid, p in frames if kind == f.DATA and sid == 1)
        assert received == 2 * (40_000 + 5)
        client.close()


@pytest.mark.parametrize(("frame", "code"), [
    (f.frame(f.WINDOW_UPDATE, 0, 0, b"\x00\x00\x00\x01\x00"), f.FRAME_SIZE_ERROR),  # 5 bytes, not 4
    (f.window_update(0, f.MAX_WINDOW), f.FLOW_CONTROL_ERROR),  # the connection's window overflows
])
def test_a_bad_window_update_closes_the_connection(frame: bytes, code: int) -> None:
    with _serve() as (port, _):
        client = _RawClient(port)
        client.sock.sendall(frame)
        while True:
            kind, _, _, payload = client.read_frame()
            if kind == f.GOAWAY:
                assert f.parse_error_code(payload[4:8]) == code
                break
        client.close()


def test_a_shape_takes_the_first_timeout_and_encoding_and_leaves_them_out_of_the_metadata() -> None:
    server = GrpcServer(_routes(_Echo()), max_message_bytes=1 << 20)
    headers = [(":method", "POST"), (":path", "/test.Echo/Echo"), ("content-type", "application/grpc"),
               ("grpc-timeout", "250m"), ("grpc-timeout", "9S"), ("grpc-encoding", "gzip"),
               ("grpc-encoding", "snappy"), ("taskhub", "h"), ("te", "trailers")]
    shape = shape_of(headers, server.route_for)
    assert shape.route is not None and shape.route.path == "/test.Echo/Echo" and shape.refusal is None
    assert shape.timeout == pytest.approx(0.25) and shape.encoding == "gzip"
    assert shape.metadata == (("taskhub", "h"),)
    plain = shape_of([(":method", "POST"), (":path", "/test.Echo/Nope"), ("content-type", "application/grpc"),
                      ("grpc-timeout", "soon")], server.route_for)
    assert plain.route is None and plain.refusal is not None and plain.refusal[0] == grpc.StatusCode.UNIMPLEMENTED
    assert plain.timeout is None and plain.encoding == "identity"
