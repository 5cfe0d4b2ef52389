"""Slow is not dead (issue 15 item 4): a peer that is alive but slow to open a connection (a
loaded machine; here a real process paused with SIGSTOP and resumed a moment later) is waited
for, within KASTOR_CONNECT_TIMEOUT_S, instead of failing the call with UNAVAILABLE "timed out
before receiving SETTINGS frame". A refused connection (nobody listens) still fails at once.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import threading
import time
from pathlib import Path

import grpc
import kastor
import pytest
from gcs_cluster import TOKEN, GcsCluster
from kastor.runtime import auth, launcher, rpc
from kastor.runtime.protocol import kastor_pb2 as pb
from kastor.runtime.protocol import kastor_pb2_grpc as pb_grpc
from kastor.util.state import list_actors
from support import DEADLINE_S, process_gone, wait_until

PAUSE_S = 1.5  # how long the peer is frozen: far above a handshake's time, far below the connect timeout


def _pause(pids: list[int]) -> threading.Timer:
    """SIGSTOPs `pids` now and SIGCONTs them PAUSE_S later (the fault: a peer that is slow for a while)."""
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)

    def resume() -> None:
        for pid in pids:
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
    timer = threading.Timer(PAUSE_S, resume)
    timer.start()
    return timer


async def _list_nodes(address: str, token: str) -> pb.NodeList:
    channel = rpc.direct_channel(address)
    try:
        return await pb_grpc.HeadStub(channel).ListNodes(pb.ListRequest(), metadata=auth.metadata(token),
                                                         timeout=DEADLINE_S)
    finally:
        await channel.close()


def test_a_new_connection_to_a_paused_peer_waits_for_it_and_a_refused_one_fails_at_once(tmp_path):
    port = launcher.free_port()
    env = dict(os.environ, KASTOR_SESSION_ROOT=str(tmp_path / "sessions"))
    env.pop("KASTOR_ADDRESS", None)
    head = launcher.Child("kastor.runtime.head", ["--port", str(port), "--token", "t"], env, str(tmp_path / "head.log"))
    head.wait_ready()
    timer = None
    try:
        timer = _pause([head.proc.pid])
        asyncio.run(_list_nodes(f"127.0.0.1:{port}", "t"))  # before: UNAVAILABLE after ~0.1 s
    finally:
        if timer is not None:
            timer.join()
        head.stop()
    started = time.monotonic()
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        asyncio.run(_list_nodes(f"127.0.0.1:{port}", "t"))
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    assert time.monotonic() - started < DEADLINE_S / 3, "a refused connection is not waited for"


def _children(pid: int) -> list[int]:
    children = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        children += [int(c) for c in (task / "children").read_text().split()]
    return children


def _workers_of(agent_pid: int) -> list[int]:
    return [pid for pid in _children(agent_pid)
            if b"kastor.runtime.worker" in Path(f"/proc/{pid}/cmdline").read_bytes()]


@kastor.remote(max_restarts=0)
class Pid:
    def pid(self) -> int:
        return os.getpid()


def test_an_actor_starts_on_an_idle_worker_that_was_briefly_paused(tmp_path, redis_server, monkeypatch):
    """The node agent's StartActor to a prestarted worker it has not talked to yet opens a new
    connection; the worker, paused for a moment, is slow, not dead: it is neither killed nor
    reported as failed, and the actor runs on it."""
    monkeypatch.setenv("KASTOR_TOKEN", TOKEN)
    c = GcsCluster(tmp_path, redis_server)
    c.env.update(KASTOR_FORK_SERVER="0", KASTOR_PRESTART_WORKERS="2")  # workers are the agent's children
    timer = None
    try:
        c.start_head()
        c.add_node("n1")
        agent = c.nodes["n1"].proc.pid
        logs = tmp_path / "session-n1" / "logs"
        wait_until(lambda: len(_workers_of(agent)) >= 2 and sum(
            "serving on" in f.read_text(errors="replace") for f in logs.glob("worker-*.log")) >= 2,
            "the node to prestart its idle workers, and them to register")
        kastor.init(address=c.address)
        idle = _workers_of(agent)
        timer = _pause(idle)
        actor = Pid.remote()
        pid = kastor.get(actor.pid.remote(), timeout=DEADLINE_S)
        assert pid in idle, f"the actor runs in a new worker {pid}, not in a prestarted one {idle}"
        assert not [p for p in idle if process_gone(p)], "a paused (live) worker was killed"
        log = (tmp_path / "logs" / "head.log").read_text(errors="replace")
        assert "could not start actor" not in log, log[-2000:]
    finally:
        if timer is not None:
            timer.join()
        kastor.shutdown()
        c.stop()


def test_a_worker_whose_node_agent_is_paused_while_it_registers_still_serves(tmp_path, redis_server, monkeypatch):
    """A worker registers with its node agent before it serves, by a line on the socket pair the
    agent made for it (runtime/worker_registration.py), which needs no answer. The agent, paused
    meanwhile (a loaded machine), cannot fail it: the worker neither dies (it used to, with an
    unhandled error) nor is replaced, and the actor runs on it once the agent is back."""
    monkeypatch.setenv("KASTOR_TOKEN", TOKEN)
    c = GcsCluster(tmp_path, redis_server)
    # Workers are the agent's children, started on demand; the head waits out the paused agent.
    c.env.update(KASTOR_FORK_SERVER="0", KASTOR_PRESTART_WORKERS="0", KASTOR_NODE_DEATH_TIMEOUT_S="60")
    paused = False
    try:
        c.start_head()
        c.add_node("n1")
        agent = c.nodes["n1"].proc.pid
        kastor.init(address=c.address)
        actor = Pid.remote()  # the agent starts a worker for it: a fresh interpreter, still importing
        wait_until(lambda: _workers_of(agent), "the node to start a worker for the actor", timeout=DEADLINE_S)
        [worker] = _workers_of(agent)
        os.kill(agent, signal.SIGSTOP)
        paused = True
        worker_log = next((tmp_path / "session-n1" / "logs").glob("worker-*.log"))
        assert "serving on" not in worker_log.read_text(errors="replace"), "caught too late: it registered"
        wait_until(lambda: "serving on" in worker_log.read_text(errors="replace"),
                   "the worker to register and serve while its agent is paused", timeout=2 * DEADLINE_S)
        assert not process_gone(worker)
        os.kill(agent, signal.SIGCONT)
        paused = False
        assert kastor.get(actor.pid.remote(), timeout=DEADLINE_S) == worker
    finally:
        if paused:
            os.kill(agent, signal.SIGCONT)
        kastor.shutdown()
        c.stop()


class _Unavailable(grpc.RpcError):
    def code(self) -> grpc.StatusCode:
        return grpc.StatusCode.UNAVAILABLE

    def details(self) -> str:
        return "the agent did not answer"


class _RegisteringCore:
    """What `worker.register` uses of a worker's core, with an agent that fails `fails` times."""

    worker_id, address, node_address = b"\x01" * 16, "127.0.0.1:1", "127.0.0.1:2"

    def __init__(self, fails: int):
        self.fails, self.calls = fails, []

    def data_port(self) -> int:
        return 3

    def node_call(self, method: str, request, timeout: float) -> None:
        self.calls.append(method)
        if len(self.calls) <= self.fails:
            raise _Unavailable()


def test_a_worker_without_a_registration_pair_asks_its_paused_agent_again(monkeypatch, caplog):
    """The fallback for a worker that has no socket pair (or could not write to it): RegisterWorker,
    asked again with backoff while the agent does not answer, instead of dying on the first error."""
    from kastor.runtime import worker

    monkeypatch.delenv("KASTOR_REGISTER_FD", raising=False)
    core = _RegisteringCore(fails=2)
    with caplog.at_level(logging.WARNING, logger="kastor.worker"):
        assert worker.register(core) is None
    assert core.calls == ["RegisterWorker"] * 3
    assert caplog.text.count("could not register with the node agent") == 2


@kastor.remote(max_restarts=-1, max_task_retries=0)
class Echo:
    def echo(self, x):
        return x


def test_a_new_actors_first_call_waits_for_its_briefly_paused_worker(tmp_path, redis_server, monkeypatch, caplog):
    """The first call to an actor opens the caller's connection to its worker. A worker paused
    for a moment (a loaded machine) is slow, not gone: the call waits for it and runs once, and
    the caller never takes the live worker for unreachable."""
    caplog.set_level(logging.INFO, logger="kastor.actors")
    monkeypatch.setenv("KASTOR_TOKEN", TOKEN)
    c = GcsCluster(tmp_path, redis_server)
    timer = None
    try:
        c.start_head()
        c.add_node("n1")
        kastor.init(address=c.address)
        actor = Echo.remote()
        wait_until(lambda: any(r["state"] == "ALIVE" for r in list_actors(
            filters=[("actor_id", "=", actor._actor_id.hex())])), "the actor to start (no call has reached it yet)")
        [row] = list_actors(filters=[("actor_id", "=", actor._actor_id.hex())])
        timer = _pause([row["pid"]])
        assert kastor.get(actor.echo.remote("first"), timeout=DEADLINE_S) == "first"
        assert "unreachable" not in caplog.text, caplog.text
        assert list_actors(filters=[("actor_id", "=", actor._actor_id.hex())])[0]["pid"] == row["pid"]
    finally:
        if timer is not None:
            timer.join()
        kastor.shutdown()
        c.stop()
