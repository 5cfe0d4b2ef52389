"""The owner's object table: which objects this process owns, who still refers to them, and
their values (the memory store).

Each live ObjectRef in this process counts once, and so does each value kept here that holds
the ref inside it (Value.nested). Other processes that hold a ref this process owns count
through their Borrow streams (`add_borrow`, see runtime/borrowing.py). A value is dropped, and
its file freed when this process made it, once its last local ref and its last borrow are gone.
A ref pickled outside the paths that track borrowers "escapes", and its value is kept for good.

For a ref owned elsewhere, the table remembers the owner while this process holds it, and calls
`borrow`/`unborrow` as the count leaves and returns to zero.

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
    def __init__(self, free_value: Callable[[pb.Value], None],
                 borrow: Callable[[bytes, str], None] | None = None,
                 unborrow: Callable[[bytes, str], None] | None = None,
                 hold_nested: Callable[[bytes, pb.Value, bool], None] | None = None,
                 release_nested: Callable[[pb.Value], None] | None = None) -> None:
        """`free_value` deletes a stored value's file (locally or through its node); `borrow` and
        `unborrow` tell a ref's owner that this process holds it / let go; `hold_nested` and
        `release_nested` take and drop the refs inside an owned value while it is kept (hold_nested
        is called for every value that holds refs or has them pinned, with whether it is kept)."""
        self.store = MemoryStore()
        self.free_value = free_value
        self._borrow = borrow or _nothing
        self._unborrow = unborrow or _nothing
        self._hold_nested = hold_nested or _nothing
        self._release_nested = release_nested or _nothing
        self._refcounts: dict[bytes, int] = {}
        self._borrows: dict[bytes, int] = {}  # owned here: borrowers' counts (all streams)
        self._borrowed_from: dict[bytes, str] = {}  # owned elsewhere and held here: the owner
        self._owned: set[bytes] = set()
        self._escaped: set[bytes] = set()
        self._lock = threading.Lock()
        self._released: deque[bytes] = deque()
        # ids whose release something waits for (an actor's handle token: runtime/actor_handles.py)
        self._watchers: dict[bytes, Callable[[], None]] = {}

    # ---- local references ----

    def add_local_ref(self, object_id: bytes, owner: str | None = None) -> None:
        """Counts a ref; `owner` is given for a ref another process owns (this one borrows it)."""
        if self._released:
            self.drain_released()
        with self._lock:
            n = self._refcounts.get(object_id, 0)
            self._refcounts[object_id] = n + 1
            if owner is not None and object_id not in self._borrowed_from:
                self._borrowed_from[object_id] = owner
                self._borrow(object_id, owner)  # under the lock: adds and removes queue in order

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
            owner = self._borrowed_from.pop(object_id, None)
            if owner is not None:
                self._unborrow(object_id, owner)
            if object_id in self._escaped or self._borrows.get(object_id):
                return
            owned = object_id in self._owned
            self._owned.discard(object_id)
        self._forget(object_id, owned)

    def _forget(self, object_id: bytes, owned: bool) -> None:
        if self._watchers:
            watcher = self._watchers.pop(object_id, None)
            if watcher is not None:
                watcher()
        value = self.store.pop(object_id)
        if owned and value is not None:
            if value.location.path:  # an inline value has no file: no call to free it
                self.free_value(value)
            if value.nested:
                self._release_nested(value)

    def watch(self, object_id: bytes, on_release: Callable[[], None]) -> None:
        """Calls `on_release` once, when nothing refers to `object_id` any more: no local ref, no
        borrow, and it never escaped. It may run on any thread, inside no lock of this table."""
        self._watchers[object_id] = on_release

    def watched(self, object_id: bytes) -> bool:
        """Whether `on_release` of `watch` is still to come for this id."""
        return object_id in self._watchers

    # ---- borrowers (owner side) ----

    def add_borrow(self, object_id: bytes) -> None:
        """Another process holds a ref this one owns (a Borrow stream's `add`)."""
        with self._lock:
            self._borrows[object_id] = self._borrows.get(object_id, 0) + 1

    def remove_borrow(self, object_id: bytes, n: int = 1) -> None:
        """A borrower let go (or died); the value goes if nothing else here holds it."""
        with self._lock:
            left = self._borrows.get(object_id, 0) - n
            if left > 0:
                self._borrows[object_id] = left
                return
            self._borrows.pop(object_id, None)
            if object_id in self._refcounts or object_id in self._escaped:
                return
            owned = object_id in self._owned
            self._owned.discard(object_id)
        self._forget(object_id, owned)

    def borrowers(self, object_id: bytes) -> int:
        """How many borrows other processes hold on this object (0 when none, or not owned here)."""
        return self._borrows.get(object_id, 0)

    def counts(self, object_id: bytes) -> tuple[int, int]:
        """(local refs, borrows) of an object: what keeps it here."""
        return self._refcounts.get(object_id, 0), self._borrows.get(object_id, 0)

    # ---- what is still needed ----

    def referenced(self, object_id: bytes) -> bool:
        """Whether a ref to it exists here, is borrowed, or did escape to another process."""
        return object_id in self._refcounts or object_id in self._borrows or object_id in self._escaped

    def known(self, object_id: bytes) -> bool:
        """Whether a borrower asking for it may still get a value (stored, or referenced)."""
        return self.store.contains(object_id) or self.referenced(object_id)

    def serves_objects(self) -> bool:
        """Whether another process may still fetch a value from this one: a ref made here that
        is borrowed, escaped (kept for good), or is still referenced here."""
        with self._lock:
            ids = set(self._refcounts) | set(self._escaped) | set(self._borrows)
        return any(self.store.contains(i) for i in ids)

    # ---- owned values ----

    def own(self, object_id: bytes, value: pb.Value) -> None:
        """Stores a value this process owns (put(), a generator's item)."""
        if value.nested or value.pinned_at:
            self._hold_nested(object_id, value, True)
        self._owned.add(object_id)
        self.store.put(object_id, value)

    def replace(self, object_id: bytes, value: pb.Value) -> None:
        """An owned value now stored elsewhere (a remote client's put, uploaded on first use:
        runtime/lazy_puts.py): readers from now on get the new location. A value freed
        meanwhile stays freed."""
        if self.store.contains(object_id):
            self.store.put(object_id, value)

    def store_returns(self, items: Iterable[tuple[bytes, pb.Value]]) -> None:
        """Stores a finished call's returns; those nobody refers to any more are freed at once."""
        keep = []
        for object_id, value in items:
            kept = self.referenced(object_id)
            if value.nested or value.pinned_at:
                self._hold_nested(object_id, value, kept)
            if kept:
                keep.append((object_id, value))
            elif not value.is_error:
                self.free_value(value)
        self._owned.update(object_id for object_id, _ in keep)
        self.store.put_many(keep)

    def store_plain_return(self, object_id: bytes, value: pb.Value) -> None:
        """`store_returns` for one value that is inline, holds no refs and is no error (a lane
        call's result read by its caller's get): kept while anything refers to it, else
        dropped (an inline value has no file to free)."""
        if object_id in self._refcounts or object_id in self._borrows or object_id in self._escaped:
            self._owned.add(object_id)
            self.store.put(object_id, value)

    def drop(self, object_id: bytes) -> pb.Value | None:
        """Removes an owned value nobody will read (and frees its file); returns it, or None."""
        value = self.store.pop(object_id)
        if value is not None:
            self._owned.discard(object_id)
            self.free_value(value)
            if value.nested:
                self._release_nested(value)
        return value


def _nothing(*_: object) -> None:
    pass
