"""HTTP/2 framing and HPACK in pure Python, shared by the emulator's gRPC server and the SDK's client transport."""
