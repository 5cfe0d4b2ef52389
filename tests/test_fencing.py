"""Fencing: an actor has at most one live instance, even when its node agent freezes.

The node agent of an actor's node is frozen with SIGSTOP (its workers keep running) until
the head declares the node dead and restarts the actor on the other node. Callers keep
calling the whole time: the driver, whose stream went to the old instance, and a caller on
the other node, which finds the new one. The actor keeps its state in memory and persists
all of it after every call (a checkpoint its constructor reloads), so two live instances
show up both as overlapping execution windows and as acknowledged calls missing from the
persisted state.
"""

from __future__ import annotations

import json
import os
import signal
import threading

import kastor
import pytest
from gcs_cluster import TOKEN, GcsCluster, driven_cluster
from kastor.util.scheduling_strategies import NodeAffinitySchedulingStrategy
from kastor.util.state import list_actors
from support import DEADLINE_S, PersistedSeqs, process_gone, wait_until
from tcp_proxy import TcpProxy


@pytest.fixture
def cluster(tmp_path, redis_server, monkeypatch):
    """Head (on Redis, 3 s node death timeout) + nodes n1 and n2; this process is the driver."""
    with driven_cluster(tmp_path, redis_server, monkeypatch, nodes=("n1", "n2")) as c:
        yield c


@kastor.remote(max_restarts=-1, max_task_retries=-1)
class Ledger:
    """Holds the sequence numbers it was given; persists all of them after every call."""

    def __init__(self, state_path: str, windows_path: str):
        self.state = PersistedSeqs(state_path, windows_path, str(os.getpid()))

    def record(self, seq: int) -> tuple[int, int]:
        self.state.apply(seq)
        return seq, os.getpid()

    def node(self) -> str:
        return kastor.get_runtime_context().get_node_id()


@kastor.remote
class Caller:
    """A second caller, on the other node: it finds whichever instance the head names."""

    def call(self, ledger, first: int, n: int) -> list[tuple[int, int]]:
        return [kastor.get(ledger.record.remote(first + i), timeout=DEADLINE_S) for i in range(n)]


class DriverCalls:
    """The driver calls the ledger in a loop from a thread, keeping every acknowledged seq."""

    def __init__(self, ledger):
        self.ledger = ledger
        self.acked: list[tuple[int, int]] = []  # (seq, pid of the instance that ran it)
        self.errors: list[BaseException] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        seq = 0
        while not self._stop.is_set():
            seq += 1
            try:
                self.acked.append(kastor.get(self.ledger.record.remote(seq), timeout=DEADLINE_S))
            except Exception as e:  # not acknowledged: allowed, but it must not be the only outcome
                self.errors.append(e)

    def wait_for_more(self, n: int) -> None:
        target = len(self.acked) + n
        wait_until(lambda: len(self.acked) >= target, f"{n} more acknowledged driver calls (errors: {self.errors})",
                   timeout=2 * DEADLINE_S)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(2 * DEADLINE_S)


def _ledger_row(ledger) -> dict:
    [r] = list_actors(filters=[("actor_id", "=", ledger._actor_id.hex())])
    return r


def test_a_frozen_nodes_actor_never_runs_twice_and_loses_no_acknowledged_call(cluster, tmp_path):
    state, windows = str(tmp_path / "ledger.json"), str(tmp_path / "windows.txt")
    ledger = Ledger.options(scheduling_strategy=NodeAffinitySchedulingStrategy("n1", soft=True)).remote(
        state, windows)
    frozen = kastor.get(ledger.node.remote())  # n1, unless n1 looked full to the head just then
    other = "n2" if frozen == "n1" else "n1"
    caller = Caller.options(scheduling_strategy=NodeAffinitySchedulingStrategy(other, soft=False)).remote()
    driver = DriverCalls(ledger)
    agent = cluster.nodes[frozen].proc.pid
    stopped = False
    try:
        driver.wait_for_more(20)
        os.kill(agent, signal.SIGSTOP)
        stopped = True
        wait_until(lambda: (r := _ledger_row(ledger))["state"] == "ALIVE" and r["node_id"] == other,
                   f"the head to restart the ledger on {other} after declaring {frozen} dead")
        caller_acked = kastor.get(caller.call.remote(ledger, 1_000_000, 30), timeout=2 * DEADLINE_S)
        driver.wait_for_more(20)  # the driver's calls, too, reach the one live instance
        os.kill(agent, signal.SIGCONT)
        stopped = False
        driver.wait_for_more(10)
    finally:
        if stopped:
            os.kill(agent, signal.SIGCONT)
        driver.stop()

    with open(windows) as f:
        rows = [line.split() for line in f if line.strip()]
    spans: dict[int, tuple[float, float]] = {}
    for pid, start, end in rows:
        lo, hi = spans.get(int(pid), (float("inf"), float("-inf")))
        spans[int(pid)] = (min(lo, float(start)), max(hi, float(end)))
    assert len(spans) >= 2, f"the ledger was never restarted: {spans}"
    ordered = sorted(spans.items(), key=lambda item: item[1][0])
    for (pid_a, (_, end_a)), (pid_b, (start_b, _)) in zip(ordered, ordered[1:], strict=False):
        assert end_a < start_b, (f"two live instances: pid {pid_a} ran calls until {end_a:.3f}, after pid {pid_b} "
                                 f"started running them at {start_b:.3f} ({spans})")

    with open(state) as f:
        persisted = set(json.load(f))
    lost = [seq for seq, _ in driver.acked + caller_acked if seq not in persisted]
    assert not lost, f"{len(lost)} acknowledged calls are missing from the persisted state: {lost[:20]}"


def test_a_caller_moves_to_the_new_instance_when_the_head_restarts_its_actor(tmp_path, redis_server, monkeypatch):
    """A node cut off from the head, but not from its callers, keeps renewing its workers'
    leases: the head restarts the actor elsewhere while the old instance still serves. The
    driver hears of the new incarnation from the head and moves to it, and once the node
    hears it was declared dead, it kills the old instance."""
    monkeypatch.setenv("KASTOR_TOKEN", TOKEN)
    c = GcsCluster(tmp_path, redis_server)
    c.start_head()
    proxy = TcpProxy(("127.0.0.1", c.port))
    driver = None
    try:
        c.add_node("n1", head_address=f"127.0.0.1:{proxy.port}")
        kastor.init(address=c.address)
        ledger = Ledger.remote(str(tmp_path / "ledger.json"), str(tmp_path / "windows.txt"))
        old_pid = kastor.get(ledger.record.remote(0))[1]  # on n1: the only node yet
        c.add_node("n2")
        driver = DriverCalls(ledger)
        driver.wait_for_more(10)
        proxy.cut()
        wait_until(lambda: (r := _ledger_row(ledger))["state"] == "ALIVE" and r["node_id"] == "n2",
                   "the head to restart the ledger on n2 after declaring n1 dead")
        new_pid = _ledger_row(ledger)["pid"]
        driver.wait_for_more(20)
        assert {pid for _, pid in driver.acked[-10:]} == {new_pid}, \
            f"the driver still calls the old instance (pid {old_pid}), not the new one (pid {new_pid})"
        proxy.restore()
        wait_until(lambda: process_gone(old_pid), "n1 to kill the old instance once it hears it was declared dead")
    finally:
        if driver is not None:
            driver.stop()
        kastor.shutdown()
        proxy.close()
        c.stop()


@kastor.remote(max_restarts=-1)
class Where:
    def node(self):
        return kastor.get_runtime_context().get_node_id()


def test_an_actor_whose_start_hangs_on_a_node_declared_dead_is_placed_on_another(tmp_path, redis_server,
                                                                                  monkeypatch):
    """A node that vanishes (a deleted pod whose network is gone) may never answer the head's
    StartActor. Once the node is declared dead the call is abandoned and the actor is placed on a
    node that joined meanwhile, not left "placing" for ever."""
    with driven_cluster(tmp_path, redis_server, monkeypatch, nodes=("n1",)) as c:
        first = Where.remote()
        assert kastor.get(first.node.remote(), timeout=DEADLINE_S) == "n1"  # the head's channel to n1 is open
        agent = c.nodes["n1"].proc.pid
        os.kill(agent, signal.SIGSTOP)  # its connection stays open, and nothing on it is answered
        try:
            actor = Where.remote()  # placed in the background: the head's StartActor to n1 hangs
            wait_until(lambda: list_actors(filters=[("actor_id", "=", actor._actor_id.hex())]),
                       "the head to know the actor (and try n1, its only node)")
            c.add_node("n2")
            wait_until(lambda: not next(n for n in kastor.nodes() if n["NodeID"] == "n1")["Alive"],
                       "the head to declare the stopped n1 dead")
            assert kastor.get(actor.node.remote(), timeout=DEADLINE_S) == "n2"
        finally:
            os.kill(agent, signal.SIGCONT)


@kastor.remote
class Marks:
    """Appends what each call was given to a file: what ran, even in a worker that later died."""

    def __init__(self, path: str):
        self.path = path

    def mark(self, what: str) -> str:
        with open(self.path, "a") as f:
            f.write(what + "\n")
        return what

    def where(self) -> tuple[str, int, dict]:
        from kastor.runtime import context, settings
        return settings.NODE_LEASE_FILE.get(), os.getpid(), context.core.engine.lane_stats()


def test_a_call_on_a_lane_does_not_start_once_the_workers_lease_lapsed(cluster, tmp_path):
    """The lane's call runs on the actor's main thread (lane_host.py), which checks the node's
    lease before it starts it, as the loop's path does: with the node agent frozen past the
    lease, the call never runs there; the worker exits once fenced and the caller hears so."""
    import time

    from kastor.exceptions import ActorDiedError, ActorUnavailableError
    from kastor.runtime import context
    from kastor.runtime.node_lease import NodeLeaseReader
    marks = tmp_path / "marks.txt"
    actor = Marks.options(max_restarts=0, scheduling_strategy=NodeAffinitySchedulingStrategy("n1", soft=False)).remote(
        str(marks))
    kastor.get(actor.mark.remote("warm"), timeout=DEADLINE_S)
    before = context.core.actors.fast_sent
    lease_file, pid, lanes = kastor.get(actor.where.remote(), timeout=DEADLINE_S)
    assert context.core.actors.fast_sent == before + 1 and lanes["adopted"] == 1, "the call did not take a lane"
    reader = NodeLeaseReader(lease_file)
    agent = cluster.nodes["n1"].proc.pid
    os.kill(agent, signal.SIGSTOP)
    try:
        wait_until(lambda: reader.read().deadline < time.monotonic(), "the node's lease to lapse")
        ref = actor.mark.remote("after the lapse")
        assert context.core.actors.fast_sent == before + 2, "the call after the lapse did not take the lane"
        wait_until(lambda: process_gone(pid), "the worker to exit once its lease stayed lapsed", timeout=2 * DEADLINE_S)
    finally:
        os.kill(agent, signal.SIGCONT)
    with pytest.raises((ActorDiedError, ActorUnavailableError)):
        kastor.get(ref, timeout=DEADLINE_S)
    assert marks.read_text().split() == ["warm"], "a call started on a worker whose lease had lapsed"
