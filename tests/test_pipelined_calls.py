"""Pipelined actor calls: many calls in flight on one actor travel in batches (a frame of calls,
a frame of results, stored together: bench/README.md, "Pipelined calls"), and each call keeps
its own outcome: the caller's order, its own error, its own retry when the worker dies."""

from __future__ import annotations

import os

import kastor
import pytest
from kastor.runtime import exceptions

pytestmark = pytest.mark.usefixtures("embedded_cluster")

N = 2_000


@kastor.remote
class Log:
    def __init__(self) -> None:
        self.seen: list[int] = []

    def add(self, i: int) -> int:
        self.seen.append(i)
        return i

    def fail_at(self, i: int, bad: int) -> int:
        if i == bad:
            raise ValueError(f"call {i} fails")
        return i * 2

    def log(self) -> list[int]:
        return self.seen


@kastor.remote
class AsyncEcho:
    async def echo(self, i: int) -> int:
        return i


@kastor.remote
class DiesOnce:
    """Kills its own process on call `at`, the first time only (the marker file remembers)."""

    def call(self, i: int, at: int, marker: str) -> int:
        if i == at and not os.path.exists(marker):
            open(marker, "w").close()
            os._exit(1)
        return i


def test_pipelined_calls_run_in_the_callers_order_and_each_gets_its_own_result() -> None:
    a = Log.remote()
    refs = [a.add.remote(i) for i in range(N)]
    assert kastor.get(refs) == list(range(N))
    assert kastor.get(a.log.remote()) == list(range(N))


def test_one_failing_call_among_a_batch_fails_alone() -> None:
    a = Log.remote()
    bad = N // 2
    refs = [a.fail_at.remote(i, bad) for i in range(N)]
    for i, ref in enumerate(refs):
        if i == bad:
            with pytest.raises(ValueError, match=f"call {bad} fails"):
                kastor.get(ref)
        else:
            assert kastor.get(ref) == 2 * i


def test_an_async_actor_answers_every_pipelined_call_with_its_own_result() -> None:
    a = AsyncEcho.remote()
    assert kastor.get([a.echo.remote(i) for i in range(N)]) == list(range(N))


def test_a_worker_killed_mid_batch_is_retried_with_max_task_retries(tmp_path) -> None:
    a = DiesOnce.options(max_restarts=1, max_task_retries=-1).remote()
    marker = str(tmp_path / "died")
    refs = [a.call.remote(i, 300, marker) for i in range(1_000)]
    assert kastor.get(refs) == list(range(1_000))
    assert os.path.exists(marker)


def test_a_worker_killed_mid_batch_fails_the_calls_it_took_without_retries(tmp_path) -> None:
    a = DiesOnce.options(max_restarts=1, max_task_retries=0).remote()
    marker = str(tmp_path / "died")
    refs = [a.call.remote(i, 300, marker) for i in range(1_000)]
    outcomes = []
    for i, ref in enumerate(refs):
        try:
            outcomes.append(kastor.get(ref) == i)
        except exceptions.ActorError:
            outcomes.append(None)
    # The calls just before it ran too, but their results may have died with the worker (as in
    # Ray): those fail as lost, like every call that was sent and not answered.
    assert outcomes[0] is True
    assert outcomes[300] is None, "the call that killed its worker fails with an actor error"
    assert all(o in (True, None) for o in outcomes), "every call either returned its own value or failed as lost"
    assert kastor.get(a.call.remote(-1, 300, marker)) == -1  # the restarted actor serves
