"""Entity internals: the per-batch state, the batch executor, and the orchestration-side lock state."""
