"""Access tokens for the Durable Task Scheduler: lazy, cached, renewed early, single-flight, never logged."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Any

import pytest
from azure.core.credentials import AccessToken, AccessTokenInfo

from durabletask.azuremanaged.internal import tokens
from durabletask.azuremanaged.internal.tokens import (
    RETRY_SECONDS,
    AccessTokenSource,
    is_async_credential,
    resolve_resource_id,
    scope_for,
)

SCOPE = "https://durabletask.io/.default"


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class FakeCredential:
    """A synchronous credential: token-1, token-2, ... each valid for ``lifetime`` seconds."""

    def __init__(self, clock: Any = time.time, lifetime: float = 3600, delay: float = 0.0,
                 fail: BaseException | None = None) -> None:
        self.clock = clock
        self.lifetime = lifetime
        self.delay = delay
        self.fail = fail
        self.calls = 0
        self.scopes: list[tuple[str, ...]] = []
        self.threads: set[str] = set()
        self._lock = threading.Lock()

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        with self._lock:
            self.calls += 1
            n = self.calls
        self.scopes.append(scopes)
        self.threads.add(threading.current_thread().name)
        if self.delay:
            time.sleep(self.delay)
        if self.fail is not None:
            raise self.fail
        return AccessToken(f"token-{n}", int(self.clock() + self.lifetime))


class AsyncFakeCredential:
    def __init__(self, clock: Any = time.time, lifetime: float = 3600, delay: float = 0.0,
                 fail: BaseException | None = None) -> None:
        self.clock = clock
        self.lifetime = lifetime
        self.delay = delay
        self.fail = fail
        self.calls = 0

    async def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        self.calls += 1
        n = self.calls
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.fail is not None:
            raise self.fail
        return AccessToken(f"async-token-{n}", int(self.clock() + self.lifetime))

    async def close(self) -> None:
        pass


# ----------------------------------------------------------------- audience and scope


def test_default_scope_and_government_cloud(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REGION_NAME", raising=False)
    assert scope_for(None) == SCOPE
    assert scope_for("") == SCOPE
    monkeypatch.setenv("REGION_NAME", "USGovVirginia")
    assert scope_for(None) == "https://durabletask.azure.us/.default"
    monkeypatch.setenv("REGION_NAME", "usdodeast")
    assert resolve_resource_id(None) == "https://durabletask.azure.us"
    monkeypatch.setenv("REGION_NAME", "westus2")
    assert resolve_resource_id(None) == "https://durabletask.io"


@pytest.mark.parametrize("given", ["https://example.test", " https://example.test/ ", "https://example.test/.default",
                                   "https://example.test//.DEFAULT"])
def test_resource_id_is_cleaned_up(given: str) -> None:
    assert resolve_resource_id(given) == "https://example.test"
    assert scope_for(given) == "https://example.test/.default"


@pytest.mark.parametrize("given", ["   ", "/", "/.default"])
def test_resource_id_empty_after_cleanup_is_refused(given: str) -> None:
    with pytest.raises(ValueError, match="resource_id"):
        resolve_resource_id(given)


def test_credential_kind_detection() -> None:
    assert not is_async_credential(FakeCredential())
    assert is_async_credential(AsyncFakeCredential())
    with pytest.raises(TypeError, match="get_token"):
        is_async_credential(object())


# ----------------------------------------------------------------- caching and renewal (fake clock)


def test_lazy_first_fetch_then_cached() -> None:
    clock = Clock()
    credential = FakeCredential(clock)
    source = AccessTokenSource(credential, clock=clock)
    assert credential.calls == 0  # nothing at construction
    assert [source.get_token() for _ in range(100)] == ["token-1"] * 100
    assert credential.calls == 1 and source.fetches == 1
    assert credential.scopes == [(SCOPE,)]


def test_renewed_ten_minutes_before_expiry() -> None:
    clock = Clock()
    credential = FakeCredential(clock, lifetime=3600)
    source = AccessTokenSource(credential, clock=clock)
    assert source.get_token() == "token-1"
    clock.now += 3600 - 601
    assert source.get_token() == "token-1"
    clock.now += 2
    assert source.get_token() == "token-2"
    assert credential.calls == 2
    clock.now += 60
    assert source.get_token() == "token-2"


def test_short_lived_tokens_are_renewed_at_half_life_not_on_every_call() -> None:
    clock = Clock()
    credential = FakeCredential(clock, lifetime=60)
    source = AccessTokenSource(credential, clock=clock)
    assert source.get_token() == "token-1"
    clock.now += 29
    assert source.get_token() == "token-1"
    clock.now += 2
    assert source.get_token() == "token-2"
    assert credential.calls == 2


def test_refresh_on_hint_and_get_token_info_are_used() -> None:
    clock = Clock()

    class InfoCredential:
        calls = 0

        def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
            raise AssertionError("get_token_info is preferred")

        def get_token_info(self, *scopes: str, options: Any = None) -> AccessTokenInfo:
            self.calls += 1
            return AccessTokenInfo(f"info-{self.calls}", int(clock() + 3600), refresh_on=int(clock() + 100))

    credential = InfoCredential()
    source = AccessTokenSource(credential, clock=clock)
    assert source.get_token() == "info-1"
    clock.now += 99
    assert source.get_token() == "info-1"
    clock.now += 2
    assert source.get_token() == "info-2"


def test_a_token_already_past_expiry_is_fetched_again_each_time() -> None:
    clock = Clock()
    credential = FakeCredential(clock, lifetime=-5)
    source = AccessTokenSource(credential, clock=clock)
    assert source.get_token() == "token-1"
    assert source.get_token() == "token-2"


def test_failed_early_renewal_keeps_the_current_token_and_retries_later(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    credential = FakeCredential(clock, lifetime=3600)
    source = AccessTokenSource(credential, clock=clock)
    assert source.get_token() == "token-1"
    clock.now += 3100  # due for renewal, still valid for 500 s
    credential.fail = RuntimeError("identity endpoint down")
    with caplog.at_level(logging.WARNING, logger="durabletask.azuremanaged"):
        assert source.get_token() == "token-1"
    assert "could not renew" in caplog.text and "identity endpoint down" in caplog.text
    assert credential.calls == 2
    clock.now += RETRY_SECONDS - 1
    assert source.get_token() == "token-1"
    assert credential.calls == 2  # no retry before RETRY_SECONDS
    clock.now += 2
    credential.fail = None
    assert source.get_token() == "token-3"


def test_no_valid_token_left_raises_the_credential_error() -> None:
    clock = Clock()
    credential = FakeCredential(clock, lifetime=3600)
    source = AccessTokenSource(credential, clock=clock)
    source.get_token()
    clock.now += 3590  # within the expiry skew: not sent any more
    credential.fail = PermissionError("denied")
    with pytest.raises(PermissionError, match="denied"):
        source.get_token()
    credential.fail = None
    assert source.get_token() == "token-3"


def test_first_fetch_failure_is_raised() -> None:
    source = AccessTokenSource(FakeCredential(fail=RuntimeError("no identity")))
    with pytest.raises(RuntimeError, match="no identity"):
        source.get_token()


@pytest.mark.parametrize("value", ["", None])
def test_an_empty_token_is_an_error(value: Any) -> None:
    class Empty:
        def get_token(self, *scopes: str, **kwargs: Any) -> Any:
            return AccessToken(value, int(time.time() + 3600))

    with pytest.raises(ValueError, match="empty access token"):
        AccessTokenSource(Empty()).get_token()


def test_sync_get_token_refuses_an_async_credential() -> None:
    with pytest.raises(TypeError, match="asynchronous"):
        AccessTokenSource(AsyncFakeCredential()).get_token()


def test_tokens_never_appear_in_logs(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    credential = FakeCredential(clock, lifetime=3600)
    source = AccessTokenSource(credential, clock=clock)
    with caplog.at_level(logging.DEBUG):
        source.get_token()
        clock.now += 3100
        credential.fail = RuntimeError("boom")
        source.get_token()
        clock.now += 20
        credential.fail = None
        source.get_token()
    assert caplog.records, "expected debug and warning records"
    assert "token-" not in caplog.text


# ----------------------------------------------------------------- concurrency: threads


def test_concurrent_threads_share_one_fetch() -> None:
    credential = FakeCredential(delay=0.2)
    source = AccessTokenSource(credential)
    results: list[str] = []
    threads = [threading.Thread(target=lambda: results.append(source.get_token())) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == ["token-1"] * 20
    assert credential.calls == 1


def test_while_one_thread_renews_the_others_use_the_current_token() -> None:
    clock = Clock()
    credential = FakeCredential(clock, lifetime=3600)
    source = AccessTokenSource(credential, clock=clock)
    source.get_token()
    clock.now += 3100
    release = threading.Event()
    entered = threading.Event()
    original = credential.get_token

    def slow(*scopes: str, **kwargs: Any) -> AccessToken:
        entered.set()
        release.wait(5)
        return original(*scopes, **kwargs)

    credential.get_token = slow  # type: ignore[method-assign]
    renewer_result: list[str] = []
    renewer = threading.Thread(target=lambda: renewer_result.append(source.get_token()))
    renewer.start()
    assert entered.wait(5)
    started = time.monotonic()
    assert [source.get_token() for _ in range(10)] == ["token-1"] * 10
    assert time.monotonic() - started < 1  # nobody waited for the renewal
    release.set()
    renewer.join()
    assert renewer_result == ["token-2"]
    assert credential.calls == 2


def test_waiters_share_one_failure() -> None:
    credential = FakeCredential(delay=0.2, fail=RuntimeError("denied"))
    source = AccessTokenSource(credential)
    errors: list[BaseException] = []

    def call() -> None:
        try:
            source.get_token()
        except RuntimeError as error:
            errors.append(error)

    threads = [threading.Thread(target=call) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(errors) == 8
    assert credential.calls == 1
    credential.fail = None
    credential.delay = 0
    assert source.get_token() == "token-2"  # a later call tries again


# ----------------------------------------------------------------- concurrency: asyncio


def test_async_credential_concurrent_tasks_share_one_fetch() -> None:
    credential = AsyncFakeCredential(delay=0.1)
    source = AccessTokenSource(credential)

    async def main() -> list[str]:
        return await asyncio.gather(*(source.get_token_async() for _ in range(50)))

    assert asyncio.run(main()) == ["async-token-1"] * 50
    assert credential.calls == 1


def test_async_credential_renewal_and_failure() -> None:
    clock = Clock()
    credential = AsyncFakeCredential(clock, lifetime=3600)
    source = AccessTokenSource(credential, clock=clock)

    async def main() -> None:
        assert await source.get_token_async() == "async-token-1"
        clock.now += 3100
        credential.fail = RuntimeError("flaky")
        assert await source.get_token_async() == "async-token-1"  # early renewal failed: current token
        clock.now += 490
        with pytest.raises(RuntimeError, match="flaky"):
            await source.get_token_async()
        credential.fail = None
        assert await source.get_token_async() == "async-token-4"

    asyncio.run(main())


def test_sync_credential_from_asyncio_runs_in_a_thread_without_blocking_the_loop() -> None:
    credential = FakeCredential(delay=0.3)
    source = AccessTokenSource(credential)
    ticks = 0

    async def ticker(stop: asyncio.Event) -> None:
        nonlocal ticks
        while not stop.is_set():
            ticks += 1
            await asyncio.sleep(0.01)

    async def main() -> list[str]:
        stop = asyncio.Event()
        tick_task = asyncio.ensure_future(ticker(stop))
        results = await asyncio.gather(*(source.get_token_async() for _ in range(20)))
        stop.set()
        await tick_task
        return list(results)

    assert asyncio.run(main()) == ["token-1"] * 20
    assert credential.calls == 1
    assert ticks >= 10, "the event loop was blocked while the credential ran"
    assert "MainThread" not in credential.threads


def test_threads_and_tasks_together_share_one_fetch() -> None:
    credential = FakeCredential(delay=0.2)
    source = AccessTokenSource(credential)
    results: list[str] = []

    async def main() -> None:
        results.extend(await asyncio.gather(*(source.get_token_async() for _ in range(10))))

    threads = [threading.Thread(target=lambda: results.append(source.get_token())) for _ in range(5)]
    threads.append(threading.Thread(target=lambda: asyncio.run(main())))
    threads.append(threading.Thread(target=lambda: asyncio.run(main())))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == ["token-1"] * 25
    assert credential.calls == 1


def test_one_source_used_from_several_event_loops() -> None:
    credential = AsyncFakeCredential(lifetime=3600)
    source = AccessTokenSource(credential)
    assert asyncio.run(source.get_token_async()) == "async-token-1"
    assert asyncio.run(source.get_token_async()) == "async-token-1"  # a fresh loop gets its own lock


def test_margin_constant_matches_the_official_sdk() -> None:
    assert tokens.REFRESH_MARGIN_SECONDS == 600
