"""One lease per node (issue 15): what a node agent serves, counted by the agent itself (Stats),
so that the cost of idle workers to their agent is a number a test can check.
"""

from __future__ import annotations

import grpc
import kastor
import pytest
from gcs_cluster import TOKEN, driven_cluster
from kastor.runtime import auth
from kastor.runtime.protocol import kastor_pb2 as pb
from kastor.runtime.protocol import kastor_pb2_grpc as pb_grpc
from support import DEADLINE_S


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
