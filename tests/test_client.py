"""A driver outside the cluster network: everything through the head's client port (kastor://).

The cluster is started with the CLI as a pod would run it; this test process connects only to
the client port. Functions and classes defined here travel by value.
"""

from __future__ import annotations

import os
import subprocess
import sys

import grpc
import kastor
import numpy as np
import pytest
from kastor.exceptions import ActorDiedError, GetTimeoutError, TaskCancelledError, TaskError
from kastor.runtime import auth, launcher
from kastor.runtime.protocol import kastor_pb2 as pb
from kastor.runtime.protocol import kastor_pb2_grpc as pb_grpc
from kastor.util import ActorPool
from support import DEADLINE_S, Captured, cli_head, wait_until

TOKEN = "client-test-" + os.urandom(8).hex()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    client_port = launcher.free_port()
    with cli_head(tmp_path_factory.mktemp("sessions"), TOKEN, "--client-port", str(client_port)) as head:
        yield {**head, "client": f"127.0.0.1:{client_port}"}


@pytest.fixture(scope="module")
def client(cluster):
    kastor.init(f"kastor://{cluster['client']}", token=TOKEN, namespace="notebook")
    assert kastor.get_runtime_context().namespace == "notebook"
    yield cluster
    kastor.shutdown()


def double(x):
    return x * 2


@kastor.remote
class Notebook:
    """Defined in this module, which the cluster cannot import: shipped by value."""

    def __init__(self, start: int = 0):
        self.total = start

    def add(self, x: int) -> int:
        self.total += x
        return self.total

    def nbytes(self, arr) -> int:
        return int(arr.nbytes)

    def fail(self):
        raise ValueError("bad value from the actor")

    def block(self):
        import time
        time.sleep(3600)


def test_tasks_and_nested_tasks(client):
    f = kastor.remote(double)

    @kastor.remote
    def fan_out(n):
        return sum(kastor.get([f.remote(i) for i in range(n)]))

    assert kastor.get([f.remote(i) for i in range(10)]) == [i * 2 for i in range(10)]
    assert kastor.get(fan_out.remote(5)) == 20


def test_actor_state_order_and_names(client):
    a = Notebook.options(name="nb", lifetime="detached").remote(10)
    assert kastor.get([a.add.remote(1) for _ in range(50)]) == list(range(11, 61))
    same = kastor.get_actor("nb")
    assert kastor.get(same.add.remote(0)) == 60
    kastor.kill(same)
    with pytest.raises(ActorDiedError):
        kastor.get(a.add.remote(1), timeout=DEADLINE_S)


def test_large_objects_both_ways(client):
    arr = np.arange(5_000_000, dtype=np.int64)  # 40 MB: stored on a node, not inline
    ref = kastor.put(arr)
    a = Notebook.remote()
    assert kastor.get(a.nbytes.remote(ref)) == arr.nbytes
    assert kastor.get(a.nbytes.remote(arr)) == arr.nbytes
    back = kastor.get(kastor.remote(double).remote(ref))
    assert back.nbytes == arr.nbytes and back[-1] == arr[-1] * 2
    assert np.array_equal(kastor.get(ref), arr)


def test_refs_the_notebook_owns_nested_in_arguments(client):
    """Workers cannot reach the notebook: the client port serves its lent-out objects."""
    @kastor.remote
    def total(refs):
        return sum(int(np.sum(v)) for v in kastor.get(refs))

    small = [kastor.put(i) for i in range(5)]
    large = kastor.put(np.ones(1_000_000, dtype=np.int64))
    computed = kastor.remote(double).remote(21)
    assert kastor.get(total.remote({"refs": small}["refs"]), timeout=DEADLINE_S) == 10
    assert kastor.get(total.remote([large, computed]), timeout=DEADLINE_S) == 1_000_042


def test_exceptions_carry_the_remote_traceback(client):
    a = Notebook.remote()
    with pytest.raises(TaskError) as info:
        kastor.get(a.fail.remote())
    assert isinstance(info.value, ValueError)
    assert "bad value from the actor" in str(info.value) and "Traceback" in str(info.value)
    assert kastor.get(a.add.remote(1)) == 1, "the actor keeps serving"


def test_wait_timeout_and_cancel(client):
    a = Notebook.options(max_concurrency=2).remote()
    slow = a.block.remote()
    ready, not_ready = kastor.wait([slow, a.add.remote(1)], num_returns=1, timeout=DEADLINE_S)
    assert len(ready) == 1 and not_ready == [slow]
    with pytest.raises(GetTimeoutError):
        kastor.get(slow, timeout=0.2)

    @kastor.remote
    def sleepy():
        import time
        time.sleep(3600)

    running = sleepy.remote()
    kastor.wait([running], timeout=0.5)
    kastor.cancel(running)
    with pytest.raises(TaskCancelledError):
        kastor.get(running, timeout=DEADLINE_S)
    kastor.kill(a)


def test_actor_pool(client):
    pool = ActorPool([Notebook.remote() for _ in range(2)])
    sizes = pool.map(lambda actor, n: actor.nbytes.remote(np.zeros(n, dtype=np.uint8)), [3, 1, 2, 5])
    assert list(sizes) == [3, 1, 2, 5]


def test_worker_output_reaches_the_notebook(client, capsys):
    @kastor.remote
    def chatty() -> int:
        print("from inside the cluster marker-9")
        return os.getpid()

    pid = kastor.get(chatty.remote())
    Captured(capsys).wait_out(f"(chatty pid={pid}) from inside the cluster marker-9\n")


def test_generators_through_the_client_port(client):
    """Workers cannot reach the notebook to stream items: they come together at the end."""
    @kastor.remote
    def countdown(n: int):
        yield from range(n, 0, -1)

    assert [kastor.get(r, timeout=DEADLINE_S) for r in countdown.remote(3)] == [3, 2, 1]


def test_wrong_token_is_refused(cluster):
    from kastor.runtime import driver
    with pytest.raises(PermissionError, match="rejected the token"):
        driver.connect_remote(cluster["client"], "wrong-token", None)


def test_control_port_is_not_a_client_port(cluster):
    from kastor.runtime import driver
    with pytest.raises(ConnectionError, match="not a Kastor client port"):
        driver.connect_remote(cluster["head"], TOKEN, None)


def test_version_skew_names_both_versions(cluster, monkeypatch):
    from kastor.runtime import client_gateway, driver
    monkeypatch.setattr(client_gateway, "VERSION", "9.9")
    with pytest.raises(RuntimeError, match=r"9\.9.*speaks 0\.1"):
        driver.connect_remote(cluster["client"], TOKEN, None)


def _raw_list_nodes(address: str, metadata) -> grpc.RpcError | None:
    with grpc.insecure_channel(address) as ch:
        try:
            pb_grpc.HeadStub(ch).ListNodes(pb.ListRequest(), metadata=metadata, timeout=10)
        except grpc.RpcError as e:
            return e
    return None


def test_gateway_needs_the_token_and_forwards_only_into_the_cluster(cluster):
    assert _raw_list_nodes(cluster["client"], ()).code() == grpc.StatusCode.UNAUTHENTICATED
    md = auth.metadata(TOKEN)
    assert _raw_list_nodes(cluster["client"], md) is None, "with the token, calls reach the head"
    outside = _raw_list_nodes(cluster["client"], (*md, ("kastor-target", "192.0.2.1:6379")))
    assert outside.code() == grpc.StatusCode.PERMISSION_DENIED


SECOND_CLIENT = """
import sys, kastor
kastor.init("kastor://" + sys.argv[1], token=sys.argv[2])

@kastor.remote
class Keeper:
    def hold(self, refs):
        self.refs = refs
        return kastor.get(refs[0])

keeper = Keeper.remote()
ref = kastor.put("lent-out value")
assert kastor.get(keeper.hold.remote([ref])) == "lent-out value"  # nested: published to the client port
print(keeper._actor_id.hex(), ref.hex(), flush=True)
sys.stdin.read()
kastor.shutdown()
"""


def _gateway_object(address: str, object_id: bytes) -> grpc.StatusCode | pb.Value:
    """What the client port answers a borrower asking for a remote client's object."""
    with grpc.insecure_channel(address) as ch:
        try:
            reply = pb_grpc.CoreWorkerStub(ch).GetObjects(pb.GetObjectsRequest(object_ids=[object_id], timeout_s=0.2),
                                                         metadata=auth.metadata(TOKEN), timeout=10)
        except grpc.RpcError as e:
            return e.code()
    return reply.values[0]


def test_a_clients_shutdown_ends_its_job_at_once(client):
    """Not after the reconnect grace kept for a dropped client: its actors and lent-out objects go now."""
    from kastor.util.state import list_actors

    other = subprocess.Popen([sys.executable, "-c", SECOND_CLIENT, client["client"], TOKEN],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        actor_hex, object_hex = other.stdout.readline().split()
    except ValueError:
        pytest.fail(f"the second client failed: {other.stderr.read()}")

    def state() -> str:
        return next(a["state"] for a in list_actors() if a["actor_id"] == actor_hex)

    object_id = bytes.fromhex(object_hex)
    assert state() == "ALIVE"
    assert isinstance(_gateway_object(client["client"], object_id), pb.Value)
    other.stdin.close()
    assert other.wait(DEADLINE_S) == 0, other.stderr.read()
    wait_until(lambda: state() == "DEAD", "the second client's actor to die with its job")
    assert _gateway_object(client["client"], object_id) == grpc.StatusCode.DEADLINE_EXCEEDED
