"""Client internals: request building and response parsing shared by the sync and async clients."""
