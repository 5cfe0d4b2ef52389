"""`kastor.kill` returns once the head has marked the actor DEAD, as Ray's GCS answers `ray.kill`,
not once the node has stopped the worker; the killing process's later calls fail at once even so.

The node agent is frozen (SIGSTOP) so that the worker is certainly still running when the kill
returns. A head that waited for the node would not answer until its KillWorker call timed out,
and the caller's next call would then go on its lane to the live worker and succeed.
"""

from __future__ import annotations

import os
import signal

import kastor
import pytest
from gcs_cluster import driven_cluster
from kastor.exceptions import ActorDiedError
from support import DEADLINE_S, process_gone, wait_until


@pytest.fixture
def cluster(tmp_path, redis_server, monkeypatch):
    # A long node death timeout: the frozen node is neither declared dead nor fenced by its
    # workers while the test runs (docs/fault-tolerance.md).
    with driven_cluster(tmp_path, redis_server, monkeypatch, env={"KASTOR_NODE_DEATH_TIMEOUT_S": "60"}) as c:
        yield c


@kastor.remote
class Pid:
    def pid(self) -> int:
        return os.getpid()


def test_a_kill_fails_the_killers_next_call_before_the_node_has_stopped_the_worker(cluster):
    actor = Pid.remote()
    for _ in range(5):  # enough calls in a row that the next one takes the lane (fast_lane.py)
        pid = kastor.get(actor.pid.remote(), timeout=DEADLINE_S)
    agent = cluster.nodes["n1"].proc.pid
    os.kill(agent, signal.SIGSTOP)
    try:
        kastor.kill(actor)
        assert not process_gone(pid), "the frozen node cannot have stopped the worker"
        with pytest.raises(ActorDiedError, match=r"killed by kastor\.kill\(\)"):
            kastor.get(actor.pid.remote(), timeout=DEADLINE_S)
    finally:
        os.kill(agent, signal.SIGCONT)
    wait_until(lambda: process_gone(pid), "the node, running again, to stop the killed actor's worker")
    again = Pid.remote()
    assert kastor.get(again.pid.remote(), timeout=DEADLINE_S) != pid
