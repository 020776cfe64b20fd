"""Run by the official SDK's interpreter (``durabletask-azuremanaged`` 1.12.0).

``signatures``: print, as JSON, the constructor parameters of the official DTS client, async client and
worker (name, kind, whether required, and the default's repr).

``call ENDPOINT TASKHUB TOKEN``: with the official ``DurableTaskSchedulerClient`` (TOKEN ``-`` means no
credential), start an orchestration by name and read it back; print the outcome as JSON. Used against
our emulator in ``--require-auth`` mode.
"""

import inspect
import json
import sys
import time


def signatures():
    from durabletask.azuremanaged.client import AsyncDurableTaskSchedulerClient, DurableTaskSchedulerClient
    from durabletask.azuremanaged.worker import DurableTaskSchedulerWorker

    out = {}
    for cls in (DurableTaskSchedulerClient, AsyncDurableTaskSchedulerClient, DurableTaskSchedulerWorker):
        params = []
        for p in list(inspect.signature(cls.__init__).parameters.values())[1:]:
            has_default = p.default is not inspect.Parameter.empty
            params.append({"name": p.name, "kind": p.kind.name, "required": not has_default,
                           "default": repr(p.default) if has_default else None})
        out[cls.__name__] = params
    print(json.dumps(out))


class _Credential:
    def __init__(self, token):
        self.token = token
        self.scopes = []

    def get_token(self, *scopes, **kwargs):
        from azure.core.credentials import AccessToken

        self.scopes.append(list(scopes))
        return AccessToken(self.token, int(time.time()) + 3600)


def call(endpoint, taskhub, token):
    import grpc

    from durabletask.azuremanaged.client import DurableTaskSchedulerClient

    credential = None if token == "-" else _Credential(token)
    client = DurableTaskSchedulerClient(host_address=endpoint, taskhub=taskhub, token_credential=credential,
                                        secure_channel=False)
    try:
        instance_id = client.schedule_new_orchestration("official_interop")
        state = client.get_orchestration_state(instance_id)
        result = {"ok": True, "status": state.runtime_status.name if state else None,
                  "scopes": credential.scopes if credential else []}
    except grpc.RpcError as error:
        result = {"ok": False, "code": error.code().name, "details": error.details()}
    print(json.dumps(result))


if __name__ == "__main__":
    if sys.argv[1] == "signatures":
        signatures()
    else:
        call(*sys.argv[2:5])
