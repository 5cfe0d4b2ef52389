"""The mechanics of durable actor state (the API and its semantics: client/state.py).

The worker calls into this module at two points only: `attach()`/`restore()` when the actor
starts, and `after_call()` when a call has run, before its result is sent. Everything else
(framing, versions, change detection, fencing, the policy) lives here.

A checkpoint record is a fixed binary header (`MAGIC`, format, version, time, state size
and CRC-32, the class name's length), the class name, then the cloudpickled state. The CRC and the class
name let a restore tell a damaged or foreign checkpoint from a good one.
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import logging
import struct
import threading
import time
import zlib
from collections.abc import Callable
from typing import Any

import cloudpickle
from kastor.runtime.checkpoint_policy import Checkpoint, CheckpointCorruptError, CheckpointTooLargeError
from kastor.runtime.checkpoint_stores import CheckpointError, CheckpointFencedError, CheckpointStore
from kastor.runtime.protocol import kastor_pb2 as pb

log = logging.getLogger("kastor.state")

MAGIC = b"KCK1"
FORMAT = 1
RESTORED_HOOK = "__kastor_restored__"
_SAVED_STATUSES = (pb.TASK_OK, pb.TASK_APP_ERROR, pb.TASK_CANCELLED)  # user code ran: its changes count


def pack_policy(policy: Checkpoint | None) -> bytes:
    """The `state` option as it travels in the actor's spec (empty: no durable state)."""
    if policy is None:
        return b""
    if not isinstance(policy, Checkpoint):
        raise TypeError(f"The 'state' option takes a kastor.state.Checkpoint(...), got {type(policy).__name__}.")
    return cloudpickle.dumps(policy)


def checkpoint_key(spec: pb.ActorSpec) -> str:
    """A named actor's checkpoint follows its name (so a new actor of that name resumes it);
    an unnamed one's is its own."""
    return f"{spec.namespace}/{spec.name}" if spec.name else spec.actor_id.hex()


_HEADER = struct.Struct(">4sBQdIIH")  # magic, format, version, time, state size, CRC-32, class name length


def encode(state: bytes, version: int, class_name: str) -> bytes:
    name = class_name.encode()
    return _HEADER.pack(MAGIC, FORMAT, version, time.time(), len(state), zlib.crc32(state), len(name)) + name + state


def decode(record: bytes, where: str) -> tuple[dict, bytes]:
    """(header, pickled state), or CheckpointCorruptError naming what is wrong."""
    def corrupt(why: str) -> CheckpointCorruptError:
        return CheckpointCorruptError(f"the checkpoint {where} is corrupt ({why}). Delete it (kastor.kill(actor), or "
                                      f"the store's delete(key)) to start from the constructor, or create the actor "
                                      f"with Checkpoint(on_corrupt='construct').")
    if len(record) < _HEADER.size or record[:4] != MAGIC:
        raise corrupt("it does not start with a Kastor checkpoint header")
    _, fmt, version, saved_at, size, crc, name_length = _HEADER.unpack_from(record)
    if fmt != FORMAT:
        raise corrupt(f"format {fmt}, this Kastor reads format {FORMAT}")
    start = _HEADER.size + name_length
    try:
        class_name = record[_HEADER.size:start].decode()
    except UnicodeDecodeError:
        raise corrupt("its header is not readable") from None
    state = record[start:]
    if len(state) != size or zlib.crc32(state) != crc:
        raise corrupt(f"{len(state)} bytes of state whose checksum does not match its header's")
    return {"format": fmt, "version": version, "time": saved_at, "size": size, "class": class_name}, state


def info(record: bytes) -> dict:
    """The header of a checkpoint (version, class, time, size) without unpickling it."""
    header, _ = decode(record, "")
    return header


class NoState:
    """An actor without durable state (or a task worker): Ray's behaviour, at no cost."""

    def restore_or(self, cls: type, construct: Callable[[], Any], loop: asyncio.AbstractEventLoop | None = None) -> Any:
        return construct()

    def after_call(self, result: pb.TaskResult, instance: Any, fail: Callable) -> pb.TaskResult:
        return result


NO_STATE = NoState()
_NOTHING = object()  # no checkpoint to restore from


def attach(spec: pb.ActorSpec, exit_process: Callable[[int], None]) -> NoState | Durable:
    """What keeps this actor's state: claims its checkpoint's next epoch, when it has a policy."""
    if not spec.state:
        return NO_STATE
    return Durable(cloudpickle.loads(spec.state), checkpoint_key(spec), spec.class_name, exit_process)


class Durable:
    """One actor instance's checkpoints: restore at start, save after calls per the policy."""

    def __init__(self, policy: Checkpoint, key: str, class_name: str, exit_process: Callable[[int], None]):
        self.policy = policy
        self.store = policy.store
        self.key = key
        self.class_name = class_name
        self._exit = exit_process
        self._where = f"{key!r} in {self.store.describe()}"
        self._lock = threading.Lock()  # a threaded actor's calls end concurrently; saves go one at a time
        self.epoch = self.store.claim(key)  # from now on, an older instance's saves are refused
        self.version = 0
        self._digest = b""
        self._calls = 0
        self._saved_at = time.monotonic()

    def restore_or(self, cls: type, construct: Callable[[], Any], loop: asyncio.AbstractEventLoop | None = None) -> Any:
        """The instance rebuilt from the last checkpoint, or `construct()` when there is none."""
        instance = self._restore(cls, loop)
        return construct() if instance is _NOTHING else instance

    def _restore(self, cls: type, loop: asyncio.AbstractEventLoop | None) -> Any:
        record = self.store.load(self.key)
        if record is None:
            return _NOTHING
        qualname = f"{cls.__module__}.{cls.__qualname__}"
        try:
            header, state = decode(record, self._where)
            if header.get("class") != qualname:
                raise CheckpointCorruptError(
                    f"the checkpoint {self._where} was saved by the class {header.get('class')}, not {qualname}. "
                    f"Another class used this actor name: kill the old actor (which deletes its checkpoint) or pick "
                    f"another name, or pass Checkpoint(on_corrupt='construct').")
            try:
                instance = _rebuild(cls, cloudpickle.loads(state))
            except Exception as e:
                raise CheckpointCorruptError(
                    f"the checkpoint {self._where} could not be restored ({type(e).__name__}: {e}). If the class "
                    f"changed since it was saved, give it a __setstate__ that reads the old state.") from e
        except CheckpointCorruptError:
            if self.policy.on_corrupt != "construct":
                raise
            log.exception("running the constructor instead of restoring (on_corrupt='construct')")
            return _NOTHING
        self.version = header["version"]
        self._digest = hashlib.blake2b(state, digest_size=16).digest()
        hook = getattr(instance, RESTORED_HOOK, None)
        if callable(hook):
            result = hook()
            if inspect.iscoroutine(result):
                if loop is None:
                    asyncio.run(result)
                else:
                    asyncio.run_coroutine_threadsafe(result, loop).result()
        log.info("restored actor %s from checkpoint version %d (%d bytes) %s", self.class_name, self.version,
                 len(state), self._where)
        return instance

    def after_call(self, result: pb.TaskResult, instance: Any,
                   fail: Callable[[pb.TaskResult, BaseException], pb.TaskResult]) -> pb.TaskResult:
        """Saves the state if the policy says so, before the result goes out. A state that cannot
        be saved fails the call (`fail`); a store that stays down ends the process, so the actor
        restarts from its last durable checkpoint."""
        if result.status not in _SAVED_STATUSES or instance is None:
            return result
        with self._lock:
            self._calls += 1
            policy = self.policy
            if policy.every_calls and self._calls < policy.every_calls:
                return result
            if policy.every_seconds and time.monotonic() - self._saved_at < policy.every_seconds:
                return result
            try:
                self._save(instance)
            except (CheckpointTooLargeError, _Unpicklable) as e:
                return fail(result, e)
            except CheckpointFencedError as e:
                log.error("%s; this instance is stale and exits without answering", e)
                self._exit(1)
            except CheckpointError as e:
                log.error("%s; exiting, so that the actor restarts from its last durable checkpoint", e)
                self._exit(1)
        return result

    def _save(self, instance: Any) -> None:
        try:
            state = cloudpickle.dumps(_state_of(instance))
        except Exception as e:
            raise _Unpicklable(
                f"the state of actor {self.class_name} cannot be pickled for its checkpoint ({type(e).__name__}: "
                f"{e}). Leave resources such as files, locks and connections out of it with __getstate__, and "
                f"reopen them in {RESTORED_HOOK}().") from None
        self._calls = 0
        self._saved_at = time.monotonic()
        digest = hashlib.blake2b(state, digest_size=16).digest()
        if digest == self._digest:
            return  # unchanged since the last save (a read-only call): nothing to write
        if len(state) > self.policy.max_bytes:
            raise CheckpointTooLargeError(
                f"the state of actor {self.class_name} pickles to {len(state)} bytes, over the checkpoint's "
                f"max_bytes={self.policy.max_bytes}. Keep large data elsewhere (kastor.put, a file) and only its "
                f"reference in the state, or raise Checkpoint(max_bytes=...).")
        self.store.save(self.key, self.epoch, encode(state, self.version + 1, _qualname(instance)))
        self.version += 1
        self._digest = digest


class _Unpicklable(CheckpointError):
    pass


def _qualname(instance: Any) -> str:
    cls = type(instance)
    return f"{cls.__module__}.{cls.__qualname__}"


def _state_of(instance: Any) -> Any:
    """What pickle itself would save of the instance: `__getstate__()` (object's default gives
    `__dict__`, with slots as a second item)."""
    return instance.__getstate__()


def _rebuild(cls: type, state: Any) -> Any:
    instance = cls.__new__(cls)
    setstate = getattr(instance, "__setstate__", None)
    if setstate is not None:
        setstate(state)
        return instance
    if state is None:
        return instance
    slots: dict = {}
    if isinstance(state, tuple) and len(state) == 2:
        state, slots = state
    if state:
        instance.__dict__.update(state)
    for name, value in (slots or {}).items():
        setattr(instance, name, value)
    return instance


_job_owned: dict[int, dict[bytes, CheckpointStore]] = {}  # id(core) -> its unnamed, non-detached durable actors


def created(core: Any, spec: pb.ActorSpec, policy: Checkpoint | None) -> None:
    """Remembers an unnamed, non-detached durable actor this process created: it dies with the
    job, and its checkpoint (keyed by its id, so never used again) goes with it (`job_ended`)."""
    if policy is not None and not spec.name and not spec.detached:
        _job_owned.setdefault(id(core), {})[spec.actor_id] = policy.store


def job_ended(core: Any) -> None:
    """After the job finished (the head has killed its non-detached actors): deletes the
    checkpoints of the unnamed ones this driver created. Named ones stay, for a later actor of
    that name to resume; a driver that crashes leaves them all (delete them with the store)."""
    for actor_id, store in _job_owned.pop(id(core), {}).items():
        try:
            _bounded(lambda store=store, actor_id=actor_id: store.delete(actor_id.hex()))
        except Exception as e:  # the store unreachable: say which checkpoints stay, and stop trying
            log.warning("could not delete the checkpoints of this job's unnamed durable actors in %s (%s); "
                        "they stay until deleted with the store's delete(actor id)", store.describe(), e)
            return


DELETE_WAIT_S = 5.0


def _bounded(op: Callable[[], Any]) -> Any:
    """Runs a store operation for `kill` or `shutdown`, which must not hang on a store this process
    cannot reach (a notebook outside the cluster): after DELETE_WAIT_S it is given up on (the
    thread finishes or fails on its own)."""
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["value"] = op()
        except BaseException as e:
            outcome["error"] = e

    thread = threading.Thread(target=run, name="kastor-checkpoint-delete", daemon=True)
    thread.start()
    thread.join(DELETE_WAIT_S)
    if thread.is_alive():
        raise CheckpointError(f"the store did not answer within {DELETE_WAIT_S:.0f}s")
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("value")


def delete_for(core: Any, actor_id: bytes) -> None:
    """After `kastor.kill(actor)`: drops the dead actor's checkpoint, if it had durable state.
    A checkpoint that cannot be deleted from here is named in a warning (it stays until then):
    the kill itself has happened, so it does not fail for this."""
    try:
        _delete_for(core, actor_id)
    except Exception as e:  # the head or the store unreachable from this process (a notebook, say)
        log.warning("could not look up or delete the checkpoint of the killed actor %s (%s: %s); a new actor of "
                    "its name would resume from it", actor_id.hex(), type(e).__name__, e)


def _delete_for(core: Any, actor_id: bytes) -> None:
    # a tiny timeout_s: an actor the head does not know yet had no checkpoint (0 would mean 30 s)
    reply = core.head_call("GetActor", pb.GetActorRequest(actor_id=actor_id, timeout_s=0.001))
    if not reply.found or not reply.info.spec.state:
        return
    spec = reply.info.spec
    key = checkpoint_key(spec)
    if reply.info.state != pb.DEAD:
        log.warning("kept the checkpoint %r of actor %s: the actor is not dead yet", key, spec.class_name)
        return
    store = cloudpickle.loads(spec.state).store
    try:
        _bounded(lambda: store.delete(key))
    except CheckpointError as e:
        log.warning("could not delete the checkpoint %r of the killed actor %s in %s (%s); delete it with "
                    "%r.delete(%r) from a process that reaches the store", key, spec.class_name, store.describe(),
                    e, store, key)
