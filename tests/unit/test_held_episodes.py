"""Holding the completion of an episode that started nothing (`HeldEpisodes`), on a real event loop."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

from durabletask.internal import orchestrator_service_pb2 as pb
from durabletask.internal.runtime.held_episodes import HeldEpisodes
from durabletask.internal.runtime.in_flight import WorkItem

WINDOW = 0.05


def _run(test: Coroutine[Any, Any, None]) -> None:
    asyncio.run(test)


class _Sent:
    def __init__(self) -> None:
        self.sent: list[tuple[str, str]] = []

    def __call__(self, item: WorkItem, response: pb.OrchestratorResponse) -> None:
        self.sent.append((item.token, response.instanceId))


def _episode(instance_id: str) -> tuple[WorkItem, pb.OrchestratorResponse]:
    return WorkItem("orchestration", f"token-{instance_id}"), pb.OrchestratorResponse(instanceId=instance_id)


def test_an_episode_awaiting_fewer_than_two_tasks_or_with_no_window_is_not_held() -> None:
    async def test() -> None:
        sent = _Sent()
        item, response = _episode("a")
        assert not HeldEpisodes(WINDOW, sent).hold(item, response, (7,))
        assert not HeldEpisodes(WINDOW, sent).hold(item, response, ())
        assert not HeldEpisodes(0, sent).hold(item, response, (7, 8, 9))
        assert sent.sent == []  # the caller sends what was not held

    _run(test())


def test_a_held_episode_is_sent_once_when_the_window_ends() -> None:
    async def test() -> None:
        sent = _Sent()
        held = HeldEpisodes(WINDOW, sent)
        item, response = _episode("a")
        assert held.hold(item, response, (1, 2, 3))
        assert "a" in held
        await asyncio.sleep(WINDOW / 5)
        assert sent.sent == []
        await asyncio.sleep(WINDOW * 2)
        assert sent.sent == [("token-a", "a")]
        assert "a" not in held
        held.release("a")
        held.release_all()
        assert sent.sent == [("token-a", "a")]

    _run(test())


def test_a_held_episode_is_sent_as_soon_as_this_worker_completed_every_awaited_activity() -> None:
    async def test() -> None:
        sent = _Sent()
        held = HeldEpisodes(10.0, sent)
        item, response = _episode("a")
        held.hold(item, response, (1, 2))
        held.activity_done("a", 1)
        held.activity_done("b", 2)  # another instance's activity
        held.activity_done("a", 1)  # (the same one again)
        assert sent.sent == []
        held.activity_done("a", 2)
        assert sent.sent == [("token-a", "a")]

    _run(test())


def test_release_and_release_all_send_what_is_held_and_cancel_its_timer() -> None:
    async def test() -> None:
        sent = _Sent()
        held = HeldEpisodes(WINDOW, sent)
        for instance_id in ("a", "b", "c"):
            held.hold(*_episode(instance_id), (1, 2))
        held.release("b")
        assert sent.sent == [("token-b", "b")]
        held.release_all()
        assert sorted(sent.sent) == [("token-a", "a"), ("token-b", "b"), ("token-c", "c")]
        await asyncio.sleep(WINDOW * 2)
        assert len(sent.sent) == 3  # the timers of released episodes do not send them again

    _run(test())


def test_holding_an_instance_that_is_already_held_sends_the_older_episode_first() -> None:
    async def test() -> None:
        sent = _Sent()
        held = HeldEpisodes(10.0, sent)
        first = WorkItem("orchestration", "first"), pb.OrchestratorResponse(instanceId="a")
        second = WorkItem("orchestration", "second"), pb.OrchestratorResponse(instanceId="a")
        held.hold(*first, (1, 2))
        held.hold(*second, (1, 2))
        assert sent.sent == [("first", "a")]
        held.release_all()
        assert sent.sent == [("first", "a"), ("second", "a")]

    _run(test())


def test_results_this_worker_sent_before_the_episode_are_not_waited_for() -> None:
    async def test() -> None:
        sent = _Sent()
        held = HeldEpisodes(10.0, sent)
        scheduling = WorkItem("orchestration", "t1"), pb.OrchestratorResponse(
            instanceId="a", actions=[pb.OrchestratorAction(id=1)])
        assert not held.hold(*scheduling, (1, 2, 3, 4, 5))  # it sent actions: never held
        for task_id in (1, 2, 3, 4):
            held.activity_done("a", task_id)
        # The backend dispatched the next episode with result 1 only; 2, 3 and 4 are in its inbox, so
        # only 5 is missing: holding would gain nothing.
        assert not held.hold(WorkItem("orchestration", "t2"), pb.OrchestratorResponse(instanceId="a"), (2, 3, 4, 5))
        # A later episode awaits 3 to 6: 3 and 4 are on their way, 5 and 6 are missing, so it is held
        # until this worker has sent both.
        assert held.hold(WorkItem("orchestration", "t3"), pb.OrchestratorResponse(instanceId="a"), (3, 4, 5, 6))
        held.activity_done("a", 5)
        assert sent.sent == []
        held.activity_done("a", 6)
        assert sent.sent == [("t3", "a")]

    _run(test())
