"""The process-wide handle on this process's CoreWorker, and the running task's identity.

Kept in a module of its own so that `kastor.ObjectRef` and friends can reach the core
without importing it (and its gRPC machinery) at import time.
"""

from __future__ import annotations

import contextvars
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from kastor.runtime.core import CoreWorker

core: CoreWorker | None = None


class TaskContext(NamedTuple):
    """What is running on this thread (or asyncio task) right now, for nested calls.

    A NamedTuple rather than a frozen dataclass: one is built for every call a worker runs, and
    the dataclass's __init__ (an object.__setattr__ per field) cost several times as much."""

    job_id: bytes
    task_id: bytes
    actor_id: bytes = b""
    gpu_ids: tuple[int, ...] = ()
    namespace: str = ""
    label: str = ""  # the function or actor class, to tag the output it prints
    env_vars: tuple[tuple[str, str], ...] = ()  # runtime_env, inherited by the work it submits
    name: str = ""  # the task's name: the function, or Class.method


current_task: contextvars.ContextVar[TaskContext | None] = contextvars.ContextVar("kastor_task", default=None)
