"""Objects on a real two-CPU local cluster: put/get, large values, refs as values, futures.

Small values travel inline; values over the inline limit (100 KiB) go to the node's
shared-memory store, and numpy arrays read from there come back as read-only, zero-copy
views of the memory-mapped object (Ray's plasma semantics). Refs themselves are values
too: they can be passed to tasks, returned inside containers, and awaited from asyncio.
"""

import asyncio
import concurrent.futures
import mmap
import os
import sys
from dataclasses import dataclass

import cloudpickle
import kastor
import numpy as np
import pytest
from kastor.exceptions import ObjectLostError, OwnerDiedError
from support import process_gone, wait_until

# The workers cannot import this test module; ship its functions and classes by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])

DEADLINE_S = 60
MiB = 1024 * 1024


pytestmark = pytest.mark.usefixtures("embedded_cluster")


def _backing(arr: np.ndarray) -> object:
    """The object at the root of an array's buffer chain (an mmap when read zero-copy from the store)."""
    obj: object = arr
    for _ in range(10):
        nxt = obj.obj if isinstance(obj, memoryview) else getattr(obj, "base", None)
        if nxt is None:
            return obj
        obj = nxt
    return obj


@dataclass
class Point:
    x: int
    y: int


@kastor.remote
def square(x):
    return x * x


@kastor.remote
def divide(a, b):
    return a / b


@kastor.remote
def describe_array(arr):
    """What a task sees of an array argument: its sum, shape, writability and backing."""
    return int(arr.sum()), arr.shape, arr.flags.writeable, isinstance(_backing(arr), mmap.mmap)


@kastor.remote
def make_bytes(n):
    return b"k" * n


@kastor.remote
def make_array(n):
    return np.arange(n, dtype=np.int64)


@kastor.remote
def make_put_refs(n):
    return [kastor.put(i * 10) for i in range(n)]


@kastor.remote
def make_task_refs(n):
    return [square.remote(i) for i in range(n)]


@kastor.remote
def make_large_put_ref(n):
    return {"big": kastor.put(np.full(n, 7, dtype=np.int64))}


# ---- put / get ----

@pytest.mark.parametrize("value", [
    0, -(2 ** 70), 3.5, "text", b"bytes", None, True,
    {"a": 1, "b": [1, 2, {"c": (3, 4)}]}, [], (1, "two"), {1, 2, 3}, Point(1, 2),
])
def test_put_get_roundtrip(value):
    assert kastor.get(kastor.put(value), timeout=DEADLINE_S) == value


def test_get_list_and_repeated_refs():
    a, b = kastor.put(1), kastor.put({"k": "v"})
    assert kastor.get([a, b, a], timeout=DEADLINE_S) == [1, {"k": "v"}, 1]
    assert kastor.get([], timeout=DEADLINE_S) == []


def test_put_of_an_object_ref_is_a_type_error():
    ref = kastor.put(1)
    with pytest.raises(TypeError):
        kastor.put(ref)


def test_put_get_100_mib_numpy_array_is_zero_copy():
    arr = np.arange(100 * MiB // 8, dtype=np.int64)
    ref = kastor.put(arr)
    out = kastor.get(ref, timeout=DEADLINE_S)
    assert out.dtype == arr.dtype and out.shape == arr.shape
    assert np.array_equal(out, arr)
    assert not out.flags.writeable
    assert not out.flags.owndata
    assert isinstance(_backing(out), mmap.mmap), "the array should be a view of the stored object, not a copy"
    with pytest.raises(ValueError):
        out[0] = 1
    # The same stored object can be passed to a task by ref: it sees the same data.
    total, shape, writeable, mapped = kastor.get(describe_array.remote(ref), timeout=DEADLINE_S)
    assert total == int(arr.sum()) and shape == arr.shape
    assert not writeable and mapped


def test_put_ref_passed_to_tasks():
    ref = kastor.put(12)
    assert kastor.get([square.remote(ref) for _ in range(4)], timeout=DEADLINE_S) == [144] * 4


def test_20_mib_array_passed_by_value_goes_through_the_store():
    arr = np.ones(20 * MiB // 8, dtype=np.float64)
    total, shape, writeable, mapped = kastor.get(describe_array.remote(arr), timeout=DEADLINE_S)
    assert total == arr.size and shape == arr.shape
    assert mapped, "a 20 MiB argument should be read from the shared-memory store"
    assert not writeable, "array arguments read from the store are read-only, as in Ray"


def test_small_array_argument_is_inline():
    total, shape, _, mapped = kastor.get(describe_array.remote(np.arange(10)), timeout=DEADLINE_S)
    assert (total, shape) == (45, (10,))
    assert not mapped


# ---- large return values ----

def test_large_bytes_return_value():
    n = 200 * 1024  # over the 100 KiB inline limit
    assert kastor.get(make_bytes.remote(n), timeout=DEADLINE_S) == b"k" * n


def test_large_array_return_value():
    n = 5 * MiB // 8
    out = kastor.get(make_array.remote(n), timeout=DEADLINE_S)
    assert np.array_equal(out, np.arange(n, dtype=np.int64))
    assert not out.flags.writeable


def test_large_argument_ref_outlives_the_callers_ref():
    # The caller keeps no ref of its own: the pending task's reference must keep the
    # stored object alive until the task has read it (Ray's submitted-task references).
    n = 5 * MiB // 8
    total, _, _, _ = kastor.get(describe_array.remote(make_array.remote(n)), timeout=DEADLINE_S)
    assert total == n * (n - 1) // 2
    total, _, _, _ = kastor.get(describe_array.remote(kastor.put(np.ones(n, dtype=np.int64))), timeout=DEADLINE_S)
    assert total == n


# ---- refs as values ----

def test_refs_returned_in_a_list_can_be_got():
    refs = kastor.get(make_put_refs.remote(3), timeout=DEADLINE_S)
    assert all(isinstance(r, kastor.ObjectRef) for r in refs)
    assert kastor.get(refs, timeout=DEADLINE_S) == [0, 10, 20]

    refs = kastor.get(make_task_refs.remote(4), timeout=DEADLINE_S)
    assert all(isinstance(r, kastor.ObjectRef) for r in refs)
    assert kastor.get(refs, timeout=DEADLINE_S) == [0, 1, 4, 9]


@kastor.remote
class Lender:
    """Owns the objects it puts: their values live in its process."""

    def lend(self) -> list:
        return [kastor.put("lent value")]

    def pid(self) -> int:
        return os.getpid()


def test_a_ref_whose_owner_died_raises_owner_died_error():
    lender = Lender.remote()
    pid = kastor.get(lender.pid.remote())
    [ref] = kastor.get(lender.lend.remote(), timeout=DEADLINE_S)
    kastor.kill(lender)
    wait_until(lambda: process_gone(pid), "the owner's process to end")
    with pytest.raises(OwnerDiedError, match="owner") as info:
        kastor.get(ref, timeout=DEADLINE_S)
    assert isinstance(info.value, ObjectLostError), "Ray's OwnerDiedError is an ObjectLostError"


def test_large_object_put_by_a_task_can_be_got():
    n = 2 * MiB // 8
    holder = kastor.get(make_large_put_ref.remote(n), timeout=DEADLINE_S)
    out = kastor.get(holder["big"], timeout=DEADLINE_S)
    assert out.shape == (n,) and int(out.sum()) == 7 * n


# ---- futures and asyncio ----

def test_object_ref_future():
    fut = square.remote(5).future()
    assert isinstance(fut, concurrent.futures.Future)
    assert fut.result(timeout=DEADLINE_S) == 25

    failed = divide.remote(1, 0).future()
    assert isinstance(failed.exception(timeout=DEADLINE_S), ZeroDivisionError)


def test_await_refs_in_asyncio_run():
    async def main():
        one = await square.remote(4)
        many = await asyncio.gather(*(square.remote(i) for i in range(5)))
        put_value = await kastor.put("stored")
        with pytest.raises(ZeroDivisionError):
            await divide.remote(1, 0)
        done, _ = await asyncio.wait([asyncio.ensure_future(square.remote(9).as_future())], timeout=DEADLINE_S)
        return one, many, put_value, [d.result() for d in done]

    assert asyncio.run(main()) == (16, [0, 1, 4, 9, 16], "stored", [81])
