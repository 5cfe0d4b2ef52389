"""Records of clusters started with `kastor start` on this machine, for stop/status/auto.

A record names the processes it started by PID *and* identity (start time from
/proc/PID/stat, and the Kastor module in the command line): PIDs are reused, so a PID alone
may name an unrelated process by the time `kastor stop` runs. A record whose processes are
all gone is stale and is dropped whenever records are read. Only the current user's records
are read: the folder is machine-wide.
"""

from __future__ import annotations

import glob
import json
import os

from kastor.runtime import config


def _dir() -> str:
    path = os.path.join(config.SESSION_ROOT, "records")
    os.makedirs(path, exist_ok=True)
    return path


def process_identity(pid: int) -> tuple[int, str] | None:
    """(start time in clock ticks since boot, command line) of a running process, or None."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmdline = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) ": field 3 (state) onwards
    if fields[0] == "Z":  # a zombie has exited; only its parent's wait is missing
        return None
    return int(fields[19]), cmdline  # field 22: starttime


def describe(pid: int, module: str) -> dict:
    """What a record keeps of a process it started, to recognise it later."""
    identity = process_identity(pid)
    return {"pid": pid, "module": module, "start_time": identity[0] if identity else None}


def is_running(proc: dict) -> bool:
    """Whether the process a record describes still runs (and its PID was not reused since)."""
    identity = process_identity(proc["pid"])
    if identity is None:
        return False
    start_time, cmdline = identity
    if proc.get("start_time") is not None and proc["start_time"] != start_time:
        return False
    return proc.get("module", "kastor.runtime") in cmdline


def processes(record: dict) -> list[dict]:
    """A record's processes; records of older versions name bare PIDs (checked by command line only)."""
    if "procs" in record:
        return list(record["procs"])
    return [{"pid": pid, "module": "kastor.runtime", "start_time": None} for pid in record.get("pids", [])]


def save(name: str, record: dict) -> str:
    path = os.path.join(_dir(), f"{name}.json")
    with open(path + ".tmp", "w") as f:
        json.dump(record, f)
    os.replace(path + ".tmp", path)
    return path


def all_records(prune: bool = True) -> list[tuple[str, dict]]:
    """This user's records, oldest first; stale ones (no process left) are deleted unless `prune` is off."""
    out = []
    for path in sorted(glob.glob(os.path.join(_dir(), "*.json")), key=_mtime):
        try:
            if os.stat(path).st_uid != os.getuid():
                continue
            with open(path) as f:
                record = json.load(f)
        except (OSError, ValueError):
            continue
        if prune and not any(is_running(p) for p in processes(record)):
            remove(path)
            continue
        out.append((path, record))
    return out


def _mtime(path: str) -> float:
    try:
        return os.path.getmtime(path)
    except OSError:
        return 0.0


def remove(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def latest() -> dict | None:
    heads = [r for _, r in all_records() if r.get("kind") == "head"]
    return heads[-1] if heads else None


def read_token(record: dict) -> str | None:
    path = record.get("token_file")
    if path and os.path.exists(path):
        with open(path) as f:
            return f.read().strip()
    return None


def write_token(session_dir: str, token: str) -> str:
    path = os.path.join(session_dir, "token")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token)
    return path
