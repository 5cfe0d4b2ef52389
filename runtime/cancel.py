"""`cancel()` of any ref, wherever its task was submitted.

Only a task's submitter (the ref's owner) knows where the task is queued or running, so a
process that cancels a ref it does not own (a ref returned by another task, or handed in as
an argument) asks the owner to cancel it, as Ray's core workers do. The owner then cancels it
as if it had called `cancel()` itself.
"""

from __future__ import annotations

import grpc
from kastor.runtime.protocol import kastor_pb2 as pb

_FORCE_ACTOR_MSG = ("force=True is not supported for actor tasks; use kastor.kill() "
                    "to stop the actor's process.")


def cancel_owned(core, task_id: bytes, force: bool, recursive: bool) -> bool:
    """Cancels a task this process submitted (on the core's loop); False if it submitted none
    by that id. ValueError for force=True on an actor task, as in Ray."""
    if core.tasks.cancel(task_id, force, recursive):
        return True
    actor_id = core.actors.actor_of_task(task_id)
    if actor_id is None:
        return False
    if force:
        raise ValueError(_FORCE_ACTOR_MSG)
    core.actors.cancel(actor_id, task_id, recursive)
    return True


async def cancel(core, task_id: bytes, owner: str, force: bool, recursive: bool) -> None:
    """Cancels the task behind a ref: here if this process owns it, else through its owner."""
    if not owner or owner == core.address:
        cancel_owned(core, task_id, force, recursive)
        return
    try:
        await core.worker_stub(owner).CancelTask(
            pb.CancelRequest(task_id=task_id, force=force, recursive=recursive),
            metadata=core.metadata, timeout=30)
    except grpc.aio.AioRpcError as e:
        if e.code() == grpc.StatusCode.INVALID_ARGUMENT:
            raise ValueError(e.details()) from None
        if e.code() != grpc.StatusCode.UNAVAILABLE:
            raise
        # The owner is gone, and with it the task's lease: the task is ended already.
