"""Generator tasks and actor methods: `.remote()` gives an ObjectRefGenerator, as in Ray 2.x.

A function or method written with `yield` (or `num_returns="streaming"`) returns an
iterator of ObjectRefs, one per yielded value, owned by the caller. Kastor runs the
generator to completion in the worker and ships the items together, so the first `next()`
waits for the whole call and the refs then come at once; Ray streams them as they are
yielded. An exception the generator raises after k items is the value of ref k+1, as in Ray.
"""

from __future__ import annotations

import inspect
from collections import deque
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
    """The one return value of a generator call: each item, already serialized by the worker."""

    values: list[bytes]


class ObjectRefGenerator:
    def __init__(self, ref: ObjectRef):
        self._ref = ref
        self._refs: deque[ObjectRef] | None = None

    def __iter__(self) -> ObjectRefGenerator:
        return self

    def __next__(self) -> ObjectRef:
        if self._refs is None:
            from kastor.api import _core
            try:
                self._take(_core().get([self._ref], None)[0])
            except Exception as e:  # the call itself failed: the first item carries its error
                self._take_error(e)
        return self._pop(StopIteration)

    def __aiter__(self) -> ObjectRefGenerator:
        return self

    async def __anext__(self) -> ObjectRef:
        if self._refs is None:
            try:
                self._take(await self._ref)
            except Exception as e:
                self._take_error(e)
        return self._pop(StopAsyncIteration)

    def completed(self) -> ObjectRef:
        """A ref that is ready once the generator has finished in the worker."""
        return self._ref

    def _take(self, items: GeneratedItems) -> None:
        from kastor.api import _core
        from kastor.runtime.core import return_id
        from kastor.runtime.protocol import kastor_pb2 as pb

        core, task_id = _core(), self._ref._id[:-4]
        self._refs = deque(core.adopt(return_id(task_id, i + 1), pb.Value.FromString(frame))
                           for i, frame in enumerate(items.values))

    def _take_error(self, error: Exception) -> None:
        from kastor.api import _core
        from kastor.runtime.core import error_value, return_id

        self._refs = deque([_core().adopt(return_id(self._ref._id[:-4], 1), error_value(error))])

    def _pop(self, stop: type[Exception]) -> ObjectRef:
        if not self._refs:
            raise stop
        return self._refs.popleft()

    def __repr__(self) -> str:
        return f"ObjectRefGenerator({self._ref.hex()})"
