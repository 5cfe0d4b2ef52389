"""Reusing the pages of freed object files for new objects, never under a live reader.

A put writes its value into a new file of the node's store (tmpfs). Writing 100 MiB into
fresh tmpfs pages costs about 3x writing it into pages a file already holds (the kernel
allocates and zeroes every page, and frees them all again at the unlink): 110 ms + 33 ms
against 35 ms on the 2-core test machine. So a process that frees one of its large objects
moves the file into a small pool of its own (`<store>/owner-<its address>/.recycle/`), and its
next large put overwrites a pooled file in place and renames it to the new object's path.

What makes it safe is a lock that every reader holds for as long as it reads:

- a reader takes a shared `flock` on the object file before it maps or reads it, and then checks
  that the path still names the file it opened (`store_owners.lock_for_reading`); the mapping keeps the lock,
  because Python's mmap holds a duplicate of the file descriptor until the mapping is gone;
- the pool takes a file for a new object only with an exclusive, non-blocking `flock`: a file
  that any process still maps or reads (numpy views of a freed object, a FetchObject stream)
  fails it, and is unlinked instead of reused, so that reader keeps its bytes;
- a reader that opened the old path just before the free, and locks after the pool took the
  file, waits for the new object's write to end, then finds that the path no longer names the
  file, and reports the object lost, as it would after an unlink.

The pool stays small (at most `MAX_FILES` files and `MAX_FRACTION` of the store), takes only
files of at least `MIN_BYTES`, is emptied when a put does not fit (spilling.write) and when the
process stops; if the process dies, the node agent's dead-owner sweep deletes its directory
with the pool in it. `KASTOR_STORE_RECYCLE=0` turns it off (every freed file is unlinked).
"""

from __future__ import annotations

import fcntl
import itertools
import logging
import os
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from kastor.runtime import store_owners

if TYPE_CHECKING:  # the node agent reads store files too, and needs no pickler
    from kastor.runtime.serialization import Serialized

log = logging.getLogger("kastor.store_recycle")

POOL_DIR = ".recycle"      # in an owner's directory of the store
MAX_FILES = 2
MAX_FRACTION = 0.125       # of the store's size, for all pooled files together
MIN_BYTES = 1 << 20        # smaller files are cheap to write fresh


class RecyclePool:
    """One process's freed object files, kept for its next large puts (see the module docstring).

    `pool_dir()` names the directory to keep them in (made on first use); it is called only
    when a file is kept, so a process may learn its address after this is made."""

    def __init__(self, store_dir: str, pool_dir: Callable[[], str]) -> None:
        self.store_dir = store_dir
        self._pool_dir = pool_dir
        self._files: list[tuple[str, int]] = []  # (path, size), oldest first
        self._lock = threading.Lock()
        self._names = itertools.count()

    def keep(self, path: str) -> bool:
        """Moves the freed object file at `path` into the pool; False if it is not kept (not an
        object file of this store, too small, or the pool is full): the caller deletes it."""
        if store_owners.in_store(self.store_dir, path) is None:
            return False  # the spill directory's files are on disk: nothing to gain
        try:
            size = os.stat(path).st_size
            st = os.statvfs(self.store_dir)
        except OSError:
            return False
        cap = st.f_blocks * st.f_frsize * MAX_FRACTION
        with self._lock:
            if size < MIN_BYTES or len(self._files) >= MAX_FILES or self._bytes() + size > cap:
                return False
            try:
                directory = self._pool_dir()
                os.makedirs(directory, exist_ok=True)
                kept = os.path.join(directory, str(next(self._names)))
                os.rename(path, kept)
            except FileNotFoundError:
                return True  # already gone (freed twice, or swept): nothing to delete
            except OSError as e:
                log.debug("not recycling %s: %s", path, e)
                return False
            self._files.append((kept, size))
            return True

    def write(self, ser: Serialized, path: str) -> int | None:
        """Writes `ser` into a pooled file no process reads any more and renames it to `path`;
        returns its size, or None when no pooled file could be used (write a new file)."""
        reused = self.open_reused(ser.size)
        if reused is None:
            return None
        try:
            ser.write_fd(reused.fd, reused.old_size, self.store_dir)
        except BaseException:
            reused.abort()
            raise
        reused.commit(path, ser.size)
        return ser.size

    def open_reused(self, size: int) -> Reused | None:
        """A pooled file for an object of `size` bytes, open for writing from its start and
        locked so that no reader maps it until `commit`; None if the pool has none that no
        process reads any more (those are deleted on the way)."""
        while (taken := self._take(size)) is not None:
            kept, old_size = taken
            try:
                fd = os.open(kept, os.O_WRONLY)
            except OSError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:  # still mapped or read somewhere: that reader keeps its bytes
                os.close(fd)
                _unlink(kept)
                continue
            return Reused(fd, kept, old_size)
        return None

    def drain(self) -> bool:
        """Deletes every pooled file (the store is full, or the process stops); True if any was."""
        with self._lock:
            files, self._files = self._files, []
        for kept, _ in files:
            _unlink(kept)
        return bool(files)

    def _take(self, size: int) -> tuple[str, int] | None:
        """The pooled file closest in size to `size`, removed from the pool."""
        with self._lock:
            if not self._files:
                return None
            best = min(range(len(self._files)), key=lambda i: abs(self._files[i][1] - size))
            return self._files.pop(best)

    def _bytes(self) -> int:
        return sum(size for _, size in self._files)


class Reused:
    """A pooled file being overwritten with a new object: `fd` is open for writing at offset 0
    and holds the exclusive lock until `commit` (or `abort`) closes it."""

    def __init__(self, fd: int, kept: str, old_size: int) -> None:
        self.fd = fd
        self.kept = kept
        self.old_size = old_size

    def commit(self, path: str, size: int) -> None:
        """Cuts the file to the new object's `size` and renames it to `path`, still locked (a
        reader of `path` waits for the whole object), then lets go of it."""
        try:
            os.ftruncate(self.fd, size)
            os.rename(self.kept, path)
        except BaseException:
            self.abort()
            raise
        os.close(self.fd)

    def abort(self) -> None:
        """Deletes the half-written file: no part of the new object is left behind."""
        os.close(self.fd)
        _unlink(self.kept)


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
