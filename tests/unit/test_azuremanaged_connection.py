"""Connection strings and environment variables for the Durable Task Scheduler classes."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import azure.identity
import pytest

from durabletask.azuremanaged import (
    AsyncDurableTaskSchedulerClient,
    ConnectionString,
    DurableTaskSchedulerClient,
    DurableTaskSchedulerWorker,
)
from durabletask.azuremanaged import connection as connection_module
from durabletask.azuremanaged.connection import AUTHENTICATION_TYPES, settings_from_environment

REMOTE = "https://myscheduler.westus2.durabletask.io"


class FakeIdentity:
    """Stands in for the ``azure.identity`` module: records which credential was built, with what."""

    def __init__(self) -> None:
        self.created: list[FakeIdentity.Credential] = []

    class Credential:
        def __init__(self, name: str, kwargs: dict[str, Any]) -> None:
            self.name, self.kwargs, self.closed = name, kwargs, 0

        def get_token(self, *scopes: str, **kwargs: Any) -> Any:
            raise AssertionError("no token is fetched in these tests")

        def close(self) -> None:
            self.closed += 1

    def __getattr__(self, name: str) -> Any:
        def create(**kwargs: Any) -> FakeIdentity.Credential:
            credential = FakeIdentity.Credential(name, kwargs)
            self.created.append(credential)
            return credential
        return create


@pytest.fixture()
def identity(monkeypatch: pytest.MonkeyPatch) -> FakeIdentity:
    fake = FakeIdentity()
    monkeypatch.setattr(connection_module, "_identity", lambda: fake)
    return fake


# ----------------------------------------------------------------- parsing


def test_emulator_form() -> None:
    cs = ConnectionString.parse("Endpoint=http://localhost:8080;Authentication=None;TaskHub=default")
    assert (cs.endpoint, cs.task_hub, cs.authentication) == ("http://localhost:8080", "default", "None")
    assert cs.create_credential() is None


def test_keys_and_values_are_case_insensitive_and_trimmed() -> None:
    cs = ConnectionString.parse(f"  endpoint = {REMOTE} ; AUTHENTICATION=managedidentity;taskhub= orders ;"
                                " clientid = 1234 ;")
    assert cs.endpoint == REMOTE
    assert cs.authentication == "ManagedIdentity"
    assert cs.task_hub == "orders"
    assert cs.client_id == "1234"


def test_quoted_values() -> None:
    cs = ConnectionString.parse(f'Endpoint="{REMOTE}";Authentication=\'None\';TaskHub="a;b ""c"" "')
    assert cs.endpoint == REMOTE
    assert cs.authentication == "None"
    assert cs.task_hub == 'a;b "c" '
    assert ConnectionString.parse(str(cs)) == cs


def test_endpoint_without_scheme_gets_https() -> None:
    cs = ConnectionString.parse("Endpoint=myscheduler.westus2.durabletask.io;Authentication=None;TaskHub=h")
    assert cs.endpoint == REMOTE


def test_workload_identity_keys() -> None:
    cs = ConnectionString.parse(f"Endpoint={REMOTE};Authentication=WorkloadIdentity;TaskHub=h;ClientID=c;"
                                "TenantId=t;AdditionallyAllowedTenants=t2, t3;TokenFilePath=/var/run/token")
    assert (cs.client_id, cs.tenant_id, cs.token_file_path) == ("c", "t", "/var/run/token")
    assert cs.additionally_allowed_tenants == ("t2", "t3")
    assert ConnectionString.parse(str(cs)) == cs


def test_unknown_key_lists_the_valid_ones() -> None:
    with pytest.raises(ValueError) as info:
        ConnectionString.parse(f"Endpoint={REMOTE};Authentication=None;TaskHub=h;Tenant=x")
    message = str(info.value)
    assert "'Tenant'" in message
    for key in ("Endpoint", "Authentication", "TaskHub", "ClientID", "TenantId", "AdditionallyAllowedTenants",
                "TokenFilePath"):
        assert key in message


def test_unknown_authentication_lists_the_valid_values() -> None:
    with pytest.raises(ValueError) as info:
        ConnectionString.parse(f"Endpoint={REMOTE};Authentication=Password;TaskHub=h")
    message = str(info.value)
    assert "'Password'" in message
    for value in ("None", "DefaultAzure", "ManagedIdentity", "WorkloadIdentity", "Environment", "AzureCli"):
        assert value in message


def test_visual_studio_is_dotnet_only() -> None:
    with pytest.raises(ValueError, match=r"\.NET-only"):
        ConnectionString.parse(f"Endpoint={REMOTE};Authentication=VisualStudio;TaskHub=h")


@pytest.mark.parametrize(("text", "missing"), [
    ("Authentication=None;TaskHub=h", "'Endpoint'"),
    (f"Endpoint={REMOTE};TaskHub=h", "'Authentication'"),
    (f"Endpoint={REMOTE};Authentication=None", "'TaskHub'"),
    (f"Endpoint={REMOTE};Authentication=None;TaskHub=", "'TaskHub'"),
    ("TaskHub=h", "'Endpoint', 'Authentication'"),
])
def test_missing_required_key_is_named(text: str, missing: str) -> None:
    with pytest.raises(ValueError, match=f"missing {missing}"):
        ConnectionString.parse(text)


@pytest.mark.parametrize(("text", "message"), [
    ("", "empty"),
    ("   ", "empty"),
    (f"Endpoint={REMOTE};Endpoint={REMOTE};Authentication=None;TaskHub=h", "more than once"),
    (f"Endpoint={REMOTE};Authentication=None;TaskHub", "expected Key=Value"),
    (f"Endpoint={REMOTE};=x;Authentication=None;TaskHub=h", "no key"),
    (f'Endpoint={REMOTE};Authentication=None;TaskHub="h', "no closing"),
    (f'Endpoint={REMOTE};Authentication=None;TaskHub="h"x', "unexpected text"),
    ("Endpoint=ftp://x;Authentication=None;TaskHub=h", "must start with https://"),
    ("Endpoint=https://;Authentication=None;TaskHub=h", "no host"),
])
def test_malformed_strings(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ConnectionString.parse(text)


def test_a_known_key_the_method_does_not_use_is_ignored_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="durabletask.azuremanaged"):
        cs = ConnectionString.parse(f"Endpoint={REMOTE};Authentication=None;TaskHub=h;ClientID=abc")
    assert cs.client_id is None
    assert "ClientID is ignored with Authentication=None" in caplog.text


# ----------------------------------------------------------------- credentials


@pytest.mark.parametrize(("extra", "name", "kwargs"), [
    ("Authentication=DefaultAzure", "DefaultAzureCredential", {}),
    ("Authentication=DefaultAzure;ClientID=mi;AdditionallyAllowedTenants=*", "DefaultAzureCredential",
     {"managed_identity_client_id": "mi", "additionally_allowed_tenants": ["*"]}),
    ("Authentication=ManagedIdentity", "ManagedIdentityCredential", {"client_id": None}),
    ("Authentication=ManagedIdentity;ClientID=abc", "ManagedIdentityCredential", {"client_id": "abc"}),
    ("Authentication=WorkloadIdentity;ClientID=c;TenantId=t;TokenFilePath=/f;AdditionallyAllowedTenants=a,b",
     "WorkloadIdentityCredential",
     {"client_id": "c", "tenant_id": "t", "token_file_path": "/f", "additionally_allowed_tenants": ["a", "b"]}),
    ("Authentication=Environment", "EnvironmentCredential", {}),
    ("Authentication=AzureCli", "AzureCliCredential", {}),
    ("Authentication=azurecli;TenantId=t", "AzureCliCredential", {"tenant_id": "t"}),
    ("Authentication=AzurePowerShell;TenantId=t", "AzurePowerShellCredential", {"tenant_id": "t"}),
    ("Authentication=VisualStudioCode", "VisualStudioCodeCredential", {}),
    ("Authentication=InteractiveBrowser;ClientID=c", "InteractiveBrowserCredential", {"client_id": "c"}),
])
def test_authentication_picks_the_credential(identity: FakeIdentity, extra: str, name: str,
                                             kwargs: dict[str, Any]) -> None:
    credential: Any = ConnectionString.parse(f"Endpoint={REMOTE};TaskHub=h;{extra}").create_credential()
    assert (credential.name, credential.kwargs) == (name, kwargs)


def test_every_authentication_value_builds_a_real_credential(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The keyword arguments we pass are ones azure-identity accepts (no network call is made)."""
    token_file = tmp_path / "token"
    token_file.write_text("header.payload.signature")
    for variable in ("AZURE_CLIENT_ID", "AZURE_TENANT_ID", "AZURE_FEDERATED_TOKEN_FILE"):
        monkeypatch.delenv(variable, raising=False)
    extras = {"WorkloadIdentity": f";ClientID=c;TenantId=t;TokenFilePath={token_file}",
              "DefaultAzure": ";ClientID=c;AdditionallyAllowedTenants=*",
              "AzureCli": ";TenantId=t;AdditionallyAllowedTenants=*",
              "InteractiveBrowser": ";ClientID=c;TenantId=t"}
    assert set(AUTHENTICATION_TYPES) >= {"None", "DefaultAzure", "ManagedIdentity", "WorkloadIdentity",
                                         "Environment", "AzureCli"}
    for method in AUTHENTICATION_TYPES:
        cs = ConnectionString.parse(f"Endpoint={REMOTE};TaskHub=h;Authentication={method}{extras.get(method, '')}")
        credential = cs.create_credential()
        if method == "None":
            assert credential is None
            continue
        assert type(credential).__name__ == f"{method}Credential"
        assert type(credential) is getattr(azure.identity, f"{method}Credential")
        getattr(credential, "close", lambda: None)()


# ----------------------------------------------------------------- classes built from strings


@pytest.mark.parametrize("cls", [DurableTaskSchedulerClient, AsyncDurableTaskSchedulerClient,
                                 DurableTaskSchedulerWorker])
def test_from_connection_string_on_every_class(identity: FakeIdentity, cls: Any) -> None:
    extra: dict[str, Any] = {"concurrency_options": None} if cls is DurableTaskSchedulerWorker else \
        {"default_version": "1.0"}
    instance = cls.from_connection_string(f"Endpoint={REMOTE};Authentication=ManagedIdentity;TaskHub=orders", **extra)
    assert isinstance(instance, cls)
    assert instance.taskhub == "orders"
    assert instance.token_source is not None
    assert instance.token_source.credential is identity.created[0]
    assert instance.token_source.scope == "https://durabletask.io/.default"


@pytest.mark.parametrize("cls", [DurableTaskSchedulerClient, AsyncDurableTaskSchedulerClient,
                                 DurableTaskSchedulerWorker])
def test_emulator_connection_string_has_no_token(cls: Any) -> None:
    instance = cls.from_connection_string("Endpoint=http://localhost:8080;Authentication=None;TaskHub=default")
    assert instance.token_source is None


def test_sync_client_close_closes_the_credential_it_created(identity: FakeIdentity) -> None:
    client = DurableTaskSchedulerClient.from_connection_string(f"Endpoint={REMOTE};Authentication=AzureCli;TaskHub=h")
    client.close()
    client.close()
    assert identity.created[0].closed == 1


def test_async_client_close_closes_the_credential_it_created(identity: FakeIdentity) -> None:
    import asyncio

    async def main() -> None:
        async with AsyncDurableTaskSchedulerClient.from_connection_string(
                f"Endpoint={REMOTE};Authentication=AzureCli;TaskHub=h"):
            pass

    asyncio.run(main())
    assert identity.created[0].closed == 1


def test_a_caller_credential_is_never_closed() -> None:
    closed: list[bool] = []

    class Credential:
        def get_token(self, *scopes: str, **kwargs: Any) -> Any:
            raise AssertionError

        def close(self) -> None:
            closed.append(True)

    DurableTaskSchedulerClient(host_address=REMOTE, taskhub="h", token_credential=Credential()).close()
    assert closed == []


def test_clear_text_refusal_closes_the_credential_it_created(identity: FakeIdentity) -> None:
    with pytest.raises(ValueError, match="https://"):
        DurableTaskSchedulerClient.from_connection_string(
            "Endpoint=http://scheduler.example.com:8080;Authentication=DefaultAzure;TaskHub=h")
    assert identity.created[0].closed == 1


@pytest.mark.parametrize("key", ["host_address", "taskhub", "token_credential"])
def test_settings_from_the_string_cannot_be_passed_again(key: str) -> None:
    with pytest.raises(TypeError, match=key):
        DurableTaskSchedulerClient.from_connection_string(
            "Endpoint=http://localhost:8080;Authentication=None;TaskHub=default", **{key: None})


def test_invalid_string_from_the_class() -> None:
    with pytest.raises(ValueError, match="missing 'TaskHub'"):
        DurableTaskSchedulerWorker.from_connection_string("Endpoint=http://localhost:8080;Authentication=None")


# ----------------------------------------------------------------- environment


def test_environment_connection_string_wins(identity: FakeIdentity) -> None:
    settings = settings_from_environment({
        "DURABLE_TASK_SCHEDULER_CONNECTION_STRING": f"Endpoint={REMOTE};Authentication=ManagedIdentity;TaskHub=x",
        "ENDPOINT": "http://localhost:9999", "TASKHUB": "ignored"})
    assert (settings.host_address, settings.taskhub) == (REMOTE, "x")
    assert isinstance(settings.token_credential, FakeIdentity.Credential)


def test_environment_defaults_are_the_local_emulator(identity: FakeIdentity) -> None:
    settings = settings_from_environment({})
    assert (settings.host_address, settings.taskhub, settings.token_credential) == (
        "http://localhost:8080", "default", None)


def test_environment_endpoint_and_taskhub(identity: FakeIdentity) -> None:
    local = settings_from_environment({"ENDPOINT": "http://127.0.0.1:4001", "TASKHUB": "h"})
    assert (local.host_address, local.taskhub, local.token_credential) == ("http://127.0.0.1:4001", "h", None)
    remote = settings_from_environment({"ENDPOINT": REMOTE, "TASKHUB": "h"})
    assert isinstance(remote.token_credential, FakeIdentity.Credential)
    assert remote.token_credential.name == "DefaultAzureCredential"


def test_from_environment_on_the_classes(monkeypatch: pytest.MonkeyPatch, identity: FakeIdentity) -> None:
    monkeypatch.delenv("DURABLE_TASK_SCHEDULER_CONNECTION_STRING", raising=False)
    monkeypatch.setenv("ENDPOINT", REMOTE)
    monkeypatch.setenv("TASKHUB", "from-env")
    client = DurableTaskSchedulerClient.from_environment()
    assert client.taskhub == "from-env" and client.token_source is not None
    client.close()
    assert identity.created[0].closed == 1
    worker = DurableTaskSchedulerWorker.from_environment({"ENDPOINT": "http://localhost:1"})
    assert worker.taskhub == "default" and worker.token_source is None
    aclient = AsyncDurableTaskSchedulerClient.from_environment(
        {"DURABLE_TASK_SCHEDULER_CONNECTION_STRING": "Endpoint=http://localhost:1;Authentication=None;TaskHub=t"})
    assert aclient.taskhub == "t"
