"""Steps of the head that must run to their end even when the RPC that began them is cancelled.

grpc.aio cancels a handler's task when its caller goes away (its deadline passed, it died, its
pod was deleted). A handler cancelled between two state changes leaves the first without the
second: an actor marked RESTARTING but never placed, a job dropped from the table but its actors
never killed. Such a handler runs those steps through `finish_even_if_cancelled`: the caller
still sees its call fail, but the head's tables reach a consistent state. docs/fault-tolerance.md
("A caller that goes away mid-call") says which handlers need it and why the others do not.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

_unfinished: set[asyncio.Task[Any]] = set()  # strong references: the loop keeps only weak ones


def run_to_end(work: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
    """Starts `work` in a task of its own that the module keeps alive until it ends: for a step
    the caller need not wait for, which must still not be dropped half done."""
    task = asyncio.get_running_loop().create_task(work)
    _unfinished.add(task)
    task.add_done_callback(_unfinished.discard)
    return task


async def finish_even_if_cancelled(work: Coroutine[Any, Any, T]) -> T:
    """Runs `work` to its end even if the caller is cancelled meanwhile, and returns its result.

    The caller's cancellation still reaches the caller (CancelledError is raised in it once it
    is cancelled); only `work` goes on, in a task of its own that the module keeps alive.
    """
    return await asyncio.shield(run_to_end(work))
