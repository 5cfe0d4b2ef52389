"""Slow is not dead (issue 15 item 4): the head declares a node dead only after it has itself
been listening, without a heartbeat from the node, for KASTOR_NODE_DEATH_TIMEOUT_S.

A head starved of CPU (a loaded machine, here frozen with SIGSTOP) reads no heartbeats while it
does not run; when it runs again, the time it missed must not count against its nodes, whose
heartbeats are waiting to be read. Real processes: a Redis-backed head, one node agent, and this
test process as the driver.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import kastor
import pytest
from gcs_cluster import driven_cluster
from support import DEADLINE_S, wait_until


@pytest.fixture
def cluster(tmp_path, redis_server, monkeypatch):
    """A head on Redis (3 s node death timeout) with node n1; this process is the driver."""
    with driven_cluster(tmp_path, redis_server, monkeypatch, nodes=("n1",)) as c:
        yield c


@kastor.remote(max_restarts=-1)
class Pid:
    def pid(self) -> int:
        return os.getpid()


def _log(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""


def test_a_head_that_did_not_run_does_not_count_that_time_against_its_nodes(cluster, tmp_path):
    actor = Pid.remote()
    pid = kastor.get(actor.pid.remote(), timeout=DEADLINE_S)
    head_log, agent_log = tmp_path / "logs" / "head.log", tmp_path / "logs" / "n1.log"
    os.kill(cluster.head.proc.pid, signal.SIGSTOP)
    stopped = True
    try:
        # The agent's heartbeat gives up after 5 s: the head has been frozen longer than the
        # 3 s death timeout, and the node kept heartbeating the whole time.
        wait_until(lambda: "lost the head" in _log(agent_log), "the agent to notice the frozen head")
        os.kill(cluster.head.proc.pid, signal.SIGCONT)
        stopped = False
        wait_until(lambda: "reconnected to the head" in _log(agent_log),
                   "a heartbeat of the agent to reach the head again")
    finally:
        if stopped:
            os.kill(cluster.head.proc.pid, signal.SIGCONT)
    assert "marking it dead" not in _log(head_log), _log(head_log)[-2000:]
    assert "does not know this node" not in _log(agent_log), _log(agent_log)[-2000:]
    assert next(n for n in kastor.nodes() if n["NodeID"] == "n1")["Alive"]
    assert kastor.get(actor.pid.remote(), timeout=DEADLINE_S) == pid, "the actor was restarted"
