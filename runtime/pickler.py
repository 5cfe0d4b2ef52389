"""cloudpickle, except that code shipped by value keeps its file name, and can carry its source.

cloudpickle 3.1 renames the file of every code object it pickles by value to
`<dynamic-code>` (to make payloads independent of where a function was defined). A task's
traceback then names no file and shows no source line, which makes remote errors much
harder to read. Functions from test modules, `__main__` scripts and notebook cells are all
pickled by value, so all of them were hit.

Code objects here are reduced by cloudpickle's own reducer (so every supported cloudpickle
version lays them out its own way) and wrapped in `_restore_filename`, which puts the real
name back when they are loaded. Exported functions and classes (`dumps_code`) also carry
the source lines of their file, registered in `linecache` where they are loaded: a worker
on another machine, or one running a notebook's cell, has no such file to read.
"""

from __future__ import annotations

import io
import linecache
import pickle
import types
from collections import ChainMap

import cloudpickle

_DYNAMIC = "<dynamic-code>"
MAX_SOURCE_BYTES = 1 << 20  # a file larger than this travels without its source lines


def _cloudpickle_code_reduce(code: types.CodeType):
    return cloudpickle.Pickler.dispatch_table[types.CodeType](code)


def _reduce_code(code: types.CodeType, with_source: bool = False):
    filename = code.co_filename
    if filename == _DYNAMIC:
        return _cloudpickle_code_reduce(code)
    lines = _source_lines(filename) if with_source else None
    return _restore_filename, (code.replace(co_filename=_DYNAMIC), filename, lines)


def _reduce_code_with_source(code: types.CodeType):
    return _reduce_code(code, with_source=True)


def _source_lines(filename: str) -> list[str] | None:
    # linecache returns the same list for every code object of a file, so pickle's memo
    # stores the lines once per payload however many functions come from the file.
    lines = linecache.getlines(filename)
    if not lines or sum(map(len, lines)) > MAX_SOURCE_BYTES:
        return None
    return lines


def _restore_filename(code: types.CodeType, filename: str, lines: list[str] | None) -> types.CodeType:
    """Runs where the code is loaded: the real file name back, and its lines for tracebacks."""
    if lines:
        # An mtime of None tells linecache.checkcache to keep the entry (as for a notebook cell).
        linecache.cache[filename] = (sum(map(len, lines)), None, lines, filename)
    return code.replace(co_filename=filename)


class _Pickler(cloudpickle.Pickler):
    dispatch_table = ChainMap({types.CodeType: _reduce_code}, cloudpickle.Pickler.dispatch_table)


class _SourcePickler(cloudpickle.Pickler):
    dispatch_table = ChainMap({types.CodeType: _reduce_code_with_source}, cloudpickle.Pickler.dispatch_table)


# Values made only of these exact types (and tuples, lists and dicts of them) pickle to the
# same bytes with the C pickler as with cloudpickle's, whose Pickler is built in Python for
# every value: for a call's `((), {})` or a small int result that construction was most of the
# pickling (bench/README.md, "Pipelined calls"). Exact types only: a subclass (an IntEnum, a
# str subclass) may reduce itself in its own way, and an ObjectRef must pass through its
# __reduce__ (the borrow bookkeeping sees it there). bytearray is not here: it travels
# out of band.
_PLAIN_SCALARS = frozenset({type(None), bool, int, float, complex, str, bytes})
_PLAIN_CONTAINERS = frozenset({tuple, list, dict})
PLAIN_MAX_ITEMS = 64  # a larger value is checked no further: cloudpickle's fixed cost no longer dominates


def is_plain(obj: object) -> bool:
    """Whether `obj` is a small value of builtin scalars and containers (see _PLAIN_SCALARS)."""
    if type(obj) in _PLAIN_SCALARS:
        return True
    todo = [obj]
    seen = 0
    while todo:
        item = todo.pop()
        kind = type(item)
        if kind in _PLAIN_SCALARS:
            continue
        if kind not in _PLAIN_CONTAINERS:
            return False
        seen += len(item) + 1
        if seen > PLAIN_MAX_ITEMS:
            return False
        if kind is dict:
            todo.extend(item.keys())  # type: ignore[union-attr]
            todo.extend(item.values())  # type: ignore[union-attr]
        else:
            todo.extend(item)  # type: ignore[arg-type]
    return True


def dumps(obj: object, protocol: int | None = None, buffer_callback=None) -> bytes:
    """`cloudpickle.dumps`, keeping the file names of code pickled by value (a plain value:
    the same bytes, from the C pickler)."""
    if is_plain(obj):
        return pickle.dumps(obj, protocol=cloudpickle.DEFAULT_PROTOCOL if protocol is None else protocol)
    return _dump(_Pickler, obj, protocol, buffer_callback)


def dumps_code(obj: object) -> bytes:
    """For an exported function or class: file names, and the source lines of those files."""
    return _dump(_SourcePickler, obj, None, None)


def _dump(pickler: type[cloudpickle.Pickler], obj: object, protocol, buffer_callback) -> bytes:
    with io.BytesIO() as f:
        pickler(f, protocol=protocol, buffer_callback=buffer_callback).dump(obj)
        return f.getvalue()
