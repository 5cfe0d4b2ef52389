"""Checkpoint stores (a real directory, a real redis-server) and the checkpoint mechanics of
runtime/checkpoint.py (with an in-memory test double of the store interface)."""

from __future__ import annotations

import os

import pytest
from kastor.runtime import checkpoint
from kastor.runtime.protocol import kastor_pb2 as pb
from kastor.state import (
    Checkpoint,
    CheckpointCorruptError,
    CheckpointError,
    CheckpointFencedError,
    CheckpointStore,
    CheckpointTooLargeError,
    FileStore,
    RedisStore,
)


@pytest.fixture(params=["file", "redis"])
def store(request, tmp_path):
    if request.param == "file":
        yield FileStore(tmp_path / "ckpt")
        return
    redis_server = request.getfixturevalue("redis_server")
    yield RedisStore(redis_server.address, prefix="test:ckpt")


def test_a_newer_claim_fences_out_the_older_instance(store):
    old = store.claim("ns/acct")
    store.save("ns/acct", old, b"v1")
    new = store.claim("ns/acct")  # the restarted instance
    assert new > old
    with pytest.raises(CheckpointFencedError, match="newer instance"):
        store.save("ns/acct", old, b"stale")
    assert store.load("ns/acct") == b"v1"
    store.save("ns/acct", new, b"v2")
    assert store.load("ns/acct") == b"v2"


def test_delete_drops_the_checkpoint_and_refuses_a_save_still_pending(store):
    epoch = store.claim("k")
    store.save("k", epoch, b"x" * 100_000)
    assert store.delete("k") is True
    assert store.load("k") is None
    with pytest.raises(CheckpointFencedError):
        store.save("k", epoch, b"late")
    assert store.load("k") is None
    assert store.delete("k") is False
    assert store.claim("k") >= 1, "the key can be used again"


def test_file_store_replaces_whole_files_and_leaves_no_temporaries(tmp_path):
    store = FileStore(tmp_path / "d")
    epoch = store.claim("a/b")
    for i in range(5):
        store.save("a/b", epoch, bytes([i]) * 1000)
    assert store.load("a/b") == bytes([4]) * 1000
    assert not [n for n in os.listdir(tmp_path / "d") if ".tmp." in n]
    assert os.path.dirname(store.checkpoint_path("a/b")) == str(tmp_path / "d"), "the key's slash is escaped"


def test_an_unreachable_redis_is_retried_then_named(monkeypatch):
    monkeypatch.setenv("KASTOR_CHECKPOINT_RETRY_S", "0.5")
    store = RedisStore("127.0.0.1:1")
    with pytest.raises(CheckpointError, match="127.0.0.1:1.*KASTOR_CHECKPOINT_RETRY_S"):
        store.load("k")


class MemoryStore(CheckpointStore):
    """The test double of the store interface (unit tests only)."""

    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}
        self.epochs: dict[str, int] = {}
        self.saves = 0
        self.fail_with: BaseException | None = None

    def claim(self, key: str) -> int:
        self.epochs[key] = self.epochs.get(key, 0) + 1
        return self.epochs[key]

    def save(self, key: str, epoch: int, data: bytes) -> None:
        if self.fail_with is not None:
            raise self.fail_with
        if self.epochs.get(key) != epoch:
            raise CheckpointFencedError("fenced")
        self.data[key] = data
        self.saves += 1

    def load(self, key: str) -> bytes | None:
        return self.data.get(key)

    def delete(self, key: str) -> bool:
        return self.data.pop(key, None) is not None


class Counter:
    def __init__(self, n: int = 0):
        self.n = n


class Slotted:
    __slots__ = ("a", "b")


def ok() -> pb.TaskResult:
    return pb.TaskResult(task_id=b"t", status=pb.TASK_OK)


def durable(store: MemoryStore, exits: list[int], **policy) -> checkpoint.Durable:
    return checkpoint.Durable(Checkpoint(store=store, **policy), "ns/c", "Counter", exits.append)


def fail(result: pb.TaskResult, error: BaseException) -> pb.TaskResult:
    return pb.TaskResult(task_id=result.task_id, status=pb.TASK_APP_ERROR, error=pb.Value(data=str(error).encode()))


def test_saves_follow_the_policy_and_skip_unchanged_state():
    store, exits, c = MemoryStore(), [], Counter()
    d = durable(store, exits, every=3)
    for i in range(1, 7):
        c.n = i
        d.after_call(ok(), c, fail)
    assert store.saves == 2 and checkpoint.info(store.data["ns/c"])["version"] == 2
    d = durable(store, exits)  # every call; a new instance (a restart)
    restored = d.restore_or(Counter, lambda: pytest.fail("the constructor must not run"))
    assert restored.n == 6
    d.after_call(ok(), restored, fail)
    assert store.saves == 2, "an unchanged state is not written again"
    restored.n = 7
    d.after_call(ok(), restored, fail)
    assert checkpoint.info(store.data["ns/c"])["version"] == 3, "versions continue across restarts"
    d.after_call(pb.TaskResult(task_id=b"t", status=pb.TASK_ACTOR_EXITED), Counter(99), fail)
    assert store.saves == 3 and not exits


def test_a_too_large_state_fails_the_call_and_a_lost_store_or_fence_ends_the_process():
    store, exits = MemoryStore(), []
    d = durable(store, exits, max_bytes=100)
    result = d.after_call(ok(), Counter(10**400), fail)
    assert result.status == pb.TASK_APP_ERROR and b"max_bytes=100" in result.error.data
    assert isinstance(CheckpointTooLargeError("x"), CheckpointError)
    store.fail_with = CheckpointError("store gone")
    d.after_call(ok(), Counter(1), fail)
    store.fail_with = None
    store.claim("ns/c")  # another instance took over
    d.after_call(ok(), Counter(2), fail)
    assert exits == [1, 1]


def test_restore_rebuilds_slots_and_refuses_another_class_or_a_damaged_record():
    store, exits = MemoryStore(), []
    s = Slotted()
    s.a, s.b = 1, [2]
    durable(store, exits).after_call(ok(), s, fail)
    back = durable(store, exits).restore_or(Slotted, Slotted)
    assert (back.a, back.b) == (1, [2])
    with pytest.raises(CheckpointCorruptError, match="saved by the class"):
        durable(store, exits).restore_or(Counter, Counter)
    record = store.data["ns/c"]
    store.data["ns/c"] = record[:-1] + bytes([record[-1] ^ 1])
    with pytest.raises(CheckpointCorruptError, match="checksum"):
        durable(store, exits).restore_or(Slotted, Slotted)
    fresh = durable(store, exits, on_corrupt="construct").restore_or(Slotted, lambda: "constructed")
    assert fresh == "constructed"


def test_time_based_policy_saves_the_first_call_after_the_interval(monkeypatch):
    now = [1000.0]
    monkeypatch.setattr(checkpoint.time, "monotonic", lambda: now[0])
    store, exits, c = MemoryStore(), [], Counter()
    d = durable(store, exits, every="30s")
    c.n = 1
    d.after_call(ok(), c, fail)
    assert store.saves == 0
    now[0] += 30
    c.n = 2
    d.after_call(ok(), c, fail)
    assert store.saves == 1


def test_stat_tells_when_and_how_big_without_reading_the_checkpoint(store):
    import time
    assert store.stat("s") is None
    before = time.time()
    store.save("s", store.claim("s"), b"y" * 321)
    stat = store.stat("s")
    assert stat.size == 321 and before - 1 <= stat.saved_at <= time.time() + 1
    store.delete("s")
    assert store.stat("s") is None


def test_redis_saves_survive_a_forgotten_script_and_a_dropped_connection(redis_server):
    """Saves go on the store's own connection (RedisStore._evalsha_save): a Redis that forgot the
    save script (restarted, or SCRIPT FLUSH) and a connection cut under it are both recovered
    from, and the epoch fence still holds afterwards."""
    import redis

    store = RedisStore(redis_server.address, prefix="test:ckpt")
    admin = redis.Redis.from_url(f"redis://{redis_server.address}")
    epoch = store.claim("k")
    store.save("k", epoch, b"v1")
    admin.script_flush()
    store.save("k", epoch, b"v2")
    assert store.load("k") == b"v2"
    killed = admin.execute_command("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")
    assert killed >= 1  # the store's connections among them
    store.save("k", epoch, b"v3")
    assert store.load("k") == b"v3"
    newer = store.claim("k")
    with pytest.raises(CheckpointFencedError):
        store.save("k", epoch, b"stale")
    store.save("k", newer, b"v4")
    assert store.load("k") == b"v4"
