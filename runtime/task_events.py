"""What this process knows of the tasks it submitted: for `util.state.list_tasks()` and
`timeline()`.

Kastor has no cluster-wide task table (Ray's GCS keeps one, fed by every worker). Each
submitter (a driver, or a worker whose task submits more) records the life of the calls it
sent: submitted, dispatched to a worker, finished or failed. So a driver sees its own tasks
and actor calls, not those its tasks submitted in turn. Times are wall-clock seconds; the
running time is when the call was sent to its worker, so it includes the trip there. The
newest MAX_TASKS are kept.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from typing import Any

from kastor.runtime.protocol import kastor_pb2 as pb

MAX_TASKS = 10_000

_lock = threading.Lock()
# task id -> [spec fields as bytes..., state, worker, attempt, submitted, start, end]: kept raw and
# formatted in rows(), since recording a task is on every submission's path and reading them
# is rare (a dict with five hex strings per task was ~10 us of the core loop's time per task).
_tasks: OrderedDict[bytes, list[Any]] = OrderedDict()
_STATE, _WORKER, _ATTEMPT, _START, _END = 6, 7, 8, 9, 10


def submitted(spec: pb.TaskSpec) -> None:
    row = [spec.task_id, spec.name, spec.job_id, spec.actor_id, spec.parent_task_id, time.time(),
           "PENDING_NODE_ASSIGNMENT", None, spec.attempt, None, None]
    with _lock:
        _tasks[spec.task_id] = row
        while len(_tasks) > MAX_TASKS:
            _tasks.popitem(last=False)


def running(spec: pb.TaskSpec, worker: str) -> None:
    with _lock:
        row = _tasks.get(spec.task_id)
        if row is not None:
            row[_STATE], row[_WORKER], row[_ATTEMPT], row[_START] = "RUNNING", worker, spec.attempt, time.time()


def finished(spec: pb.TaskSpec, failed: bool) -> None:
    with _lock:
        row = _tasks.get(spec.task_id)
        if row is not None:
            row[_STATE], row[_END] = "FAILED" if failed else "FINISHED", time.time()


def _row(r: list[Any]) -> dict[str, Any]:
    task_id, name, job_id, actor_id, parent_task_id, submitted_at, state, worker, attempt, start, end = r
    return {"task_id": task_id.hex(), "name": name, "state": state,
            "type": "ACTOR_TASK" if actor_id else "NORMAL_TASK", "job_id": job_id.hex(),
            "actor_id": actor_id.hex() or None, "parent_task_id": parent_task_id.hex() or None,
            "worker_address": worker, "attempt": attempt,
            "submitted_at": submitted_at, "start_time": start, "end_time": end}


def rows() -> list[dict[str, Any]]:
    with _lock:
        raw = [list(r) for r in _tasks.values()]
    return [_row(r) for r in raw]


def chrome_trace() -> list[dict[str, Any]]:
    """Ray's timeline format: one complete ("X") event per task that ran, in microseconds."""
    events = []
    for r in rows():
        if r["start_time"] is None:
            continue
        end = r["end_time"] if r["end_time"] is not None else time.time()
        events.append({"cat": "task", "name": r["name"], "ph": "X", "pid": f"job {r['job_id']}",
                       "tid": f"worker {r['worker_address']}", "ts": r["start_time"] * 1e6,
                       "dur": max(0.0, end - r["start_time"]) * 1e6,
                       "args": {"task_id": r["task_id"], "state": r["state"], "attempt": r["attempt"]}})
    return events
