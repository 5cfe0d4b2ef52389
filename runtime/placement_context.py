"""Which placement group the running task or actor is in: for get_current_placement_group()
and for child work that the group captures (placement_group_capture_child_tasks).

An actor's worker process is the actor's alone, so its group is the process's; a task's is
set around its execution (a worker runs tasks of many groups, one after the other or at once
on threads, hence a context variable).
"""

from __future__ import annotations

import contextvars

from kastor.runtime.protocol import kastor_pb2 as pb

_process: pb.PlacementGroupRef | None = None
_task: contextvars.ContextVar[pb.PlacementGroupRef | None] = contextvars.ContextVar("kastor_pg", default=None)


def enter_actor(ref: pb.PlacementGroupRef) -> None:
    """Called once when this worker becomes an actor."""
    global _process
    _process = ref if ref.placement_group_id else None


def enter_task(ref: pb.PlacementGroupRef) -> contextvars.Token:
    """Called around a task's execution; pass the token to leave_task."""
    return _task.set(ref if ref.placement_group_id else None)


def leave_task(token: contextvars.Token) -> None:
    _task.reset(token)


def current() -> pb.PlacementGroupRef | None:
    return _task.get() or _process
