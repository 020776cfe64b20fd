"""A local, persistent Durable Task backend that speaks the sidecar gRPC protocol.

Layers: ``service`` (gRPC in/out) -> ``engine`` (rules) -> ``store`` (SQLite or memory).
"""
