"""Retry policies for activity and sub-orchestration calls.

Every decision is a pure function of the policy, the attempt number, the failure and
*orchestration* time (the timestamps recorded in history), so a replay decides exactly as the
original execution did, however much later it runs.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

from durabletask.internal.failures import FailureDetails


class RetryPolicy:
    """How to retry a failed activity or sub-orchestration.

    Args:
        first_retry_interval: The delay before the second attempt.
        max_number_of_attempts: The total number of attempts, the first one included.
        backoff_coefficient: Each further delay is the previous one times this (>= 1).
        max_retry_interval: An upper bound for any single delay.
        retry_timeout: No attempt starts later than this after the first one was scheduled,
            measured in orchestration time.
        handle_failure: Called with the failure of each attempt; return False to stop retrying
            (for example ``lambda f: f.is_caused_by(ConnectionError)``). Failures marked
            non-retriable are never retried, whatever this returns.

    Raises:
        ValueError: A value is out of range; the message names it.
    """

    __slots__ = (
        "_backoff_coefficient",
        "_first_retry_interval",
        "_handle_failure",
        "_max_number_of_attempts",
        "_max_retry_interval",
        "_retry_timeout",
    )

    def __init__(
        self,
        *,
        first_retry_interval: timedelta,
        max_number_of_attempts: int,
        backoff_coefficient: float | None = 1.0,
        max_retry_interval: timedelta | None = None,
        retry_timeout: timedelta | None = None,
        handle_failure: Callable[[FailureDetails], bool] | None = None,
    ) -> None:
        zero = timedelta(0)
        if first_retry_interval < zero:
            raise ValueError(f"first_retry_interval must be >= 0, got {first_retry_interval}")
        if max_number_of_attempts < 1:
            raise ValueError(f"max_number_of_attempts must be >= 1, got {max_number_of_attempts}")
        if backoff_coefficient is not None and backoff_coefficient < 1:
            raise ValueError(f"backoff_coefficient must be >= 1, got {backoff_coefficient}")
        if max_retry_interval is not None and max_retry_interval < zero:
            raise ValueError(f"max_retry_interval must be >= 0, got {max_retry_interval}")
        if retry_timeout is not None and retry_timeout < zero:
            raise ValueError(f"retry_timeout must be >= 0, got {retry_timeout}")
        if handle_failure is not None and not callable(handle_failure):
            raise ValueError("handle_failure must be a callable taking FailureDetails and returning bool")
        self._first_retry_interval = first_retry_interval
        self._max_number_of_attempts = max_number_of_attempts
        self._backoff_coefficient = backoff_coefficient
        self._max_retry_interval = max_retry_interval
        self._retry_timeout = retry_timeout
        self._handle_failure = handle_failure

    @property
    def first_retry_interval(self) -> timedelta:
        """The delay before the second attempt."""
        return self._first_retry_interval

    @property
    def max_number_of_attempts(self) -> int:
        """The total number of attempts, the first one included."""
        return self._max_number_of_attempts

    @property
    def backoff_coefficient(self) -> float | None:
        """The factor applied to each further delay."""
        return self._backoff_coefficient

    @property
    def max_retry_interval(self) -> timedelta | None:
        """The upper bound for a single delay, if any."""
        return self._max_retry_interval

    @property
    def retry_timeout(self) -> timedelta | None:
        """How long after the first attempt retries may still start, in orchestration time."""
        return self._retry_timeout

    @property
    def handle_failure(self) -> Callable[[FailureDetails], bool] | None:
        """The predicate that decides whether a failure is worth retrying, if any."""
        return self._handle_failure

    def next_delay(
        self, attempt: int, started_at: datetime, now: datetime, failure: FailureDetails
    ) -> timedelta | None:
        """Return the delay before the next attempt, or None to give up.

        Args:
            attempt: The number of the attempt that just failed (1 for the first).
            started_at: Orchestration time when the first attempt was scheduled.
            now: Orchestration time when the failure was seen.
            failure: The failure of that attempt.
        """
        if attempt >= self._max_number_of_attempts or failure.is_non_retriable:
            return None
        if self._retry_timeout is not None and now >= started_at + self._retry_timeout:
            return None
        if self._handle_failure is not None and not self._handle_failure(failure):
            return None
        coefficient = 1.0 if self._backoff_coefficient is None else self._backoff_coefficient
        seconds = coefficient ** (attempt - 1) * self._first_retry_interval.total_seconds()
        if self._max_retry_interval is not None:
            seconds = min(seconds, self._max_retry_interval.total_seconds())
        return timedelta(seconds=seconds)
