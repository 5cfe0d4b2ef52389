"""Packing call arguments: one pickle for (args, kwargs), with top-level refs as slots.

Ray resolves ObjectRefs passed directly as arguments before the call runs, but passes refs
nested inside containers through untouched. The caller swaps each top-level ref for a
`_Slot`, ships the resolved values beside the pickle, and the worker swaps them back.
"""

from __future__ import annotations

from typing import Any

from kastor.runtime.object_ref import ObjectRef


class _Slot:
    __slots__ = ("index",)

    def __init__(self, index: int):
        self.index = index

    def __reduce__(self):
        return _Slot, (self.index,)


def split_refs(args: tuple, kwargs: dict) -> tuple[tuple, dict, list[ObjectRef]]:
    """Replaces top-level ObjectRefs with slots; returns the refs in slot order."""
    refs: list[ObjectRef] = []
    for a in args:  # plain loops, no closure: this runs for every call (bench/README.md, "Pipelined calls")
        if isinstance(a, ObjectRef):
            break
    else:
        for v in kwargs.values():
            if isinstance(v, ObjectRef):
                break
        else:
            return args, kwargs, refs

    def swap(value: Any) -> Any:
        if isinstance(value, ObjectRef):
            refs.append(value)
            return _Slot(len(refs) - 1)
        return value

    new_args = tuple(swap(a) for a in args)
    new_kwargs = {k: swap(v) for k, v in kwargs.items()}
    return new_args, new_kwargs, refs


def fill_slots(args: tuple, kwargs: dict, values: list[Any]) -> tuple[tuple, dict]:
    if not values:
        return args, kwargs
    args = tuple(values[a.index] if isinstance(a, _Slot) else a for a in args)
    kwargs = {k: values[v.index] if isinstance(v, _Slot) else v for k, v in kwargs.items()}
    return args, kwargs
