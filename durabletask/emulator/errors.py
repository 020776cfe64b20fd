"""Errors the engine reports to callers; the service turns each into the gRPC status it names."""

from __future__ import annotations


class EmulatorError(Exception):
    """A request the engine refuses. ``code`` is the name of a ``grpc.StatusCode``."""

    code = "INTERNAL"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidArgument(EmulatorError):
    code = "INVALID_ARGUMENT"


class NotFound(EmulatorError):
    code = "NOT_FOUND"


class AlreadyExists(EmulatorError):
    code = "ALREADY_EXISTS"


class FailedPrecondition(EmulatorError):
    code = "FAILED_PRECONDITION"


class Unimplemented(EmulatorError):
    code = "UNIMPLEMENTED"


class Unavailable(EmulatorError):
    code = "UNAVAILABLE"
