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
from collections.abc import Iterable
from typing import Any

from kastor.runtime.protocol import kastor_pb2 as pb

MAX_TASKS = 10_000

_lock = threading.Lock()
# task id -> [name, job id, actor id, parent task id, state, worker address, attempt,
# submitted_at, start_time, end_time]: raw fields, recorded on every call's path; the dict
# rows (hex ids and all) are built only when someone reads them (`rows`). Building them per
# call cost the pipelined path about a tenth of its caller's loop (bench/README.md).
_tasks: OrderedDict[bytes, list[Any]] = OrderedDict()
_NAME, _JOB, _ACTOR, _PARENT, _STATE, _WORKER, _ATTEMPT, _SUBMITTED, _START, _END = range(10)


def submitted(spec: pb.TaskSpec) -> None:
    row = [spec.name, spec.job_id, spec.actor_id, spec.parent_task_id, "PENDING_NODE_ASSIGNMENT", None,
           spec.attempt, time.time(), None, None]
    with _lock:
        _tasks[spec.task_id] = row
        while len(_tasks) > MAX_TASKS:
            _tasks.popitem(last=False)


def submitted_running(spec: pb.TaskSpec, worker: str) -> None:
    """`submitted` then `running`, for a call sent the moment it is made (on a fast lane):
    one lock, one clock reading."""
    now = time.time()
    row = [spec.name, spec.job_id, spec.actor_id, spec.parent_task_id, "RUNNING", worker, spec.attempt, now, now,
           None]
    with _lock:
        _tasks[spec.task_id] = row
        while len(_tasks) > MAX_TASKS:
            _tasks.popitem(last=False)


def running(spec: pb.TaskSpec, worker: str) -> None:
    running_many((spec,), worker)


def running_many(specs: Iterable[pb.TaskSpec], worker: str) -> None:
    """`running` for a batch of calls sent together: one lock, one clock reading."""
    now = time.time()
    with _lock:
        for spec in specs:
            row = _tasks.get(spec.task_id)
            if row is not None:
                row[_STATE], row[_WORKER], row[_ATTEMPT], row[_START] = "RUNNING", worker, spec.attempt, now


def finished(spec: pb.TaskSpec, failed: bool) -> None:
    now = time.time()
    with _lock:
        row = _tasks.get(spec.task_id)
        if row is not None:
            row[_STATE], row[_END] = "FAILED" if failed else "FINISHED", now


def finished_many(ended: Iterable[tuple[bytes, bool]]) -> None:
    """`finished` for the calls of one results frame, by (task id, failed): one lock, one clock reading."""
    now = time.time()
    with _lock:
        for task_id, failed in ended:
            row = _tasks.get(task_id)
            if row is not None:
                row[_STATE], row[_END] = "FAILED" if failed else "FINISHED", now


def rows() -> list[dict[str, Any]]:
    with _lock:
        raw = [(task_id, list(row)) for task_id, row in _tasks.items()]
    return [{"task_id": task_id.hex(), "name": r[_NAME], "state": r[_STATE],
             "type": "ACTOR_TASK" if r[_ACTOR] else "NORMAL_TASK", "job_id": r[_JOB].hex(),
             "actor_id": r[_ACTOR].hex() or None, "parent_task_id": r[_PARENT].hex() or None,
             "worker_address": r[_WORKER], "attempt": r[_ATTEMPT],
             "submitted_at": r[_SUBMITTED], "start_time": r[_START], "end_time": r[_END]} for task_id, r in raw]


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
