"""Durable actor state: an actor restarted after a crash continues where it was.

Ray restarts a crashed actor by re-running its constructor, so its state is gone. With
`state=kastor.state.Checkpoint(...)`, Kastor saves the actor's state after its calls and, when
it restarts (on any node, or in any pod), restores it from the last checkpoint instead of
running the constructor::

    @kastor.remote(max_restarts=-1, max_task_retries=-1,
                   state=kastor.state.Checkpoint(store=kastor.state.FileStore("/data/ckpt")))
    class Account:
        def __init__(self, balance): self.balance = balance
        def deposit(self, amount):
            self.balance += amount
            return self.balance          # returned only once the new balance is saved

Without `state`, nothing changes: Ray's behaviour.

**What is saved.** The instance's `__dict__` (and slots), or what `__getstate__` returns,
pickled with cloudpickle. A restore makes the instance with `cls.__new__` and gives it the
state (`__setstate__` if the class has one), without running `__init__`; then it calls the
instance's `__kastor_restored__()` if it has one (a coroutine for an async actor runs on its
loop), to reopen files, connections and other resources that were left out of the state.
Keep such resources out of the state with `__getstate__`: a state that cannot be pickled fails
the call with `CheckpointError` naming the reason.

**When.** `every="call"` (the default) saves after each call, success or raised exception, and
sends the call's result only once the save is durable: an acknowledged call is never lost.
`every=N` saves after every N-th call, `every="30s"` (or a `timedelta`) after the first call that
ends 30 s or more after the last save; both acknowledge calls before their state is saved, so
a crash loses up to that much. A call that leaves the state as the last save had it writes
nothing (a read-only call costs one pickling).

**Restarts and calls in flight.** A crash between a call's save and its result reaching the
caller makes the caller see `ActorUnavailableError` (as in Ray) though the call's effect is
saved; with `max_task_retries` the call is sent again to the restored actor, and runs a second
time (at-least-once): make such methods idempotent (say, with a request id kept in the state)
where that matters. A crash during a call loses that call's effect, never an earlier one's.

**Where.** `FileStore(directory)` (in Kubernetes, a PersistentVolumeClaim), or `RedisStore()`
(the cluster's GCS Redis, under its key prefix; or `RedisStore(address=...)`). Implement
`CheckpointStore` for others. Writes are atomic and fenced: a checkpoint is replaced whole
(write, fsync, rename; or one Redis script), and an old instance of the actor still running
somewhere cannot overwrite a newer one's.

**Names.** A named actor's checkpoint is keyed by its namespace and name, an unnamed one's by
its actor id. So a named actor created again (after `kill(actor, keep_state=True)`, after its
restarts ran out, or with `get_if_exists` on a new cluster sharing the store) resumes from its
checkpoint. `kastor.kill(actor)` deletes the checkpoint, unless `keep_state=True`.

**Limits and errors.** A checkpoint over `max_bytes` (64 MiB by default) fails the call with
`CheckpointTooLargeError` (the in-memory state keeps the call's changes; the next save tries
again). If the store stays unreachable past KASTOR_CHECKPOINT_RETRY_S (30 s), the worker exits
so the actor restarts from its last durable checkpoint. A checkpoint that is corrupt or belongs
to another class fails the actor's start with `CheckpointCorruptError`, unless
`on_corrupt="construct"`, which logs the error and runs the constructor instead.

**Cost.** One pickling of the state per call, plus one write when it changed: a Redis round
trip, or a file write with two fsyncs. `bench/microbench.py` measures it (`durable_cost_x`).

**When to use it.** For actors whose state is worth more than a restart's silence: counters,
ledgers, sessions, coordinators, small models updated online. Not for large state changed by
every call (each changed call writes it whole: keep the bulk in a file or object store and its
reference in the state), nor for caches that the constructor can rebuild.

**Caveats.** Calls of a threaded actor (`max_concurrency > 1`) are saved one at a time, but the
state is pickled while other calls may be changing it: guard it with the actor's own lock in
`__getstate__`. When a job's driver shuts down, the checkpoints of the unnamed
non-detached durable actors it created are deleted with them; named ones stay, for a later
actor of that name (say, the next run of the script) to resume. A checkpoint stays when the
actor ends itself (`exit_actor`, `__ray_terminate__`), when its restarts run out, and when its
driver crashes; an unnamed actor's is then never used again (delete it with the store's
`delete(actor_id_hex)`). `kill` deletes the
checkpoint from the killing process, so that process must reach the store (a notebook on the
client port usually cannot reach the cluster's Redis: it logs a warning naming the key).
"""

from kastor.runtime.checkpoint_policy import Checkpoint, CheckpointCorruptError, CheckpointTooLargeError
from kastor.runtime.checkpoint_stores import (
    CheckpointError,
    CheckpointFencedError,
    CheckpointStore,
    FileStore,
    RedisStore,
)

__all__ = ["Checkpoint", "CheckpointCorruptError", "CheckpointError", "CheckpointFencedError", "CheckpointStore",
           "CheckpointTooLargeError", "FileStore", "RedisStore"]
