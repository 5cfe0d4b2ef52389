"""Fault tolerance with the head's state in Redis: failures inflicted on real processes.

SIGKILL the head and start it again, SIGKILL Redis and start it again (append-only file),
SIGKILL whole node agents with their workers, and kill actor workers while the head is away.
Every test counts what was acknowledged and checks that it happened, and that no detached
actor is lost.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading

import kastor
import pytest
import redis
from gcs_cluster import TOKEN, driven_cluster
from kastor.util.state import list_actors
from support import DEADLINE_S, process_gone, wait_until
from tcp_proxy import TcpProxy


@pytest.fixture
def cluster(tmp_path, redis_server, monkeypatch):
    """Head (on Redis) + node n1, and this test process connected as the driver."""
    with driven_cluster(tmp_path, redis_server, monkeypatch) as c:
        yield c


@kastor.remote
class Account:
    def __init__(self, balance: int = 0):
        self.balance = balance

    def deposit(self, amount: int) -> int:
        self.balance += amount
        return self.balance

    def pid(self) -> int:
        return os.getpid()

    def node(self) -> str:
        return kastor.get_runtime_context().get_node_id()


def row(actor) -> dict:
    [r] = list_actors(filters=[("actor_id", "=", actor._actor_id.hex())])
    return r


class CallStream:
    """Deposits 1 in a loop from a background thread, recording every acknowledged balance."""

    def __init__(self, actor):
        self.actor = actor
        self.acks: list[int] = []
        self.errors: list[BaseException] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.acks.append(kastor.get(self.actor.deposit.remote(1), timeout=DEADLINE_S))
            except Exception as e:  # recorded: the test asserts there are none
                self.errors.append(e)
                return

    def wait_for_more(self, n: int) -> None:
        target = len(self.acks) + n
        wait_until(lambda: len(self.acks) >= target or self.errors, f"{n} more acknowledged calls")
        assert not self.errors, self.errors

    def stop(self) -> list[int]:
        self._stop.set()
        self._thread.join(DEADLINE_S)
        assert not self.errors, self.errors
        return self.acks


def in_thread(fn):
    """Runs `fn` in a thread; returns (thread, result holder) so a test can see it block."""
    out: dict = {}

    def run():
        try:
            out["value"] = fn()
        except BaseException as e:
            out["error"] = e

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, out


def test_detached_actor_keeps_serving_through_a_head_restart(cluster):
    acct = Account.options(name="acct", namespace="bank", lifetime="detached").remote(100)
    pid = kastor.get(acct.pid.remote())
    stream = CallStream(acct)
    stream.wait_for_more(10)

    cluster.kill_head()
    stream.wait_for_more(50)  # the call path does not go through the head

    lookup, found = in_thread(lambda: kastor.get_actor("acct", namespace="bank"))
    lookup.join(0.5)
    assert lookup.is_alive(), "a name lookup waits for the head instead of failing"

    cluster.start_head()
    lookup.join(DEADLINE_S)
    assert "error" not in found, found.get("error")
    again = found["value"]
    stream.wait_for_more(10)
    acks = stream.stop()

    assert acks == list(range(101, 101 + len(acks))), "every acknowledged call happened exactly once, in order"
    assert kastor.get(again.deposit.remote(0)) == 100 + len(acks), "state kept across the head restart"
    assert kastor.get(again.pid.remote()) == pid, "the worker process was never touched"
    r = row(acct)
    assert (r["state"], r["restarts"], r["detached"]) == ("ALIVE", 0, True)


def test_actor_creation_waits_for_the_head(cluster):
    cluster.kill_head()
    handles = []  # a named, non-detached actor lives while a handle does (as in Ray): keep one

    def create_and_call():
        handles.append(Account.options(name="late").remote(7))
        return kastor.get(handles[0].deposit.remote(1), timeout=DEADLINE_S)

    create, out = in_thread(create_and_call)
    create.join(0.5)
    assert create.is_alive(), "creation waits for the head"
    cluster.start_head()
    create.join(DEADLINE_S)
    assert out == {"value": 8}
    assert kastor.get(kastor.get_actor("late").deposit.remote(1)) == 9


def test_driver_session_survives_a_head_restart(cluster):
    """A non-detached actor must not be reaped as if its driver had left (grace is 4 s here)."""
    acct = Account.remote(1)
    cluster.kill_head()
    cluster.start_head()
    job_expiry = float(cluster.env["KASTOR_JOB_RECONNECT_GRACE_S"])
    deadline_passed = threading.Event()
    threading.Timer(job_expiry + 1.0, deadline_passed.set).start()
    deadline_passed.wait()
    assert kastor.get(acct.deposit.remote(1), timeout=DEADLINE_S) == 2
    assert row(acct)["state"] == "ALIVE"


def test_worker_killed_while_head_is_down_restarts_when_it_returns(cluster):
    acct = Account.options(max_restarts=1, name="phoenix").remote(5)
    old_pid = kastor.get(acct.pid.remote())
    cluster.kill_head()
    os.kill(old_pid, signal.SIGKILL)
    wait_until(lambda: process_gone(old_pid), "the actor's worker to die")
    cluster.start_head()
    wait_until(lambda: row(acct)["state"] == "ALIVE" and row(acct)["restarts"] == 1, "the actor to restart")
    assert kastor.get(acct.deposit.remote(1), timeout=DEADLINE_S) == 6, "constructor re-ran with its arguments"
    assert kastor.get(acct.pid.remote()) != old_pid

    listed = subprocess.run([sys.executable, "-m", "kastor.runtime.cli", "list", "actors", "--json",
                             "--address", cluster.address, "--token", TOKEN],
                            capture_output=True, text=True, timeout=60, check=True)
    [entry] = [a for a in json.loads(listed.stdout) if a["name"] == "phoenix"]
    assert entry["restarts"] == 1 and entry["state"] == "ALIVE"
    assert "SIGKILL" in entry["death_cause"] or "while the head was away" in entry["death_cause"]


def test_node_killed_moves_its_actors_to_another_node(cluster):
    cluster.add_node("n2", resources={"slot": 2})
    movable = Account.options(resources={"slot": 1}, max_restarts=-1, lifetime="detached", name="m").remote(10)
    fragile = Account.options(resources={"slot": 1}, max_restarts=0).remote()
    assert kastor.get(movable.node.remote()) == "n2"
    kastor.get(fragile.pid.remote())

    cluster.kill_node("n2")
    wait_until(lambda: row(fragile)["state"] == "DEAD", "the actor without restarts to die with its node")
    assert row(movable)["state"] == "RESTARTING", "no node has the resources: it waits, it is not an error"

    cluster.add_node("n3", resources={"slot": 1})
    assert kastor.get(movable.deposit.remote(1), timeout=DEADLINE_S) == 11
    assert kastor.get(movable.node.remote()) == "n3"
    assert row(movable)["restarts"] == 1
    assert "n2" in row(fragile)["death_cause"]


def test_node_lost_while_head_is_down_is_failed_over(cluster):
    cluster.add_node("n2", resources={"slot": 1})
    acct = Account.options(resources={"slot": 1}, max_restarts=1).remote(3)
    assert kastor.get(acct.node.remote()) == "n2"
    cluster.kill_head()
    cluster.kill_node("n2")
    cluster.start_head()
    cluster.add_node("n3", resources={"slot": 1})
    wait_until(lambda: row(acct)["state"] == "ALIVE" and row(acct)["restarts"] == 1,
               "the head to notice the silent node and restart its actor")
    assert kastor.get(acct.node.remote(), timeout=DEADLINE_S) == "n3"
    assert kastor.get(acct.deposit.remote(1)) == 4


def test_a_node_that_reaches_the_restarted_head_late_keeps_its_actors(cluster):
    """A new head pod is reachable only once its Service routes to it, so a node's first
    heartbeat can come later than the node death timeout after the head loaded its tables.
    The head waits KASTOR_NODE_RECONNECT_GRACE_S for recovered nodes, and an actor with no
    restarts left survives (CI lost a DetachedActor this way when the head's node was lost)."""
    proxy = TcpProxy(("127.0.0.1", cluster.port))
    try:
        cluster.add_node("late", resources={"slot": 1}, head_address=f"127.0.0.1:{proxy.port}")
        acct = Account.options(name="late-acct", lifetime="detached", resources={"slot": 1}).remote(5)
        pid = kastor.get(acct.pid.remote())
        cluster.kill_head()
        proxy.cut()
        cluster.env["KASTOR_NODE_RECONNECT_GRACE_S"] = "120"
        cluster.start_head()
        # A node that joins the new head and dies: once the head declares it dead, more than the
        # node death timeout has passed since the head loaded, and "late" has not been heard from.
        cluster.add_node("witness")
        cluster.kill_node("witness")
        wait_until(lambda: not alive_nodes()["witness"], "the new head to declare the killed witness node dead")
        assert alive_nodes()["late"], "a recovered node is declared dead within its reconnect grace"
        proxy.restore()
        assert kastor.get(acct.deposit.remote(1), timeout=DEADLINE_S) == 6
        assert kastor.get(acct.pid.remote()) == pid, "the actor's worker was never restarted"
        assert row(acct)["state"] == "ALIVE"
    finally:
        proxy.close()


def alive_nodes() -> dict[str, bool]:
    return {n["NodeID"]: n["Alive"] for n in kastor.nodes()}


def test_redis_restart_while_the_head_runs_loses_nothing(cluster, redis_server):
    before = Account.options(name="before", lifetime="detached").remote()
    kastor.get(before.pid.remote())
    redis_server.kill()
    create, out = in_thread(lambda: kastor.get(
        Account.options(name="during", lifetime="detached").remote(2).deposit.remote(0), timeout=DEADLINE_S))
    create.join(0.5)
    assert create.is_alive(), "the head's acknowledgement waits for Redis"
    redis_server.start()
    create.join(DEADLINE_S)
    assert out == {"value": 2}

    cluster.kill_head()  # what the new head knows comes from Redis alone
    cluster.start_head()
    for name in ("before", "during"):
        assert kastor.get(kastor.get_actor(name).deposit.remote(1), timeout=DEADLINE_S) >= 1


def test_driver_exit_reaps_its_actors_but_not_detached_ones(cluster):
    code = f"""
import kastor
kastor.init(address="{cluster.address}", namespace="jobs")
@kastor.remote
class A:
    def ping(self):
        return 1
keep = A.options(name="keep", lifetime="detached").remote()
gone = A.options(name="gone").remote()
kastor.get([keep.ping.remote(), gone.ping.remote()])
"""
    subprocess.run([sys.executable, "-c", code], env=cluster.env, check=True, timeout=120)
    wait_until(lambda: _state("gone") == "DEAD", "the driver's non-detached actor to be reaped")
    assert _state("keep") == "ALIVE"


def _state(name: str) -> str:
    return next(a["state"] for a in list_actors() if a["name"] == name)


def test_redis_clean_removes_only_that_clusters_keys(cluster, redis_server):
    kastor.get(Account.options(name="x", lifetime="detached").remote().pid.remote())
    r = redis.Redis(port=redis_server.port)
    r.hset("kastor:other:actors", "k", "v")
    assert r.keys(f"kastor:{cluster.cluster_id}:*")
    cli = [sys.executable, "-m", "kastor.runtime.cli", "redis-clean", "--redis-address", redis_server.address]
    done = subprocess.run([*cli, "--cluster-id", cluster.cluster_id], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert r.keys(f"kastor:{cluster.cluster_id}:*") == []
    assert r.hget("kastor:other:actors", "k") == b"v"
    bad = subprocess.run([*cli, "--cluster-id", "bad id"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1 and "cluster id" in bad.stderr


def test_redis_cleanup_function_deletes_one_clusters_keys(redis_server):
    """What the operator's finalizer calls: a function with a count, not a subprocess."""
    from kastor.runtime import redis_cleanup
    r = redis.Redis(port=redis_server.port)
    r.hset("kastor:mine:actors", "a", "1")
    r.hset("kastor:mine:nodes", "n", "1")
    r.hset("kastor:other:actors", "k", "v")
    assert redis_cleanup.clean(redis_server.address, "mine") == 2
    assert r.keys("kastor:mine:*") == [] and r.hget("kastor:other:actors", "k") == b"v"
