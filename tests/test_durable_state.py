"""Durable actor state (kastor.state): restarts that keep the actor's state.

A real head on a real Redis, real node agents and workers; failures are SIGKILLs. Each test
counts what was acknowledged and checks that a restarted actor still has it.
"""

from __future__ import annotations

import asyncio
import os
import pathlib
import signal
import sys
import threading

import kastor
import pytest
from gcs_cluster import TOKEN, GcsCluster
from kastor.exceptions import ActorDiedError, ActorUnavailableError
from kastor.runtime import checkpoint
from kastor.state import (
    Checkpoint,
    CheckpointCorruptError,
    CheckpointError,
    CheckpointTooLargeError,
    FileStore,
    RedisStore,
)
from kastor.util.state import list_actors
from support import DEADLINE_S, process_gone, wait_until

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / "examples"))
import durable_account  # noqa: E402 - examples/ is not a package; workers get this sys.path too


@pytest.fixture
def cluster(tmp_path, redis_server, monkeypatch):
    """Head (on Redis) + node n1, and this test process connected as the driver."""
    monkeypatch.setenv("KASTOR_TOKEN", TOKEN)
    c = GcsCluster(tmp_path, redis_server)
    c.start_head()
    c.add_node("n1")
    kastor.init(address=c.address)
    yield c
    kastor.shutdown()
    c.stop()


class Account:
    def __init__(self, balance: int = 0):
        self.balance = balance
        self.constructed = True

    def deposit(self, amount: int) -> int:
        self.balance += amount
        return self.balance

    def read(self) -> int:
        return self.balance

    def was_constructed(self) -> bool:
        return self.constructed

    def pid(self) -> int:
        return os.getpid()

    def keep(self, value) -> int:
        self.kept = value
        return len(self.__dict__)

    def hold_lock(self) -> None:
        self.kept = threading.Lock()

    def forget(self) -> None:
        self.__dict__.pop("kept", None)


def durable(store=None, **options):
    return kastor.remote(**options, state=Checkpoint(store=store))(Account)


def row(actor) -> dict:
    [r] = list_actors(filters=[("actor_id", "=", actor._actor_id.hex())])
    return r


def sigkill_worker(actor) -> None:
    pid = kastor.get(actor.pid.remote(), timeout=DEADLINE_S)
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: process_gone(pid), "the actor's worker to die")


class Depositor:
    """Deposits 1 in a loop from a thread, without retries: each call is acknowledged (its
    balance recorded) or failed (it may or may not have happened)."""

    def __init__(self, actor):
        self.actor = actor
        self.acks: list[int] = []
        self.failed = 0
        self.unexpected: list[BaseException] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.acks.append(kastor.get(self.actor.deposit.remote(1), timeout=DEADLINE_S))
            except ActorUnavailableError:
                self.failed += 1
            except BaseException as e:  # recorded: the test asserts there are none
                self.unexpected.append(e)
                return

    def wait_for_more(self, n: int) -> None:
        target = len(self.acks) + n
        wait_until(lambda: len(self.acks) >= target or self.unexpected, f"{n} more acknowledged deposits")
        assert not self.unexpected, self.unexpected

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(DEADLINE_S)
        assert not self.unexpected, self.unexpected


def assert_no_acknowledged_deposit_lost(acks: list[int], failed: int, start: int, final: int) -> None:
    assert acks == sorted(acks) and len(set(acks)) == len(acks), "balances only grow, one deposit each"
    assert final >= start + len(acks), f"an acknowledged deposit was lost: {len(acks)} acked, balance {final}"
    assert final <= start + len(acks) + failed, "only deposits that were sent changed the balance"
    assert acks[-1] <= final


def test_the_examples_account_keeps_its_balance_across_worker_sigkills_and_a_node_death(cluster, tmp_path):
    """Issue 14's "done when": the bank account of `examples/durable_account.py` itself, on the
    cluster's own GCS Redis (`Checkpoint()` with no store), loses no acknowledged deposit."""
    cluster.add_node("n2", resources={"slot": 1})
    Durable = kastor.remote(max_restarts=-1, state=Checkpoint())(durable_account.Account)
    acct = Durable.options(name="acct", lifetime="detached", resources={"slot": 0.5}).remote(
        "ada", str(tmp_path / "audit.log"), 100)
    n2 = row(acct)["node_id"]
    stream = Depositor(acct)
    stream.wait_for_more(20)

    for _ in range(2):
        sigkill_worker(acct)
        stream.wait_for_more(20)

    cluster.add_node("n3", resources={"slot": 1})
    cluster.kill_node("n2")  # the actor's node agent, and its workers with it
    wait_until(lambda: row(acct)["restarts"] >= 3 and row(acct)["state"] == "ALIVE", "a restart on n3")
    stream.wait_for_more(20)
    stream.stop()

    assert row(acct)["node_id"] not in (n2, None), "restarted on another node"
    final = kastor.get(acct.read.remote())
    assert_no_acknowledged_deposit_lost(stream.acks, stream.failed, 100, final)
    audited = (tmp_path / "audit.log").read_text().splitlines()
    assert len(audited) >= len(stream.acks), "the restored actor reopened its audit file (__kastor_restored__)"

    redis_key = f"kastor:{cluster.cluster_id}:checkpoint:{row(acct)['namespace']}/acct"
    import redis
    client = redis.Redis.from_url(f"redis://{cluster.redis.address}")
    header = checkpoint.info(client.hget(redis_key, "data"))
    assert header["class"].endswith("Account") and header["version"] >= 1
    kastor.kill(acct)
    assert client.hget(redis_key, "data") is None, "kill() deletes the checkpoint"
    client.close()


def test_each_result_is_sent_only_after_its_checkpoint_is_saved(cluster, tmp_path):
    store = FileStore(tmp_path / "ckpt")
    acct = durable(store).options(name="a").remote(0)
    key = f"{row(acct)['namespace']}/a"
    for expected in range(1, 31):
        assert kastor.get(acct.deposit.remote(1)) == expected
        header, state = checkpoint.decode(store.load(key), key)
        assert kastor.cloudpickle.loads(state)["balance"] == expected, "the saved state is the acknowledged one"
        assert header["version"] == expected
    kastor.get(acct.read.remote())
    assert checkpoint.info(store.load(key))["version"] == 30, "a read-only call writes nothing"


def test_without_state_a_restart_reruns_the_constructor_as_in_ray(cluster):
    acct = kastor.remote(max_restarts=1)(Account).remote(5)
    kastor.get(acct.deposit.remote(10))
    sigkill_worker(acct)
    wait_until(lambda: row(acct)["state"] == "ALIVE" and row(acct)["restarts"] == 1, "the restart")
    assert kastor.get(acct.read.remote(), timeout=DEADLINE_S) == 5


def test_kill_deletes_the_checkpoint_and_keep_state_lets_a_new_actor_of_that_name_resume(cluster, tmp_path):
    store = FileStore(tmp_path / "ckpt")
    Durable = durable(store)
    first = Durable.options(name="vault", lifetime="detached").remote(100)
    assert kastor.get(first.deposit.remote(23)) == 123
    kastor.kill(first, keep_state=True)
    key = f"{row(first)['namespace']}/vault"
    assert store.load(key) is not None

    again = Durable.options(name="vault", lifetime="detached", get_if_exists=True).remote(0)
    assert kastor.get(again.read.remote()) == 123, "resumed from the kept checkpoint, constructor not run"
    assert kastor.get(again.deposit.remote(1)) == 124
    kastor.kill(again)
    assert store.load(key) is None, "kill() without keep_state deletes the checkpoint"

    fresh = Durable.options(name="vault", lifetime="detached").remote(7)
    assert kastor.get(fresh.read.remote()) == 7
    kastor.kill(fresh)


def test_a_corrupt_checkpoint_fails_the_restart_by_default_and_can_fall_back_to_the_constructor(cluster, tmp_path):
    store = FileStore(tmp_path / "ckpt")
    for on_corrupt in ("fail", "construct"):
        cls = kastor.remote(max_restarts=1, state=Checkpoint(store=store, on_corrupt=on_corrupt))(Account)
        acct = cls.options(name=on_corrupt).remote(5)
        assert kastor.get(acct.deposit.remote(1)) == 6
        key = f"{row(acct)['namespace']}/{on_corrupt}"
        record = store.load(key)
        with open(store.checkpoint_path(key), "wb") as f:  # flip the last byte: the checksum no longer matches
            f.write(record[:-1] + bytes([record[-1] ^ 0xFF]))
        sigkill_worker(acct)
        if on_corrupt == "fail":
            wait_until(lambda acct=acct: row(acct)["state"] == "DEAD", "the restart to fail")
            cause = row(acct)["death_cause"]
            assert "CheckpointCorruptError" in cause and "corrupt" in cause and "on_corrupt" in cause, cause
            with pytest.raises(ActorDiedError):
                kastor.get(acct.read.remote(), timeout=DEADLINE_S)
        else:
            assert kastor.get(acct.read.remote(), timeout=DEADLINE_S) == 5, "constructor re-ran"


def test_state_that_cannot_be_saved_fails_the_call_and_the_actor_keeps_serving(cluster, tmp_path):
    store = FileStore(tmp_path / "ckpt")
    cls = kastor.remote(state=Checkpoint(store=store, max_bytes=10_000))(Account)
    acct = cls.remote(1)
    assert kastor.get(acct.deposit.remote(1)) == 2
    with pytest.raises(CheckpointTooLargeError, match="max_bytes=10000"):
        kastor.get(acct.keep.remote(b"x" * 20_000))
    kastor.get(acct.forget.remote())
    with pytest.raises(CheckpointError, match="cannot be pickled.*__getstate__"):
        kastor.get(acct.hold_lock.remote())
    kastor.get(acct.forget.remote())
    assert kastor.get(acct.deposit.remote(1)) == 3


def test_every_n_calls_saves_every_nth_call(cluster, tmp_path):
    store = FileStore(tmp_path / "ckpt")
    acct = kastor.remote(state=Checkpoint(store=store, every=5))(Account).options(name="n").remote(0)
    key = f"{row(acct)['namespace']}/n"
    for _ in range(4):
        kastor.get(acct.deposit.remote(1))
    assert store.load(key) is None
    kastor.get(acct.deposit.remote(1))
    assert kastor.cloudpickle.loads(checkpoint.decode(store.load(key), key)[1])["balance"] == 5


@kastor.remote(max_restarts=1)
class Journal:
    """An async actor whose open file is left out of its state and reopened after a restore."""

    def __init__(self, path: str):
        self.path = path
        self.lines = 0
        self.file = open(path, "a")  # noqa: SIM115 - the actor's resource for its lifetime

    def __getstate__(self) -> dict:
        return {"path": self.path, "lines": self.lines}

    async def __kastor_restored__(self) -> None:
        await asyncio.sleep(0)
        self.file = open(self.path, "a")  # noqa: SIM115

    async def write(self, text: str) -> int:
        self.file.write(text + "\n")
        self.file.flush()
        self.lines += 1
        return self.lines

    async def pid(self) -> int:
        return os.getpid()


def test_an_async_actor_is_restored_and_its_hook_reopens_its_resources(cluster, tmp_path):
    journal = Journal.options(state=Checkpoint(store=FileStore(tmp_path / "ckpt"))).remote(str(tmp_path / "j.txt"))
    assert kastor.get(journal.write.remote("one")) == 1
    assert kastor.get(journal.write.remote("two")) == 2
    sigkill_worker(journal)
    wait_until(lambda: row(journal)["state"] == "ALIVE" and row(journal)["restarts"] == 1, "the restart")
    assert kastor.get(journal.write.remote("three"), timeout=DEADLINE_S) == 3
    assert (tmp_path / "j.txt").read_text() == "one\ntwo\nthree\n"


def test_the_cluster_redis_store_on_a_head_without_redis_names_the_fix(tmp_path):
    kastor.init(num_cpus=1)
    try:
        acct = durable(RedisStore()).remote(1)
        with pytest.raises(ActorDiedError, match="without --redis-address.*FileStore"):
            kastor.get(acct.read.remote(), timeout=DEADLINE_S)
    finally:
        kastor.shutdown()


def test_bad_state_options_fail_at_the_call_site():
    with pytest.raises(TypeError, match="kastor.state.Checkpoint"):
        kastor.remote(state={"every": "call"})(Account)
    with pytest.raises(ValueError, match="every="):
        Checkpoint(store=FileStore("/tmp/x"), every=0)
    with pytest.raises(ValueError, match="on_corrupt"):
        Checkpoint(store=FileStore("/tmp/x"), on_corrupt="ignore")
    with pytest.raises(CheckpointCorruptError, match="header"):
        checkpoint.decode(b"not a checkpoint", "k")


def test_with_max_task_retries_calls_in_flight_at_a_crash_are_resent_to_the_restored_actor(cluster, tmp_path):
    """At-least-once: no caller sees an error, no acknowledged deposit is lost, and a deposit saved
    but not yet acknowledged when its worker died runs again (at most one per crash here, with one
    caller sending one call at a time)."""
    cls = kastor.remote(max_restarts=-1, max_task_retries=-1, state=Checkpoint(store=FileStore(tmp_path / "c")))
    acct = cls(Account).remote(100)
    stream = Depositor(acct)
    stream.wait_for_more(20)
    crashes = 3
    for _ in range(crashes):
        sigkill_worker(acct)
        stream.wait_for_more(20)
    stream.stop()
    assert stream.failed == 0, "retried calls never fail"
    final = kastor.get(acct.read.remote())
    assert final >= 100 + len(stream.acks), "no acknowledged deposit lost"
    assert final <= 100 + len(stream.acks) + crashes


def test_the_job_end_deletes_its_unnamed_actors_checkpoints_and_keeps_the_named_ones(cluster, tmp_path):
    store = FileStore(tmp_path / "ckpt")
    Durable = durable(store)
    unnamed = Durable.remote(1)
    named = Durable.options(name="keeps").remote(1)
    kastor.get([unnamed.deposit.remote(1), named.deposit.remote(1)])
    unnamed_key, named_key = unnamed._actor_id.hex(), f"{row(named)['namespace']}/keeps"
    assert store.load(unnamed_key) is not None and store.load(named_key) is not None
    kastor.shutdown()  # the job ends: the head kills both (non-detached)
    try:
        assert store.load(unnamed_key) is None, "an unnamed actor's checkpoint could never be used again"
        assert store.load(named_key) is not None, "a later actor of that name may resume it"
    finally:
        kastor.init(address=cluster.address)  # for the fixture's own shutdown
