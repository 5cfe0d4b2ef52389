"""Generator tasks and actor methods: `.remote()` gives an ObjectRefGenerator, as in Ray 2.x.

A function or method written with `yield` (or `num_returns="streaming"`) returns an iterator
of ObjectRefs, one per yielded value, owned by the caller. The worker reports each item to
the caller as it is yielded, and waits for the caller to take it in, so `next()` returns as
soon as the next item exists and the generator may run for ever. (A caller behind the
client port cannot be reached by workers: it gets the items together when the generator
ends.) An exception the generator raises after k items is the value of ref k+1, as in Ray.
"""

from __future__ import annotations

import asyncio
import inspect
from dataclasses import dataclass
from typing import Any

from kastor.object_ref import ObjectRef

STREAMING = "streaming"


def yields(fn: Any) -> bool:
    fn = inspect.unwrap(fn)
    return inspect.isgeneratorfunction(fn) or inspect.isasyncgenfunction(fn)


def returned(refs: list[ObjectRef], generator: bool) -> Any:
    """What `.remote()` gives back: one ref, a list of them, None, or an ObjectRefGenerator."""
    if generator:
        return ObjectRefGenerator(refs[0])
    if len(refs) == 1:
        return refs[0]
    return refs or None


@dataclass(frozen=True)
class GeneratedItems:
    """The one return value of a generator call: how many items it yielded, and the items
    themselves (serialized by the worker) when they could not be reported one by one."""

    count: int
    values: list[bytes] | None = None


class ObjectRefGenerator:
    """The refs a generator task or method yields, in order, for `for` and `async for`, as they are yielded."""

    def __init__(self, ref: ObjectRef):
        self._ref = ref
        self._task_id = ref._id[:-4]
        self._next = 0
        self._ended = False

    def __iter__(self) -> ObjectRefGenerator:
        return self

    def __next__(self) -> ObjectRef:
        from kastor.api import _core

        core = _core()
        if not self._ended:
            ids = [self._item_id(), self._ref._id]
            core.store.wait(ids, 1, None, core._blocked_hook(ids))
        return self._advance(core, StopIteration)

    def __aiter__(self) -> ObjectRefGenerator:
        return self

    async def __anext__(self) -> ObjectRef:
        from kastor.api import _core

        core = _core()
        if not self._ended:
            loop = asyncio.get_running_loop()
            arrived = loop.create_future()

            def wake(_value) -> None:
                loop.call_soon_threadsafe(lambda: arrived.done() or arrived.set_result(None))

            core.store.on_ready(self._item_id(), wake)
            core.store.on_ready(self._ref._id, wake)
            await arrived
        return self._advance(core, StopAsyncIteration)

    def completed(self) -> ObjectRef:
        """A ref that is ready once the generator has finished in the worker."""
        return self._ref

    def _item_id(self) -> bytes:
        from kastor.runtime.core import return_id

        return return_id(self._task_id, self._next + 1)  # item k is the call's return k + 1

    def _advance(self, core, stop: type[Exception]) -> ObjectRef:
        """The next item's ref once it or the end of the call is there; `stop` after the last."""
        from kastor.runtime.core import error_value
        from kastor.runtime.protocol import kastor_pb2 as pb

        item_id = self._item_id()
        if self._ended:
            raise stop
        if core.store.contains(item_id):
            self._next += 1
            return ObjectRef(item_id, core.address)
        try:
            done: GeneratedItems = core.get([self._ref], None)[0]
        except Exception as e:  # the call itself failed: one more item carries its error
            self._ended = True
            return core.adopt(item_id, error_value(e))
        if done.values is not None and self._next < len(done.values):
            self._next += 1
            return core.adopt(item_id, pb.Value.FromString(done.values[self._next - 1]))
        self._ended = True  # every reported item arrived before the call's own result
        raise stop

    def __del__(self) -> None:
        """Items nobody took are dropped once the call ends (on the loop: this may run inside a lock)."""
        from kastor.runtime import context

        core = context.core
        if core is None or self._ended:
            return
        task_id, first, done_id = self._task_id, self._next + 1, self._ref._id
        try:
            core.post(lambda: core.store.on_ready(done_id, lambda _v: _drop_items(core, task_id, first)))
        except Exception:
            pass

    def __repr__(self) -> str:
        return f"ObjectRefGenerator({self._ref.hex()})"


def _drop_items(core, task_id: bytes, first: int) -> None:
    from kastor.runtime.core import return_id

    index = first
    while (value := core.store.pop(object_id := return_id(task_id, index))) is not None:
        core._owned.discard(object_id)
        core.free_value(value)
        index += 1
