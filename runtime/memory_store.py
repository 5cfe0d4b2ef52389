"""The owner's in-process table of object values, and the waiting on them.

Values arrive from the core's event-loop thread (task results, fetched borrowed objects)
and are waited on from user threads (`get`, `wait`) and from asyncio code (`await ref`).
One condition variable covers the threads: a batch of results wakes waiters once.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterable

from kastor.runtime.exceptions import GetTimeoutError
from kastor.runtime.protocol import kastor_pb2 as pb

Callback = Callable[[pb.Value], None]


def settling(fut: asyncio.Future) -> Callback:
    """A store callback that resolves `fut` with the value, on the future's own loop.

    Store callbacks run on whichever thread stored the value (see on_ready); the future may
    only be touched on its loop's thread, and only the first value counts."""
    loop = fut.get_loop()

    def settle(value: pb.Value) -> None:
        if not fut.done():
            fut.set_result(value)

    return lambda value: loop.call_soon_threadsafe(settle, value)


class MemoryStore:
    def __init__(self) -> None:
        # Puts, pops and lookups take the condition's lock itself: `with` on a Condition is two
        # Python calls (its __enter__ and __exit__), a lock's are none. Waiting uses the condition.
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._values: dict[bytes, pb.Value] = {}
        self._callbacks: dict[bytes, list[Callback]] = {}
        self._missing_hook: Callable[[bytes], None] | None = None
        # Threads in `wait` on the condition (counted under its lock): a put with none waiting
        # skips notify_all, three Python calls on every sync call's result (bench/README.md).
        self._waiting = 0

    def set_missing_hook(self, hook: Callable[[bytes], None]) -> None:
        """`hook(object_id)` runs (on the waiting thread, no lock held) whenever something starts
        waiting for a value that is not here: a value that only one thread would otherwise fetch
        (a call in flight on a fast lane, see fast_lane.py) is then fetched for every waiter."""
        self._missing_hook = hook

    def put(self, object_id: bytes, value: pb.Value) -> None:
        with self._lock:
            self._values[object_id] = value
            fired = self._callbacks.pop(object_id, ())
            if self._waiting:
                self._cond.notify_all()
        for cb in fired:
            cb(value)

    def put_many(self, items: Iterable[tuple[bytes, pb.Value]]) -> None:
        fired: list[tuple[Callback, pb.Value]] = []
        with self._lock:
            for object_id, value in items:
                self._values[object_id] = value
                for cb in self._callbacks.pop(object_id, ()):
                    fired.append((cb, value))
            if self._waiting:
                self._cond.notify_all()
        for cb, value in fired:
            cb(value)

    def peek(self, object_id: bytes) -> pb.Value | None:
        return self._values.get(object_id)

    def contains(self, object_id: bytes) -> bool:
        return object_id in self._values

    def pop(self, object_id: bytes) -> pb.Value | None:
        with self._lock:
            self._callbacks.pop(object_id, None)
            return self._values.pop(object_id, None)

    def on_ready(self, object_id: bytes, callback: Callback) -> None:
        """Calls back (possibly right away, on this thread) once the value is present."""
        if self._missing_hook is not None and object_id not in self._values:
            self._missing_hook(object_id)
        with self._lock:
            value = self._values.get(object_id)
            if value is None:
                self._callbacks.setdefault(object_id, []).append(callback)
                return
        callback(value)

    def wait(self, object_ids: list[bytes], num_ready: int, timeout: float | None,
             on_block: Callable[[bool], None] | None = None) -> set[bytes]:
        """Blocks until `num_ready` of the ids have values or the timeout passes."""
        deadline = None if timeout is None else time.monotonic() + timeout
        values = self._values
        if self._missing_hook is not None:
            for i in object_ids:
                if i not in values:
                    self._missing_hook(i)
        blocked = False
        # Only the ids still missing are looked at again on each wake-up: a get of 5,000 refs
        # is woken once per results frame, and checking all 5,000 each time made it quadratic.
        object_ids = list(dict.fromkeys(object_ids))  # each id counts once, as a set of the ready ones did
        missing = object_ids
        try:
            with self._cond:
                while True:
                    missing = [i for i in missing if i not in values]
                    if len(object_ids) - len(missing) >= num_ready:
                        return set(object_ids).difference(missing)
                    remaining = None if deadline is None else deadline - time.monotonic()
                    if remaining is not None and remaining <= 0:
                        return set(object_ids).difference(missing)
                    if not blocked and on_block is not None:
                        blocked = True
                        on_block(True)
                    self._waiting += 1
                    try:
                        self._cond.wait(remaining)
                    finally:
                        self._waiting -= 1
        finally:
            if blocked and on_block is not None:
                on_block(False)

    def get_values(self, object_ids: list[bytes], timeout: float | None,
                   on_block: Callable[[bool], None] | None = None) -> list[pb.Value]:
        unique = list(dict.fromkeys(object_ids))
        ready = self.wait(unique, len(unique), timeout, on_block)
        if len(ready) < len(unique):
            missing = next(i for i in unique if i not in ready)
            raise GetTimeoutError(
                f"Get timed out after {timeout}s: object {missing.hex()} is not ready "
                f"({len(unique) - len(ready)} of {len(unique)} pending).")
        values = self._values
        return [values[i] for i in object_ids]
