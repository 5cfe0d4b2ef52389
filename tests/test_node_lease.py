"""One lease per node (issue 15): a node agent renews one lease for all its workers, in a
shared file, instead of serving one renewal RPC per worker several times a second.

The file's rules are checked on the real module (a writer and readers of one file); the cost
is checked on a real cluster, by the RPCs its node agent reports having served (Stats) while
many actors sit idle.
"""

from __future__ import annotations

import time

import grpc
import kastor
import pytest
from gcs_cluster import TOKEN, driven_cluster
from kastor.runtime import auth
from kastor.runtime.node_lease import NodeLeaseError, NodeLeaseReader, NodeLeaseWriter
from kastor.runtime.protocol import kastor_pb2 as pb
from kastor.runtime.protocol import kastor_pb2_grpc as pb_grpc
from support import DEADLINE_S, wait_until


def test_a_renewal_is_seen_by_every_reader_and_lasts_the_lease(tmp_path):
    writer = NodeLeaseWriter(str(tmp_path), death_timeout_s=10.0)
    readers = [NodeLeaseReader(writer.path) for _ in range(3)]
    assert all(r.read().deadline == 0.0 for r in readers), "a new lease is not live before its first renewal"
    before = time.monotonic()
    assert writer.renew(lease_s=5.0, death_timeout_s=10.0, fresh_until=before + 10.0)
    after = time.monotonic()
    for r in readers:
        state = r.read()
        assert before + 5.0 <= state.deadline <= after + 5.0
        assert (state.renewals, state.death_timeout_s, state.fenced) == (1, 10.0, False)


def test_a_lapsed_lease_is_renewed_only_while_the_head_cannot_have_declared_the_node_dead(tmp_path):
    writer = NodeLeaseWriter(str(tmp_path), death_timeout_s=10.0)
    reader = NodeLeaseReader(writer.path)
    now = time.monotonic()
    # Lapsed (never renewed), and the last acknowledged heartbeat is too old: nothing is granted.
    assert not writer.renew(lease_s=5.0, death_timeout_s=10.0, fresh_until=now - 1.0)
    assert reader.read().deadline < time.monotonic()
    # Lapsed, and the head may declare the node dead in 1 s: the lease ends then, not in 5 s.
    assert writer.renew(lease_s=5.0, death_timeout_s=10.0, fresh_until=now + 1.0)
    assert reader.read().deadline == now + 1.0
    # Live: extended by the full lease whatever the heartbeat (a head restart must not stop calls).
    assert writer.renew(lease_s=5.0, death_timeout_s=10.0, fresh_until=now)
    assert reader.read().deadline >= now + 5.0


def test_the_deadline_never_moves_back_and_a_fenced_lease_stays_fenced(tmp_path):
    writer = NodeLeaseWriter(str(tmp_path), death_timeout_s=10.0)
    reader = NodeLeaseReader(writer.path)
    now = time.monotonic()
    writer.renew(lease_s=5.0, death_timeout_s=10.0, fresh_until=now + 10.0)
    first = reader.read().deadline
    writer.renew(lease_s=0.5, death_timeout_s=1.0, fresh_until=now + 10.0)  # a shorter timeout from the head
    assert reader.read().deadline == first
    writer.fence()
    assert reader.read().fenced
    assert not writer.renew(lease_s=5.0, death_timeout_s=10.0, fresh_until=now + 10.0)
    assert reader.read().fenced and reader.read().deadline == first
    writer.close()
    assert reader.read().fenced, "a worker that mapped the file still reads fenced after the agent removed it"
    with pytest.raises(NodeLeaseError, match="agent that started this worker is gone"):
        NodeLeaseReader(writer.path)


def test_each_writer_makes_its_own_file(tmp_path):
    """A restarted agent (same node id, same folder) never renews the file a stale worker mapped."""
    assert NodeLeaseWriter(str(tmp_path), 10.0).path != NodeLeaseWriter(str(tmp_path), 10.0).path


@kastor.remote
class Idle:
    def pid(self) -> int:
        import os
        return os.getpid()


def _stats(address: str) -> pb.NodeAgentStats:
    with grpc.insecure_channel(address) as channel:
        return pb_grpc.NodeAgentStub(channel).Stats(pb.Empty(), metadata=auth.metadata(TOKEN), timeout=DEADLINE_S)


def _served(stats: pb.NodeAgentStats) -> dict[str, int]:
    return {m: n for m, n in stats.rpcs_served.items() if m != "Stats"}


def _agent_address(node_id: str) -> str:
    [node] = [nd for nd in kastor.nodes() if nd["NodeID"] == node_id]
    return node["Address"]


def test_the_node_agent_counts_the_calls_it_serves_by_method(tmp_path, redis_server, monkeypatch):
    with driven_cluster(tmp_path, redis_server, monkeypatch, nodes=("n1",)):
        address = _agent_address("n1")
        before = _stats(address)
        assert before.lease_s > 0 and before.rpcs_served["Stats"] >= 1
        kastor.get(Idle.remote().pid.remote(), timeout=DEADLINE_S)
        after = _stats(address)
        assert after.rpcs_served["StartActor"] >= before.rpcs_served.get("StartActor", 0) + 1
        assert after.rpcs_served["Stats"] > before.rpcs_served["Stats"]
        assert after.monotonic_s > before.monotonic_s
        with grpc.insecure_channel(address) as bad, pytest.raises(grpc.RpcError) as refused:
            pb_grpc.NodeAgentStub(bad).Stats(pb.Empty(), metadata=auth.metadata("wrong"), timeout=DEADLINE_S)
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        # Only admitted calls count: the refused one does not, this one does.
        assert _stats(address).rpcs_served["Stats"] == after.rpcs_served["Stats"] + 1


def test_idle_actors_cost_their_node_agent_no_rpcs(tmp_path, redis_server, monkeypatch):
    """30 idle actors on one node, over three lease periods: their node agent serves fewer calls
    than there are actors, renews the node's lease on its own, and every actor still answers.

    Before the node lease each worker renewed its own lease by RPC five times per lease period
    (450 calls here), and on a loaded 2-core machine the agent fell behind while the actors
    were still being created: workers fenced themselves and the first get() failed with
    ActorDiedError."""
    n = 30
    with driven_cluster(tmp_path, redis_server, monkeypatch, nodes=("n1",)) as c:
        actors = [Idle.remote() for _ in range(n)]
        pids = kastor.get([a.pid.remote() for a in actors], timeout=4 * DEADLINE_S)
        address = _agent_address("n1")
        first = _stats(address)
        periods = 3
        wait_until(lambda: _stats(address).monotonic_s - first.monotonic_s >= periods * first.lease_s,
                   f"{periods} lease periods ({periods * first.lease_s:.1f}s) on the node agent's clock",
                   timeout=4 * DEADLINE_S)
        last = _stats(address)
        served = {m: k - _served(first).get(m, 0) for m, k in _served(last).items() if k > _served(first).get(m, 0)}
        assert sum(served.values()) < n, (f"{n} idle actors made their node agent serve {served} in {periods} lease "
                                          f"periods: their leases cost RPCs per worker")
        renewed = last.node_lease_renewals - first.node_lease_renewals
        assert renewed >= periods, \
            f"the agent renewed the node's lease {renewed} times in {periods} lease periods"
        assert kastor.get([a.pid.remote() for a in actors], timeout=4 * DEADLINE_S) == pids
        assert c.nodes["n1"].proc.poll() is None
