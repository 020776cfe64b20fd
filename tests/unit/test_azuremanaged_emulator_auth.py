"""The emulator's ``--require-auth`` mode: what counts as a bearer token, the flag, the command line."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from typing import Any

import grpc
import pytest
from azure.core.credentials import AccessToken

from durabletask.azuremanaged import DurableTaskSchedulerClient
from durabletask.cli import build_parser
from durabletask.emulator.auth import MALFORMED, MISSING, bearer_problem, fingerprint


@pytest.mark.parametrize(("metadata", "token"), [
    ([("authorization", "Bearer abc")], "abc"),
    ([("authorization", "bearer   abc ")], "abc"),
    ([("Authorization", b"Bearer abc")], "abc"),
    ([("taskhub", "x"), ("authorization", "Bearer a.b.c")], "a.b.c"),
])
def test_bearer_tokens_accepted(metadata: Any, token: str) -> None:
    assert bearer_problem(metadata) == (token, None)


@pytest.mark.parametrize(("metadata", "problem"), [
    (None, MISSING),
    ([], MISSING),
    ([("taskhub", "default")], MISSING),
    ([("authorization", "")], MALFORMED),
    ([("authorization", "Bearer")], MALFORMED),
    ([("authorization", "Bearer   ")], MALFORMED),
    ([("authorization", "Basic dXNlcjpwYXNz")], MALFORMED),
])
def test_calls_without_a_bearer_token_are_refused(metadata: Any, problem: str) -> None:
    assert bearer_problem(metadata) == (None, problem)
    assert "a bearer token is required" in problem


def test_fingerprints_are_short_and_not_the_token() -> None:
    assert len(fingerprint("secret")) == 16 and "secret" not in fingerprint("secret")


def test_require_auth_flag() -> None:
    assert build_parser().parse_args(["emulator"]).require_auth is False
    assert build_parser().parse_args(["emulator", "--require-auth"]).require_auth is True


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Credential:
    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        return AccessToken("cli-token", int(time.time()) + 3600)


def test_command_line_require_auth() -> None:
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "durabletask.emulator", "--memory", "--port", str(port),
                             "--require-auth"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=dict(os.environ))
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and "Ctrl-C" not in proc.stdout.readline():
            pass
        endpoint = f"http://localhost:{port}"
        anonymous = DurableTaskSchedulerClient(host_address=endpoint, taskhub="default", token_credential=None)
        with anonymous, pytest.raises(grpc.RpcError) as info:
            anonymous.get_orchestration_state("x")
        error: Any = info.value
        assert error.code() == grpc.StatusCode.UNAUTHENTICATED and "bearer token" in error.details()
        with DurableTaskSchedulerClient(host_address=endpoint, taskhub="default",
                                        token_credential=Credential()) as client:
            assert client.get_orchestration_state("x") is None
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=30)
        assert proc.returncode == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
