"""The per-call shortcuts of the pipelined path (bench/README.md, "Pipelined calls") keep the
results of the general path: ids stay unique across forks, and a plain value pickles to the
same bytes as cloudpickle makes, while anything else still goes through cloudpickle."""

from __future__ import annotations

import asyncio
import enum
import inspect
import os
import pickle
import threading

import cloudpickle
import pytest
from kastor import signature
from kastor.runtime import pickler, serialization
from kastor.runtime.ids import new_put_id, new_task_id
from kastor.runtime.loop_inbox import LoopInbox
from kastor.runtime.object_ref import ObjectRef


def test_ids_are_unique_and_a_forked_child_does_not_repeat_its_parents() -> None:
    mine = {new_task_id() for _ in range(10_000)}
    assert len(mine) == 10_000 and all(len(i) == 16 for i in mine)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next ids, to the parent
        try:
            os.write(write, b"".join(new_task_id() for _ in range(100)))
        finally:
            os._exit(0)
    os.close(write)
    data = b""
    while chunk := os.read(read, 65536):
        data += chunk
    os.close(read)
    os.waitpid(pid, 0)
    child = {data[i:i + 16] for i in range(0, len(data), 16)}
    parent_next = {new_task_id() for _ in range(100)}
    assert len(child) == 100
    assert not child & parent_next, "a forked child repeated its parent's task ids"
    assert new_put_id()[-4:] == b"\xff\xff\xff\xff"


PLAIN = [None, True, 0, -7, 2**80, 1.5, 1j, "", "text", b"bytes", (), [], {}, ((), {}), ((1, "a"), {"k": 2.5}),
         [1, [2, [3, (4, None)]]], {"a": {"b": [b"x", 1.0]}}]


@pytest.mark.parametrize("value", PLAIN, ids=repr)
def test_a_plain_value_pickles_to_cloudpickles_bytes(value: object) -> None:
    assert pickler.is_plain(value)
    assert pickler.dumps(value, protocol=5) == cloudpickle.dumps(value, protocol=5)
    assert pickler.dumps(value) == cloudpickle.dumps(value)
    assert serialization.loads(serialization.serialize(value).to_bytes()) == value


class Color(enum.IntEnum):
    RED = 1


class Name(str):
    def __reduce__(self):
        return Name, (f"reduced:{str(self)}",)


def test_anything_else_goes_through_cloudpickle() -> None:
    loop: list = []
    loop.append(loop)
    for value in (Color.RED, Name("x"), bytearray(b"ab"), (lambda: 1), loop, list(range(1000)),
                  {"k": Color.RED}, [(Name("y"),)]):
        assert not pickler.is_plain(value), value
    assert serialization.loads(serialization.serialize(Name("x")).to_bytes()) == "reduced:x"  # its own __reduce__
    assert serialization.loads(serialization.serialize([Color.RED]).to_bytes()) == [Color.RED]
    assert pickle.loads(pickler.dumps(list(range(1000)))) == list(range(1000))


def test_a_ref_inside_arguments_still_goes_through_its_reduce() -> None:
    """ObjectRef.__reduce__ is where borrowing collects nested refs (tests/test_borrowers.py)."""
    ref = ObjectRef(b"r" * 20, "127.0.0.1:1")
    assert not pickler.is_plain(((ref,), {}))
    (back,), _ = serialization.loads(serialization.serialize(((ref,), {})).to_bytes())
    assert isinstance(back, ObjectRef) and back.binary() == ref.binary()


def _signatures() -> list[inspect.Signature]:
    def f0(): ...
    def f1(a): ...
    def f2(a, b=1): ...
    def f3(a, /, b, *, c): ...
    def f4(*args): ...
    def f5(a, *args, k=2, **kw): ...
    def f6(*, k): ...
    def f7(a=1, /, b=2, *args, c=3): ...
    def f8(**kw): ...
    return [inspect.signature(f) for f in (f0, f1, f2, f3, f4, f5, f6, f7, f8)]


@pytest.mark.parametrize("sig", _signatures(), ids=str)
def test_the_positional_shortcut_agrees_with_bind(sig: inspect.Signature) -> None:
    for count in range(5):
        try:
            sig.bind(*range(count))
            binds = True
        except TypeError:
            binds = False
        assert signature.fits_positionally(sig, count) == binds, f"{sig} with {count} positional arguments"
        if not binds:
            with pytest.raises(TypeError, match="must fit the signature"):
                signature.check(sig, tuple(range(count)), {}, "f")


def test_a_loop_inbox_runs_every_posted_callable_once_in_order() -> None:
    """Posts from two threads while the loop drains (the race the wake-up flag must survive)."""
    loop = asyncio.new_event_loop()
    inbox = LoopInbox(loop)
    seen: dict[str, list[int]] = {"a": [], "b": []}
    done = threading.Event()
    total = 20_000

    def poster(name: str) -> None:
        for i in range(total):
            inbox.post(lambda i=i: seen[name].append(i))
        inbox.post(lambda: done.set() if len(seen["a"]) + len(seen["b"]) == 2 * total else None)

    runner = threading.Thread(target=loop.run_forever, daemon=True)
    runner.start()
    posters = [threading.Thread(target=poster, args=(n,)) for n in seen]
    for t in posters:
        t.start()
    for t in posters:
        t.join()
    inbox.post(lambda: done.set())
    assert done.wait(30)
    loop.call_soon_threadsafe(loop.stop)
    runner.join(30)
    loop.close()
    assert seen == {"a": list(range(total)), "b": list(range(total))}
