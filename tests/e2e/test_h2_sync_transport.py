"""The blocking channel on the SDK's own HTTP/2 client (`SyncH2Channel`), against the emulator's own
server and a plain ``grpc.aio`` server, each running on a background event loop.
"""

from __future__ import annotations

import asyncio
import random
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import grpc
import pytest

from durabletask.internal.grpc import channels
from durabletask.internal.grpc.h2_sync_channel import SyncH2Channel
from tests.e2e.test_h2_transport import NON_ASCII, SERVERS, Server

Check = Callable[[Server, SyncH2Channel], None]


class Background:
    """A test server on its own event loop thread."""

    def __init__(self, kind: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.server = self.run(Server(kind).start())

    def run(self, coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(30)

    def close(self) -> None:
        self.run(self.server.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


@contextmanager
def serving(kind: str, **channel_args: Any) -> Iterator[tuple[Background, SyncH2Channel]]:
    background = Background(kind)
    channel = SyncH2Channel(background.server.target, **channel_args)
    try:
        yield background, channel
    finally:
        channel.close()
        background.close()


def unary(channel: SyncH2Channel, name: str) -> Any:
    return channel.unary_unary(f"/test.Echo/{name}")


def streaming(channel: SyncH2Channel, name: str) -> Any:
    return channel.unary_stream(f"/test.Echo/{name}")


def code_of(call: Callable[[], Any]) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    error: Any = caught.value
    return error.code(), error.details()


def until(condition: Callable[[], bool], timeout: float = 5) -> None:
    end = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.01)


@pytest.mark.parametrize("kind", SERVERS)
def test_unary_streaming_metadata_and_errors(kind: str) -> None:
    with serving(kind, metadata=[("workerid", "w-1")]) as (background, channel):
        handlers = background.server.handlers
        md = (("taskhub", "hub-1"), ("trace-bin", b"\x00\xff"))
        assert unary(channel, "Echo")(b"hello", metadata=md, timeout=10) == b"hello"
        assert {("taskhub", "hub-1"), ("trace-bin", b"\x00\xff"), ("workerid", "w-1")} <= set(handlers.metadata)
        assert code_of(lambda: unary(channel, "Fail")(b"x")) == (grpc.StatusCode.FAILED_PRECONDITION, NON_ASCII)
        assert code_of(lambda: unary(channel, "Nope")(b"x"))[0] == grpc.StatusCode.UNIMPLEMENTED
        assert code_of(lambda: list(streaming(channel, "Refuse")(b"x"))) == (grpc.StatusCode.PERMISSION_DENIED,
                                                                              "no stream for you")
        items = list(streaming(channel, "Many")(b"1000,30", timeout=10))
        assert [i[0] for i in items] == [n % 256 for n in range(1000)]
        big = random.Random(2).randbytes(3 << 20)
        assert unary(channel, "Echo")(big, timeout=30) == big
        assert [len(i) for i in streaming(channel, "Many")(b"40,200000", timeout=30)] == [200_000] * 40
        assert code_of(lambda: unary(channel, "Big")(str((4 << 20) + 1).encode()))[0] == \
            grpc.StatusCode.RESOURCE_EXHAUSTED
        assert unary(channel, "Echo")(b"after all that") == b"after all that"


@pytest.mark.parametrize("kind", SERVERS)
def test_deadlines_and_cancellation_reach_the_handler(kind: str) -> None:
    with serving(kind) as (background, channel):
        handlers = background.server.handlers
        began = time.monotonic()
        assert code_of(lambda: unary(channel, "Slow")(b"", timeout=0.3))[0] == grpc.StatusCode.DEADLINE_EXCEEDED
        assert 0.25 < time.monotonic() - began < 3
        until(handlers.cancelled.is_set)
        handlers.cancelled.clear()
        call = streaming(channel, "Forever")(b"")
        assert next(call) == b"first"
        until(handlers.started.is_set)
        assert call.cancel() and not call.cancel()
        until(handlers.cancelled.is_set)
        assert call.code() == grpc.StatusCode.CANCELLED
        assert unary(channel, "Echo")(b"next", timeout=5) == b"next"


@pytest.mark.parametrize("kind", SERVERS)
def test_threads_get_their_own_connections_and_nested_calls_share_one(kind: str) -> None:
    with serving(kind) as (_, channel):
        def work(i: int) -> list[bytes]:
            return [unary(channel, "Echo")(f"{i}-{n}".encode(), timeout=10) for n in range(20)]

        with ThreadPoolExecutor(16) as pool:
            results = list(pool.map(work, range(32)))
        assert results == [[f"{i}-{n}".encode() for n in range(20)] for i in range(32)]
        assert 1 < len(channel._connections) <= 16
        nested = []
        for item in streaming(channel, "Many")(b"3,5", timeout=10):  # a call made while the stream is read
            nested.append(unary(channel, "Echo")(item, timeout=10))
        assert nested == [bytes([i]) * 5 for i in range(3)]


@pytest.mark.parametrize("kind", SERVERS)
def test_a_server_restart_fails_calls_in_flight_and_the_next_call_reconnects(kind: str) -> None:
    with serving(kind) as (background, channel):
        handlers = background.server.handlers
        assert unary(channel, "Echo")(b"before") == b"before"
        with ThreadPoolExecutor(3) as pool:
            in_flight = [pool.submit(code_of, lambda: unary(channel, "Slow")(b"", timeout=20)) for _ in range(3)]
            until(lambda: handlers.running == 3)
            background.run(background.server.stop())
            assert [f.result(10)[0] for f in in_flight] == [grpc.StatusCode.UNAVAILABLE] * 3
        assert code_of(lambda: unary(channel, "Echo")(b"down"))[0] == grpc.StatusCode.UNAVAILABLE
        background.run(background.server.start())
        assert unary(channel, "Echo")(b"after", timeout=10) == b"after"


def test_closing_the_channel_ends_calls_blocked_in_other_threads() -> None:
    with serving("emulator") as (background, channel):
        with ThreadPoolExecutor(2) as pool:
            blocked = [pool.submit(code_of, lambda: unary(channel, "Slow")(b"", timeout=30)) for _ in range(2)]
            until(lambda: background.server.handlers.running == 2)
            began = time.monotonic()
            channel.close()
            assert [f.result(5)[0] for f in blocked] == [grpc.StatusCode.UNAVAILABLE] * 2
            assert time.monotonic() - began < 2
        with pytest.raises(ValueError, match="closed channel"):
            unary(channel, "Echo")(b"x")


def test_connection_refused_is_unavailable_and_wait_for_ready_waits() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        channel = SyncH2Channel(f"127.0.0.1:{s.getsockname()[1]}")
        code, details = code_of(lambda: unary(channel, "Echo")(b"x", timeout=5))
        assert code == grpc.StatusCode.UNAVAILABLE and "failed to connect" in details
        began = time.monotonic()
        assert code_of(lambda: unary(channel, "Echo")(b"x", timeout=0.3, wait_for_ready=True))[0] == \
            grpc.StatusCode.DEADLINE_EXCEEDED
        assert time.monotonic() - began >= 0.25
        channel.close()
        with pytest.raises(ValueError, match="closed channel"):
            unary(channel, "Echo")(b"x")


def test_sync_channel_uses_the_own_transport_only_where_it_honours_everything(
        monkeypatch: pytest.MonkeyPatch) -> None:
    assert isinstance(channels.sync_channel("localhost:4001", metadata=[("taskhub", "x")]), SyncH2Channel)
    assert not isinstance(channels.sync_channel("https://localhost:4001"), SyncH2Channel)
    interceptor = channels.MetadataInterceptor([("a", "b")])
    assert not isinstance(channels.sync_channel("localhost:4001", interceptors=[interceptor]), SyncH2Channel)
    monkeypatch.setenv("DURABLETASK_GRPC_TRANSPORT", "grpcio")
    assert not isinstance(channels.sync_channel("localhost:4001"), SyncH2Channel)
