"""The emulator's own gRPC server over HTTP/2, in pure Python on asyncio (see `server`)."""

from durabletask.emulator.h2.server import GrpcServer, Route

__all__ = ["GrpcServer", "Route"]
