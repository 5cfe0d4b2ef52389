"""Ids of tasks, actors and objects, and how they relate (as Ray's TaskID/ActorID/ObjectID do).

Kept apart from the core so that the head, the node agent and the public package can derive
one id from another (an actor's job, a call's return objects) without importing the driver's
core worker.
"""

from __future__ import annotations

import os
import random

# The index a put() object carries in place of a return index (it belongs to no task's returns).
PUT_INDEX = b"\xff\xff\xff\xff"
# The index of an actor's handle token (runtime/actor_handles.py): a ref that stands for the
# actor's strong handles, owned by the actor's owner. It names no value.
HANDLE_INDEX = b"\xff\xff\xff\xfe"


# Ids come from a pseudo-random generator seeded from os.urandom, not from os.urandom itself:
# os.urandom releases the GIL around its getrandom() call, and on a caller that submits a burst
# of calls while its core loop sends them, each release handed the GIL to the loop, so that
# 5,000 pipelined calls spent about a quarter of the caller's time getting the GIL back
# (bench/README.md, "Pipelined calls"). Ids need to be unique, not secret (every data and
# control connection is authenticated by the cluster token). A forked child (every worker
# the fork server starts) reseeds, so it never repeats its parent's ids.
_ids = random.Random(os.urandom(32))
os.register_at_fork(after_in_child=lambda: _ids.seed(os.urandom(32)))


def random_bytes(n: int) -> bytes:
    """`n` unique-with-overwhelming-probability bytes, without releasing the GIL."""
    return _ids.getrandbits(8 * n).to_bytes(n, "little")


def new_task_id() -> bytes:
    return random_bytes(16)


def new_actor_id(job_id: bytes) -> bytes:
    """Random, ending in the creating job's id (as Ray's ActorID does), so the head can tell a
    handle that outran its actor's registration (job still running: wait) from a stray one."""
    return random_bytes(12) + job_id


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
    return random_bytes(16) + PUT_INDEX
