"""ObjectRef: a future for a value owned by the process that created the ref.

A ref knows its owner's address, so any process that receives it (nested in arguments or
results) can ask the owner for the value directly; no central service is involved.

It lives in the runtime, which makes refs, so that the runtime never imports the public package;
`kastor.ObjectRef` (and `kastor.object_ref.ObjectRef`) is this class, which names that module as its home.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from typing import Any

from kastor.runtime import context
from kastor.runtime.exceptions import present_as


class ObjectRef:
    """A future for a value, owned by the process that created it; `kastor.get` reads the value."""

    __slots__ = ("_id", "_owner", "__weakref__")

    def __init__(self, object_id: bytes, owner: str, *, _borrowed: bool = False):
        self._id = object_id
        self._owner = owner
        core = context.core
        if core is not None:
            core.add_local_ref(object_id, owner, borrowed=_borrowed)

    def binary(self) -> bytes:
        return self._id

    def hex(self) -> str:
        return self._id.hex()

    def task_id(self) -> bytes:
        return self._id[:16]

    @property
    def owner_address(self) -> str:
        return self._owner

    def __repr__(self) -> str:
        return f"ObjectRef({self._id.hex()})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ObjectRef) and other._id == self._id

    def __hash__(self) -> int:
        return hash(self._id)

    def __reduce__(self):
        core = context.core
        if core is not None:
            core.on_ref_pickled(self)
        return _rebuild, (self._id, self._owner)

    def __del__(self):
        core = context.core
        if core is not None:
            try:
                core.remove_local_ref(self._id)
            except Exception:  # interpreter shutdown: nothing left to free
                pass

    def future(self) -> concurrent.futures.Future:
        """A concurrent.futures.Future resolved with the value (or its error)."""
        return _require_core().object_future(self)

    def __await__(self):
        return asyncio.wrap_future(self.future()).__await__()

    def as_future(self) -> asyncio.Future[Any]:
        return asyncio.wrap_future(self.future())


present_as("kastor.object_ref", ObjectRef)  # where users meet it (client/object_ref.py re-exports it)


def _rebuild(object_id: bytes, owner: str) -> ObjectRef:
    return ObjectRef(object_id, owner, _borrowed=True)


def _require_core():
    core = context.core
    if core is None:
        raise RuntimeError("Kastor is not initialized: call kastor.init() first.")
    return core
