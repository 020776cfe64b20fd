"""Worker runtime: the work-item stream, concurrency, and running orchestrations and activities."""
