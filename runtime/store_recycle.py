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

Writing through a kept mapping. Even into existing pages, `pwritev` costs about twice a plain
`memcpy` (about 20 ms against 11 ms per 100 MiB on the test machine: the kernel looks up every
page of the file as it copies). So the pool maps a file writable the first time it reuses it
(`MAP_POPULATE`: its pages are faulted in once) and keeps that mapping while the file lives,
in the pool or as an object again; its next reuse is a `memcpy` into the mapping. Only the part of
the file that already has pages is written that way (a fault that must allocate a page in a
full tmpfs is a SIGBUS, where `pwritev` returns ENOSPC), the rest by `pwritev`. The mapping is
opened separately from the writer's locked descriptor, so it holds no lock and never keeps a
reader out; it is closed as soon as its file is deleted (a free the pool does not keep, a
drain, a file still read elsewhere) and, as a bound, when more than `MAX_MAPPINGS` are kept
(`KASTOR_STORE_MAPPED_WRITES=0`: every reuse writes with `pwritev`).
"""

from __future__ import annotations

import fcntl
import itertools
import logging
import mmap
import os
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from kastor.runtime import settings, store_owners

if TYPE_CHECKING:  # the node agent reads store files too, and needs no pickler
    from kastor.runtime.serialization import Serialized

log = logging.getLogger("kastor.store_recycle")

POOL_DIR = ".recycle"      # in an owner's directory of the store
MAX_FILES = 2
MAX_FRACTION = 0.125       # of the store's size, for all pooled files together
MIN_BYTES = 1 << 20        # smaller files are cheap to write fresh
MAX_MAPPINGS = MAX_FILES + 2  # kept writable mappings (pooled files, and objects written through one)
_POPULATE = getattr(mmap, "MAP_POPULATE", 0)


class RecyclePool:
    """One process's freed object files, kept for its next large puts (see the module docstring).

    `pool_dir()` names the directory to keep them in (made on first use); it is called only
    when a file is kept, so a process may learn its address after this is made."""

    def __init__(self, store_dir: str, pool_dir: Callable[[], str], mapped_writes: bool | None = None) -> None:
        self.store_dir = store_dir
        self._pool_dir = pool_dir
        self._files: list[tuple[str, int]] = []  # (path, size), oldest first
        self._lock = threading.Lock()
        self._names = itertools.count()
        self._mapped_writes = settings.STORE_MAPPED_WRITES.get() if mapped_writes is None else mapped_writes
        self._maps: dict[tuple[int, int], _Mapping] = {}  # (st_dev, st_ino) -> its mapping, oldest first
        self._mapped_writes_done = 0

    def keep(self, path: str) -> bool:
        """Moves the freed object file at `path` into the pool; False if it is not kept (not an
        object file of this store, too small, or the pool is full): the caller deletes it."""
        if store_owners.in_store(self.store_dir, path) is None:
            return False  # the spill directory's files are on disk: nothing to gain
        try:
            stat = os.stat(path)
            st = os.statvfs(self.store_dir)
        except OSError:
            return False
        size = stat.st_size
        cap = st.f_blocks * st.f_frsize * MAX_FRACTION
        with self._lock:
            if size < MIN_BYTES or len(self._files) >= MAX_FILES or self._bytes() + size > cap:
                self._unmap_locked((stat.st_dev, stat.st_ino))  # the caller deletes it
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
        mapping = self._mapping_for(reused) if self._mapped_writes else None
        try:
            if mapping is None:
                ser.write_fd(reused.fd, reused.old_size, self.store_dir)
            else:
                with memoryview(mapping.map) as view:
                    ser.write_fd(reused.fd, reused.old_size, self.store_dir, view[:reused.old_size])
        except BaseException:
            if mapping is not None:
                mapping.busy = False
                self._unmap(mapping.key)
            reused.abort()
            raise
        if mapping is not None:
            mapping.busy = False
            self._mapped_writes_done += 1
        reused.commit(path, ser.size)
        return ser.size

    def stats(self) -> dict[str, int]:
        """What the pool holds and has done: pooled `files`, kept `mappings`, and `mapped_writes`
        (reuses written through a mapping), for tests and `kastor status`-style diagnostics."""
        with self._lock:
            return {"files": len(self._files), "mappings": len(self._maps),
                    "mapped_writes": self._mapped_writes_done}

    def _mapping_for(self, reused: Reused) -> _Mapping | None:
        """The kept writable mapping of the file `reused` is overwriting, made (and its pages faulted
        in) on its first reuse; None if it cannot be mapped (then `pwritev` writes it)."""
        try:
            stat = os.fstat(reused.fd)
        except OSError:
            return None
        key = (stat.st_dev, stat.st_ino)
        with self._lock:
            self._drop_deleted_locked()
            mapping = self._maps.pop(key, None)
            if mapping is not None and len(mapping.map) < reused.old_size:
                mapping.close()  # the file grew past it since (a larger object's tail): map it whole again
                mapping = None
            if mapping is not None:
                mapping.busy = True
                self._maps[key] = mapping  # most recently used last
                return mapping
        if reused.old_size == 0:
            return None
        try:
            fd = os.open(reused.kept, os.O_RDWR)  # its own open file: it holds no lock
        except OSError:
            return None
        try:
            if os.fstat(fd).st_ino != stat.st_ino:
                os.close(fd)
                return None
            area = mmap.mmap(fd, reused.old_size, flags=mmap.MAP_SHARED | _POPULATE,
                             prot=mmap.PROT_READ | mmap.PROT_WRITE)
        except OSError as e:
            os.close(fd)
            log.debug("writing %s without a mapping: %s", reused.kept, e)
            return None
        mapping = _Mapping(key, fd, area)
        mapping.busy = True
        with self._lock:
            self._maps[key] = mapping
            idle = [k for k, m in self._maps.items() if not m.busy]
            for old in idle[:max(0, len(self._maps) - MAX_MAPPINGS)]:
                self._maps.pop(old).close()
        return mapping

    def _unmap(self, key: tuple[int, int]) -> None:
        with self._lock:
            self._unmap_locked(key)

    def _unmap_locked(self, key: tuple[int, int]) -> None:
        mapping = self._maps.get(key)
        if mapping is not None and not mapping.busy:
            del self._maps[key]
            mapping.close()

    def _drop_deleted_locked(self) -> None:
        """Closes the mappings of files deleted since (their pages are freed only then)."""
        for key, mapping in list(self._maps.items()):
            if not mapping.busy and mapping.deleted():
                del self._maps[key]
                mapping.close()

    def open_reused(self, size: int) -> Reused | None:
        """A pooled file for an object of `size` bytes, open for writing from its start and
        locked so that no reader maps it until `commit`; None if the pool has none that no
        process reads any more (those are deleted on the way)."""
        while (taken := self._take(size)) is not None:
            kept, old_size = taken
            try:
                fd = os.open(kept, os.O_RDWR)
            except OSError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:  # still mapped or read somewhere: that reader keeps its bytes
                self._unmap(_file_key(fd))
                os.close(fd)
                _unlink(kept)
                continue
            return Reused(fd, kept, old_size)
        return None

    def drain(self) -> bool:
        """Deletes every pooled file (the store is full, or the process stops); True if any was."""
        with self._lock:
            files, self._files = self._files, []
            for key in [k for k, m in self._maps.items() if not m.busy]:
                self._maps.pop(key).close()  # pooled or not, their pages are better given back now
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


class _Mapping:
    """A writable shared mapping of a file the pool reused, kept for its next reuse (see the
    module docstring); `busy` while a put writes through it (under the pool's lock)."""

    __slots__ = ("key", "fd", "map", "busy")

    def __init__(self, key: tuple[int, int], fd: int, area: mmap.mmap) -> None:
        self.key = key
        self.fd = fd
        self.map = area
        self.busy = False

    def deleted(self) -> bool:
        try:
            return os.fstat(self.fd).st_nlink == 0
        except OSError:
            return True

    def close(self) -> None:
        self.map.close()
        os.close(self.fd)


def _file_key(fd: int) -> tuple[int, int]:
    st = os.fstat(fd)
    return st.st_dev, st.st_ino


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
