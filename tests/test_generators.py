"""Generator tasks and actor methods return an ObjectRefGenerator, as in Ray 2.x.

The items are owned by the caller and stream to it as they are yielded; an exception raised
after k items is the value of ref k+1.
"""

import asyncio
import concurrent.futures
import os
import sys

import cloudpickle
import kastor
import numpy as np
import pytest
from kastor.exceptions import TaskCancelledError
from support import process_gone, wait_until

cloudpickle.register_pickle_by_value(sys.modules[__name__])

DEADLINE_S = 60
pytestmark = pytest.mark.usefixtures("embedded_cluster")


@kastor.remote
def count_to(n: int):
    for i in range(n):
        yield i * 10


@kastor.remote
def fails_after(n: int):
    yield from range(n)
    raise ValueError(f"failed after {n} items")


@kastor.remote
def big_arrays(n: int, size: int):
    for i in range(n):
        yield np.full(size, i, dtype=np.int64)


@kastor.remote
class Gate:
    def __init__(self) -> None:
        self.opened = asyncio.Event()

    async def wait_open(self) -> None:
        await self.opened.wait()

    async def open(self) -> None:
        self.opened.set()


@kastor.remote
def first_then_wait(gate):
    yield "first"
    kastor.get(gate.wait_open.remote())
    yield "second"


@kastor.remote
def forever():
    i = 0
    while True:
        yield i
        i += 1


@kastor.remote
class Source:
    def letters(self, word: str):
        yield from word

    def pid(self) -> int:
        return os.getpid()


@kastor.remote
class AsyncSource:
    async def ticks(self, n: int):
        for i in range(n):
            await asyncio.sleep(0)
            yield i


def test_a_generator_task_yields_refs_in_order():
    gen = count_to.remote(4)
    assert isinstance(gen, kastor.ObjectRefGenerator)
    refs = list(gen)
    assert all(isinstance(r, kastor.ObjectRef) for r in refs)
    assert kastor.get(refs, timeout=DEADLINE_S) == [0, 10, 20, 30]
    with pytest.raises(StopIteration):
        next(gen)
    assert list(count_to.remote(0)) == []


def test_an_error_is_the_item_after_the_last_one():
    gen = fails_after.remote(2)
    assert kastor.get(next(gen), timeout=DEADLINE_S) == 0
    assert kastor.get(next(gen), timeout=DEADLINE_S) == 1
    with pytest.raises(ValueError, match="failed after 2 items"):
        kastor.get(next(gen), timeout=DEADLINE_S)
    with pytest.raises(StopIteration):
        next(gen)


def test_large_items_go_through_the_store_and_belong_to_the_caller():
    size = 256 * 1024  # 2 MiB each: over the inline limit
    arrays = [kastor.get(r, timeout=DEADLINE_S) for r in big_arrays.remote(3, size)]
    assert [int(a[0]) for a in arrays] == [0, 1, 2] and all(a.shape == (size,) for a in arrays)


def test_actor_generator_items_outlive_the_actor():
    source = Source.remote()
    refs = list(source.letters.remote("abc"))
    pid = kastor.get(source.pid.remote())
    kastor.kill(source)
    wait_until(lambda: process_gone(pid), "the actor's process to end")
    assert kastor.get(refs, timeout=DEADLINE_S) == ["a", "b", "c"], "the caller owns the items"


def test_async_generator_method_with_async_for():
    source = AsyncSource.remote()

    async def collect():
        return [await ref async for ref in source.ticks.remote(3)]

    assert asyncio.run(collect()) == [0, 1, 2]


def test_dynamic_num_returns_is_refused_with_the_alternative():
    with pytest.raises(ValueError, match="streaming"):
        count_to.options(num_returns="dynamic")
    with pytest.raises(ValueError, match="num_returns"):
        count_to.options(num_returns="many")


def test_items_stream_while_the_generator_runs():
    gate = Gate.remote()
    gen = first_then_wait.remote(gate)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        try:
            first = pool.submit(next, gen).result(timeout=DEADLINE_S)  # the generator is still waiting
            assert kastor.get(first, timeout=DEADLINE_S) == "first"
        finally:
            gate.open.remote()
    assert [kastor.get(r, timeout=DEADLINE_S) for r in gen] == ["second"]


def test_an_endless_generator_streams_until_cancelled():
    gen = forever.remote()
    assert [kastor.get(next(gen), timeout=DEADLINE_S) for _ in range(5)] == [0, 1, 2, 3, 4]
    kastor.cancel(gen)
    *rest, last = list(gen)
    assert [kastor.get(r) for r in rest] == list(range(5, 5 + len(rest))), "the items before the cancel"
    with pytest.raises(TaskCancelledError):
        kastor.get(last, timeout=DEADLINE_S)
