"""`kastor.kill` returns once the head has marked the actor DEAD, as Ray's GCS answers `ray.kill`,
not once the node has stopped the worker; the killing process's later calls fail at once even so.

The node agent is frozen (SIGSTOP) so that the worker is certainly still running when the kill
returns. A head that waited for the node would not answer until its KillWorker call timed out,
and the caller's next call would then go on its lane to the live worker and succeed.
"""

from __future__ import annotations

import asyncio
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


def test_a_killed_actors_worker_that_its_node_still_reports_is_stopped_on_the_next_heartbeat():
    """The node's KillWorker goes after KillActor's answer and may be lost (the node was briefly
    unreachable): any later heartbeat that still lists the killed actor's worker is answered with
    it to stop. An actor that ended on its own (DEAD, not killed) may still be finishing its
    graceful exit, so its worker is left to it. A head in this process, on an in-memory store."""
    from kastor.runtime.head import Head
    from kastor.runtime.protocol import kastor_pb2 as pb
    from kastor.runtime.store import InMemoryStore

    def dead(actor_id: bytes, worker_id: bytes, killed: bool) -> pb.ActorInfo:
        return pb.ActorInfo(spec=pb.ActorSpec(actor_id=actor_id, class_name="A"), state=pb.DEAD,
                            killed=killed, node_id="n1", worker_id=worker_id)

    async def scenario() -> None:
        head = Head(InMemoryStore(), "token", "test")
        await head.RegisterNode(pb.NodeInfo(node_id="n1", address="127.0.0.1:1", total={"CPU": 2.0}), None)
        first = await head.Heartbeat(pb.HeartbeatRequest(node_id="n1"), None)  # its comparison: nothing runs
        assert first.known and not first.kill_worker_ids
        head.actors[b"k" * 16] = dead(b"k" * 16, b"w-killed", killed=True)
        head.actors[b"e" * 16] = dead(b"e" * 16, b"w-exiting", killed=False)
        beat = pb.HeartbeatRequest(node_id="n1", actors=[
            pb.LiveActor(actor_id=b"k" * 16, worker_id=b"w-killed"),
            pb.LiveActor(actor_id=b"e" * 16, worker_id=b"w-exiting")])
        reply = await head.Heartbeat(beat, None)
        assert list(reply.kill_worker_ids) == [b"w-killed"]

    asyncio.run(scenario())
