"""Access tokens for the Durable Task Scheduler: fetched on first use, cached, renewed before expiry.

`AccessTokenSource` wraps one azure-identity credential, synchronous (``TokenCredential``) or
asynchronous (``AsyncTokenCredential``), and hands out the current token to every call of a client or
worker:

* The first call fetches a token; later calls reuse it until its renewal time, which is
  ``REFRESH_MARGIN_SECONDS`` (10 minutes, like the official SDK) before it expires, or half its
  lifetime for short-lived tokens, or the credential's own ``refresh_on`` hint when it is earlier.
* Renewal is single-flight: while one caller fetches, the others keep using the current token if it
  is still valid, and wait for that one fetch if it is not (they then share its result or its error).
  This holds across threads, across asyncio tasks, and between the two.
* A failed early renewal is logged and retried after ``RETRY_SECONDS``; the current token is used
  meanwhile. Once no valid token is left, the credential's error reaches the caller.
* A synchronous credential never blocks an event loop: asyncio callers run it in a thread.

Token values are never logged.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Union

from azure.core.credentials import TokenCredential
from azure.core.credentials_async import AsyncTokenCredential

logger = logging.getLogger("durabletask.azuremanaged")

DEFAULT_RESOURCE_ID = "https://durabletask.io"
US_GOVERNMENT_RESOURCE_ID = "https://durabletask.azure.us"
REFRESH_MARGIN_SECONDS = 600.0
"""Renew a token this long before it expires (at most half its lifetime)."""
EXPIRY_SKEW_SECONDS = 30.0
"""A token closer than this to its expiry (at most a quarter of its lifetime) is not sent any more."""
RETRY_SECONDS = 10.0
"""After a failed early renewal, wait this long before trying again (the current token is still used)."""

AnyTokenCredential = Union[TokenCredential, AsyncTokenCredential]


def resolve_resource_id(resource_id: str | None) -> str:
    """The token audience: ``resource_id`` cleaned up, or the default for the current cloud.

    The default is ``https://durabletask.azure.us`` when the ``REGION_NAME`` environment variable starts
    with ``usgov`` or ``usdod``, else ``https://durabletask.io``. Surrounding spaces, trailing slashes and
    a ``/.default`` suffix are removed.

    Raises:
        ValueError: ``resource_id`` is empty once cleaned up.
    """
    if not resource_id:
        region = os.environ.get("REGION_NAME", "").lower()
        return US_GOVERNMENT_RESOURCE_ID if region.startswith(("usgov", "usdod")) else DEFAULT_RESOURCE_ID
    cleaned = resource_id.strip().rstrip("/")
    if cleaned.lower().endswith("/.default"):
        cleaned = cleaned[: -len("/.default")].rstrip("/")
    if not cleaned:
        raise ValueError(f"resource_id {resource_id!r} is empty once cleaned up: pass e.g. {DEFAULT_RESOURCE_ID!r} "
                         "or None for the default")
    return cleaned


def scope_for(resource_id: str | None) -> str:
    """The OAuth scope to ask for: ``<resource>/.default`` (by default ``https://durabletask.io/.default``)."""
    return f"{resolve_resource_id(resource_id)}/.default"


def is_async_credential(credential: object) -> bool:
    """Whether ``credential.get_token`` is a coroutine function (an ``azure.identity.aio`` credential).

    Raises:
        TypeError: ``credential`` has no ``get_token`` method.
    """
    method = getattr(credential, "get_token", None)
    if method is None or not callable(method):
        raise TypeError(f"token_credential must be an azure-identity credential (with a get_token method), "
                        f"not {type(credential).__name__}")
    return inspect.iscoroutinefunction(method)


@dataclass(frozen=True)
class _Token:
    value: str
    expires_on: float
    refresh_at: float
    usable_until: float


class AccessTokenSource:
    """The current bearer token of one credential, for every call of a client or worker.

    Args:
        credential: A synchronous or asynchronous azure-identity credential.
        resource_id: The token audience (see `resolve_resource_id`).
        refresh_margin: Renew this many seconds before expiry (at most half the token's lifetime).
        clock: Seconds since the epoch (tests pass a fake one).
    """

    def __init__(self, credential: AnyTokenCredential, *, resource_id: str | None = None,
                 refresh_margin: float = REFRESH_MARGIN_SECONDS, clock: Callable[[], float] = time.time) -> None:
        self.is_async = is_async_credential(credential)
        self.scope = scope_for(resource_id)
        self.credential = credential
        self._margin = refresh_margin
        self._clock = clock
        self._token: _Token | None = None
        self._lock = threading.Lock()
        self._loop_locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
            weakref.WeakKeyDictionary())
        self._loop_locks_guard = threading.Lock()
        self._attempts = 0
        self._error: Exception | None = None
        self._retry_at = 0.0
        self.fetches = 0
        """How many times the credential was asked for a token."""

    # ----------------------------------------------------------------- synchronous callers

    def get_token(self) -> str:
        """The token to send now; fetches one (in this thread) when needed.

        Raises:
            TypeError: The credential is asynchronous (use `get_token_async`).
            Exception: Whatever the credential raised, when no valid token is left.
        """
        if self.is_async:
            raise TypeError("this credential is asynchronous (azure.identity.aio): use it with "
                            "AsyncDurableTaskSchedulerClient or DurableTaskSchedulerWorker, or pass a synchronous "
                            "azure.identity credential")
        current = self._without_fetch()
        if current is not None:
            return current
        attempts = self._attempts
        usable = self._usable()
        if not self._lock.acquire(blocking=usable is None):
            assert usable is not None
            return usable  # another thread is renewing it; the current token is still valid
        try:
            return self._fetch_sync_locked(attempts)
        finally:
            self._lock.release()

    def _fetch_sync_locked(self, attempts: int) -> str:
        ready = self._decide(attempts)
        if ready is not None:
            return ready
        try:
            value, expires_on, refresh_on = self._call_sync()
        except Exception as error:
            return self._failed(error)
        return self._fetched(value, expires_on, refresh_on)

    def _call_sync(self) -> tuple[str, float, float | None]:
        self.fetches += 1
        credential: Any = self.credential
        get_info = getattr(credential, "get_token_info", None)
        result = get_info(self.scope) if callable(get_info) else credential.get_token(self.scope)
        if inspect.isawaitable(result):
            if inspect.iscoroutine(result):
                result.close()
            raise TypeError("the credential returned an awaitable from a synchronous call: pass an "
                            "azure.identity.aio credential to an asyncio client or worker instead")
        return _unpack(result)

    # ----------------------------------------------------------------- asyncio callers

    async def get_token_async(self) -> str:
        """The token to send now, without blocking the event loop.

        An asynchronous credential is awaited; a synchronous one runs in a thread.

        Raises:
            Exception: Whatever the credential raised, when no valid token is left.
        """
        current = self._without_fetch()
        if current is not None:
            return current
        usable = self._usable()
        lock = self._loop_lock()
        if usable is not None and lock.locked():
            return usable  # another task is renewing it; the current token is still valid
        attempts = self._attempts
        async with lock:
            if not self.is_async:
                ready = self._decide(attempts)
                if ready is not None:
                    return ready
                return await asyncio.to_thread(self._fetch_in_thread, attempts)
            ready = self._decide(attempts)
            if ready is not None:
                return ready
            try:
                value, expires_on, refresh_on = await self._call_async()
            except Exception as error:
                return self._failed(error)
            return self._fetched(value, expires_on, refresh_on)

    def _fetch_in_thread(self, attempts: int) -> str:
        with self._lock:
            return self._fetch_sync_locked(attempts)

    async def _call_async(self) -> tuple[str, float, float | None]:
        self.fetches += 1
        credential: Any = self.credential
        get_info = getattr(credential, "get_token_info", None)
        if callable(get_info) and inspect.iscoroutinefunction(get_info):
            result = await get_info(self.scope)
        else:
            result = await credential.get_token(self.scope)
        return _unpack(result)

    def _loop_lock(self) -> asyncio.Lock:
        loop = asyncio.get_running_loop()
        with self._loop_locks_guard:
            lock = self._loop_locks.get(loop)
            if lock is None:
                lock = self._loop_locks[loop] = asyncio.Lock()
            return lock

    # ----------------------------------------------------------------- shared state

    def _without_fetch(self) -> str | None:
        """The current token if no fetch is due (fresh, or valid while a failed renewal waits to retry)."""
        token, now = self._token, self._clock()
        if token is None:
            return None
        if now < token.refresh_at or (now < token.usable_until and now < self._retry_at):
            return token.value
        return None

    def _usable(self) -> str | None:
        token = self._token
        return token.value if token is not None and self._clock() < token.usable_until else None

    def _decide(self, attempts: int) -> str | None:
        """Under the lock: a token to use without fetching, or None to fetch.

        Raises the error of a fetch that another caller made while this one waited, when no valid token
        is left: waiters share one failure instead of each trying again.
        """
        current = self._without_fetch()
        if current is not None:
            return current
        error = self._error
        if self._attempts != attempts and error is not None and self._usable() is None:
            raise error
        return None

    def _fetched(self, value: str, expires_on: float, refresh_on: float | None) -> str:
        now = self._clock()
        lifetime = max(0.0, expires_on - now)
        refresh_at = expires_on - min(self._margin, lifetime / 2)
        if refresh_on is not None and now < refresh_on < refresh_at:
            refresh_at = refresh_on
        usable_until = expires_on - min(EXPIRY_SKEW_SECONDS, lifetime / 4)
        self._token = _Token(value, expires_on, refresh_at, usable_until)
        self._attempts += 1
        self._error = None
        self._retry_at = 0.0
        logger.debug("access token for %s acquired; it expires in %.0f s, renewal in %.0f s",
                     self.scope, lifetime, max(0.0, refresh_at - now))
        return value

    def _failed(self, error: Exception) -> str:
        """Record a failed fetch; return the current token if it is still valid, else raise ``error``."""
        self._attempts += 1
        self._error = error
        usable = self._usable()
        if usable is None:
            raise error
        token = self._token
        assert token is not None
        self._retry_at = self._clock() + RETRY_SECONDS
        logger.warning("could not renew the access token for %s (%s: %s); using the current one, valid for "
                       "%.0f s more, and trying again in %.0f s", self.scope, type(error).__name__, error,
                       token.expires_on - self._clock(), RETRY_SECONDS)
        return usable


def _unpack(result: Any) -> tuple[str, float, float | None]:
    """``(token, expires_on, refresh_on)`` from an ``AccessToken`` or ``AccessTokenInfo``."""
    value = getattr(result, "token", None)
    expires_on = getattr(result, "expires_on", None)
    if not isinstance(value, str) or not value:
        raise ValueError("the credential returned an empty access token")
    if not isinstance(expires_on, (int, float)):
        raise TypeError(f"the credential returned a token without a numeric expires_on ({type(result).__name__})")
    refresh_on = getattr(result, "refresh_on", None)
    return value, float(expires_on), float(refresh_on) if isinstance(refresh_on, (int, float)) else None
