"""Which actor handles keep a non-detached actor alive, in every process that holds one.

As in Ray, the process that created an actor (its owner) kills it once no *strong* handle to it
is left anywhere: not in the owner, not pickled into a call's arguments, a result, a put()
value or another actor's state somewhere else. Ray counts handles with the same reference
counting as objects, and so does Kastor: a strong handle carries a *token*, an ObjectRef to the
actor's handle id (`ids.handle_token_id`) that its owner owns and that names no value. The
token travels inside the handle's pickle, so the borrower protocol (runtime/borrowing.py)
counts it like any ref nested in a value: the sender pins it until the receiver registered as
a borrower, the receiver tells the owner `add` and, when its last handle goes, `remove`, and a
holder that dies lets go of it with its Borrow stream. The owner watches the token in its
object table; once nothing refers to it, the actor ends (after this process's calls to it) as in
Ray: gracefully, through its `__ray_terminate__`, and killed only if it is still there after the
graceful-shutdown timeout.

Weak handles carry no token and keep nothing alive (Ray's weak refs): `current_actor`, a
`get_actor()` lookup outside the owner's process, a detached actor's handles, an existing
actor that `get_if_exists` gave back, and whatever a weak handle is pickled into. In the
actor's own process its token is held without borrowing it (see CoreWorker.become_actor), so
an actor holding its own handle does not keep itself alive.

Where a handle is pickled outside these paths (a user's own pickle.dumps, a remote client's
call), its token escapes as an ObjectRef would: the owner keeps the actor until it exits.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from kastor.runtime import submission
from kastor.runtime.ids import handle_token_id
from kastor.runtime.object_ref import ObjectRef

if TYPE_CHECKING:  # the core hands itself in: importing it here would be a cycle
    from kastor.runtime.core import CoreWorker


def own(core: CoreWorker, actor_id: bytes) -> ObjectRef:
    """The token of an actor this process just created (non-detached): when nothing refers to
    it any more, the actor is released (ActorSubmitter.release)."""
    token_id = handle_token_id(actor_id)
    def released() -> None:
        core.actors.release(actor_id, lambda: _terminate(core, actor_id))

    core.objects.watch(token_id, lambda: core.post(released))
    return ObjectRef(token_id, core.address)


def owner_token(core: CoreWorker, actor_id: bytes) -> ObjectRef | None:
    """A token for another handle made in the owner's process (a get_actor() there): the
    creator's lookups count as its handles, as before. None anywhere else, or once released."""
    token_id = handle_token_id(actor_id)
    if not core.objects.watched(token_id):
        return None
    token = ObjectRef(token_id, core.address)
    # Making the ref first applied any release still queued: if the token was let go meanwhile,
    # the actor is already being killed and this handle cannot bring it back.
    return token if core.objects.watched(token_id) else None


def for_pickle(core: CoreWorker | None, token: ObjectRef | None) -> ObjectRef | None:
    """What a strong handle's pickle carries: its token, which the borrower protocol then counts
    (or lets escape). A process that does not track borrowers (a remote client) keeps its
    actors for good once their handles leave it, and sends weak handles."""
    if token is None or core is None or core.tracks_borrows:
        return token
    core.objects.escape(token.binary())
    return None


def _terminate(core: CoreWorker, actor_id: bytes) -> None:
    """Queues the released actor's `__ray_terminate__`, behind nothing: the owner's calls are done."""
    submission.submit_actor_call(core, actor_id, "__ray_terminate__", "__ray_terminate__", (), {}, num_returns=1,
                                 concurrency_group="", max_task_retries=0)
