"""gRPC plumbing: channels, metadata and call helpers shared by the client and the worker."""
