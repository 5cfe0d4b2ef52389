"""Session folders (logs, the token file of `kastor start`) under SESSION_ROOT, and their pruning.

Every start makes one, so they would pile up for ever. A live session is told apart from a
dead one by a lock, not by PIDs (which are reused): the process that makes the folder holds a
shared flock on its `.lock` file and hands that open file to the processes it starts (see
`held_fds`), so the lock lasts as long as any of them runs. Starting a session prunes the
folders whose lock nobody holds, keeping the newest SESSIONS_KEPT of them for their logs, as
Ray keeps its recent session folders (but not the objects their nodes spilled to disk, which
a node agent killed without a clean stop left behind).
"""

from __future__ import annotations

import fcntl
import os
import shutil
import time

from kastor.runtime import config, settings

SESSIONS_KEPT = settings.SESSIONS_KEPT.get()
LOCK_NAME = ".lock"
PREFIX = "session_"
SPILL_FOLDER = "spill"  # the default root of the session's nodes' spilled objects (spilling.node_spill_dir)

_held: dict[str, int] = {}  # session folder -> the open, shared-locked .lock of a session we made


def new(kind: str) -> str:
    """Makes a locked session folder (renamed into place only once locked, so a concurrent
    pruner never sees it unlocked), then prunes dead ones."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    name = f"{PREFIX}{stamp}_{os.getpid()}_{kind}"
    staging = os.path.join(config.SESSION_ROOT, f".{name}.{os.urandom(4).hex()}")
    os.makedirs(os.path.join(staging, "logs"))
    fd = os.open(os.path.join(staging, LOCK_NAME), os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_SH)
    path = os.path.join(config.SESSION_ROOT, name)
    if os.path.exists(path):  # the same process made one of this kind this second already
        path = f"{path}_{os.urandom(2).hex()}"
    os.rename(staging, path)
    _held[path] = fd
    prune()
    return path


def held_fds() -> tuple[int, ...]:
    """The lock files of the sessions this process made: child processes inherit them."""
    return tuple(_held.values())


def is_live(path: str) -> bool:
    """Whether some process still holds the session's lock. A folder without a lock file is
    from an older Kastor, which cannot say; it counts as dead."""
    try:
        fd = os.open(os.path.join(path, LOCK_NAME), os.O_RDWR)
    except FileNotFoundError:
        return False
    except OSError:
        return True  # not ours to judge (another user's, say)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing drops the probe's lock
    return False


def prune(keep: int = SESSIONS_KEPT) -> list[str]:
    """Deletes dead session folders but the newest `keep`; returns the deleted paths."""
    try:
        names = [n for n in os.listdir(config.SESSION_ROOT) if n.startswith(PREFIX)]
    except FileNotFoundError:
        return []
    paths = sorted((os.path.join(config.SESSION_ROOT, n) for n in names), key=_mtime, reverse=True)
    dead = [p for p in paths if p not in _held and _ours(p) and not is_live(p)]
    for path in dead[:keep]:  # kept for their logs; objects spilled to disk are of no use once it ended
        shutil.rmtree(os.path.join(path, SPILL_FOLDER), ignore_errors=True)
    removed = []
    for path in dead[keep:]:
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    return removed


def _ours(path: str) -> bool:
    try:
        st = os.stat(path)
    except OSError:
        return False
    return st.st_uid == os.getuid() and os.path.isdir(path)


def _mtime(path: str) -> float:
    try:
        return os.path.getmtime(path)
    except OSError:
        return 0.0
