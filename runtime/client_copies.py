"""Where a `kastor://` client keeps its local copies of the large values it puts.

A notebook's `put` writes one local copy (lazy_puts.py); a `get` of it maps that copy. In
memory (`/dev/shm`) that copy costs what a put costs in the cluster, one `memcpy` into pages
that stay; on a disk-backed temp directory the same write is a page-cache write that the kernel
also has to write back, and a 100 MiB put+get ran at a third of the rate (bench/README.md, "a
notebook's put"). So the copies go to `/dev/shm` when it is a real one (at least
`MIN_SHM_BYTES`, not a container's 64 MiB default), else to the temp directory, or wherever
`KASTOR_CLIENT_COPIES_DIR` says.

Memory is shared with everything else on the notebook's machine, so a copy goes to `/dev/shm`
only while at least half of it stays free (`has_room`); a value that does not fit keeps no
local copy, and is uploaded at put instead (its get then downloads it, as with Ray Client).
A notebook killed before it could clean up leaves its folder behind; the next client on the
machine deletes it (`make_dir`). A folder is told live or dead as session folders are, by a
lock its process holds (session_dirs.is_live), not by its PID, which the machine reuses.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import tempfile

from kastor.runtime import session_dirs, settings

log = logging.getLogger("kastor.client_copies")

SHM = "/dev/shm"
MIN_SHM_BYTES = 1 << 30
PREFIX = "kastor-client-copies-"

_locks: dict[str, int] = {}  # this process's folders -> their open, locked lock file


def root() -> str:
    """The directory the copies' folder goes in (see the module docstring)."""
    chosen = settings.CLIENT_COPIES_DIR.get()
    if chosen:
        return chosen
    try:
        st = os.statvfs(SHM)
        if st.f_blocks * st.f_frsize >= MIN_SHM_BYTES and os.access(SHM, os.W_OK):
            return SHM
    except OSError:
        pass
    return tempfile.gettempdir()


def make_dir(where: str) -> str:
    """A new, locked folder for this process's copies in `where`, after deleting those of dead
    processes. It is locked before it gets its name, so a sweeping client never sees it unlocked."""
    _sweep_dead(where)
    staging = tempfile.mkdtemp(prefix=f".{PREFIX}", dir=where)
    fd = os.open(os.path.join(staging, session_dirs.LOCK_NAME), os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_SH)
    path = os.path.join(where, f"{PREFIX}{os.getpid()}-{os.path.basename(staging)[len(PREFIX) + 1:]}")
    os.rename(staging, path)
    _locks[path] = fd
    return path


def remove_dir(path: str) -> None:
    """Deletes this process's folder and lets go of its lock."""
    shutil.rmtree(path, ignore_errors=True)
    fd = _locks.pop(path, None)
    if fd is not None:
        os.close(fd)


def has_room(where: str, size: int) -> bool:
    """Whether a copy of `size` bytes may go in `where`: always on disk; in memory (`/dev/shm`)
    only while at least half of it stays free after it."""
    if os.path.realpath(where) != SHM and not where.startswith(SHM + "/"):
        return True
    try:
        st = os.statvfs(where)
    except OSError:
        return False
    return (st.f_bavail * st.f_frsize - size) >= st.f_blocks * st.f_frsize // 2


def _sweep_dead(where: str) -> None:
    try:
        entries = list(os.scandir(where))
    except OSError:
        return
    for entry in entries:
        if not entry.name.startswith(PREFIX) or entry.path in _locks or session_dirs.is_live(entry.path):
            continue
        shutil.rmtree(entry.path, ignore_errors=True)
        log.info("deleted %s, the local copies of a client process that no longer runs", entry.path)
