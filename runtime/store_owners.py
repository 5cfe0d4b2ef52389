"""Who owns each file in a node's object store, and the sweep that frees a dead owner's files.

A large value lives in the node's store (tmpfs) as a file until its owner frees it (Ray's
ownership: the process that created the ref decides its lifetime). An owner that dies
(a driver killed, or one that exits while workers still write its task results) never
frees anything, so its files would stay in `/dev/shm` for the node's life. Ray's raylet
frees a dead owner's objects; here each file goes under a directory of its owner's
address, `<store>/owner-<address>/<object>`, and the node agent's sweep deletes the
directory of an owner that no longer answers.

"Does not answer" means refused or unreachable on two sweeps in a row (a failed
connection, not a slow reply): a loaded owner is slow, not dead, and keeps its objects.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import re
import shutil
from collections.abc import Awaitable, Callable, Iterable, Iterator

log = logging.getLogger("kastor.store_owners")

OWNER_PREFIX = "owner-"
OWNER_FILE = ".owner"  # the owner's address, as given (the directory name is a safe spelling of it)
_UNSAFE = re.compile(r"[^A-Za-z0-9.-]")


def owner_dir(store_dir: str, owner_address: str) -> str:
    """The directory of `owner_address`'s files in `store_dir`, made on first use."""
    path = os.path.join(store_dir, OWNER_PREFIX + _UNSAFE.sub("_", owner_address))
    if not os.path.isdir(path):
        os.makedirs(path, exist_ok=True)
        tmp = os.path.join(path, f"{OWNER_FILE}.{os.getpid()}")
        with open(tmp, "w") as f:
            f.write(owner_address)
        os.replace(tmp, os.path.join(path, OWNER_FILE))
    return path


def object_path(store_dir: str, owner_address: str, name: str) -> str:
    """Where a value owned by `owner_address` is written; an owner without an address (a
    process not serving objects) keeps its files in the store's root, as before."""
    if not owner_address:
        return os.path.join(store_dir, name)
    return os.path.join(owner_dir(store_dir, owner_address), name)


def in_store(store_dir: str, path: str) -> str | None:
    """`path` resolved, if it is an object file of this store (in its root or in an owner's
    directory), else None: requests name paths, and nothing outside the store is served or
    deleted."""
    real = os.path.realpath(path)
    root = os.path.realpath(store_dir)
    parent = os.path.dirname(real)
    if os.path.basename(real) == OWNER_FILE:
        return None
    if parent == root or (os.path.dirname(parent) == root and os.path.basename(parent).startswith(OWNER_PREFIX)):
        return real
    return None


def owners(store_dir: str) -> dict[str, str]:
    """owner address -> its directory, for every owner with files in the store."""
    found = {}
    try:
        entries = list(os.scandir(store_dir))
    except FileNotFoundError:
        return {}
    for entry in entries:
        if not (entry.is_dir() and entry.name.startswith(OWNER_PREFIX)):
            continue
        try:
            with open(os.path.join(entry.path, OWNER_FILE)) as f:
                found[f.read().strip()] = entry.path
        except FileNotFoundError:  # being made right now: its owner is writing, so alive
            continue
    return found


def lock_for_reading(fd: int, path: str) -> None:
    """Takes a shared lock on the open object file `fd` and checks that `path` still names it.

    Raises FileNotFoundError when the object was freed (and its file possibly reused for
    another object, store_recycle) since `path` was opened. The lock lasts as long as the
    open file (and any mmap made from it, which keeps a duplicate of `fd`)."""
    fcntl.flock(fd, fcntl.LOCK_SH)
    opened = os.fstat(fd)
    try:
        now = os.stat(path)
    except FileNotFoundError:
        raise FileNotFoundError(errno.ENOENT, "the object was freed while it was being opened", path) from None
    if (now.st_ino, now.st_dev) != (opened.st_ino, opened.st_dev):
        raise FileNotFoundError(errno.ENOENT, "the object was freed while it was being opened", path)


def read_chunks(path: str, chunk_bytes: int) -> Iterator[tuple[bytes, int]]:
    """(chunk, total size) of an object file, for FetchObject (a node's store or a driver's);
    the file stays locked for reading until the last chunk (lock_for_reading)."""
    with open(path, "rb") as f:
        lock_for_reading(f.fileno(), path)
        total = os.fstat(f.fileno()).st_size
        while chunk := f.read(chunk_bytes):
            yield chunk, total


def free(store_dir: str, paths: Iterable[str]) -> None:
    """Deletes the named object files of this store (FreeObjects); anything else is ignored."""
    for p in paths:
        path = in_store(store_dir, p)
        if path is not None:
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass


class DeadOwnerSweep:
    """Deletes the files of owners that stopped answering (see the module docstring).

    `alive(address)` returns True if the owner answered, False if it was refused or
    unreachable, None if it could not tell (e.g. a timeout: slow, so not counted)."""

    def __init__(self, store_dir: str, alive: Callable[[str], Awaitable[bool | None]], strikes: int = 2) -> None:
        self.store_dir = store_dir
        self.alive = alive
        self.strikes_needed = strikes
        self.strikes: dict[str, int] = {}

    async def sweep(self) -> list[str]:
        """One round; returns the owners whose files were deleted."""
        present = owners(self.store_dir)
        self.strikes = {a: n for a, n in self.strikes.items() if a in present}
        freed = []
        for address, path in present.items():
            answer = await self.alive(address)
            if answer is None:
                continue
            if answer:
                self.strikes.pop(address, None)
                continue
            self.strikes[address] = self.strikes.get(address, 0) + 1
            if self.strikes[address] >= self.strikes_needed:
                count = sum(1 for e in os.scandir(path) if e.name != OWNER_FILE)
                shutil.rmtree(path, ignore_errors=True)
                self.strikes.pop(address, None)
                freed.append(address)
                log.info("freed %d object(s) of owner %s, which no longer answers", count, address)
        return freed
