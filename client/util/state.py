"""Read the cluster's live actor and node tables from Python, like `ray.util.state`.

Rows are plain dicts (the same shape `kastor list --json` prints), so a restart count or a death
cause is one lookup away for tests, dashboards and operators alike. `list_tasks()` and
`get_log()` answer from what this process and this machine know (see each).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from kastor.runtime import log_files, task_events
from kastor.runtime.protocol import kastor_pb2 as pb
from kastor.runtime.state_rows import actor_row, group_row, node_row
from kastor.session import current_core

Filter = tuple[str, str, Any]


def list_actors(filters: list[Filter] | None = None) -> list[dict[str, Any]]:
    """Every actor the head knows, dead ones included; `filters` are `(key, "=" | "!=", value)`."""

    reply = current_core().head_call("ListActors", pb.ListRequest())
    return _filtered([actor_row(a) for a in reply.actors], filters)


def list_nodes(filters: list[Filter] | None = None) -> list[dict[str, Any]]:
    """Every node that registered, with total and available resources."""

    reply = current_core().head_call("ListNodes", pb.ListRequest())
    return _filtered([node_row(n) for n in reply.nodes], filters)


def list_placement_groups(filters: list[Filter] | None = None) -> list[dict[str, Any]]:
    """Every placement group the head knows (removed ones included), with its state, strategy,
    bundles and the node each bundle is reserved on."""
    from kastor.api import _core

    reply = _core().head_call("ListPlacementGroups", pb.ListRequest())
    return _filtered([group_row(g) for g in reply.groups], filters)


def list_jobs(filters: list[Filter] | None = None) -> list[dict[str, Any]]:
    """The running jobs (drivers) the head knows, in Ray's shape: job_id, type "DRIVER", status
    "RUNNING", namespace, driver_info (address, pid), and whether the driver is connected now.
    A finished job leaves the head's table, so it is not listed (Ray lists it as SUCCEEDED)."""

    reply = current_core().head_call("ListJobs", pb.ListRequest())
    rows = [{"job_id": j.job_id.hex(), "type": "DRIVER", "status": "RUNNING", "namespace": j.namespace,
             "driver_info": {"address": j.driver_address, "pid": j.pid}, "connected": j.connected}
            for j in reply.jobs]
    return _filtered(rows, filters)


def list_tasks(filters: list[Filter] | None = None) -> list[dict[str, Any]]:
    """The tasks and actor calls this process submitted (the newest 10,000), with their state
    (PENDING_NODE_ASSIGNMENT, RUNNING, FINISHED or FAILED), name, type, ids (the parent task's too), worker address and
    times. Unlike Ray's, it does not list what other processes submitted: Kastor keeps no
    cluster-wide task table (runtime/task_events.py)."""
    return _filtered(task_events.rows(), filters)


def get_log(filename: str | None = None, *, actor_id: str | None = None, pid: int | None = None,
            worker_id: str | None = None, tail: int = -1) -> Iterator[str]:
    """The lines of a log file of this machine's sessions: an actor's worker (by actor id), a
    live worker (by pid), a worker id, or a file such as "head.log" or "worker-<id>.log".
    `kastor logs` prints the same files."""
    if actor_id is not None:

        reply = current_core().head_call("GetActor", pb.GetActorRequest(actor_id=bytes.fromhex(actor_id)))
        if not reply.found or not reply.info.worker_id:
            raise ValueError(f"No actor {actor_id} with a worker is known to the head; it may not have started yet.")
        worker_id = reply.info.worker_id.hex()
    return log_files.read(log_files.find(filename=filename, worker_id=worker_id, pid=pid), tail)


def _filtered(rows: list[dict[str, Any]], filters: list[Filter] | None) -> list[dict[str, Any]]:
    for key, op, value in filters or ():
        if op not in ("=", "!="):
            raise ValueError(f"Unsupported filter operator {op!r} for {key!r}: use '=' or '!='.")
        if rows and key not in rows[0]:
            raise ValueError(f"Unknown filter key {key!r}; known keys: {', '.join(rows[0])}.")
        rows = [r for r in rows if (str(r[key]) == str(value)) == (op == "=")]
    return rows
