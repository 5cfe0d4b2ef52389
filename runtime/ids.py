"""Ids of tasks, actors and objects, and how they relate (as Ray's TaskID/ActorID/ObjectID do).

Kept apart from the core so that the head, the node agent and the public package can derive
one id from another (an actor's job, a call's return objects) without importing the driver's
core worker.
"""

from __future__ import annotations

import itertools
import os

# The index a put() object carries in place of a return index (it belongs to no task's returns).
PUT_INDEX = b"\xff\xff\xff\xff"
# The index of an actor's handle token (runtime/actor_handles.py): a ref that stands for the
# actor's strong handles, owned by the actor's owner. It names no value.
HANDLE_INDEX = b"\xff\xff\xff\xfe"


# A task id is this process's random prefix and a counter. Why not 16 random bytes a call, as
# before: os.urandom releases the GIL, and a driver submitting 1,000 tasks then waited, on each
# one, for its core thread to give the GIL back (0.1 ms per task under cProfile, the largest
# cost of submitting). A forked process (a worker from the fork server) draws a prefix of its own.
_task_prefix = os.urandom(8)
_task_counter = itertools.count()


def _new_task_prefix() -> None:
    global _task_prefix, _task_counter
    _task_prefix = os.urandom(8)
    _task_counter = itertools.count()


os.register_at_fork(after_in_child=_new_task_prefix)


def new_task_id() -> bytes:
    """Unique across processes: 8 random bytes per process, then a count (`next` of an
    itertools.count is atomic under the GIL, so threads that submit at once get distinct ids)."""
    return _task_prefix + next(_task_counter).to_bytes(8, "big")


def new_actor_id(job_id: bytes) -> bytes:
    """Random, ending in the creating job's id (as Ray's ActorID does), so the head can tell a
    handle that outran its actor's registration (job still running: wait) from a stray one."""
    return os.urandom(12) + job_id


def actor_job_id(actor_id: bytes) -> bytes:
    return actor_id[-4:]


def handle_token_id(actor_id: bytes) -> bytes:
    """The id of the token the strong handles of `actor_id` carry (see runtime/actor_handles.py)."""
    return actor_id + HANDLE_INDEX


def return_id(task_id: bytes, index: int) -> bytes:
    """The object id of a call's return `index` (a generator's item k is return k + 1)."""
    return task_id + index.to_bytes(4, "big")


def task_of(object_id: bytes) -> bytes:
    """The task an object is a return of (for a put() object: its random prefix)."""
    return object_id[:-4]


def new_put_id() -> bytes:
    return os.urandom(16) + PUT_INDEX
