"""The task-free paths of the SDK's own HTTP/2 client that the worker's hot path uses: unary calls
started with a done callback (`UnaryUnaryMultiCallable.start`), batches of calls in one send
(`H2Channel.batch`), and stream messages handed to a handler as they are parsed (`StreamCall.deliver`).
Against both servers of ``test_h2_transport``.
"""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import grpc.aio
import pytest

from durabletask.internal.grpc.h2_channel import H2Channel
from tests.e2e.test_h2_transport import SERVERS, Server, run, streaming, unary


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
