"""kastor.util.ActorPool against a real local cluster: ordering, queueing, timeouts, failures."""

import os
import time

import kastor
import pytest
from kastor.util import ActorPool

SLOW = 1.5  # seconds a "slow" call takes: far longer than the short timeouts below


def _define_classes():
    """Local classes travel to the workers by value: the workers cannot import this test module."""

    class AppError(Exception):
        pass

    @kastor.remote
    class Worker:
        def __init__(self, name: str) -> None:
            self.name = name

        def ready(self) -> bool:
            return True

        def double(self, v: int, delay: float = 0.0) -> int:
            time.sleep(delay)  # makes the call slow; the tests never sleep to synchronise
            return 2 * v

        def tag(self, v: int) -> tuple[str, int]:
            return self.name, v

        def fail(self, msg: str) -> None:
            raise AppError(msg)

        def die(self) -> None:
            os._exit(1)

    return AppError, Worker


AppError, Worker = _define_classes()


def double(a, v):
    return a.double.remote(v)


def slow_double(a, v):
    return a.double.remote(v, SLOW)


def tag(a, v):
    return a.tag.remote(v)


pytestmark = pytest.mark.usefixtures("embedded_cluster")


def workers(*names: str) -> list:
    """Started and answering, so that start-up time cannot reorder results."""
    actors = [Worker.remote(n) for n in names]
    kastor.get([a.ready.remote() for a in actors])
    return actors


def test_map_keeps_input_order_even_when_later_values_finish_first():
    pool = ActorPool(workers("a", "b", "c", "d"))
    # The first value is the slowest, the last the fastest.
    results = pool.map(lambda a, v: a.double.remote(v, 0.3 * v), [3, 2, 1, 0])
    assert list(results) == [6, 4, 2, 0]
    assert not pool.has_next()


def test_map_submits_eagerly_and_queues_beyond_pool_size():
    pool = ActorPool(workers("a", "b"))
    results = pool.map(double, range(7))
    assert pool.has_next() and not pool.has_free()  # work started before iterating
    assert list(results) == [2 * v for v in range(7)]
    assert pool.has_free()


def test_map_unordered_yields_every_result_fastest_first():
    pool = ActorPool(workers("a", "b", "c"))
    results = list(pool.map_unordered(lambda a, v: a.double.remote(v, 0.6 * v), [2, 1, 0]))
    assert results[0] == 0
    assert sorted(results) == [0, 2, 4]
    assert sorted(pool.map_unordered(double, range(10))) == [2 * v for v in range(10)]


def test_map_drops_results_left_uncollected():
    pool = ActorPool(workers("a"))
    pool.submit(double, 100)
    pool.submit(double, 200)  # queued: the only actor is busy
    assert list(pool.map(double, [1, 2])) == [2, 4]
    assert list(pool.map_unordered(double, [])) == []


def test_submit_queues_when_no_actor_is_idle_and_get_next_keeps_order():
    pool = ActorPool(workers("a", "b"))
    assert pool.has_free() and not pool.has_next()
    for v in range(5):
        pool.submit(tag, v)
    assert not pool.has_free() and pool.has_next()
    results = [pool.get_next() for _ in range(5)]
    assert [v for _, v in results] == list(range(5))
    assert {name for name, _ in results[:2]} == {"a", "b"}  # each idle actor took one
    assert not pool.has_next() and pool.has_free()
    with pytest.raises(StopIteration):
        pool.get_next()
    with pytest.raises(StopIteration):
        pool.get_next_unordered()


def test_get_next_unordered_returns_the_first_ready_result():
    pool = ActorPool(workers("a", "b"))
    pool.submit(slow_double, 1)
    pool.submit(double, 2)
    assert pool.get_next_unordered() == 4
    assert pool.has_next()
    assert pool.get_next_unordered() == 2
    assert not pool.has_next()


def test_get_next_refuses_to_run_after_get_next_unordered_skipped_ahead():
    pool = ActorPool(workers("a", "b"))
    pool.submit(slow_double, 1)
    pool.submit(double, 2)
    assert pool.get_next_unordered() == 4
    with pytest.raises(ValueError, match="get_next_unordered"):
        pool.get_next()
    assert pool.get_next_unordered() == 2


def test_has_free_counts_queued_work_and_pop_idle_removes_only_idle_actors():
    a, b = workers("a", "b")
    pool = ActorPool([a, b])
    popped = pool.pop_idle()
    assert popped in (a, b)
    pool.submit(double, 1)
    assert not pool.has_free() and pool.pop_idle() is None
    pool.submit(double, 2)  # queued behind the remaining actor
    assert pool.get_next() == 2
    assert not pool.has_free()  # the freed actor went straight to the queued value
    assert pool.get_next() == 4
    assert pool.has_free()
    assert pool.pop_idle() not in (None, popped)
    assert pool.pop_idle() is None


def test_push_adds_an_actor_that_takes_queued_work():
    a, b = workers("a", "b")
    pool = ActorPool([a])
    pool.submit(tag, 1)
    pool.submit(tag, 2)
    with pytest.raises(ValueError, match="already belongs"):
        pool.push(a)  # busy
    pool.push(b)
    assert not pool.has_free()
    assert [pool.get_next(), pool.get_next()] == [("a", 1), ("b", 2)]
    with pytest.raises(ValueError, match="already belongs"):
        pool.push(b)  # idle
    assert pool.has_free()


def test_get_next_timeout_raises_and_keeps_the_task():
    pool = ActorPool(workers("a"))
    pool.submit(slow_double, 21)
    with pytest.raises(TimeoutError, match="Timed out waiting for result"):
        pool.get_next(timeout=0.1)
    assert pool.has_next() and not pool.has_free()
    assert pool.get_next(timeout=30) == 42


def test_get_next_ignore_if_timedout_drops_the_task_and_frees_its_actor():
    pool = ActorPool(workers("a"))
    pool.submit(slow_double, 21)
    with pytest.raises(TimeoutError, match="has been ignored"):
        pool.get_next(timeout=0.1, ignore_if_timedout=True)
    assert not pool.has_next() and pool.has_free()
    pool.submit(double, 5)
    assert pool.get_next() == 10  # not the dropped task's 42
    assert not pool.has_next()


def test_get_next_unordered_timeout_and_ignore_if_timedout():
    pool = ActorPool(workers("a", "b"))
    pool.submit(slow_double, 1)
    pool.submit(slow_double, 2)
    with pytest.raises(TimeoutError, match="Timed out waiting for result"):
        pool.get_next_unordered(timeout=0.1)
    assert pool.has_next() and not pool.has_free()
    with pytest.raises(TimeoutError, match="has been ignored"):
        pool.get_next_unordered(timeout=0.1, ignore_if_timedout=True)
    assert pool.has_next() and pool.has_free()  # one task dropped, the other kept
    assert pool.get_next_unordered(timeout=30) == 4  # the oldest task was the one dropped
    assert not pool.has_next()


def test_application_error_propagates_with_its_class_and_frees_the_actor():
    pool = ActorPool(workers("a"))
    pool.submit(lambda a, v: a.fail.remote(v), "boom")
    pool.submit(double, 3)
    with pytest.raises(AppError, match="boom"):
        pool.get_next()
    assert pool.get_next() == 6  # the failure did not cost the pool its actor
    pool.submit(lambda a, v: a.fail.remote(v), "again")
    with pytest.raises(AppError, match="again"):
        pool.get_next_unordered()
    with pytest.raises(AppError, match="in map"):
        list(pool.map(lambda a, v: a.fail.remote(v), ["in map"]))
    assert pool.has_free()


def test_dead_actor_leaves_the_pool():
    (a,) = workers("a")
    pool = ActorPool([a])
    pool.submit(lambda a, _: a.die.remote(), None)
    with pytest.raises(kastor.exceptions.ActorDiedError):
        pool.get_next()
    assert not pool.has_free() and pool.pop_idle() is None
    (b,) = workers("b")
    pool.push(b)
    assert list(pool.map(tag, [1])) == [("b", 1)]
