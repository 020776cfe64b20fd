"""Entity IDs, the entity batch executor and worker registration of entities (no server)."""

from __future__ import annotations

import json
import pickle
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import pytest
from google.protobuf import wrappers_pb2

from durabletask import entities, task
from durabletask.entities import DurableEntity, EntityContext, EntityInstanceId, EntityMetadata
from durabletask.internal import orchestrator_service_pb2 as pb
from durabletask.internal.entities.executor import execute_batch
from durabletask.internal.registry import Registry
from durabletask.serialization import DEFAULT_DATA_CONVERTER
from durabletask.worker import EntityNotRegisteredError, TaskHubGrpcWorker

# ---------------------------------------------------------------- entity IDs


def test_entity_id_string_form_round_trips_and_lowercases_the_name() -> None:
    eid = EntityInstanceId("Counter", "Key-1")
    assert (eid.entity, eid.key, str(eid)) == ("counter", "Key-1", "@counter@Key-1")
    assert EntityInstanceId.parse(str(eid)) == eid
    assert EntityInstanceId.parse("@COUNTER@Key-1") == eid
    assert EntityInstanceId("counter", "key-1") != eid  # keys are case-sensitive
    assert EntityInstanceId.parse("@a@b@c").key == "b@c"  # .NET allows '@' in keys


def test_entity_ids_are_hashable_immutable_picklable_and_ordered_like_their_strings() -> None:
    a, b = EntityInstanceId("a", "1"), EntityInstanceId("A", "1")
    assert {a, b} == {a} and {a: 1}[b] == 1
    with pytest.raises(AttributeError):
        a.key = "2"  # type: ignore[misc]
    assert pickle.loads(pickle.dumps(a)) == a
    # '-' sorts before '@' in strings: the lock order follows str(), not (name, key) tuples
    ids = [EntityInstanceId("a", "z"), EntityInstanceId("a-", "a")]
    assert sorted(ids) == sorted(ids, key=str) == [EntityInstanceId("a-", "a"), EntityInstanceId("a", "z")]
    assert a != "@a@1"


@pytest.mark.parametrize(("text", "problem"), [
    ("counter@x", "not an entity ID"), ("@counter", "not an entity ID"), ("", "not an entity ID"),
    ("@@key", "name cannot be empty"), ("@counter@", "key cannot be empty"),
])
def test_bad_entity_ids_say_what_is_wrong(text: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        EntityInstanceId.parse(text)


def test_entity_names_cannot_contain_the_separator() -> None:
    with pytest.raises(ValueError, match="contains '@'"):
        EntityInstanceId("a@b", "k")


def test_public_names_match_the_official_package() -> None:
    assert set(entities.__all__) == {"DurableEntity", "EntityContext", "EntityInstanceId", "EntityLock",
                                     "EntityMetadata", "EntityOperationFailedException"}
    assert task.EntityInstanceId is EntityInstanceId and task.EntityContext is EntityContext
    from durabletask.entities.entity_instance_id import EntityInstanceId as by_module
    assert by_module is EntityInstanceId
    import durabletask
    assert durabletask.entities is entities


# ---------------------------------------------------------------- the batch executor


def _sv(value: str | None) -> wrappers_pb2.StringValue | None:
    return None if value is None else wrappers_pb2.StringValue(value=value)


def _batch(instance_id: str, *ops: tuple[str, Any], state: Any = None) -> pb.EntityBatchRequest:
    return pb.EntityBatchRequest(
        instanceId=instance_id, entityState=_sv(None if state is None else json.dumps(state)),
        operations=[pb.OperationRequest(operation=name, requestId=f"r{i}",
                                        input=_sv(None if value is None else json.dumps(value)))
                    for i, (name, value) in enumerate(ops)])


def _run(entity: Any, request: pb.EntityBatchRequest | pb.EntityRequest,
         name: str | None = None) -> pb.EntityBatchResult:
    registry = Registry()
    registry.add_entity(entity, name)
    return execute_batch(registry, DEFAULT_DATA_CONVERTER, request, "token-1")


def _outcomes(result: pb.EntityBatchResult) -> list[Any]:
    out: list[Any] = []
    for r in result.results:
        if r.HasField("success"):
            out.append(json.loads(r.success.result.value) if r.success.HasField("result") else None)
        else:
            out.append(("failed", r.failure.failureDetails.errorType, r.failure.failureDetails.errorMessage))
    return out


def _state(result: pb.EntityBatchResult) -> Any:
    return json.loads(result.entityState.value) if result.HasField("entityState") else "<no state>"


def counter(ctx: EntityContext, value: Any) -> Any:
    current = ctx.get_state(int, 0)
    if ctx.operation == "add":
        ctx.set_state(current + value)
        ctx.signal_entity(EntityInstanceId("audit", ctx.entity_id.key), "log", value)
        if current + value > 100:
            raise ValueError("too big")
        return current + value
    if ctx.operation == "get":
        return current
    if ctx.operation == "delete":
        ctx.set_state(None)
        return None
    raise NotImplementedError(ctx.operation)


def test_function_entity_runs_each_operation_in_order_with_results_and_final_state() -> None:
    result = _run(counter, _batch("@counter@k", ("add", 5), ("add", 10), ("get", None), state=1))
    assert _outcomes(result) == [6, 16, 16]
    assert _state(result) == 16
    assert result.completionToken == "token-1"
    assert [a.sendSignal.instanceId for a in result.actions] == ["@audit@k", "@audit@k"]
    assert [a.id for a in result.actions] == [0, 1]
    assert not result.HasField("failureDetails") and not result.operationInfos


def test_a_failed_operation_rolls_back_its_own_state_and_actions_only() -> None:
    result = _run(counter, _batch("@counter@k", ("add", 5), ("add", 1000), ("add", 1)))
    outcomes = _outcomes(result)
    assert outcomes[0] == 5 and outcomes[2] == 6
    assert outcomes[1] == ("failed", "builtins.ValueError", "too big")
    assert _state(result) == 6
    assert [json.loads(a.sendSignal.input.value) for a in result.actions] == [5, 1]  # not 1000


def test_deleting_leaves_no_state() -> None:
    assert _state(_run(counter, _batch("@counter@k", ("delete", None), state=3))) == "<no state>"


def test_state_that_cannot_be_encoded_fails_that_operation_only() -> None:
    def bad(ctx: EntityContext, _: Any) -> None:
        ctx.set_state(object() if ctx.operation == "bad" else "fine")

    result = _run(bad, _batch("@bad@k", ("ok", None), ("bad", None)))
    assert _outcomes(result)[0] is None and _outcomes(result)[1][0] == "failed"
    assert _state(result) == "fine"


@dataclass
class Account:
    owner: str
    balance: int = 0


class Bank(DurableEntity):
    def deposit(self, amount: int) -> int:
        account = self.get_state(Account, Account("nobody"))
        account.balance += amount
        self.set_state(account)
        return account.balance

    def balance(self) -> int:
        return self.get_state(Account, Account("nobody")).balance

    def open(self, owner: str) -> None:
        self.set_state(Account(owner))
        self.schedule_new_orchestration("welcome", input=owner, instance_id=f"welcome-{owner}")

    def fail(self) -> None:
        self.set_state(Account("lost"))
        self.signal_entity("@bank@other", "deposit", 1)
        raise RuntimeError("nope")


def test_class_entity_methods_typed_state_and_default_delete() -> None:
    result = _run(Bank, _batch("@bank@acct", ("open", "kim"), ("Deposit", 7), ("deposit", 3), ("balance", None),
                               ("fail", None)))
    outcomes = _outcomes(result)
    assert outcomes[:4] == [None, 7, 10, 10]
    assert outcomes[4][0] == "failed" and outcomes[4][2] == "nope"
    assert _state(result) == {"owner": "kim", "balance": 10}
    assert [a.WhichOneof("operationActionType") for a in result.actions] == ["startNewOrchestration"]
    start = result.actions[0].startNewOrchestration
    assert (start.name, start.instanceId, start.input.value) == ("welcome", "welcome-kim", '"kim"')
    assert _state(_run(Bank, _batch("@bank@acct", ("delete", None), state={"owner": "x"}))) == "<no state>"


def test_class_entity_refuses_unknown_and_private_operations_listing_the_real_ones() -> None:
    outcomes = _outcomes(_run(Bank, _batch("@bank@a", ("withdraw", 1), ("_initialize_entity_context", None))))
    for outcome in outcomes:
        assert outcome[0] == "failed" and "has no operation" in outcome[2]
        assert "balance, delete, deposit, fail, open" in outcome[2]


def test_typed_state_that_does_not_fit_fails_the_operation_clearly() -> None:
    def reader(ctx: EntityContext, _: Any) -> int:
        return ctx.get_state(int, 0)

    outcome = _outcomes(_run(reader, _batch("@reader@k", ("get", None), state="text")))[0]
    assert outcome[0] == "failed" and outcome[1] == "builtins.TypeError" and "cannot be read as int" in outcome[2]


def test_unregistered_entity_fails_every_operation_naming_it_and_the_registered_ones() -> None:
    result = _run(counter, _batch("@missing@k", ("add", 1), ("get", None), state=5))
    assert len(result.results) == 2
    for r in result.results:
        details = r.failure.failureDetails
        assert details.errorType.endswith("EntityNotRegisteredError") and details.isNonRetriable
        assert "'missing'" in details.errorMessage and "'counter'" in details.errorMessage
    assert _state(result) == 5  # untouched


def test_entity_request_v2_shape_returns_operation_infos() -> None:
    request = pb.EntityRequest(instanceId="@counter@k", entityState=_sv("2"), operationRequests=[
        pb.HistoryEvent(entityOperationSignaled=pb.EntityOperationSignaledEvent(
            requestId="s1", operation="add", input=_sv("3"))),
        pb.HistoryEvent(entityOperationCalled=pb.EntityOperationCalledEvent(
            requestId="c1", operation="get", parentInstanceId=_sv("orch-1"), parentExecutionId=_sv("exec-1"))),
    ])
    result = _run(counter, request)
    assert _outcomes(result) == [5, 5]
    assert [i.requestId for i in result.operationInfos] == ["s1", "c1"]
    assert not result.operationInfos[0].HasField("responseDestination")
    destination = result.operationInfos[1].responseDestination
    assert (destination.instanceId, destination.executionId.value) == ("orch-1", "exec-1")


def test_entity_signal_with_a_time_and_entity_context_ids() -> None:
    seen: list[Any] = []

    def alarm(ctx: EntityContext, _: Any) -> None:
        seen.append((ctx.orchestration_id, ctx.entity_id, ctx.operation))
        ctx.signal_entity(ctx.entity_id, "ring", signal_time=datetime(2030, 1, 1, tzinfo=timezone.utc))

    result = _run(alarm, _batch("@alarm@a", ("set", None)))
    assert seen == [("@alarm@a", EntityInstanceId("alarm", "a"), "set")]
    signal = result.actions[0].sendSignal
    assert signal.scheduledTime.ToDatetime() == datetime(2030, 1, 1)


def test_async_entity_functions_are_refused_clearly() -> None:
    async def sleepy(ctx: EntityContext, _: Any) -> None:
        return None

    outcome = _outcomes(_run(sleepy, _batch("@sleepy@k", ("x", None))))[0]
    assert outcome[0] == "failed" and "'async def'" in outcome[2]


# ---------------------------------------------------------------- registration


def test_worker_registers_entities_by_lowercase_name_and_decorators_return_them_unchanged() -> None:
    worker = TaskHubGrpcWorker()
    assert worker.add_entity(counter) == "counter"

    @worker.entity
    class ShoppingCart(DurableEntity):
        pass

    @worker.entity(name="Named")
    def fn(ctx: EntityContext, _: Any) -> None:
        return None

    assert isinstance(ShoppingCart, type) and fn.__name__ == "fn"
    assert set(worker._registry.entities) == {"counter", "shoppingcart", "named"}
    assert worker._registry_filters().entities[1].name == "shoppingcart"
    with pytest.raises(ValueError, match="already registered"):
        worker.add_entity(Bank, name="COUNTER")
    with pytest.raises(ValueError, match="contains '@'"):
        worker.add_entity(Bank, name="a@b")
    assert issubclass(EntityNotRegisteredError, ValueError)
    assert task.get_entity_name(ShoppingCart) == "ShoppingCart"


# ---------------------------------------------------------------- metadata


def test_entity_metadata_reads_the_wire_form() -> None:
    wire = pb.EntityMetadata(instanceId="@counter@k", backlogQueueSize=2, lockedBy=_sv("orch-1"),
                             serializedState=_sv('{"owner": "kim", "balance": 3}'))
    wire.lastModifiedTime.FromDatetime(datetime(2024, 5, 1, 12, 0))
    meta = EntityMetadata.from_entity_metadata(wire, True)
    assert meta.id == EntityInstanceId("counter", "k") and meta.backlog_queue_size == 2
    assert meta.last_modified == datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc)
    assert meta.get_typed_state(Account) == Account("kim", 3)
    assert meta.get_state() == '{"owner": "kim", "balance": 3}'  # the official SDK returns it encoded
    assert meta.locked_by == "orch-1"
    with pytest.raises(ValueError, match="locked_by"):
        meta.get_locked_by()
    assert EntityMetadata.from_entity_metadata(wire, False).get_typed_state() is None
