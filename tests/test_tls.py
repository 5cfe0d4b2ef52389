"""TLS on every port: a cluster whose processes all serve TLS, a notebook that trusts its CA,
and plain-text peers that get nowhere."""

from __future__ import annotations

import os
import socket

import grpc
import kastor
import pytest
from kastor.runtime import auth, launcher, tls
from kastor.runtime.protocol import kastor_pb2 as pb
from kastor.runtime.protocol import kastor_pb2_grpc as pb_grpc

pytest.importorskip("cryptography")
from certs import write_tls_files  # noqa: E402
from support import cli_head  # noqa: E402

TOKEN = "tls-test-" + os.urandom(8).hex()


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    return write_tls_files(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def cluster(certs, tmp_path_factory):
    client_port = launcher.free_port()
    with cli_head(tmp_path_factory.mktemp("sessions"), TOKEN, "--client-port", str(client_port),
                  KASTOR_TLS_CERT=certs["cert"], KASTOR_TLS_KEY=certs["key"], KASTOR_TLS_CA=certs["ca"]) as head:
        yield {**head, "client": f"127.0.0.1:{client_port}"}


def test_notebook_trusting_the_ca_runs_actors(cluster, certs, monkeypatch):
    monkeypatch.setenv(tls.ENV_CA, certs["ca"])
    kastor.init(f"kastor://{cluster['client']}", token=TOKEN)
    try:
        @kastor.remote
        class Greeter:
            def hi(self, who):
                return f"hi {who}"

        assert kastor.get(Greeter.remote().hi.remote("tls")) == "hi tls"
    finally:
        kastor.shutdown()


def test_plain_text_client_cannot_connect_and_is_told_to_set_the_ca(cluster, monkeypatch):
    monkeypatch.delenv(tls.ENV_CA, raising=False)
    with pytest.raises(ConnectionError, match="Could not reach.*speaks TLS.*set KASTOR_TLS_CA"):
        kastor.init(f"kastor://{cluster['client']}", token=TOKEN)
    with pytest.raises(ConnectionError, match="Could not reach.*speaks TLS.*set KASTOR_TLS_CA"):
        kastor.init(cluster["head"], token=TOKEN)


def test_internal_ports_serve_only_tls(cluster, certs, monkeypatch):
    with grpc.insecure_channel(cluster["head"]) as ch:
        with pytest.raises(grpc.RpcError) as info:
            pb_grpc.HeadStub(ch).ListNodes(pb.ListRequest(), metadata=auth.metadata(TOKEN), timeout=5)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    monkeypatch.setenv(tls.ENV_CA, certs["ca"])
    with tls.channel(cluster["head"]) as ch:
        nodes = pb_grpc.HeadStub(ch).ListNodes(pb.ListRequest(), metadata=auth.metadata(TOKEN), timeout=10).nodes
        assert nodes and nodes[0].alive
        node_address = nodes[0].address
    with grpc.insecure_channel(node_address) as ch:
        with pytest.raises(grpc.RpcError) as info:
            pb_grpc.NodeAgentStub(ch).FreeObjects(pb.FreeObjectsRequest(), metadata=auth.metadata(TOKEN), timeout=5)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE


def test_actor_calls_inside_the_cluster_are_tls_frames(cluster, certs, monkeypatch):
    """An actor calling another goes to its data port (runtime/frames.py), with TLS; a plain-text
    peer holding the token gets no answer there."""
    monkeypatch.setenv(tls.ENV_CA, certs["ca"])
    kastor.init(f"kastor://{cluster['client']}", token=TOKEN)
    try:
        @kastor.remote
        class Callee:
            def hi(self, who):
                return f"hi {who}"

            def data_port(self):
                from kastor.runtime import context
                return context.core.address.rpartition(":")[0], context.core.data_port(), \
                    context.core.data_server.accepted

        @kastor.remote
        class Caller:
            def call(self, callee):
                return kastor.get(callee.hi.remote("over frames"))

        callee = Callee.remote()
        assert kastor.get(Caller.remote().call.remote(callee)) == "hi over frames"
        host, port, accepted = kastor.get(callee.data_port.remote())
        # Two streams: the caller actor's, and the notebook's own (through the client port's frame relay).
        assert accepted == 2, "the caller actor did not reach its callee on the data port"
        assert plain_text_answer(host, port, 4) != b"\x00\x00\x00\x00", "the data port accepted a plain-text peer"
    finally:
        kastor.shutdown()


def test_notebook_calls_go_through_the_frame_relay_with_tls(cluster, certs, monkeypatch):
    """The client port's frame relay (runtime/frame_relay.py) serves TLS: the notebook's calls reach
    the worker's data port through it, and a plain-text peer is not even greeted."""
    monkeypatch.setenv(tls.ENV_CA, certs["ca"])
    with tls.channel(cluster["client"]) as ch:
        relay_port = pb_grpc.ClientGatewayStub(ch).Hello(pb.HelloRequest(client_version="0.1"),
                                                         metadata=auth.metadata(TOKEN), timeout=10).frame_relay_port
    assert relay_port
    kastor.init(f"kastor://{cluster['client']}", token=TOKEN)
    try:
        @kastor.remote
        class Callee:
            def hi(self, who):
                return f"hi {who}"

            def accepted(self):
                from kastor.runtime import context
                return context.core.data_server.accepted

            def total(self, arr):
                return int(arr.sum())

        callee = Callee.remote()
        assert kastor.get(callee.hi.remote("relayed")) == "hi relayed"
        assert kastor.get(callee.accepted.remote()) == 1, "the notebook's calls did not come as frames"
        import numpy as np
        big = np.ones(2 * 1024 * 1024, dtype=np.uint8)  # uploaded as raw bytes to the node's upload port
        assert kastor.get(callee.total.remote(kastor.put(big))) == big.size
        [node] = [n for n in kastor.nodes() if n["Alive"]]
        with tls.channel(node["Address"]) as ch:
            stats = pb_grpc.NodeAgentStub(ch).Stats(pb.Empty(), metadata=auth.metadata(TOKEN), timeout=10)
        assert stats.rpcs_served["UploadPort"] >= 1 and "PutObject" not in stats.rpcs_served
    finally:
        kastor.shutdown()
    assert b"kastor-frame-relay" not in plain_text_answer("127.0.0.1", relay_port, 64), \
        "the relay greeted a plain-text peer"


def plain_text_answer(host: str, port: int, size: int) -> bytes:
    """What a TLS port answers a plain-text peer that sends the cluster's token as a frame
    (nothing, or a TLS alert: never a frame)."""
    with socket.create_connection((host, port), timeout=10) as s:
        s.sendall(len(TOKEN).to_bytes(4, "big") + TOKEN.encode())
        s.settimeout(10)
        try:
            return s.recv(size)
        except ConnectionResetError:
            return b""


def test_sync_calls_inside_the_cluster_take_a_tls_lane(cluster, certs, monkeypatch):
    """An actor's sync calls to another go on its lane (runtime/fast_lane.py), over TLS too."""
    monkeypatch.setenv(tls.ENV_CA, certs["ca"])
    kastor.init(f"kastor://{cluster['client']}", token=TOKEN)
    try:
        @kastor.remote
        class Callee:
            def twice(self, x):
                return 2 * x

            def lanes(self):
                from kastor.runtime import context
                return context.core.engine.lane_stats()

        @kastor.remote
        class Caller:
            def call(self, callee, n):
                from kastor.runtime import context
                results = [kastor.get(callee.twice.remote(i)) for i in range(n)]
                return results, context.core.actors.fast_sent

        callee = Callee.remote()
        results, fast = kastor.get(Caller.remote().call.remote(callee, 10))
        assert results == [2 * i for i in range(10)]
        assert fast >= 9, f"only {fast} of the 9 calls after the first took the lane"
        # A TLS lane stays on the worker's loop (its TLS state is the loop's; lane_host.py)
        assert kastor.get(callee.lanes.remote())["adopted"] == 0
    finally:
        kastor.shutdown()


def test_a_workers_grpc_started_on_its_first_connection_serves_only_tls(cluster, certs, monkeypatch):
    """A worker starts gRPC when its port first gets a connection (runtime/lazy_grpc_server.py):
    the connections that started it are copied to gRPC unread, the later ones steered to it.
    Either way TLS is gRPC's own: a TLS peer is served, a plain-text one is not."""
    monkeypatch.setenv(tls.ENV_CA, certs["ca"])
    kastor.init(f"kastor://{cluster['client']}", token=TOKEN)
    try:
        @kastor.remote
        class Worker:
            def grpc(self):
                from kastor.runtime import context
                return context.core.address, context.core.serves_grpc()

        worker = Worker.remote()
        address, serving = kastor.get(worker.grpc.remote())
        assert not serving, "actor calls started the worker's gRPC"

        def lease_state(channel) -> None:
            pb_grpc.CoreWorkerStub(channel).LeaseState(pb.Empty(), metadata=auth.metadata(TOKEN), timeout=10)

        for _ in range(2):  # the first starts gRPC (a copied connection), the second is steered to it
            with tls.channel(address) as ch:
                lease_state(ch)
            with grpc.insecure_channel(address) as ch:
                with pytest.raises(grpc.RpcError) as info:
                    lease_state(ch)
                assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        assert kastor.get(worker.grpc.remote())[1]
    finally:
        kastor.shutdown()
