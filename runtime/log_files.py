"""Finding and reading the log files of this machine's sessions, for `kastor logs` and
`kastor.util.state.get_log()`.

Every node agent writes each worker's output (what its tasks and actor print, and the
worker's own log) to `<session>/logs/worker-<first 12 hex digits of its worker id>.log`,
next to `head.log` and `node.log`; session folders live under KASTOR_SESSION_ROOT. Only the
sessions of this machine are read: a worker of another node keeps its log on that node.
"""

from __future__ import annotations

import glob
import os
import re
from collections import deque
from collections.abc import Iterator

from kastor.runtime import config

_WORKER_LOG = re.compile(r"worker-([0-9a-f]{12})\.log")


def session_dirs() -> list[str]:
    """This machine's session folders, newest first."""
    found = glob.glob(os.path.join(config.SESSION_ROOT, "session_*"))
    return sorted((d for d in found if os.path.isdir(os.path.join(d, "logs"))), key=os.path.getmtime, reverse=True)


def list_files(session: str | None = None) -> list[str]:
    """The log files of one session (the newest by default)."""
    logs = os.path.join(_session(session), "logs")
    return sorted(os.path.join(logs, name) for name in os.listdir(logs))


def worker_id_of_pid(pid: int) -> str | None:
    """The worker id (or its first 12 hex digits) of a live worker process on this machine: from
    the environment it was started with, or else from the log file its stdout is (a worker forked
    by the fork server shows the server's starting environment in /proc, not its own)."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            variables = f.read().split(b"\0")
    except OSError:
        return None
    prefix = config.ENV_WORKER_ID.encode() + b"="
    found = next((v[len(prefix):].decode() for v in variables if v.startswith(prefix)), None)
    if found is not None:
        return found
    try:
        stdout = os.readlink(f"/proc/{pid}/fd/1")
    except OSError:
        return None
    match = _WORKER_LOG.fullmatch(os.path.basename(stdout))
    return match.group(1) if match else None


def find(*, filename: str | None = None, worker_id: str | None = None, pid: int | None = None,
         session: str | None = None) -> str:
    """The path of one log file, by file name, worker id (or a prefix of it) or a live
    worker's pid; searches the given session, else every session, newest first.
    FileNotFoundError says what was looked for and where."""
    if pid is not None:
        worker_id = worker_id_of_pid(pid)
        if worker_id is None:
            raise FileNotFoundError(f"No live Kastor worker has pid {pid} on this machine; pass its worker id or "
                                    f"file name instead (`kastor logs` lists a session's files).")
    if worker_id is not None:
        pattern = f"worker-{worker_id.lower()[:12]}*.log"
    elif filename:
        pattern = os.path.basename(filename)
    else:
        raise ValueError("Name the log: a filename, a worker id, a pid or an actor id.")
    dirs = [_session(session)] if session else session_dirs()
    for d in dirs:
        hits = sorted(glob.glob(os.path.join(d, "logs", pattern)))
        if hits:
            return hits[0]
    raise FileNotFoundError(f"No log file {pattern!r} in {'session ' + session if session else 'any session'} "
                            f"under {config.SESSION_ROOT} (KASTOR_SESSION_ROOT). Logs stay on the node that "
                            f"ran the worker, and old sessions are pruned (KASTOR_SESSIONS_KEPT).")


def read(path: str, tail: int = -1) -> Iterator[str]:
    """The file's lines (the last `tail` of them when tail >= 0), newlines kept."""
    with open(path, encoding="utf-8", errors="replace") as f:
        if tail >= 0:
            yield from deque(f, maxlen=tail)
        else:
            yield from f


def _session(session: str | None) -> str:
    if session is None:
        dirs = session_dirs()
        if not dirs:
            raise FileNotFoundError(f"No Kastor session folders under {config.SESSION_ROOT} (KASTOR_SESSION_ROOT).")
        return dirs[0]
    path = session if os.path.isabs(session) else os.path.join(config.SESSION_ROOT, session)
    if not os.path.isdir(os.path.join(path, "logs")):
        raise FileNotFoundError(f"No session folder with logs at {path}.")
    return path
