"""Concurrency groups of async actors, as in Ray 2.x (its test_concurrency_group.py): each group
has an event loop on a thread of its own, so a call that blocks its group's thread (a sync
sleep inside an `async def`) holds up neither the default group nor the others."""

import asyncio
import threading

import kastor
import pytest

DEADLINE_S = 30


@pytest.fixture(autouse=True, scope="module")
def _cluster(embedded_cluster):
    yield


@kastor.remote(concurrency_groups={"io": 2, "compute": 4})
class Loops:
    def __init__(self):
        self.loop_at_init = asyncio.get_event_loop()
        self.gate = threading.Event()

    @kastor.method(concurrency_group="io")
    async def io_async(self) -> tuple[int, int]:
        return threading.get_ident(), id(asyncio.get_running_loop())

    @kastor.method(concurrency_group="io")
    def io_sync(self) -> tuple[int, int]:
        return threading.get_ident(), id(asyncio.get_event_loop())

    @kastor.method(concurrency_group="compute")
    def compute(self) -> tuple[int, int]:
        return threading.get_ident(), id(asyncio.get_event_loop())

    def default(self) -> tuple[int, int, bool]:
        loop = asyncio.get_event_loop()
        return threading.get_ident(), id(loop), loop is self.loop_at_init

    @kastor.method(concurrency_group="io")
    async def block_io(self) -> str:
        self.gate.wait(DEADLINE_S)  # blocks the io loop's thread, not just this coroutine
        return "unblocked"

    async def block_default(self) -> str:
        self.gate.wait(DEADLINE_S)
        return "unblocked"

    @kastor.method(concurrency_group="compute")
    def open_gate(self) -> str:
        self.gate.set()
        return "opened"


def test_each_group_runs_on_its_own_loop_and_thread():
    a = Loops.remote()
    io_async, io_sync = kastor.get([a.io_async.remote(), a.io_sync.remote()], timeout=DEADLINE_S)
    compute = kastor.get(a.compute.remote(), timeout=DEADLINE_S)
    *default, same_loop_as_init = kastor.get(a.default.remote(), timeout=DEADLINE_S)
    assert io_async == io_sync, "sync and async methods of one group share its loop and thread"
    assert len({io_async, compute, tuple(default)}) == 3, "the groups do not share a thread or loop"
    assert same_loop_as_init, "the constructor runs on the default group's loop, as in Ray"
    assert kastor.get(a.io_sync.options(concurrency_group="compute").remote(), timeout=DEADLINE_S) == compute


def test_a_blocked_group_does_not_block_the_default_group_or_others():
    a = Loops.remote()
    blocked = [a.block_io.remote(), a.block_io.remote()]
    assert kastor.get(a.default.remote(), timeout=DEADLINE_S)[2]
    assert kastor.get(a.compute.remote(), timeout=DEADLINE_S)
    assert kastor.get(a.open_gate.remote(), timeout=DEADLINE_S) == "opened"
    assert kastor.get(blocked, timeout=DEADLINE_S) == ["unblocked"] * 2


def test_a_blocked_default_group_does_not_block_the_others():
    a = Loops.remote()
    blocked = a.block_default.remote()
    assert kastor.get(a.io_async.remote(), timeout=DEADLINE_S)
    assert kastor.get(a.open_gate.remote(), timeout=DEADLINE_S) == "opened"
    assert kastor.get(blocked, timeout=DEADLINE_S) == "unblocked"


@kastor.remote(concurrency_groups={"a": 1, "b": 1})
class Ordered:
    def __init__(self):
        self.seen = {"a": [], "b": []}
        self.gate = threading.Event()

    @kastor.method(concurrency_group="a")
    def put_a(self, i: int) -> None:
        if i == 0:
            self.gate.wait(DEADLINE_S)  # group a stalls on its first call
        self.seen["a"].append(i)

    @kastor.method(concurrency_group="b")
    def put_b(self, i: int) -> None:
        self.seen["b"].append(i)

    @kastor.method(concurrency_group="b")
    def open_and_read(self) -> list[int]:
        self.gate.set()
        return list(self.seen["b"])

    def seen_so_far(self) -> dict[str, list[int]]:
        return self.seen


@pytest.mark.parametrize("cls", [Ordered, Ordered.options(max_concurrency=3)], ids=["default", "threaded"])
def test_per_group_ordering_is_independent(cls):
    actor = cls.remote()
    a_calls = [actor.put_a.remote(i) for i in range(20)]
    b_calls = [actor.put_b.remote(i) for i in range(20)]
    assert kastor.get(actor.open_and_read.remote(), timeout=DEADLINE_S) == list(range(20)), \
        "group b ran all its calls, in order, while group a was stalled"
    kastor.get(a_calls + b_calls, timeout=DEADLINE_S)
    assert kastor.get(actor.seen_so_far.remote(), timeout=DEADLINE_S) == {"a": list(range(20)), "b": list(range(20))}


@kastor.remote(concurrency_groups={"a": 1, "b": 1})
class AsyncOrdered:
    def __init__(self):
        self.seen = {"a": [], "b": []}
        self.gate = asyncio.Event()

    @kastor.method(concurrency_group="a")
    async def put_a(self, i: int) -> None:
        if i == 0:
            await asyncio.wait_for(self.gate.wait(), DEADLINE_S)
        self.seen["a"].append(i)

    @kastor.method(concurrency_group="b")
    async def put_b(self, i: int) -> None:
        self.seen["b"].append(i)

    @kastor.method(concurrency_group="b")
    async def read_b(self) -> list[int]:
        return list(self.seen["b"])



def test_async_per_group_ordering_is_independent():
    actor = AsyncOrdered.remote()
    a_calls = [actor.put_a.remote(i) for i in range(20)]
    b_calls = [actor.put_b.remote(i) for i in range(20)]
    kastor.get(b_calls, timeout=DEADLINE_S)  # group a's first call is still waiting
    assert kastor.get(actor.read_b.remote(), timeout=DEADLINE_S) == list(range(20))
    ready, _ = kastor.wait(a_calls, num_returns=len(a_calls), timeout=0)
    assert ready == [], "group a's calls wait behind its first, in order"
