"""A notebook (kastor://) through a head restart: the client port runs inside the head, so
while the head is down the notebook's calls wait; once a head is back on the same state, they
go on, and so do the actors."""

from __future__ import annotations

import grpc
import kastor
import pytest
from gcs_cluster import TOKEN, GcsCluster
from kastor.runtime import auth, context, launcher
from kastor.runtime.protocol import kastor_pb2 as pb
from kastor.runtime.protocol import kastor_pb2_grpc as pb_grpc
from support import DEADLINE_S, wait_until


class ClientPortCluster(GcsCluster):
    """A GcsCluster whose head also serves the client port (the same port after a restart)."""

    def __init__(self, tmp, redis):
        super().__init__(tmp, redis)
        self.client_port = launcher.free_port()

    def start_head(self) -> None:
        self.head = launcher.Child(
            "kastor.runtime.head",
            ["--port", str(self.port), "--cluster-id", self.cluster_id, "--redis-address", self.redis.address,
             "--client-port", str(self.client_port)],
            self.env, str(self.tmp / "logs" / "head.log"))
        self.head.wait_ready()


@pytest.fixture
def notebook(tmp_path, redis_server):
    c = ClientPortCluster(tmp_path, redis_server)
    c.start_head()
    c.add_node("n1")
    kastor.init(f"kastor://127.0.0.1:{c.client_port}", token=TOKEN)
    yield c
    kastor.shutdown()
    c.stop()


@kastor.remote
class Counter:
    def __init__(self):
        self.n = 0

    def add(self, k: int) -> int:
        self.n += k
        return self.n

    def data_port_connections(self) -> int:
        """Connections this worker's data port accepted: frames come there, the gRPC relay's calls do not."""
        return context.core.data_server.accepted


def test_notebook_calls_resume_after_the_head_restarts(notebook):
    detached = Counter.options(name="kept", lifetime="detached").remote()
    mine = Counter.remote()
    assert kastor.get([detached.add.remote(1), mine.add.remote(1)]) == [1, 1]

    notebook.kill_head()
    pending = [detached.add.remote(1), mine.add.remote(1)]  # made while the client port is gone
    notebook.start_head()

    assert kastor.get(pending, timeout=DEADLINE_S) == [2, 2]
    assert kastor.get(kastor.get_actor("kept").add.remote(1), timeout=DEADLINE_S) == 3
    assert kastor.get(mine.add.remote(1), timeout=DEADLINE_S) == 3


def _announced_relay_port(client_port: int) -> int:
    with grpc.insecure_channel(f"127.0.0.1:{client_port}") as ch:
        hello = pb_grpc.ClientGatewayStub(ch).Hello(pb.HelloRequest(client_version="0.1"),
                                                    metadata=auth.metadata(TOKEN), timeout=DEADLINE_S)
    return hello.frame_relay_port


def test_a_notebook_goes_back_to_the_frame_relay_of_a_restarted_head(notebook):
    """The head's frame relay listens on a random port unless one is fixed, so a restarted head's
    relay is elsewhere. Calls made meanwhile fall back to the client port's gRPC relay; once the
    session is back, the notebook asks the client port again and its calls go as frames."""
    peers = context.core.peers
    assert peers.frame_relay is not None, "the notebook starts without the frame relay"
    mine = Counter.remote()
    assert kastor.get(mine.add.remote(1), timeout=DEADLINE_S) == 1

    notebook.kill_head()
    pending = mine.add.remote(1)  # its relay is gone: the call falls back to the gRPC relay
    notebook.start_head()
    assert kastor.get(pending, timeout=DEADLINE_S) == 2

    announced = _announced_relay_port(notebook.client_port)
    wait_until(lambda: peers.frame_relay is not None
               and peers.frame_relay.address == f"127.0.0.1:{announced}",
               "the notebook re-learns the restarted head's frame relay")
    fresh = Counter.remote()
    assert kastor.get(fresh.add.remote(5), timeout=DEADLINE_S) == 5
    assert kastor.get(fresh.data_port_connections.remote(), timeout=DEADLINE_S) > 0, \
        "calls to a new actor went through the gRPC relay, not the frame relay"
