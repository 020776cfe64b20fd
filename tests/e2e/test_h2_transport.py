"""The SDK's own HTTP/2 gRPC client (`H2Channel`) against two servers: the emulator's own HTTP/2
server and a plain ``grpc.aio`` server (C-core's HTTP/2), so the client is proven on an
independent implementation too. Plus a scripted raw server for frames neither sends (padding,
CONTINUATION, one-byte DATA frames, a stream limit, GOAWAY below an open stream), and the choice
of transport in ``async_channel``.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import grpc.aio
import hpack as reference_hpack
import pytest

from durabletask.emulator.h2.server import GrpcServer, Route
from durabletask.grpc_options import GrpcChannelOptions
from durabletask.internal.grpc import channels
from durabletask.internal.grpc.h2_channel import H2Channel
from durabletask.internal.h2 import frames as f
from durabletask.internal.h2.client import Connection
from durabletask.internal.h2.client_stream import ClientStream
from durabletask.internal.h2.hpack import Decoder

SERVERS = ("emulator", "grpcio")
NON_ASCII = "naïve request: 100% wrong ✓"


class Handlers:
    """The test service, the same functions on both servers."""

    def __init__(self) -> None:
        self.metadata: list[tuple[str, Any]] = []
        self.cancelled = asyncio.Event()
        self.started = asyncio.Event()
        self.running = 0  # handlers of Slow and Forever calls in progress
        self.calls = 0

    async def echo(self, request: bytes, context: Any) -> bytes:
        self.calls += 1
        self.metadata = [(m[0], m[1]) for m in context.invocation_metadata()]
        return request

    async def fail(self, request: bytes, context: Any) -> bytes:
        await context.abort(grpc.StatusCode.FAILED_PRECONDITION, NON_ASCII)
        raise AssertionError("abort returns")

    async def big(self, request: bytes, context: Any) -> bytes:
        return b"x" * int(request.decode())

    async def slow(self, request: bytes, context: Any) -> bytes:
        self.started.set()
        self.running += 1
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            self.cancelled.set()
            raise
        finally:
            self.running -= 1
        return b""

    async def many(self, request: bytes, context: Any) -> AsyncIterator[bytes]:
        count, size = (int(x) for x in request.decode().split(","))
        for i in range(count):
            yield bytes([i % 256]) * size

    async def forever(self, request: bytes, context: Any) -> AsyncIterator[bytes]:
        yield b"first"
        self.started.set()
        self.running += 1
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            self.cancelled.set()
            raise
        finally:
            self.running -= 1
        yield b"never"

    async def refuse(self, request: bytes, context: Any) -> AsyncIterator[bytes]:
        await context.abort(grpc.StatusCode.PERMISSION_DENIED, "no stream for you")
        yield b"never"


UNARY = {"Echo": "echo", "Fail": "fail", "Big": "big", "Slow": "slow"}
STREAMING = {"Many": "many", "Forever": "forever", "Refuse": "refuse"}


class Server:
    """One of the two servers on a local port; `restart` brings it back on the same port."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.handlers = Handlers()
        self.port = 0
        self._server: Any = None

    async def start(self) -> Server:
        h = self.handlers
        if self.kind == "emulator":
            routes = [Route(path=f"/test.Echo/{name}", behaviour=getattr(h, attr), deserialize=bytes, serialize=bytes,
                            streaming=name in STREAMING, request_name="bytes")
                      for name, attr in {**UNARY, **STREAMING}.items()]
            self._server = GrpcServer(routes, max_message_bytes=64 << 20)
            self.port = await self._server.start("127.0.0.1", self.port)
        else:
            server = grpc.aio.server(options=[("grpc.max_receive_message_length", 64 << 20),
                                              ("grpc.max_send_message_length", 64 << 20),
                                              ("grpc.so_reuseport", 1)])
            methods = {name: grpc.unary_unary_rpc_method_handler(getattr(h, attr)) for name, attr in UNARY.items()}
            methods |= {name: grpc.unary_stream_rpc_method_handler(getattr(h, attr))
                        for name, attr in STREAMING.items()}
            server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("test.Echo", methods),))
            self.port = server.add_insecure_port(f"127.0.0.1:{self.port}")
            await server.start()
            self._server = server
        return self

    async def stop(self) -> None:
        if self.kind == "emulator":
            await self._server.stop(0)
        else:
            await self._server.stop(None)

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"


def run(kind: str, scenario: Callable[[Server, H2Channel], Awaitable[None]], **channel_args: Any) -> None:
    async def main() -> None:
        server = await Server(kind).start()
        channel = H2Channel(server.target, **channel_args)
        try:
            await asyncio.wait_for(scenario(server, channel), 60)
        finally:
            await channel.close()
            await server.stop()
    asyncio.run(main())


def unary(channel: H2Channel, name: str) -> Any:
    return channel.unary_unary(f"/test.Echo/{name}")


def streaming(channel: H2Channel, name: str) -> Any:
    return channel.unary_stream(f"/test.Echo/{name}")


@contextlib.asynccontextmanager
async def raises(code: grpc.StatusCode) -> AsyncIterator[list[grpc.aio.AioRpcError]]:
    caught: list[grpc.aio.AioRpcError] = []
    try:
        yield caught
    except grpc.aio.AioRpcError as error:
        assert error.code() == code, (error.code(), error.details())
        assert isinstance(error, grpc.RpcError)
        caught.append(error)
    else:
        raise AssertionError(f"expected {code.name}")


# -- both servers


@pytest.mark.parametrize("kind", SERVERS)
def test_unary_calls_carry_messages_and_metadata(kind: str) -> None:
    async def scenario(server: Server, channel: H2Channel) -> None:
        payload = bytes(range(256)) * 40
        md = (("taskhub", "hub-1"), ("trace-bin", b"\x00\xff\x01=="), ("Mixed-Case", "v"))
        assert await unary(channel, "Echo")(payload, metadata=md, timeout=10) == payload
        seen = server.handlers.metadata
        assert ("taskhub", "hub-1") in seen and ("trace-bin", b"\x00\xff\x01==") in seen
        assert ("mixed-case", "v") in seen and ("workerid", "w-1") in seen  # the channel's own metadata first
        assert await unary(channel, "Echo")(b"") == b""
    run(kind, scenario, metadata=[("workerid", "w-1")])


@pytest.mark.parametrize("kind", SERVERS)
def test_an_error_status_carries_non_ascii_details(kind: str) -> None:
    async def scenario(server: Server, channel: H2Channel) -> None:
        async with raises(grpc.StatusCode.FAILED_PRECONDITION) as caught:
            await unary(channel, "Fail")(b"x")
        assert caught[0].details() == NON_ASCII
        async with raises(grpc.StatusCode.PERMISSION_DENIED) as caught:  # a stream refused before any message
            await streaming(channel, "Refuse")(b"x").read()
        assert caught[0].details() == "no stream for you"
        async with raises(grpc.StatusCode.UNIMPLEMENTED):  # trailers-only from both servers
            await unary(channel, "NoSuchMethod")(b"x")
        assert await unary(channel, "Echo")(b"still here") == b"still here"
    run(kind, scenario)


@pytest.mark.parametrize("kind", SERVERS)
def test_a_deadline_ends_the_call_and_reaches_the_handler(kind: str) -> None:
    async def scenario(server: Server, channel: H2Channel) -> None:
        began = time.monotonic()
        async with raises(grpc.StatusCode.DEADLINE_EXCEEDED):
            await unary(channel, "Slow")(b"", timeout=0.3)
        assert 0.25 < time.monotonic() - began < 3
        await asyncio.wait_for(server.handlers.cancelled.wait(), 5)
        call = streaming(channel, "Forever")(b"", timeout=0.3)
        assert await call.read() == b"first"
        async with raises(grpc.StatusCode.DEADLINE_EXCEEDED):
            await call.read()
        assert await call.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        # a short deadline after a long one (the connection keeps one timer, at the earliest deadline)
        long_call = asyncio.ensure_future(unary(channel, "Slow")(b"", timeout=20))
        await asyncio.sleep(0.05)
        began = time.monotonic()
        async with raises(grpc.StatusCode.DEADLINE_EXCEEDED):
            await unary(channel, "Slow")(b"", timeout=0.2)
        assert time.monotonic() - began < 2 and not long_call.done()
        long_call.cancel()
    run(kind, scenario)


@pytest.mark.parametrize("kind", SERVERS)
def test_server_streaming_delivers_many_messages_in_order(kind: str) -> None:
    async def scenario(server: Server, channel: H2Channel) -> None:
        call = streaming(channel, "Many")(b"2000,50")
        items = []
        while (item := await call.read()) is not grpc.aio.EOF:
            items.append(item)
        assert [i[0] for i in items] == [n % 256 for n in range(2000)] and all(len(i) == 50 for i in items)
        assert await call.code() == grpc.StatusCode.OK and call.done()
        assert [len(i) async for i in streaming(channel, "Many")(b"3,0")] == [0, 0, 0]
    run(kind, scenario)


@pytest.mark.parametrize("kind", SERVERS)
def test_cancelling_a_stream_reaches_the_handler(kind: str) -> None:
    async def scenario(server: Server, channel: H2Channel) -> None:
        call = streaming(channel, "Forever")(b"")
        assert await call.read() == b"first"
        await server.handlers.started.wait()
        assert call.cancel() and not call.cancel()
        await asyncio.wait_for(server.handlers.cancelled.wait(), 5)
        with pytest.raises(asyncio.CancelledError):
            await call.read()
        assert call.cancelled() and await call.code() == grpc.StatusCode.CANCELLED
        # a task cancelled while awaiting a unary call resets its stream too
        server.handlers.cancelled.clear()
        pending = asyncio.ensure_future(unary(channel, "Slow")(b""))
        await asyncio.sleep(0.2)
        pending.cancel()
        with pytest.raises(asyncio.CancelledError):
            await pending
        await asyncio.wait_for(server.handlers.cancelled.wait(), 5)
        assert await unary(channel, "Echo")(b"next") == b"next"
    run(kind, scenario)


@pytest.mark.parametrize("kind", SERVERS)
def test_large_messages_pass_flow_control_both_ways(kind: str) -> None:
    async def scenario(server: Server, channel: H2Channel) -> None:
        big = random.Random(1).randbytes(3 << 20)
        assert await unary(channel, "Echo")(big, timeout=30) == big
        items = [item async for item in streaming(channel, "Many")(b"40,200000", timeout=30)]  # 8 MB
        assert [len(i) for i in items] == [200_000] * 40 and all(item[0] == i for i, item in enumerate(items))
        one = [item async for item in streaming(channel, "Many")(b"1,8000000", timeout=30)]  # one 8 MB message
        assert len(one) == 1 and len(one[0]) == 8_000_000
    run(kind, scenario, max_receive_message_length=16 << 20)


@pytest.mark.parametrize("kind", SERVERS)
def test_message_size_limits(kind: str) -> None:
    async def scenario(server: Server, channel: H2Channel) -> None:
        assert len(await unary(channel, "Big")(str(4 << 20).encode())) == 4 << 20  # the default limit: 4 MiB
        async with raises(grpc.StatusCode.RESOURCE_EXHAUSTED) as caught:
            await unary(channel, "Big")(str((4 << 20) + 1).encode())
        assert "larger than max" in (caught[0].details() or "")
        assert await unary(channel, "Echo")(b"still fine") == b"still fine"
        small = H2Channel(server.target, max_receive_message_length=1000, max_send_message_length=1000)
        try:
            async with raises(grpc.StatusCode.RESOURCE_EXHAUSTED):
                await unary(small, "Big")(b"1001")
            async with raises(grpc.StatusCode.RESOURCE_EXHAUSTED):
                await unary(small, "Echo")(b"x" * 1001)
            assert server.handlers.calls == 1  # the second one never left
            assert await unary(small, "Big")(b"1000") == b"x" * 1000
        finally:
            await small.close()
    run(kind, scenario)


@pytest.mark.parametrize("kind", SERVERS)
def test_a_server_restart_fails_calls_in_flight_and_the_next_call_reconnects(kind: str) -> None:
    async def scenario(server: Server, channel: H2Channel) -> None:
        assert await unary(channel, "Echo")(b"before") == b"before"
        first = channel.connection
        in_flight = [asyncio.ensure_future(unary(channel, "Slow")(b"")) for _ in range(3)]
        stream = streaming(channel, "Forever")(b"")
        assert await stream.read() == b"first"
        while server.handlers.running < 4:  # a call not yet handed to its handler may end CANCELLED instead
            await asyncio.sleep(0.01)
        await server.stop()
        for call in in_flight:
            async with raises(grpc.StatusCode.UNAVAILABLE):
                await call
        async with raises(grpc.StatusCode.UNAVAILABLE):
            await stream.read()
        async with raises(grpc.StatusCode.UNAVAILABLE):
            await unary(channel, "Echo")(b"while down")
        await server.start()
        assert await unary(channel, "Echo")(b"after") == b"after"
        assert channel.connection is not None and channel.connection is not first
    run(kind, scenario)


@pytest.mark.parametrize("kind", SERVERS)
def test_200_concurrent_calls_share_one_connection(kind: str) -> None:
    async def scenario(server: Server, channel: H2Channel) -> None:
        payloads = [f"call {i}".encode() * (i + 1) for i in range(200)]
        answers = await asyncio.gather(*(unary(channel, "Echo")(p, timeout=30) for p in payloads))
        assert answers == payloads
        streams = [streaming(channel, "Many")(b"20,10") for _ in range(20)]
        for stream in streams:
            assert len([i async for i in stream]) == 20
        assert len(channel._connections) == 1
    run(kind, scenario)


def test_connection_refused_is_unavailable() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: connections are refused

        async def main() -> None:
            async with H2Channel(f"127.0.0.1:{port}") as channel:
                async with raises(grpc.StatusCode.UNAVAILABLE) as caught:
                    await unary(channel, "Echo")(b"x", timeout=5)
                assert "failed to connect" in (caught[0].details() or "")
                async with raises(grpc.StatusCode.UNAVAILABLE):
                    await streaming(channel, "Many")(b"1,1").read()
                began = time.monotonic()
                async with raises(grpc.StatusCode.DEADLINE_EXCEEDED):  # wait_for_ready retries until the deadline
                    await unary(channel, "Echo")(b"x", timeout=0.3, wait_for_ready=True)
                assert time.monotonic() - began >= 0.25
        asyncio.run(main())


def test_goaway_sends_new_calls_to_a_new_connection_while_old_ones_finish() -> None:
    async def scenario(server: Server, channel: H2Channel) -> None:
        slow = asyncio.ensure_future(unary(channel, "Big")(b"10"))  # finishes on the old connection
        forever = streaming(channel, "Forever")(b"")
        assert await forever.read() == b"first"
        first = channel.connection
        own = server._server
        for connection in own.connections:
            connection.go_away()
        await asyncio.sleep(0.1)
        assert await slow == b"x" * 10
        assert first is not None and not first.usable
        own.closing = False  # the server takes new connections again, as a restarted one would
        assert await unary(channel, "Echo")(b"new") == b"new"
        assert channel.connection is not first
        assert forever.cancel()
    run("emulator", scenario)


# -- frames neither server sends


class RawServer:
    """Answers each request with frames the test script chooses (encoded with the independent ``hpack`` package)."""

    def __init__(self, script: Callable[[RawServer, int], Awaitable[None]],
                 settings: dict[int, int] | None = None) -> None:
        self.script = script
        self.settings = settings or {}
        self.encoder = reference_hpack.Encoder()
        self.decoder = Decoder()
        self.writer: asyncio.StreamWriter | None = None
        self.requests: list[tuple[int, list[tuple[str, str]]]] = []
        self.received: list[tuple[int, int, int, bytes]] = []
        self.tasks: list[asyncio.Task[None]] = []

    async def start(self) -> int:
        server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self._server = server
        return int(server.sockets[0].getsockname()[1])

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writer = writer
        self.encoder = reference_hpack.Encoder()  # a connection's header compression starts afresh
        self.decoder = Decoder()
        await reader.readexactly(len(f.PREFACE))
        writer.write(f.settings(self.settings))
        try:
            while True:
                head = await reader.readexactly(9)
                length, kind, flags, stream_id = f.parse_head(head, 0)
                payload = await reader.readexactly(length)
                self.received.append((kind, flags, stream_id, payload))
                if kind == f.HEADERS:
                    self.requests.append((stream_id, self.decoder.decode(payload)))
                if kind == f.DATA and flags & f.END_STREAM:
                    self.tasks.append(asyncio.ensure_future(self.script(self, stream_id)))
        except (asyncio.IncompleteReadError, ConnectionError):
            pass

    def send(self, *frames: bytes) -> None:
        assert self.writer is not None
        self.writer.write(b"".join(frames))

    def headers(self, headers: list[tuple[str, str]], huffman: bool = True) -> bytes:
        return bytes(self.encoder.encode(headers, huffman=huffman))

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self._server.close()


def raw_run(script: Callable[[RawServer, int], Awaitable[None]], scenario: Callable[[RawServer, H2Channel],
            Awaitable[None]], settings: dict[int, int] | None = None) -> None:
    async def main() -> None:
        raw = RawServer(script, settings)
        port = await raw.start()
        channel = H2Channel(f"127.0.0.1:{port}")
        try:
            await asyncio.wait_for(scenario(raw, channel), 30)
        finally:
            await channel.close()
            raw.close()
    asyncio.run(main())


def _message(data: bytes) -> bytes:
    return b"\x00" + len(data).to_bytes(4, "big") + data


def test_padding_continuation_and_one_byte_data_frames() -> None:
    async def script(raw: RawServer, stream_id: int) -> None:
        block = raw.headers([(":status", "200"), ("content-type", "application/grpc"), ("x-long", "v" * 3000)])
        raw.send(f.frame(f.PING, 0, 0, b"12345678"))
        padded = bytes([4]) + block[:100] + b"\x00" * 4
        raw.send(f.frame(f.HEADERS, f.PADDED, stream_id, padded),
                 f.frame(f.CONTINUATION, 0, stream_id, block[100:1000]),
                 f.frame(f.CONTINUATION, f.END_HEADERS, stream_id, block[1000:]))
        body = _message(b"hello") + _message(b"") + _message(b"world")
        for byte in body:
            raw.send(f.frame(f.DATA, 0, stream_id, bytes([byte])))
            await asyncio.sleep(0)
        raw.send(f.frame(f.DATA, f.PADDED, stream_id, bytes([3]) + _message(b"!") + b"\x00" * 3))
        trailers = raw.headers([("grpc-status", "0"), ("x-trailer-bin", "AAEC")])
        raw.send(f.frame(f.HEADERS, f.END_HEADERS | f.END_STREAM, stream_id, trailers))

    async def scenario(raw: RawServer, channel: H2Channel) -> None:
        call = streaming(channel, "Any")(b"q", timeout=10, metadata=(("k", "v"),))
        assert [m async for m in call] == [b"hello", b"", b"world", b"!"]
        assert (await call.initial_metadata())["x-long"] == "v" * 3000
        assert (await call.trailing_metadata())["x-trailer-bin"] == b"\x00\x01\x02"
        assert any(kind == f.PING and flags & f.ACK and payload == b"12345678"
                   for kind, flags, _, payload in raw.received)
        request = dict(raw.requests[0][1])
        assert request[":path"] == "/test.Echo/Any" and request["te"] == "trailers" and request["k"] == "v"
        assert request[":method"] == "POST" and request["content-type"] == "application/grpc"
        assert request["grpc-timeout"].endswith(("m", "u")) and request[":authority"] == channel._target
    raw_run(script, scenario)


def test_stream_limit_queues_calls_and_goaway_below_an_open_stream_fails_it() -> None:
    async def script(raw: RawServer, stream_id: int) -> None:
        await asyncio.sleep(0.05)
        if stream_id == 5:  # the third call: tell the client streams from 5 on were not taken
            raw.send(f.goaway(3, f.NO_ERROR, "bye"))
            return
        raw.send(f.frame(f.HEADERS, f.END_HEADERS | f.END_STREAM, stream_id,
                         raw.headers([(":status", "200"), ("content-type", "application/grpc"),
                                      ("grpc-status", "5"), ("grpc-message", "nothing%20here")])))

    async def scenario(raw: RawServer, channel: H2Channel) -> None:
        calls = [asyncio.ensure_future(unary(channel, "X")(b"q")) for _ in range(3)]
        outcomes = await asyncio.gather(*calls, return_exceptions=True)
        codes = [o.code() if isinstance(o, grpc.aio.AioRpcError) else o for o in outcomes]
        assert codes == [grpc.StatusCode.NOT_FOUND, grpc.StatusCode.NOT_FOUND, grpc.StatusCode.UNAVAILABLE]
        assert isinstance(outcomes[0], grpc.aio.AioRpcError) and outcomes[0].details() == "nothing here"
        opened = [stream_id for kind, _, stream_id, _ in raw.received if kind == f.HEADERS]
        assert opened == [1, 3, 5]  # one at a time: the server allows one stream
    raw_run(script, scenario, settings={f.SETTINGS_MAX_CONCURRENT_STREAMS: 1})


def test_a_protocol_error_ends_the_connection_and_the_next_call_opens_another() -> None:
    answered: list[int] = []

    async def script(raw: RawServer, stream_id: int) -> None:
        answered.append(stream_id)
        block = raw.headers([(":status", "200"), ("content-type", "application/grpc")])
        if len(answered) == 1:  # a header block interrupted by DATA: a connection error
            raw.send(f.frame(f.HEADERS, 0, stream_id, block[:2]), f.frame(f.DATA, 0, stream_id, _message(b"x")))
            return
        trailers = raw.headers([("grpc-status", "0")])
        raw.send(f.frame(f.HEADERS, f.END_HEADERS, stream_id, block), f.frame(f.DATA, 0, stream_id, _message(b"ok")),
                 f.frame(f.HEADERS, f.END_HEADERS | f.END_STREAM, stream_id, trailers))

    async def scenario(raw: RawServer, channel: H2Channel) -> None:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await unary(channel, "X")(b"q", timeout=5)
        assert caught.value.code() == grpc.StatusCode.INTERNAL and "interrupted" in (caught.value.details() or "")
        for _ in range(100):
            if any(kind == f.GOAWAY and f.parse_goaway(payload)[1] == f.PROTOCOL_ERROR
                   for kind, _, _, payload in raw.received):
                break
            await asyncio.sleep(0.01)
        else:
            raise AssertionError(f"no GOAWAY (PROTOCOL_ERROR) reached the server: {raw.received}")
        assert await unary(channel, "X")(b"q", timeout=5) == b"ok"
    raw_run(script, scenario)


def test_reset_streams_map_to_grpc_codes() -> None:
    codes = {1: f.REFUSED_STREAM, 3: f.CANCEL, 5: f.INTERNAL_ERROR}

    async def script(raw: RawServer, stream_id: int) -> None:
        raw.send(f.rst_stream(stream_id, codes[stream_id]))

    async def scenario(raw: RawServer, channel: H2Channel) -> None:
        seen = []
        for _ in codes:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await unary(channel, "X")(b"q")
            seen.append(caught.value.code())
        assert seen == [grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED, grpc.StatusCode.INTERNAL]
    raw_run(script, scenario)


@pytest.mark.parametrize("sizes, frame, reads", [
    ((0, 1, 100, 5000, 70_000, 300_000, 1_500_000), 900_000, (1, 7, 4096, 65_536, 10**7)),  # grows
    ((0, 3, 500, 9000, 20_000), 16_384, (1, 1000, 30_000, 99_999)),  # partial frames move to the front
])
def test_the_receive_buffer_survives_any_chunking(sizes: tuple[int, ...], frame: int, reads: tuple[int, ...]) -> None:
    """Frames cut at random points: the reused buffer moves partial frames to its front and grows for
    frames larger than itself, without losing or repeating a byte."""
    rng = random.Random(5)
    encoder = reference_hpack.Encoder()
    headers = bytes(encoder.encode([(":status", "200"), ("content-type", "application/grpc")]))
    messages = [rng.randbytes(rng.choice(sizes)) for _ in range(60 if frame > 100_000 else 3000)]
    body = b"".join(_message(m) for m in messages)
    wire = f.frame(f.HEADERS, f.END_HEADERS, 1, headers)
    for pos in range(0, len(body), frame):
        wire += f.frame(f.DATA, 0, 1, body[pos:pos + frame])
    wire += f.frame(f.HEADERS, f.END_HEADERS | f.END_STREAM, 1, bytes(encoder.encode([("grpc-status", "0")])))

    async def main() -> None:
        loop = asyncio.get_running_loop()
        connection = Connection(loop, lambda _: None)
        connection.connection_made(type("T", (asyncio.Transport,), {"write": lambda self, data: None})())
        stream = ClientStream(streaming=True, max_receive=2 << 20)
        connection.start(stream, b"", _message(b""), None)
        pos = 0
        while pos < len(wire):
            buffer = connection.get_buffer(-1)
            size = min(len(buffer), len(wire) - pos, rng.choice(reads))
            buffer[:size] = wire[pos:pos + size]
            connection.buffer_updated(size)
            pos += size
        assert stream.ended and stream.code == grpc.StatusCode.OK, stream.details
        assert list(stream.messages) == messages
    asyncio.run(main())


def test_the_block_cache_of_the_decoder_follows_a_churning_dynamic_table() -> None:
    """Response header blocks repeat, and the decoder reuses their fields while its table is unchanged;
    checked against the independent ``hpack`` package while evictions give the same bytes new meanings."""
    rng = random.Random(3)
    encoder = reference_hpack.Encoder()
    encoder.header_table_size = 200
    reference, ours = reference_hpack.Decoder(), Decoder()
    pool = [("grpc-status", str(i)) for i in range(5)] + [("x-v", "a" * i) for i in range(0, 60, 7)]
    seen: set[bytes] = set()
    repeats = 0
    for _ in range(3000):
        block = bytes(encoder.encode([rng.choice(pool) for _ in range(rng.randint(1, 3))], huffman=rng.random() < 0.5))
        repeats += block in seen
        seen.add(block)
        assert ours.decode(block) == [(n.decode(), v.decode()) for n, v in reference.decode(block, raw=True)]
    assert repeats > 1000


# -- choosing the transport


def test_async_channel_uses_the_own_transport_only_where_it_honours_everything(
        monkeypatch: pytest.MonkeyPatch) -> None:
    async def main() -> None:
        def kind(address: str, **kwargs: Any) -> str:
            return type(channels.async_channel(address, **kwargs)).__module__.split(".")[-1]

        assert kind("localhost:4001") == "h2_channel"
        assert kind("http://localhost:4001", metadata=[("taskhub", "x")]) == "h2_channel"
        limits = GrpcChannelOptions(max_receive_message_length=10, max_send_message_length=20)
        own = channels.async_channel("localhost:4001", channel_options=limits)
        assert isinstance(own, H2Channel) and (own.max_receive, own.max_send) == (10, 20)
        assert kind("https://localhost:4001") != "h2_channel"
        assert kind("localhost:4001", secure_channel=True) != "h2_channel"
        assert kind("localhost:4001", interceptors=[grpc.aio.UnaryUnaryClientInterceptor.__new__(  # type: ignore[abstract]
            type("Spy", (grpc.aio.UnaryUnaryClientInterceptor,), {"intercept_unary_unary": None}))]) != "h2_channel"
        assert kind("localhost:4001", channel_options=GrpcChannelOptions(keepalive_time_ms=1000)) != "h2_channel"
        assert kind("localhost:4001", channel_options=GrpcChannelOptions(
            raw_options=[("grpc.primary_user_agent", "me")])) != "h2_channel"
        assert kind("unix:/tmp/socket") != "h2_channel"
        monkeypatch.setenv("DURABLETASK_GRPC_TRANSPORT", "grpcio")
        assert kind("localhost:4001") != "h2_channel"
        monkeypatch.setenv("DURABLETASK_GRPC_TRANSPORT", "auto")
        assert kind("localhost:4001") == "h2_channel"
    asyncio.run(main())
