"""The task-free paths of the SDK's own HTTP/2 client that the worker's hot path uses: unary calls
started with a done callback (`UnaryUnaryMultiCallable.start`), batches of calls in one send
(`H2Channel.batch`), stream messages handed to a handler as they are parsed (`StreamCall.deliver`),
and responses read in batches (`H2Channel.read_pause`, the completions' channel). Against both
servers of ``test_h2_transport``.
"""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import grpc.aio
import pytest

from durabletask.internal.grpc.h2_channel import H2Channel
from durabletask.internal.h2 import frames as f
from tests.e2e.test_h2_transport import SERVERS, RawServer, Server, raw_run, run, streaming, unary


def _outcome() -> tuple[asyncio.Future[BaseException | None], Any]:
    future: asyncio.Future[BaseException | None] = asyncio.get_running_loop().create_future()
    return future, future.set_result


def _count_writes(channel: H2Channel) -> list[bytes]:
    connection = channel.connection
    assert connection is not None and connection._transport is not None
    transport = connection._transport
    writes: list[bytes] = []
    original = transport.write

    def write(data: Any) -> None:
        writes.append(bytes(data))
        original(data)

    transport.write = write  # type: ignore[method-assign]
    return writes


@pytest.mark.parametrize("kind", SERVERS)
def test_a_started_call_reports_its_outcome_to_the_callback(kind: str) -> None:
    async def scenario(server: Server, channel: H2Channel) -> None:
        echo = unary(channel, "Echo")
        assert echo.start(b"x", lambda _: None) is None  # no connection yet: nothing sent
        assert server.handlers.calls == 0
        assert await echo(b"connect") == b"connect"
        done, report = _outcome()
        assert echo.start(b"hello", report, timeout=5, metadata=[("k", "v")]) is not None
        assert await done is None
        assert ("k", "v") in server.handlers.metadata and server.handlers.calls == 2
        done, report = _outcome()
        unary(channel, "Fail").start(b"", report)
        error = await done
        assert isinstance(error, grpc.aio.AioRpcError) and error.code() == grpc.StatusCode.FAILED_PRECONDITION
        done, report = _outcome()
        call = unary(channel, "Slow").start(b"", report)
        assert call is not None
        await server.handlers.started.wait()
        call.cancel()
        assert isinstance(await done, asyncio.CancelledError)
        await asyncio.wait_for(server.handlers.cancelled.wait(), 5)
    run(kind, scenario)


@pytest.mark.parametrize("kind", SERVERS)
def test_a_serialized_request_is_sent_as_it_is(kind: str) -> None:
    async def scenario(server: Server, channel: H2Channel) -> None:
        echo = channel.unary_unary("/test.Echo/Echo", request_serializer=lambda r: b"serialized " + r)
        assert await echo(b"a") == b"serialized a"
        done, report = _outcome()
        echo.start(b"raw", report, serialized=True)
        assert await done is None
        assert await channel.unary_unary("/test.Echo/Echo")(b"b") == b"b"
    run(kind, scenario)


def test_calls_started_in_a_batch_leave_in_one_send() -> None:
    async def scenario(server: Server, channel: H2Channel) -> None:
        echo = unary(channel, "Echo")
        assert await echo(b"connect") == b"connect"
        writes = _count_writes(channel)
        outcomes = []
        with channel.batch():
            for i in range(3):
                done, report = _outcome()
                echo.start(str(i).encode(), report)
                outcomes.append(done)
            assert writes == []
        assert len(writes) == 1
        assert await asyncio.gather(*outcomes) == [None, None, None]
        writes.clear()
        done, report = _outcome()
        echo.start(b"alone", report)
        assert len(writes) == 1  # an isolated call leaves at once when the loop has nothing else to run
        assert await done is None
    run("emulator", scenario)


@pytest.mark.parametrize("kind", SERVERS)
def test_deliver_hands_every_message_to_the_handler_in_order(kind: str) -> None:
    async def scenario(server: Server, channel: H2Channel) -> None:
        got: list[bytes] = []
        call = streaming(channel, "Many")(b"2000,50")
        await call.deliver(got.append)
        assert [m[0] for m in got] == [n % 256 for n in range(2000)] and all(len(m) == 50 for m in got)
        assert await call.code() == grpc.StatusCode.OK
        call = streaming(channel, "Refuse")(b"")
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call.deliver(got.append)
        assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    run(kind, scenario)


@pytest.mark.parametrize("kind", SERVERS)
def test_a_failing_handler_or_a_cancelled_reader_ends_the_call(kind: str) -> None:
    async def scenario(server: Server, channel: H2Channel) -> None:
        def handler(message: bytes) -> None:
            raise ValueError(f"cannot take {message!r}")

        call = streaming(channel, "Forever")(b"")
        with pytest.raises(ValueError, match="cannot take b'first'"):
            await call.deliver(handler)
        await asyncio.wait_for(server.handlers.cancelled.wait(), 5)
        assert call.cancelled()

        server.handlers.cancelled.clear()
        server.handlers.started.clear()
        got: list[bytes] = []
        call = streaming(channel, "Forever")(b"")
        reader = asyncio.ensure_future(call.deliver(got.append))
        await server.handlers.started.wait()
        while not got:
            await asyncio.sleep(0.001)
        reader.cancel()
        with pytest.raises(asyncio.CancelledError):
            await reader
        await asyncio.wait_for(server.handlers.cancelled.wait(), 5)
        assert got == [b"first"]

        call = streaming(channel, "Many")(b"3,1")
        assert await call.read() == b"\x00"  # messages read before deliver are not handed over again
        await call.deliver(got.append)
        assert got[1:] == [b"\x01", b"\x02"]
    run(kind, scenario)


async def _pause_reads(channel: H2Channel, call: Any, seconds: float) -> None:
    """Set the channel's read pause and start one: a call whose response is read at once, then the pause begins."""
    channel.read_pause = seconds
    done, report = _outcome()
    call.start(b"pause", report)
    assert await asyncio.wait_for(done, 5) is None
    connection = channel.connection
    assert connection is not None and connection._transport is not None
    assert not connection._transport.is_reading()


@pytest.mark.parametrize("kind", SERVERS)
def test_a_read_pause_leaves_responses_unread_until_it_ends_or_is_lifted(kind: str) -> None:
    async def scenario(server: Server, channel: H2Channel) -> None:
        echo = unary(channel, "Echo")
        assert await echo(b"connect") == b"connect"
        channel.read_pause = 1.5
        done, report = _outcome()
        echo.start(b"first", report)  # its response is read at once, then the pause starts
        assert await asyncio.wait_for(done, 5) is None
        done, report = _outcome()
        echo.start(b"second", report)
        await asyncio.sleep(0.5)
        assert server.handlers.calls == 3 and not done.done()  # answered, not read yet
        assert await asyncio.wait_for(done, 5) is None  # read when the pause ends

        channel.read_pause = 60
        done, report = _outcome()
        echo.start(b"third", report)
        while server.handlers.calls < 4:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.1)
        assert not done.done()
        channel.read_pause = 0  # lifted: what has arrived is read now, and from then on as it comes
        assert await asyncio.wait_for(done, 5) is None
        assert await asyncio.wait_for(echo(b"again"), 5) == b"again"
        with pytest.raises(ValueError, match="read_pause must be 0 or more seconds"):
            channel.read_pause = -1
    run(kind, scenario)


@pytest.mark.parametrize("kind", SERVERS)
def test_a_read_pause_never_holds_back_a_request_waiting_for_a_flow_control_window(kind: str) -> None:
    async def scenario(server: Server, channel: H2Channel) -> None:
        echo = unary(channel, "Echo")
        assert await echo(b"connect") == b"connect"
        await _pause_reads(channel, unary(channel, "Echo"), 60)
        done, report = _outcome()
        body = b"x" * (4 << 20)  # far more than the server's initial windows: it needs WINDOW_UPDATEs read
        echo.start(body, report)
        for _ in range(1000):
            if server.handlers.calls == 3:
                break
            await asyncio.sleep(0.01)
        assert server.handlers.calls == 3  # the whole request arrived within seconds, not after the pauses
        channel.read_pause = 0
        assert await asyncio.wait_for(done, 10) is None
    run(kind, scenario)


def test_a_read_pause_never_holds_back_a_request_queued_under_the_stream_limit() -> None:
    async def script(raw: RawServer, stream_id: int) -> None:
        raw.send(f.frame(f.HEADERS, f.END_HEADERS, stream_id,
                         raw.headers([(":status", "200"), ("content-type", "application/grpc")])),
                 f.frame(f.DATA, 0, stream_id, b"\x00\x00\x00\x00\x02ok"),
                 f.frame(f.HEADERS, f.END_HEADERS | f.END_STREAM, stream_id, raw.headers([("grpc-status", "0")])))

    async def scenario(raw: RawServer, channel: H2Channel) -> None:
        assert await unary(channel, "X")(b"connect") == b"ok"
        await _pause_reads(channel, unary(channel, "X"), 60)
        outcomes = []
        for i in range(3):  # the server takes one stream at a time; ours end only once their ends are read
            done, report = _outcome()
            unary(channel, "X").start(str(i).encode(), report)
            outcomes.append(done)

        def opened() -> list[int]:
            return [stream_id for kind, _, stream_id, _ in raw.received if kind == f.HEADERS]

        for _ in range(1000):
            if len(opened()) == 5:
                break
            await asyncio.sleep(0.01)
        assert opened() == [1, 3, 5, 7, 9]  # all sent within seconds, not after the pauses
        channel.read_pause = 0
        assert await asyncio.wait_for(asyncio.gather(*outcomes), 10) == [None, None, None]
    raw_run(script, scenario, settings={f.SETTINGS_MAX_CONCURRENT_STREAMS: 1})
