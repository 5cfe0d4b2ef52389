"""`inspect_serializability`, as Ray's: which part of an object cannot be pickled.

Arguments, results and remote definitions travel by cloudpickle. When that fails the error
names the outermost object; this walks into closures, globals a function uses, attributes
and container items to find the innermost culprits, printing a tree as it goes.
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Iterator
from typing import Any, NamedTuple, TextIO

import cloudpickle


class FailureTuple(NamedTuple):
    """An object that failed to serialize, its name, and the name of what holds it."""

    obj: Any
    name: str
    parent: Any


def inspect_serializability(base_obj: Any, name: str | None = None, depth: int = 3,
                            print_file: TextIO | None = None) -> tuple[bool, set[FailureTuple]]:
    """Returns (serializable, failures): the innermost parts that failed, at most `depth` levels down."""
    out = print_file or sys.stdout
    name = name or getattr(base_obj, "__name__", None) or repr(base_obj)[:60]
    failures: set[FailureTuple] = set()
    ok = _inspect(base_obj, name, None, depth, failures, out, indent=0)
    if ok:
        print(f"{name} is serializable.", file=out)
    return ok, failures


def _inspect(obj: Any, name: str, parent: Any, depth: int, failures: set[FailureTuple], out: TextIO,
             indent: int) -> bool:
    error = _pickle_error(obj)
    if error is None:
        return True
    print(f"{'  ' * indent}{name} ({type(obj).__name__}) failed: {error}", file=out)
    found_inner = False
    if depth > 0:
        for child_name, child in _children(obj):
            if _pickle_error(child) is not None:
                found_inner = True
                _inspect(child, child_name, name, depth - 1, failures, out, indent + 1)
    if not found_inner:
        failures.add(FailureTuple(_hashable(obj), name, parent))
    return False


def _pickle_error(obj: Any) -> str | None:
    try:
        cloudpickle.dumps(obj)
    except Exception as e:
        return f"{type(e).__name__}: {e}"
    return None


def _children(obj: Any) -> Iterator[tuple[str, Any]]:
    if inspect.isfunction(obj):
        closure = inspect.getclosurevars(obj)
        yield from closure.nonlocals.items()
        yield from closure.globals.items()
    elif isinstance(obj, dict):
        yield from ((repr(k), v) for k, v in obj.items())
    elif isinstance(obj, (list, tuple, set, frozenset)):
        yield from ((f"[{i}]", v) for i, v in enumerate(obj))
    elif hasattr(obj, "__dict__") and not inspect.isclass(obj) and not inspect.ismodule(obj):
        yield from vars(obj).items()
    elif inspect.isclass(obj):
        for attr, value in vars(obj).items():
            if not attr.startswith("__"):
                yield attr, value


def _hashable(obj: Any) -> Any:
    try:
        hash(obj)
    except TypeError:
        return repr(obj)
    return obj
