"""gRPC channel and resiliency options (same names and fields as the official SDK)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

_STATUS_NAMES = frozenset({
    "OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND", "ALREADY_EXISTS",
    "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE",
    "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED",
})


@dataclass(slots=True, kw_only=True)
class GrpcRetryPolicyOptions:
    """A gRPC service-config retry policy applied by the channel to every call.

    Attributes:
        max_attempts: Total attempts, the first included (2..5 are what gRPC accepts).
        initial_backoff_seconds: Delay before the first retry.
        max_backoff_seconds: Upper bound for a delay.
        backoff_multiplier: Growth factor between delays.
        retryable_status_codes: Status code names that are retried, e.g. ``["UNAVAILABLE"]``.
    """

    max_attempts: int = 4
    initial_backoff_seconds: float = 0.05
    max_backoff_seconds: float = 0.25
    backoff_multiplier: float = 2.0
    retryable_status_codes: list[str] = field(default_factory=lambda: ["UNAVAILABLE"])

    def __post_init__(self) -> None:
        if not 2 <= self.max_attempts <= 5:
            raise ValueError(f"max_attempts must be between 2 and 5 (gRPC's limits), got {self.max_attempts}")
        if self.initial_backoff_seconds <= 0 or self.max_backoff_seconds <= 0:
            raise ValueError("initial_backoff_seconds and max_backoff_seconds must be > 0")
        if self.backoff_multiplier <= 0:
            raise ValueError(f"backoff_multiplier must be > 0, got {self.backoff_multiplier}")
        unknown = [c for c in self.retryable_status_codes if c.upper() not in _STATUS_NAMES]
        if unknown or not self.retryable_status_codes:
            raise ValueError(
                f"retryable_status_codes must name gRPC status codes (e.g. 'UNAVAILABLE'); unknown: {unknown}"
            )

    def to_service_config(self) -> dict[str, Any]:
        """The policy as a gRPC service config applying to every method."""
        return {"methodConfig": [{"name": [{}], "retryPolicy": {
            "maxAttempts": self.max_attempts,
            "initialBackoff": f"{self.initial_backoff_seconds:.3f}s",
            "maxBackoff": f"{self.max_backoff_seconds:.3f}s",
            "backoffMultiplier": self.backoff_multiplier,
            "retryableStatusCodes": [c.upper() for c in self.retryable_status_codes],
        }}]}


@dataclass(slots=True, kw_only=True)
class GrpcChannelOptions:
    """Options for the gRPC channels the SDK creates.

    Attributes:
        max_receive_message_length: Largest message accepted, in bytes (gRPC default 4 MiB).
        max_send_message_length: Largest message sent, in bytes.
        keepalive_time_ms: Interval of HTTP/2 keepalive pings.
        keepalive_timeout_ms: How long to wait for a keepalive answer.
        keepalive_permit_without_calls: Send keepalives with no call in flight.
        retry_policy: A channel-level retry policy.
        raw_options: Any other ``(name, value)`` channel arguments, passed as they are.
    """

    max_receive_message_length: int | None = None
    max_send_message_length: int | None = None
    keepalive_time_ms: int | None = None
    keepalive_timeout_ms: int | None = None
    keepalive_permit_without_calls: bool | None = None
    retry_policy: GrpcRetryPolicyOptions | None = None
    raw_options: list[tuple[str, Any]] = field(default_factory=list)

    def to_grpc_options(self) -> list[tuple[str, Any]]:
        """The options as gRPC channel arguments."""
        options: list[tuple[str, Any]] = []
        pairs: list[tuple[str, Any]] = [
            ("grpc.max_receive_message_length", self.max_receive_message_length),
            ("grpc.max_send_message_length", self.max_send_message_length),
            ("grpc.keepalive_time_ms", self.keepalive_time_ms),
            ("grpc.keepalive_timeout_ms", self.keepalive_timeout_ms),
        ]
        options += [(k, v) for k, v in pairs if v is not None]
        if self.keepalive_permit_without_calls is not None:
            options.append(("grpc.keepalive_permit_without_calls", int(self.keepalive_permit_without_calls)))
        if self.retry_policy is not None:
            options.append(("grpc.enable_retries", 1))
            options.append(("grpc.service_config", json.dumps(self.retry_policy.to_service_config())))
        options += list(self.raw_options)
        return options


@dataclass(slots=True, kw_only=True)
class GrpcWorkerResiliencyOptions:
    """How a worker keeps its work-item stream alive.

    Attributes:
        hello_timeout_seconds: Deadline of the connectivity probe before each stream.
        silent_disconnect_timeout_seconds: A stream that delivers nothing (not even a health ping)
            for this long is treated as dead and reopened.
        channel_recreate_failure_threshold: Recreate the channel after this many consecutive
            connection failures.
        reconnect_backoff_base_seconds: Base of the full-jitter reconnect back-off.
        reconnect_backoff_cap_seconds: Upper bound of a reconnect delay.
    """

    hello_timeout_seconds: float = 30.0
    silent_disconnect_timeout_seconds: float = 120.0
    channel_recreate_failure_threshold: int = 5
    reconnect_backoff_base_seconds: float = 1.0
    reconnect_backoff_cap_seconds: float = 30.0

    def __post_init__(self) -> None:
        if self.hello_timeout_seconds <= 0:
            raise ValueError(f"hello_timeout_seconds must be > 0, got {self.hello_timeout_seconds}")
        if self.silent_disconnect_timeout_seconds < 0:
            raise ValueError("silent_disconnect_timeout_seconds must be >= 0 (0 disables the watchdog)")
        if self.channel_recreate_failure_threshold < 0:
            raise ValueError("channel_recreate_failure_threshold must be >= 0 (0 disables recreation)")
        if self.reconnect_backoff_base_seconds < 0 or self.reconnect_backoff_cap_seconds < 0:
            raise ValueError("reconnect back-off values must be >= 0")


@dataclass(slots=True, kw_only=True)
class GrpcClientResiliencyOptions:
    """How a client recovers from a broken channel.

    Attributes:
        channel_recreate_failure_threshold: Recreate the channel after this many consecutive
            transport failures (0 disables it).
        min_recreate_interval_seconds: At most one recreation in this interval.
    """

    channel_recreate_failure_threshold: int = 5
    min_recreate_interval_seconds: float = 30.0

    def __post_init__(self) -> None:
        if self.channel_recreate_failure_threshold < 0:
            raise ValueError("channel_recreate_failure_threshold must be >= 0")
        if self.min_recreate_interval_seconds < 0:
            raise ValueError("min_recreate_interval_seconds must be >= 0")
