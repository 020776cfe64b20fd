"""Run by the official SDK's interpreter: serve its in-memory backend on a port until stdin closes."""

import sys

from durabletask.testing import create_test_backend

port = int(sys.argv[1])
backend = create_test_backend(port=port)
print("ready", flush=True)
sys.stdin.read()  # the parent closes stdin (or dies) to stop us
backend.stop()
