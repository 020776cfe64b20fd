"""Internals of the Durable Task Scheduler connection: access tokens, call metadata, address checks."""
