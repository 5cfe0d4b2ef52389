"""Where durable actors keep their checkpoints: a directory, or Redis (see `kastor.state`).

A store holds, per key, one checkpoint (opaque bytes, framed by runtime/checkpoint.py) and an
*epoch*. Each instance of an actor claims a new epoch when it starts, and a save carrying an
older epoch is refused (`CheckpointFencedError`). That is the fencing: an old instance that
still runs somewhere (a node cut off from the head) cannot overwrite what the new one saved.

Writes are atomic: the file store writes a temporary file, fsyncs it and renames it over the
old one; the Redis store checks the epoch and writes in one server-side script. So a reader
sees the old checkpoint or the new one, never a mix.

The interface is synchronous on purpose: a save runs on the thread that ran the actor's call,
before its result is sent, so an acknowledged call's state is durable.
"""

from __future__ import annotations

import abc
import dataclasses
import fcntl
import logging
import os
import threading
import time
import urllib.parse
from collections.abc import Callable

from kastor.runtime import spin_wait

log = logging.getLogger("kastor.state")

__all__ = ["CheckpointError", "CheckpointFencedError", "CheckpointStore", "FileStore", "RedisStore"]

TOMBSTONE_TTL_S = 3600  # a deleted Redis checkpoint keeps its epoch this long, to fence an instance still dying


class CheckpointError(Exception):
    """A checkpoint could not be saved, loaded or deleted; the message says why and what to do."""


class CheckpointFencedError(CheckpointError):
    """A newer instance of the actor claimed its checkpoints: this instance is stale and must stop."""


@dataclasses.dataclass(frozen=True)
class CheckpointStat:
    """When the last checkpoint of a key was saved (seconds since the epoch) and its size."""

    saved_at: float
    size: int


class CheckpointStore(abc.ABC):
    """The interface of a checkpoint store. Implement it for other backends (S3, a database).

    Instances are pickled into the actor's spec and unpickled in its worker (and in the process
    that kills it, to delete its checkpoints), so keep them small and connection-free until
    first use. Every method may be called from any thread.
    """

    @abc.abstractmethod
    def claim(self, key: str) -> int:
        """Starts a new epoch for `key` and returns it; saves with an older epoch fail from now on."""

    @abc.abstractmethod
    def save(self, key: str, epoch: int, data: bytes) -> None:
        """Atomically replaces the checkpoint of `key` with `data`, if `epoch` is still current
        (else raises CheckpointFencedError). Returns once the write is durable."""

    @abc.abstractmethod
    def load(self, key: str) -> bytes | None:
        """The last checkpoint saved for `key`, or None if there is none."""

    @abc.abstractmethod
    def delete(self, key: str) -> bool:
        """Drops the checkpoint of `key` (and fences its current epoch); whether there was one."""

    def describe(self) -> str:
        """Where the checkpoints live, for error messages."""
        return type(self).__name__

    def stat(self, key: str) -> CheckpointStat | None:
        """When the last checkpoint of `key` was saved and its size (for a DetachedActor's
        status), without reading it; None if there is none or the store cannot tell."""
        return None


def _retrying(what: str, store: str, op: Callable, retry_on: tuple[type[BaseException], ...],
              fatal: tuple[type[BaseException], ...] = ()):
    """Runs `op`, retrying transient errors with backoff for KASTOR_CHECKPOINT_RETRY_S: a store
    restarting delays calls instead of failing them."""
    from kastor.runtime import retry, settings
    deadline = settings.CHECKPOINT_RETRY_S.get()
    try:
        return retry.call(op, retry.RetryPolicy(deadline_s=deadline, max_s=1.0, retry_on=retry_on, fatal=fatal),
                          on_retry=lambda e, n, d: log.warning("could not %s in %s (%s); retrying", what, store, e))
    except fatal:
        raise
    except retry_on as e:
        raise CheckpointError(f"could not {what} in {store} for {deadline:.0f}s (KASTOR_CHECKPOINT_RETRY_S): "
                              f"{type(e).__name__}: {e}") from None


class FileStore(CheckpointStore):
    """Checkpoints as files in a directory: a local disk, a shared file system, or in Kubernetes
    a PersistentVolumeClaim mounted into the actor's pod.

    `<key>.ckpt` holds the checkpoint and `<key>.epoch` the epoch, both replaced by rename after
    an fsync; a `<key>.lock` file (flock) serialises the check-and-write against other processes.
    The directory is created if missing.
    """

    def __init__(self, directory: str | os.PathLike[str]):
        if not os.fspath(directory):
            raise ValueError("FileStore needs a directory: FileStore('/data/checkpoints').")
        self.directory = os.path.abspath(directory)  # the worker's working directory is not the caller's

    def __repr__(self) -> str:
        return f"FileStore({self.directory!r})"

    def describe(self) -> str:
        return f"the directory {self.directory}"

    def checkpoint_path(self, key: str) -> str:
        """The file that holds the checkpoint of `key`."""
        return self._path(key, ".ckpt")

    def _path(self, key: str, suffix: str) -> str:
        return os.path.join(self.directory, urllib.parse.quote(key, safe="") + suffix)

    def _locked(self, key: str, op: Callable[[], object]) -> object:
        os.makedirs(self.directory, exist_ok=True)
        fd = os.open(self._path(key, ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            return op()
        finally:
            os.close(fd)  # releases the lock

    def _epoch(self, key: str) -> int:
        try:
            with open(self._path(key, ".epoch")) as f:
                return int(f.read() or 0)
        except FileNotFoundError:
            return 0

    def _replace(self, path: str, data: bytes) -> None:
        tmp = f"{path}.tmp.{os.getpid()}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        dir_fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)  # the rename itself survives a machine crash
        finally:
            os.close(dir_fd)

    def claim(self, key: str) -> int:
        def claim() -> int:
            epoch = self._epoch(key) + 1
            self._replace(self._path(key, ".epoch"), str(epoch).encode())
            return epoch
        return self._locked(key, claim)

    def save(self, key: str, epoch: int, data: bytes) -> None:
        def save() -> None:
            current = self._epoch(key)
            if current != epoch:
                raise CheckpointFencedError(f"the checkpoint {key!r} in {self.describe()} was claimed by a newer "
                                            f"instance of the actor (epoch {current}, this one {epoch})")
            self._replace(self._path(key, ".ckpt"), data)
        self._locked(key, save)

    def load(self, key: str) -> bytes | None:
        try:
            with open(self._path(key, ".ckpt"), "rb") as f:
                return f.read()
        except FileNotFoundError:
            return None

    def stat(self, key: str) -> CheckpointStat | None:
        try:
            st = os.stat(self._path(key, ".ckpt"))
        except FileNotFoundError:
            return None
        return CheckpointStat(st.st_mtime, st.st_size)

    def delete(self, key: str) -> bool:
        def delete() -> bool:
            existed = os.path.exists(self._path(key, ".ckpt"))
            for suffix in (".ckpt", ".epoch", ".lock"):  # a save still pending finds no epoch: refused
                try:
                    os.remove(self._path(key, suffix))
                except FileNotFoundError:
                    pass
            return existed
        return self._locked(key, delete)


# Compares the epoch and writes in one step on the server: the Redis form of "write then rename".
_SAVE = """
if redis.call('HGET', KEYS[1], 'epoch') ~= ARGV[1] then
  return redis.call('HGET', KEYS[1], 'epoch') or '0'
end
redis.call('HSET', KEYS[1], 'data', ARGV[2], 'saved_at', ARGV[3], 'size', string.len(ARGV[2]))
return 'ok'
"""


class RedisStore(CheckpointStore):
    """Checkpoints in Redis: one hash per actor (`data`, `epoch`) under a key prefix.

    With no address (the default), it uses the cluster's own GCS Redis, under the cluster's key
    prefix (`kastor:<cluster-id>:checkpoint:<key>`), which the actor's worker asks the head for;
    `kastor redis-clean` drops them with the cluster's other keys. That needs a head started
    with `--redis-address` (the operator's clusters are). Otherwise pass `address`
    (`host:port`, `redis://` or `rediss://`), with the password in the file `password_file` or in
    KASTOR_REDIS_PASSWORD, and optionally a `prefix` (default `kastor:checkpoint`). A `password`
    given directly serves this process only: it is never pickled into an actor's spec.

    A save returns once Redis has acknowledged it; it survives a Redis restart as far as Redis
    persists it (`appendonly yes`, and `appendfsync always` for no loss at all).
    """

    def __init__(self, address: str | None = None, *, password_file: str | None = None, prefix: str | None = None,
                 password: str | None = None):
        self.address = address
        self.password_file = password_file
        self.prefix = prefix
        self._password = password  # for the operator's reads; never pickled into an actor's spec
        self._client = None
        self._save_script = None
        self._save_conn = None  # this store's own connection for saves (_evalsha_save)
        self._save_lock = threading.Lock()
        self._save_spin = spin_wait.SpinPolicy()  # used under _save_lock
        self._where = address or "the cluster's Redis"

    def __repr__(self) -> str:
        return f"RedisStore({self.address!r})" if self.address else "RedisStore()"

    def __getstate__(self) -> dict:
        return {"address": self.address, "password_file": self.password_file, "prefix": self.prefix}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["address"], password_file=state["password_file"], prefix=state["prefix"])

    def describe(self) -> str:
        return f"Redis at {self._where}"

    def _redis(self):
        if self._client is None:
            import redis
            from kastor.runtime.redis_store import redis_url, resolve_password
            from redis.backoff import ExponentialBackoff
            from redis.retry import Retry
            address, password, prefix = self.address, None, self.prefix or "kastor:checkpoint"
            if address:
                password = self._password or resolve_password(self.password_file)
            else:
                address, password, prefix = _cluster_redis()
                self._where = f"{address} (the cluster's Redis)"
            self._prefix = prefix
            self._client = redis.Redis.from_url(
                redis_url(address), password=password, socket_connect_timeout=5, socket_timeout=10,
                retry=Retry(ExponentialBackoff(cap=0.5, base=0.02), 3),
                retry_on_error=[redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError])
            self._save_script = self._client.register_script(_SAVE)
        return self._client

    def _call(self, what: str, op: Callable[[object], object]):
        import redis

        def attempt():
            return op(self._redis())
        try:
            return _retrying(what, self.describe(), attempt, (redis.ConnectionError, redis.TimeoutError,
                                                              redis.BusyLoadingError), (redis.AuthenticationError,))
        except redis.AuthenticationError as e:
            raise CheckpointError(f"{self.describe()} refused the password ({e}): check password_file or "
                                  f"KASTOR_REDIS_PASSWORD.") from None
        except redis.RedisError as e:
            raise CheckpointError(f"could not {what} in {self.describe()}: {type(e).__name__}: {e}") from None

    def _key(self, key: str) -> str:
        self._redis()
        return f"{self._prefix}:{key}"

    def claim(self, key: str) -> int:
        def claim(r) -> int:
            pipe = r.pipeline(transaction=True)
            pipe.hincrby(self._key(key), "epoch", 1)
            pipe.persist(self._key(key))  # a tombstone's expiry no longer applies: the key is in use again
            return int(pipe.execute()[0])
        return self._call(f"claim the checkpoint {key!r}", claim)

    def save(self, key: str, epoch: int, data: bytes) -> None:
        def save(r) -> bytes:
            return self._evalsha_save(self._key(key), str(epoch), data, repr(time.time()))
        reply = self._call(f"save the checkpoint {key!r}", save)
        if reply != b"ok":
            raise CheckpointFencedError(f"the checkpoint {key!r} in {self.describe()} was claimed by a newer "
                                        f"instance of the actor (epoch {reply.decode()}, this one {epoch})")

    def _evalsha_save(self, full_key: str, *args) -> bytes:
        """The save script, sent on a connection of this store's own with redis-py's
        `send_command` and `read_response`. A save runs before every result of an
        `every="call"` actor, and redis-py's client call around the same command (its
        connection pool, retry wrapper and command hooks) cost about twice the command itself:
        125-165 µs of CPU against 45-70 µs per save on the test machine (bench/README.md,
        "Durable state"). Retries stay with `_call`; an error closes the connection, so the next
        attempt reconnects (and authenticates) from scratch."""
        import redis
        with self._save_lock:
            conn = self._save_conn
            if conn is None:
                conn = self._save_conn = self._client.connection_pool.make_connection()
            try:
                conn.send_command("EVALSHA", self._save_script.sha, 1, full_key, *args)
                self._spin_for_reply(conn)
                return conn.read_response()
            except redis.exceptions.NoScriptError:
                # A restarted Redis has forgotten the script: the client's Script loads it again.
                return self._save_script(keys=[full_key], args=list(args))
            except BaseException:
                conn.disconnect()
                raise

    def _spin_for_reply(self, conn) -> None:
        """Polls for the save's reply for a short window before `read_response` blocks
        (spin_wait.py): Redis answers a save in tens of microseconds, and on a VM the wake-up
        from a blocking read cost as much again, on every call of an `every="call"` actor."""
        self._save_spin.wait(lambda: True if conn.can_read(timeout=0) else None)

    def load(self, key: str) -> bytes | None:
        return self._call(f"load the checkpoint {key!r}", lambda r: r.hget(self._key(key), "data"))

    def stat(self, key: str) -> CheckpointStat | None:
        saved_at, size = self._call(f"read the checkpoint {key!r}",
                                    lambda r: r.hmget(self._key(key), ["saved_at", "size"]))
        return CheckpointStat(float(saved_at), int(size)) if saved_at and size else None

    def delete(self, key: str) -> bool:
        def delete(r) -> bool:
            pipe = r.pipeline(transaction=True)
            pipe.hdel(self._key(key), "data", "saved_at", "size")
            pipe.hincrby(self._key(key), "epoch", 1)  # fences an instance still dying
            pipe.expire(self._key(key), TOMBSTONE_TTL_S)
            return bool(pipe.execute()[0])
        return self._call(f"delete the checkpoint {key!r}", delete)


def _cluster_redis() -> tuple[str, str | None, str]:
    """The cluster's GCS Redis, as the head reports it: (address, password, key prefix)."""
    from kastor.runtime import context
    from kastor.runtime.protocol import kastor_pb2 as pb
    core = context.core
    if core is None:
        raise CheckpointError("RedisStore() with no address uses the cluster's Redis, which only a connected "
                              "process can find: call kastor.init() first, or pass RedisStore(address=...).")
    reply = core.head_call("GetCheckpointStore", pb.Empty())
    if not reply.redis_address:
        raise CheckpointError(
            "RedisStore() with no address uses the cluster's Redis, but this cluster's head keeps its state in "
            "memory (it was started without --redis-address, as the embedded kastor.init() cluster is). Start the "
            "head with --redis-address, pass RedisStore(address='host:port'), or use FileStore(directory).")
    return reply.redis_address, reply.redis_password or None, reply.key_prefix
