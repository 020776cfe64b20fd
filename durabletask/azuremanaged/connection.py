"""Durable Task Scheduler connection strings and the environment conventions of the public samples.

A connection string is ``Key=Value`` pairs separated by ``;``, as in the .NET SDK::

    Endpoint=https://myscheduler.westus2.durabletask.io;Authentication=DefaultAzure;TaskHub=orders
    Endpoint=http://localhost:8080;Authentication=None;TaskHub=default

Keys are case-insensitive, spaces around keys and values are ignored, and a value may be quoted with
``"`` or ``'`` (then it may contain ``;``; a doubled quote inside stands for one). ``Endpoint``,
``Authentication`` and ``TaskHub`` are required. An endpoint without a scheme gets ``https://``.

``Authentication`` (case-insensitive) picks the azure-identity credential:

=====================  ==============================================  =====================================
Value                  Credential                                      Optional keys it uses
=====================  ==============================================  =====================================
``None``               no token (emulators)                            --
``DefaultAzure``       ``DefaultAzureCredential``                      ``ClientID`` (a user-assigned managed
                                                                       identity), ``AdditionallyAllowedTenants``
``ManagedIdentity``    ``ManagedIdentityCredential``                   ``ClientID`` (user-assigned identity)
``WorkloadIdentity``   ``WorkloadIdentityCredential``                  ``ClientID``, ``TenantId``,
                                                                       ``AdditionallyAllowedTenants``,
                                                                       ``TokenFilePath``
``Environment``        ``EnvironmentCredential``                       --
``AzureCli``           ``AzureCliCredential``                          ``TenantId``, ``AdditionallyAllowedTenants``
``AzurePowerShell``    ``AzurePowerShellCredential``                   ``TenantId``, ``AdditionallyAllowedTenants``
``VisualStudioCode``   ``VisualStudioCodeCredential``                  ``TenantId``
``InteractiveBrowser`` ``InteractiveBrowserCredential``                ``ClientID``, ``TenantId``,
                                                                       ``AdditionallyAllowedTenants``
=====================  ==============================================  =====================================

``AdditionallyAllowedTenants`` is a comma-separated list (``*`` allows any tenant). A known key that the
chosen method does not use is ignored with a warning, so that switching ``Authentication`` (say to
``None`` for a local run) does not force other edits; an unknown key or value is an error that lists
the valid ones.

Environment variables (`from_environment`): ``DURABLE_TASK_SCHEDULER_CONNECTION_STRING`` if set, else
``ENDPOINT`` (default ``http://localhost:8080``) and ``TASKHUB`` (default ``default``), with
``DefaultAzureCredential`` unless the endpoint is on this machine -- what the public samples do.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from azure.core.credentials import TokenCredential

from durabletask.azuremanaged.internal.calls import is_loopback
from durabletask.internal.grpc.channels import parse_host_address

logger = logging.getLogger("durabletask.azuremanaged")

__all__ = [
    "CONNECTION_STRING_ENV",
    "ENDPOINT_ENV",
    "TASKHUB_ENV",
    "ConnectionString",
    "Settings",
    "settings_from_environment",
]

CONNECTION_STRING_ENV = "DURABLE_TASK_SCHEDULER_CONNECTION_STRING"
ENDPOINT_ENV = "ENDPOINT"
TASKHUB_ENV = "TASKHUB"
DEFAULT_ENDPOINT = "http://localhost:8080"
DEFAULT_TASKHUB = "default"

# canonical key spelling -> attribute
_KEYS = {
    "Endpoint": "endpoint",
    "Authentication": "authentication",
    "TaskHub": "task_hub",
    "ClientID": "client_id",
    "TenantId": "tenant_id",
    "AdditionallyAllowedTenants": "additionally_allowed_tenants",
    "TokenFilePath": "token_file_path",
}
_REQUIRED = ("Endpoint", "Authentication", "TaskHub")
_SCHEMES = ("https://", "http://", "grpcs://", "grpc://")


def _identity() -> Any:
    import azure.identity

    return azure.identity


def _tenants(cs: ConnectionString) -> dict[str, Any]:
    return {"additionally_allowed_tenants": list(cs.additionally_allowed_tenants)} \
        if cs.additionally_allowed_tenants else {}


def _default_azure(cs: ConnectionString) -> TokenCredential:
    kwargs: dict[str, Any] = _tenants(cs)
    if cs.client_id:
        kwargs["managed_identity_client_id"] = cs.client_id
    return _identity().DefaultAzureCredential(**kwargs)  # type: ignore[no-any-return]


def _managed_identity(cs: ConnectionString) -> TokenCredential:
    return _identity().ManagedIdentityCredential(client_id=cs.client_id)  # type: ignore[no-any-return]


def _workload_identity(cs: ConnectionString) -> TokenCredential:
    kwargs: dict[str, Any] = _tenants(cs)
    for name in ("client_id", "tenant_id", "token_file_path"):
        if getattr(cs, name):
            kwargs[name] = getattr(cs, name)
    return _identity().WorkloadIdentityCredential(**kwargs)  # type: ignore[no-any-return]


def _simple(class_name: str, *keys: str) -> Callable[[ConnectionString], TokenCredential]:
    def create(cs: ConnectionString) -> TokenCredential:
        kwargs: dict[str, Any] = _tenants(cs) if "AdditionallyAllowedTenants" in keys else {}
        if "TenantId" in keys and cs.tenant_id:
            kwargs["tenant_id"] = cs.tenant_id
        if "ClientID" in keys and cs.client_id:
            kwargs["client_id"] = cs.client_id
        return getattr(_identity(), class_name)(**kwargs)  # type: ignore[no-any-return]
    return create


@dataclass(frozen=True)
class _Method:
    name: str
    keys: tuple[str, ...]
    create: Callable[[ConnectionString], TokenCredential] | None


_METHODS = {m.name.lower(): m for m in (
    _Method("None", (), None),
    _Method("DefaultAzure", ("ClientID", "AdditionallyAllowedTenants"), _default_azure),
    _Method("ManagedIdentity", ("ClientID",), _managed_identity),
    _Method("WorkloadIdentity", ("ClientID", "TenantId", "AdditionallyAllowedTenants", "TokenFilePath"),
            _workload_identity),
    _Method("Environment", (), _simple("EnvironmentCredential")),
    _Method("AzureCli", ("TenantId", "AdditionallyAllowedTenants"),
            _simple("AzureCliCredential", "TenantId", "AdditionallyAllowedTenants")),
    _Method("AzurePowerShell", ("TenantId", "AdditionallyAllowedTenants"),
            _simple("AzurePowerShellCredential", "TenantId", "AdditionallyAllowedTenants")),
    _Method("VisualStudioCode", ("TenantId",), _simple("VisualStudioCodeCredential", "TenantId")),
    _Method("InteractiveBrowser", ("ClientID", "TenantId", "AdditionallyAllowedTenants"),
            _simple("InteractiveBrowserCredential", "ClientID", "TenantId", "AdditionallyAllowedTenants")),
)}
AUTHENTICATION_TYPES = tuple(m.name for m in _METHODS.values())
"""The accepted ``Authentication`` values, in their usual spelling."""

_EXAMPLE = "Endpoint=https://myscheduler.westus2.durabletask.io;Authentication=DefaultAzure;TaskHub=myhub"


def _split(text: str) -> list[tuple[str, str]]:
    """``Key=Value`` pairs of a connection string, quotes resolved."""
    pairs: list[tuple[str, str]] = []
    i, n = 0, len(text)
    while i < n:
        end = text.find(";", i)
        equals = text.find("=", i)
        if equals == -1 or (end != -1 and end < equals):
            segment = text[i:end if end != -1 else n].strip()
            if segment:
                raise ValueError(f"connection string: expected Key=Value, got {segment!r} "
                                 f"(e.g. {_EXAMPLE!r})")
            i = n if end == -1 else end + 1
            continue
        key = text[i:equals].strip()
        j = equals + 1
        while j < n and text[j] in " \t":
            j += 1
        if j < n and text[j] in "\"'":
            quote, j = text[j], j + 1
            value_chars: list[str] = []
            while True:
                if j >= n:
                    raise ValueError(f"connection string: the value of {key!r} has no closing {quote}")
                if text[j] == quote:
                    if j + 1 < n and text[j + 1] == quote:
                        value_chars.append(quote)
                        j += 2
                        continue
                    j += 1
                    break
                value_chars.append(text[j])
                j += 1
            value = "".join(value_chars)
            while j < n and text[j] in " \t":
                j += 1
            if j < n and text[j] != ";":
                raise ValueError(f"connection string: unexpected text after the quoted value of {key!r}")
            i = j + 1
        else:
            end = text.find(";", j)
            value = text[j:end if end != -1 else n].strip()
            i = n if end == -1 else end + 1
        if not key:
            raise ValueError("connection string: a value has no key (a segment starts with '=')")
        pairs.append((key, value))
    return pairs


@dataclass(frozen=True)
class ConnectionString:
    """A parsed Durable Task Scheduler connection string; `parse` one, then `create_credential`.

    Attributes:
        endpoint: The endpoint with its scheme (``https://`` added when the string had none).
        task_hub: The task hub name.
        authentication: The ``Authentication`` value in its usual spelling (e.g. ``"DefaultAzure"``).
        client_id, tenant_id, additionally_allowed_tenants, token_file_path: Optional credential settings.
    """

    endpoint: str
    task_hub: str
    authentication: str
    client_id: str | None = None
    tenant_id: str | None = None
    additionally_allowed_tenants: tuple[str, ...] = field(default=())
    token_file_path: str | None = None

    @classmethod
    def parse(cls, connection_string: str) -> ConnectionString:
        """Parse ``Endpoint=...;Authentication=...;TaskHub=...[;ClientID=...]...``.

        Raises:
            ValueError: A required key is missing or empty, a key or ``Authentication`` value is unknown
                (the message lists the valid ones), a key is repeated, or the text is malformed.
        """
        if not isinstance(connection_string, str) or not connection_string.strip():
            raise ValueError(f"the connection string is empty; expected e.g. {_EXAMPLE!r}")
        canonical = {k.lower(): k for k in _KEYS}
        values: dict[str, str] = {}
        for key, value in _split(connection_string):
            known = canonical.get(key.lower())
            if known is None:
                raise ValueError(f"connection string: unknown key {key!r}; valid keys are {', '.join(_KEYS)}")
            if known in values:
                raise ValueError(f"connection string: {known!r} is given more than once")
            values[known] = value
        missing = [k for k in _REQUIRED if not values.get(k)]
        if missing:
            raise ValueError(f"connection string: missing {', '.join(repr(k) for k in missing)} "
                             f"(required: {', '.join(_REQUIRED)}; e.g. {_EXAMPLE!r})")
        method = _METHODS.get(values["Authentication"].lower())
        if method is None:
            hint = ""
            if values["Authentication"].lower() == "visualstudio":
                hint = " (VisualStudio is .NET-only; use AzureCli, VisualStudioCode or DefaultAzure)"
            raise ValueError(f"connection string: unknown Authentication {values['Authentication']!r}{hint}; "
                             f"valid values are {', '.join(AUTHENTICATION_TYPES)}")
        for key in values:
            if key not in _REQUIRED and key not in method.keys:
                uses = f"it uses {', '.join(method.keys)}" if method.keys else "it uses no other keys"
                logger.warning("connection string: %s is ignored with Authentication=%s (%s)", key, method.name, uses)
        endpoint = values["Endpoint"]
        if "://" not in endpoint:
            endpoint = f"https://{endpoint}"
        elif not endpoint.lower().startswith(_SCHEMES):
            raise ValueError(f"connection string: Endpoint {endpoint!r} must start with https:// "
                             f"(or http:// for an emulator on this machine)")
        parse_host_address(endpoint, True)  # an endpoint with no host fails here
        tenants = tuple(t.strip() for t in values.get("AdditionallyAllowedTenants", "").split(",") if t.strip())
        used = set(method.keys)
        return cls(
            endpoint=endpoint,
            task_hub=values["TaskHub"],
            authentication=method.name,
            client_id=(values.get("ClientID") or None) if "ClientID" in used else None,
            tenant_id=(values.get("TenantId") or None) if "TenantId" in used else None,
            additionally_allowed_tenants=tenants if "AdditionallyAllowedTenants" in used else (),
            token_file_path=(values.get("TokenFilePath") or None) if "TokenFilePath" in used else None,
        )

    def create_credential(self) -> TokenCredential | None:
        """A new azure-identity credential for ``Authentication`` (None for ``None``).

        It is synchronous; the asyncio client and the worker run it in a thread. Creating it makes no
        network call.
        """
        create = _METHODS[self.authentication.lower()].create
        return create(self) if create is not None else None

    def __str__(self) -> str:
        parts = [f"Endpoint={self.endpoint}", f"Authentication={self.authentication}", f"TaskHub={self.task_hub}"]
        for key in ("ClientID", "TenantId", "TokenFilePath"):
            value = getattr(self, _KEYS[key])
            if value:
                parts.append(f"{key}={value}")
        if self.additionally_allowed_tenants:
            parts.append(f"AdditionallyAllowedTenants={','.join(self.additionally_allowed_tenants)}")
        return ";".join(_quote(p) for p in parts)


def _quote(part: str) -> str:
    key, value = part.split("=", 1)
    if any(c in value for c in ";\"'") or value != value.strip():
        value = '"' + value.replace('"', '""') + '"'
    return f"{key}={value}"


@dataclass(frozen=True)
class Settings:
    """What `settings_from_environment` found: where to connect and with which credential."""

    host_address: str
    taskhub: str
    token_credential: TokenCredential | None
    source: str
    """Which variables were used, for messages (e.g. ``"ENDPOINT/TASKHUB"``)."""


def settings_from_environment(environ: Mapping[str, str] | None = None) -> Settings:
    """Where to connect, from environment variables, the way the public samples and the .NET SDK do.

    ``DURABLE_TASK_SCHEDULER_CONNECTION_STRING``, when set, wins. Otherwise ``ENDPOINT`` (default
    ``http://localhost:8080``) and ``TASKHUB`` (default ``default``) are used, with a new
    ``DefaultAzureCredential`` unless the endpoint is on this machine (then no token, as for the
    emulator).

    Raises:
        ValueError: The connection string is invalid.
    """
    env = os.environ if environ is None else environ
    text = env.get(CONNECTION_STRING_ENV, "").strip()
    if text:
        cs = ConnectionString.parse(text)
        return Settings(cs.endpoint, cs.task_hub, cs.create_credential(), CONNECTION_STRING_ENV)
    endpoint = env.get(ENDPOINT_ENV, "").strip() or DEFAULT_ENDPOINT
    taskhub = env.get(TASKHUB_ENV, "").strip() or DEFAULT_TASKHUB
    local = is_loopback(parse_host_address(endpoint, True).address)
    credential = None if local else _identity().DefaultAzureCredential()
    return Settings(endpoint, taskhub, credential, f"{ENDPOINT_ENV}/{TASKHUB_ENV}")
