"""The owner's object table: which objects this process owns, who still refers to them, and
their values (the memory store).

Counting is local, as in Kastor's simplified take on Ray's ownership: each live ObjectRef in
this process counts once; a ref pickled to another process "escapes", and its value is then
kept for good (there is no distributed counting). A value is dropped, and its file freed when
this process made it, once its last local ref is gone and it never escaped.

The table is shared by the core (refs come and go on any thread), the submitters (storing
results), and the worker's gRPC face (serving values to borrowers); each uses the methods
below instead of the sets themselves.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterable

from kastor.runtime.memory_store import MemoryStore
from kastor.runtime.protocol import kastor_pb2 as pb


class ObjectTable:
    def __init__(self, free_value: Callable[[pb.Value], None]) -> None:
        """`free_value` deletes a stored value's file (locally or through its node)."""
        self.store = MemoryStore()
        self.free_value = free_value
        self._refcounts: dict[bytes, int] = {}
        self._owned: set[bytes] = set()
        self._escaped: set[bytes] = set()
        self._lock = threading.Lock()
        self._released: deque[bytes] = deque()

    # ---- local references ----

    def add_local_ref(self, object_id: bytes) -> None:
        if self._released:
            self.drain_released()
        with self._lock:
            self._refcounts[object_id] = self._refcounts.get(object_id, 0) + 1

    def remove_local_ref(self, object_id: bytes) -> None:
        """Called from ObjectRef.__del__, which the garbage collector may run inside any lock
        this thread holds (the store's, the refcount lock): so only queue the release here.
        The queue is drained where no lock is held: when the next ref is made, and by a
        periodic sweep on the loop thread (waking the loop per release would halve put/get)."""
        self._released.append(object_id)

    def escape(self, object_id: bytes) -> bool:
        """Marks a ref as held elsewhere from now on (no locks: called while pickling);
        True the first time."""
        if object_id in self._escaped:
            return False
        self._escaped.add(object_id)
        return True

    def drain_released(self) -> None:
        released = self._released
        while released:
            try:
                object_id = released.popleft()
            except IndexError:
                return
            self._release(object_id)

    def _release(self, object_id: bytes) -> None:
        with self._lock:
            n = self._refcounts.get(object_id, 0) - 1
            if n > 0:
                self._refcounts[object_id] = n
                return
            self._refcounts.pop(object_id, None)
            if object_id in self._escaped:
                return
            owned = object_id in self._owned
            self._owned.discard(object_id)
        value = self.store.pop(object_id)
        if owned and value is not None:
            self.free_value(value)

    # ---- what is still needed ----

    def referenced(self, object_id: bytes) -> bool:
        """Whether a ref to it exists here, or did escape to another process."""
        return object_id in self._refcounts or object_id in self._escaped

    def known(self, object_id: bytes) -> bool:
        """Whether a borrower asking for it may still get a value (stored, or referenced)."""
        return self.store.contains(object_id) or self.referenced(object_id)

    def serves_objects(self) -> bool:
        """Whether another process may still fetch a value from this one: a ref made here that
        escaped (kept for good, without distributed counting) or is still referenced here."""
        with self._lock:
            ids = set(self._refcounts) | set(self._escaped)
        return any(self.store.contains(i) for i in ids)

    # ---- owned values ----

    def own(self, object_id: bytes, value: pb.Value) -> None:
        """Stores a value this process owns (put(), a generator's item)."""
        self._owned.add(object_id)
        self.store.put(object_id, value)

    def store_returns(self, items: Iterable[tuple[bytes, pb.Value]]) -> None:
        """Stores a finished call's returns; those nobody refers to any more are freed at once."""
        keep = []
        for object_id, value in items:
            if self.referenced(object_id):
                keep.append((object_id, value))
            elif not value.is_error:
                self.free_value(value)
        self._owned.update(object_id for object_id, _ in keep)
        self.store.put_many(keep)

    def drop(self, object_id: bytes) -> pb.Value | None:
        """Removes an owned value nobody will read (and frees its file); returns it, or None."""
        value = self.store.pop(object_id)
        if value is not None:
            self._owned.discard(object_id)
            self.free_value(value)
        return value
