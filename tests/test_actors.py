"""Actors on a real local cluster, with Ray 2.x semantics.

Covers: state kept across calls, per-caller ordering, constructor arguments (ObjectRefs are
resolved), multiple returns, handles travelling to tasks and other actors, actors creating
actors, named actors and namespaces, `kill`, application errors, `exit_actor`, constructor
failures, the runtime context, resource accounting (idle actors hold no CPU, an actor asking
for every CPU waits) and collection of an actor whose last handle is dropped.

Nothing here sleeps to synchronise: tests poll with a deadline or use `get(timeout=...)`.
"""

import asyncio
import gc
import os

import kastor
import pytest
from kastor.exceptions import ActorDiedError, GetTimeoutError, RayActorError, TaskError
from kastor.util.state import list_actors
from support import DEADLINE_S, process_gone, wait_until

pytestmark = pytest.mark.usefixtures("embedded_cluster")


def name_is_free(name: str, namespace: str | None = None) -> bool:
    try:
        kastor.get_actor(name, namespace=namespace)
    except ValueError:
        return True
    return False


class AppError(Exception):
    """An application error raised inside an actor method."""


@kastor.remote
class Counter:
    def __init__(self, start: int = 0) -> None:
        self.value = start

    def incr(self, by: int = 1) -> int:
        self.value += by
        return self.value

    def get(self) -> int:
        return self.value

    def pid(self) -> int:
        return os.getpid()

    def fail(self, msg: str) -> None:
        self.value = -999  # a failing call may still change state; Ray does not roll it back
        raise AppError(msg)

    def fail_cleanly(self, msg: str) -> None:
        raise AppError(msg)

    def actor_id(self) -> str | None:
        return kastor.get_runtime_context().get_actor_id()

    def task_name(self) -> str | None:
        return kastor.get_runtime_context().get_task_name()

    def leave(self) -> None:
        kastor.actor.exit_actor()

    @kastor.method(num_returns=2)
    def pair(self) -> tuple[int, int]:
        return self.value, self.value * 10

    def triple(self) -> tuple[int, int, int]:
        return 1, 2, 3


@kastor.remote
class Log:
    def __init__(self) -> None:
        self.items: list[int] = []

    def append(self, x: int) -> None:
        self.items.append(x)

    def read(self) -> list[int]:
        return self.items


@kastor.remote
class Holder:
    """Keeps its constructor arguments so the test can see what arrived."""

    def __init__(self, first, *, second, nested) -> None:
        self.args = (first, second, nested)

    def kinds(self) -> tuple[str, str, str]:
        return tuple(type(a).__name__ for a in self.args)

    def values(self):
        first, second, nested = self.args
        return first, second, kastor.get(nested[0])


@kastor.remote
class Caller:
    """Uses another actor's handle, received in its constructor or as a method argument."""

    def __init__(self, counter) -> None:
        self.counter = counter

    def bump_own(self, n: int) -> int:
        return kastor.get([self.counter.incr.remote() for _ in range(n)])[-1]

    def bump_given(self, counter, n: int) -> int:
        return kastor.get([counter.incr.remote() for _ in range(n)])[-1]


@kastor.remote
class Parent:
    """An actor that creates a child actor and calls it."""

    def __init__(self) -> None:
        self.child = Counter.remote(100)

    def use_child(self, n: int) -> int:
        return kastor.get([self.child.incr.remote() for _ in range(n)])[-1]

    def spawn_and_call(self) -> tuple[int, int]:
        other = Counter.remote(7)
        return kastor.get(other.incr.remote()), kastor.get(other.pid.remote())


@kastor.remote
class Broken:
    def __init__(self) -> None:
        raise ValueError("constructor exploded: marker-4711")

    def ping(self) -> str:
        return "pong"


@kastor.remote
class Gate:
    """Holds values back until opened; counts who reached it."""

    def __init__(self) -> None:
        self.opened = asyncio.Event()
        self.arrived = 0

    async def wait_open(self, value):
        await self.opened.wait()
        return value

    async def open(self) -> None:
        self.opened.set()

    async def arrive(self) -> None:
        self.arrived += 1

    async def arrivals(self) -> int:
        return self.arrived


@kastor.remote
def bump_in_task(counter, n: int) -> int:
    return kastor.get([counter.incr.remote() for _ in range(n)])[-1]


@kastor.remote
def arrive_then_bump(gate, counter, n: int) -> int:
    kastor.get(gate.arrive.remote())
    return kastor.get([counter.incr.remote() for _ in range(n)])[-1]


@kastor.remote
def make_list() -> list[int]:
    return [4, 5, 6]


@kastor.remote
def square(x: int) -> int:
    return x * x


@kastor.remote
def actor_id_in_task() -> str | None:
    return kastor.get_runtime_context().get_actor_id()


# ---- state and ordering ----


def test_state_persists_across_calls():
    c = Counter.remote(10)
    assert kastor.get(c.incr.remote()) == 11
    assert kastor.get(c.incr.remote(5)) == 16
    assert kastor.get(c.get.remote()) == 16
    other = Counter.remote(10)
    assert kastor.get(other.get.remote()) == 10, "two actors of one class must not share state"


def test_calls_from_one_caller_run_in_submission_order():
    log = Log.remote()
    for i in range(500):
        log.append.remote(i)  # fire and forget: only the order of execution matters
    assert kastor.get(log.read.remote(), timeout=60) == list(range(500))


def test_results_come_back_in_order_without_waiting():
    c = Counter.remote()
    refs = [c.incr.remote() for _ in range(200)]
    assert kastor.get(refs, timeout=60) == list(range(1, 201))


# ---- arguments and returns ----


def test_constructor_object_ref_args_are_resolved():
    put_ref = kastor.put([1, 2, 3])
    task_ref = make_list.remote()
    inner = kastor.put("inner")
    h = Holder.remote(put_ref, second=task_ref, nested=[inner])
    # Top-level refs (positional or keyword) arrive as values; a ref nested in a list stays a ref.
    assert kastor.get(h.kinds.remote()) == ("list", "list", "list")
    assert kastor.get(h.values.remote()) == ([1, 2, 3], [4, 5, 6], "inner")


def test_method_decorator_num_returns():
    c = Counter.remote(3)
    refs = c.pair.remote()
    assert isinstance(refs, list) and len(refs) == 2
    a, b = refs
    assert kastor.get(b) == 30
    assert kastor.get(a) == 3


def test_method_options_num_returns():
    c = Counter.remote()
    first, second, third = c.triple.options(num_returns=3).remote()
    assert kastor.get([third, first, second]) == [3, 1, 2]
    # .options() overrides a decorator's num_returns too
    whole = c.pair.options(num_returns=1).remote()
    assert kastor.get(whole) == (0, 0)


# ---- handles travelling ----


def test_handle_passed_to_task():
    c = Counter.remote()
    assert kastor.get(bump_in_task.remote(c, 5), timeout=60) == 5
    assert kastor.get(c.get.remote()) == 5, "the task must have called the same actor"
    kastor.get(c.incr.remote())
    assert kastor.get(bump_in_task.remote(c, 2), timeout=60) == 8


def test_handle_passed_to_actor_constructor_and_method():
    c = Counter.remote()
    caller = Caller.remote(c)
    assert kastor.get(caller.bump_own.remote(3), timeout=60) == 3
    other = Counter.remote(50)
    assert kastor.get(caller.bump_given.remote(other, 2), timeout=60) == 52
    assert kastor.get([c.get.remote(), other.get.remote()]) == [3, 52]


def test_handle_can_reach_a_borrower_before_its_actor_is_registered():
    gate = Gate.remote()
    late = Counter.remote(gate.wait_open.remote(50))  # its CreateActor waits for this argument
    bumped = arrive_then_bump.remote(gate, late, 2)
    wait_until(lambda: kastor.get(gate.arrivals.remote()) == 1, "the task to start calling the handle")
    assert late._actor_id.hex() not in {a["actor_id"] for a in list_actors()}, "registered too early"
    gate.open.remote()
    assert kastor.get(bumped, timeout=60) == 52


def test_actor_creates_and_calls_another_actor():
    p = Parent.remote()
    assert kastor.get(p.use_child.remote(2), timeout=60) == 102
    assert kastor.get(p.use_child.remote(1), timeout=60) == 103, "the child keeps its state"
    value, child_pid = kastor.get(p.spawn_and_call.remote(), timeout=60)
    assert value == 8, "an actor created inside a method answers that method"
    assert child_pid != os.getpid()


# ---- named actors ----


def test_named_actor_lookup():
    a = Counter.options(name="lookup-me").remote()
    kastor.get(a.incr.remote(41))
    b = kastor.get_actor("lookup-me")
    assert kastor.get(b.incr.remote()) == 42
    assert kastor.get(a.get.remote()) == 42, "the looked-up handle names the same actor"
    kastor.kill(a)


def test_duplicate_name_raises_value_error():
    a = Counter.options(name="taken").remote(1)
    kastor.get(a.get.remote())
    with pytest.raises(ValueError):
        Counter.options(name="taken").remote(2)
    assert kastor.get(kastor.get_actor("taken").get.remote()) == 1, "the first actor keeps the name"
    kastor.kill(a)


def test_get_if_exists_returns_existing_actor():
    a = Counter.options(name="reuse", get_if_exists=True).remote(5)
    assert kastor.get(a.incr.remote()) == 6
    b = Counter.options(name="reuse", get_if_exists=True).remote(100)
    assert kastor.get(b.get.remote()) == 6, "get_if_exists must return the live actor, not build a new one"
    assert kastor.get(b.pid.remote()) == kastor.get(a.pid.remote())
    kastor.kill(a)


def test_namespaces_separate_names():
    a = Counter.options(name="shared-name", namespace="ns1").remote(1)
    b = Counter.options(name="shared-name", namespace="ns2").remote(2)
    assert kastor.get([a.get.remote(), b.get.remote()]) == [1, 2]
    assert kastor.get(kastor.get_actor("shared-name", namespace="ns1").get.remote()) == 1
    assert kastor.get(kastor.get_actor("shared-name", namespace="ns2").get.remote()) == 2
    with pytest.raises(ValueError):
        kastor.get_actor("shared-name")  # not in the driver's own namespace
    kastor.kill(a)
    kastor.kill(b)


def test_get_actor_unknown_name_raises_value_error():
    with pytest.raises(ValueError):
        kastor.get_actor("no-such-actor-anywhere")


# ---- kill and errors ----


def test_kill_fails_later_calls_and_frees_the_name():
    a = Counter.options(name="doomed").remote()
    assert kastor.get(a.incr.remote()) == 1
    pid = kastor.get(a.pid.remote())
    kastor.kill(a)
    with pytest.raises(ActorDiedError) as info:
        kastor.get(a.incr.remote(), timeout=DEADLINE_S)
    assert isinstance(info.value, RayActorError)
    wait_until(lambda: process_gone(pid), "the killed actor's process to exit")
    wait_until(lambda: name_is_free("doomed"), "the killed actor's name to be freed")
    again = Counter.options(name="doomed").remote(10)
    assert kastor.get(again.get.remote()) == 10
    kastor.kill(again)


def test_application_error_keeps_actor_serving():
    c = Counter.remote()
    assert kastor.get(c.incr.remote(3)) == 3
    with pytest.raises(AppError) as info:
        kastor.get(c.fail_cleanly.remote("bad input 123"))
    assert isinstance(info.value, TaskError)
    assert "bad input 123" in str(info.value)
    assert kastor.get(c.get.remote()) == 3, "state survives an application error"
    assert kastor.get(c.incr.remote()) == 4, "the actor keeps serving"
    with pytest.raises(AppError):
        kastor.get(c.fail.remote("changes state first"))
    assert kastor.get(c.get.remote()) == -999, "a failed call's side effects are kept (no rollback)"


def test_exit_actor_ends_actor_without_restart():
    a = Counter.options(max_restarts=2).remote()
    pid = kastor.get(a.pid.remote())
    with pytest.raises(ActorDiedError):
        kastor.get(a.leave.remote(), timeout=DEADLINE_S)
    with pytest.raises(ActorDiedError):
        kastor.get(a.incr.remote(), timeout=DEADLINE_S)
    wait_until(lambda: process_gone(pid), "the exited actor's process to end")
    # Had it been restarted (max_restarts=2), this call would be answered by a new process.
    with pytest.raises(ActorDiedError):
        kastor.get(a.pid.remote(), timeout=DEADLINE_S)


def test_ray_ready_and_ray_terminate_builtins():
    a = Counter.options(max_restarts=2).remote()
    assert kastor.get(a.__ray_ready__.remote(), timeout=DEADLINE_S) is True
    pid = kastor.get(a.pid.remote())
    queued = [a.incr.remote() for _ in range(3)]
    a.__ray_terminate__.remote()
    assert kastor.get(queued) == [1, 2, 3], "calls queued before __ray_terminate__ still run"
    wait_until(lambda: process_gone(pid), "the terminated actor's process to end")
    with pytest.raises(ActorDiedError):
        kastor.get(a.pid.remote(), timeout=DEADLINE_S)  # not restarted, despite max_restarts=2


def test_list_named_actors():
    here = kastor.get_runtime_context().namespace
    mine = Counter.options(name="listed-here").remote()
    other = Counter.options(name="listed-there", namespace="elsewhere").remote()
    kastor.get([mine.get.remote(), other.get.remote()])
    assert "listed-here" in kastor.util.list_named_actors()
    assert "listed-there" not in kastor.util.list_named_actors()
    everywhere = kastor.util.list_named_actors(all_namespaces=True)
    assert {"name": "listed-here", "namespace": here} in everywhere
    assert {"name": "listed-there", "namespace": "elsewhere"} in everywhere
    kastor.kill(mine)
    assert "listed-here" not in kastor.util.list_named_actors(), "a killed actor's name is free"
    kastor.kill(other)


def test_constructor_error_kills_actor_with_its_message():
    b = Broken.remote()
    with pytest.raises(ActorDiedError) as info:
        kastor.get(b.ping.remote(), timeout=DEADLINE_S)
    assert "marker-4711" in str(info.value)
    with pytest.raises(ActorDiedError):
        kastor.get(b.ping.remote(), timeout=DEADLINE_S)


def test_runtime_context_actor_id():
    a, b = Counter.remote(), Counter.remote()
    id_a, id_b = kastor.get([a.actor_id.remote(), b.actor_id.remote()])
    assert id_a == a._actor_id.hex()
    assert id_b == b._actor_id.hex()
    assert id_a != id_b
    assert kastor.get_runtime_context().get_actor_id() is None, "the driver is not an actor"
    assert kastor.get(actor_id_in_task.remote()) is None, "a plain task is not an actor"


@kastor.remote
def task_name() -> str | None:
    return kastor.get_runtime_context().get_task_name()


def test_runtime_context_task_name():
    assert kastor.get(task_name.remote()) == "task_name"
    assert kastor.get(task_name.options(name="renamed").remote()) == "renamed"
    assert kastor.get(Counter.remote().task_name.remote()) == "Counter.task_name"
    assert kastor.get_runtime_context().get_task_name() is None, "the driver runs no task"


# ---- resources ----


def test_many_idle_actors_fit_on_two_cpus():
    actors = [Counter.remote(i) for i in range(30)]
    try:
        pids = kastor.get([a.pid.remote() for a in actors], timeout=120)
        assert len(set(pids)) == 30, "every actor runs in its own process"
        # All 30 are alive at once: each still answers from its first process, with its own state.
        assert kastor.get([a.incr.remote() for a in actors], timeout=60) == [i + 1 for i in range(30)]
        assert kastor.get([a.pid.remote() for a in actors], timeout=60) == pids
        # Idle actors hold no CPU, so a task still gets one.
        assert kastor.get(square.remote(7), timeout=60) == 49
    finally:
        for a in actors:
            kastor.kill(a)


def test_actor_needing_all_cpus_waits_for_a_kill():
    holder = Counter.options(num_cpus=1).remote()
    kastor.get(holder.pid.remote(), timeout=60)  # placed, holding one of the two CPUs
    big = Counter.options(num_cpus=2).remote(9)
    ref = big.get.remote()
    with pytest.raises(GetTimeoutError):
        kastor.get(ref, timeout=1)
    kastor.kill(holder)
    assert kastor.get(ref, timeout=60) == 9
    kastor.kill(big)


def test_dropping_last_handle_kills_unnamed_actor():
    a = Counter.remote()
    pid = kastor.get(a.pid.remote())
    assert not process_gone(pid)
    del a
    gc.collect()
    wait_until(lambda: process_gone(pid), "the actor's process to exit after its last handle was dropped")

