"""Restarts that lose nothing, and a worker pool that stays bounded (issue 15, items 3, 6, 7).

Real head (on Redis), real node agents and workers; failures are inflicted with SIGKILL, and
slowness with SIGSTOP/SIGCONT, never simulated.
"""

from __future__ import annotations

import os
import signal
import time

import kastor
import pytest
from gcs_cluster import TOKEN, GcsCluster
from kastor.exceptions import ActorUnavailableError
from kastor.util.scheduling_strategies import NodeAffinitySchedulingStrategy
from kastor.util.state import list_actors
from support import DEADLINE_S, process_gone, wait_until


@kastor.remote
class Counter:
    def __init__(self):
        self.n = 0

    def add(self, k: int) -> int:
        self.n += k
        return self.n

    def pid(self) -> int:
        return os.getpid()

    def node(self) -> str:
        return kastor.get_runtime_context().get_node_id()

    def hold(self) -> None:
        time.sleep(600)  # the workload in flight when the node dies (it dies with its worker)


@kastor.remote
class Gate:
    """Holds calls back until the test opens it (an asyncio actor: waiters do not block it)."""

    def __init__(self):
        import asyncio
        self.opened = asyncio.Event()

    async def wait(self) -> int:
        await self.opened.wait()
        return 1

    async def open(self) -> None:
        self.opened.set()


def _row(actor) -> dict:
    [r] = list_actors(filters=[("actor_id", "=", actor._actor_id.hex())])
    return r


def test_calls_queued_while_only_the_node_agent_died_wait_for_the_restart(tmp_path, redis_server, monkeypatch):
    """The head reports the dead worker's address until it declares the node dead (after
    KASTOR_NODE_DEATH_TIMEOUT_S, here longer than one address poll): calls made meanwhile must
    wait for the restarted actor, not go into a stream to the dead address."""
    monkeypatch.setenv("KASTOR_TOKEN", TOKEN)
    c = GcsCluster(tmp_path, redis_server)
    c.env["KASTOR_NODE_DEATH_TIMEOUT_S"] = "8"
    c.start_head()
    c.add_node("n1")
    c.add_node("n2", resources={"slot": 1})
    kastor.init(address=c.address)
    try:
        actor = Counter.options(resources={"slot": 1}, max_restarts=1, max_task_retries=0).remote()
        assert kastor.get(actor.node.remote(), timeout=DEADLINE_S) == "n2"
        pid = kastor.get(actor.pid.remote(), timeout=DEADLINE_S)
        gate = Gate.options(scheduling_strategy=NodeAffinitySchedulingStrategy("n1", soft=False)).remote()
        kastor.get(gate.__ray_ready__.remote(), timeout=DEADLINE_S)
        in_flight = actor.hold.remote()
        opened = gate.wait.remote()
        queued = [actor.add.remote(opened) for _ in range(20)]  # held back, unsent, until the gate opens

        c.kill_node("n2")
        wait_until(lambda: process_gone(pid), "the actor's worker to exit with its node agent")
        kastor.get(gate.open.remote(), timeout=DEADLINE_S)  # now they are ready, and wait for an address
        with pytest.raises(ActorUnavailableError):  # the one call in flight at the crash may fail
            kastor.get(in_flight, timeout=DEADLINE_S)
        assert _row(actor)["state"] == "ALIVE", "the head has not noticed yet: the case under test"

        c.add_node("n3", resources={"slot": 1})
        assert kastor.get(queued, timeout=DEADLINE_S) == list(range(1, 21))
        assert kastor.get(actor.node.remote(), timeout=DEADLINE_S) == "n3"
        assert _row(actor)["restarts"] == 1
    finally:
        kastor.shutdown()
        c.stop()


@kastor.remote
def nest(depth: int) -> int:
    """Blocks in get on a nested task: the node lends the CPU back and starts another worker."""
    return 0 if depth == 0 else kastor.get(nest.remote(depth - 1)) + 1


@kastor.remote
def make_nested_ref() -> list:
    return [kastor.put("owned by a task worker")]


def _children_of(pid: int) -> list[int]:
    kids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid and fields[0] != "Z":
                kids.append(int(entry))
    return kids


def _workers_of(pid: int) -> list[int]:
    """The live worker processes of node agent `pid`: its children, and those of its fork server."""
    workers = []
    for kid in _children_of(pid):
        try:
            with open(f"/proc/{kid}/cmdline", "rb") as f:
                forkserver = b"kastor.runtime.forkserver" in f.read()
        except OSError:
            continue
        workers.extend(_children_of(kid) if forkserver else [kid])
    return workers


def test_idle_workers_beyond_the_kept_pool_are_stopped_but_owners_stay(tmp_path, redis_server, monkeypatch):
    """After nested work, a 2-CPU node keeps 2 idle workers (KASTOR_IDLE_WORKERS_KEPT's default:
    its CPUs), plus the one that owns a ref the driver still holds."""
    monkeypatch.setenv("KASTOR_TOKEN", TOKEN)
    c = GcsCluster(tmp_path, redis_server)
    c.start_head()
    c.add_node("n1")
    kastor.init(address=c.address)
    try:
        [inner] = kastor.get(make_nested_ref.remote(), timeout=DEADLINE_S)
        assert kastor.get([nest.remote(5) for _ in range(2)], timeout=DEADLINE_S) == [5, 5]
        agent = c.nodes["n1"].proc.pid
        assert len(_workers_of(agent)) >= 8, "nested work needs a worker per blocked level"
        wait_until(lambda: len(_workers_of(agent)) <= 3, "idle workers beyond the kept pool to be stopped")
        assert kastor.get(inner, timeout=DEADLINE_S) == "owned by a task worker"
        assert kastor.get(nest.remote(2), timeout=DEADLINE_S) == 2, "the node still serves work"
    finally:
        kastor.shutdown()
        c.stop()


def _state(pid: int) -> str:
    """A process's state letter (R, S, T for stopped, Z...), or "" once it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return ""


def _processes_marked(marker: str) -> list[int]:
    """Live processes whose environment holds KASTOR_TEST_STOP_WORKERS=`marker`: one test's
    workers, wherever they were reparented once their node agent exited."""
    wanted = f"KASTOR_TEST_STOP_WORKERS={marker}".encode()
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/environ", "rb") as f:
                    environ = f.read().split(b"\0")
            except OSError:
                continue
            if wanted in environ and _state(int(entry)) not in ("", "Z"):
                found.append(int(entry))
    return found


STOP_AT_START = '''import os, signal
if os.environ.get("KASTOR_WORKER_ID") and os.environ.get("KASTOR_TEST_STOP_WORKERS"):
    os.kill(os.getpid(), signal.SIGSTOP)  # a worker that cannot start: starved, until SIGCONT
'''


def test_workers_that_do_not_start_in_time_are_killed_and_starts_are_bounded(tmp_path, redis_server, monkeypatch):
    """Every worker stops itself (SIGSTOP) before registering; the head keeps retrying placement.
    Each start is killed at KASTOR_STARTUP_TIMEOUT_S and at most 2 (the node's CPUs) run at once."""
    monkeypatch.setenv("KASTOR_TOKEN", TOKEN)
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(STOP_AT_START)
    c = GcsCluster(tmp_path, redis_server)
    c.start_head()
    # sitecustomize runs at interpreter start, which a worker forked from the fork server skips.
    c.env.update(KASTOR_TEST_STOP_WORKERS="1", KASTOR_STARTUP_TIMEOUT_S="2", KASTOR_FORK_SERVER="0",
                 PYTHONPATH=os.pathsep.join(p for p in [str(site), os.environ.get("PYTHONPATH")] if p))
    c.add_node("n1")
    kastor.init(address=c.address)
    try:
        actors = [Counter.remote() for _ in range(4)]
        logs = tmp_path / "session-n1" / "logs"
        wait_until(lambda: len(list(logs.glob("worker-*.log"))) >= 10, "the node to try starting 10 workers",
                   timeout=60)
        alive = _workers_of(c.nodes["n1"].proc.pid)
        assert len(alive) <= 2, f"{len(alive)} workers alive: those that timed out must be killed"
        assert all(_row(a)["state"] == "PENDING" for a in actors)
    finally:
        kastor.shutdown()
        c.stop()


def test_a_node_agent_that_shuts_down_leaves_no_starting_worker_behind(tmp_path, redis_server, monkeypatch):
    """A worker that hangs before registering (here: SIGSTOP) never sees its stdin end, so only
    its node agent can end it. On shutdown the agent SIGKILLs every worker still starting and
    starts none of those queued behind them: no process it spawned outlives it."""
    monkeypatch.setenv("KASTOR_TOKEN", TOKEN)
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(STOP_AT_START)
    marker = f"shutdown-{os.getpid()}-{time.monotonic_ns()}"
    c = GcsCluster(tmp_path, redis_server)
    c.start_head()
    # One start at a time: a prestarted worker hangs starting, and the other starts (the second
    # prestart, the tasks' leases) wait behind it. Killing it at shutdown frees the start slot,
    # which none of them may take; the tasks' lease requests, in flight, keep the agent's server
    # draining (and its loop running) for a moment after that.
    # sitecustomize runs at interpreter start, which a worker forked from the fork server skips.
    c.env.update(KASTOR_TEST_STOP_WORKERS=marker, KASTOR_STARTUP_TIMEOUT_S="300", KASTOR_MAX_STARTING_WORKERS="1",
                 KASTOR_PRESTART_WORKERS="2", KASTOR_FORK_SERVER="0",
                 PYTHONPATH=os.pathsep.join(p for p in [str(site), os.environ.get("PYTHONPATH")] if p))
    try:
        c.add_node("n1")
        agent = c.nodes["n1"]
        kastor.init(address=c.address)
        held = [nest.remote(0) for _ in range(4)]  # held, so their leases stay wanted
        wait_until(lambda: any(_state(pid) == "T" for pid in _workers_of(agent.proc.pid)),
                   "a worker to hang while starting")
        agent.stop(grace=DEADLINE_S)
        del held
        assert agent.proc.returncode == 0, f"the node agent did not shut down cleanly (exit {agent.proc.returncode})"
        left = _processes_marked(marker)
        assert not left, f"worker processes {left} outlived their node agent (states {[_state(p) for p in left]})"
    finally:
        kastor.shutdown()
        for pid in _processes_marked(marker):  # leave nothing behind, whatever the outcome
            os.kill(pid, signal.SIGKILL)
        c.stop()

