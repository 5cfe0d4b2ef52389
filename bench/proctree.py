"""Memory and process counts of everything a benchmark's driver started, read from /proc.

An embedded cluster (Kastor's or Ray's) is a tree of processes under the driver: head, node
agent or raylet, workers. Summing PSS over that tree counts shared pages (the interpreter,
numpy, shared memory) once, which is what "memory per actor" should mean; RSS would count them
once per process.
"""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class TreeSample:
    """One reading of the driver's process tree: how many processes, their PSS, per pid."""

    processes: int
    pss_mib: float
    by_pid: dict[int, float]


def _children_by_parent() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
            # The command name may hold spaces and parentheses: the fields after the last ')' are fixed.
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):  # exited while we looked (an empty read)
            continue
        children.setdefault(ppid, []).append(int(entry))
    return children


def descendants(root: int) -> list[int]:
    """Every live process below `root` (not `root` itself): for an embedded cluster's driver, the
    head, node agents, fork server and workers. (tests/ reads it too, through support.proctree.)"""
    children, out, todo = _children_by_parent(), [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def pss_mib(pid: int) -> float:
    """Proportional set size of one process in MiB (0 if it is gone or unreadable)."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def sample(root: int | None = None, include_root: bool = True) -> TreeSample:
    """PSS and count of `root` (default: this process) and everything below it."""
    root = os.getpid() if root is None else root
    pids = ([root] if include_root else []) + descendants(root)
    by_pid = {pid: pss_mib(pid) for pid in pids}
    by_pid = {pid: mib for pid, mib in by_pid.items() if mib > 0}
    return TreeSample(len(by_pid), sum(by_pid.values()), by_pid)
