"""The client port's frame relay (runtime/frame_relay.py): a kastor:// notebook's actor calls go
to the worker's data port as frames, spliced by the head without being decoded.

One CLI-started cluster whose processes drop a stalled frame after RECEIVE_TIMEOUT_S, and a
notebook connected through the client port; raw sockets play broken and hostile clients.
"""

from __future__ import annotations

import os
import signal
import socket

import grpc
import kastor
import pytest
from kastor.exceptions import ActorDiedError
from kastor.runtime import auth, launcher
from kastor.runtime.frames import RELAY_GREETING
from kastor.runtime.protocol import kastor_pb2 as pb
from kastor.runtime.protocol import kastor_pb2_grpc as pb_grpc
from support import DEADLINE_S, cli_head, wait_until

TOKEN = "relay-test-" + os.urandom(8).hex()
RECEIVE_TIMEOUT_S = 3.0


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    client_port = launcher.free_port()
    with cli_head(tmp_path_factory.mktemp("sessions"), TOKEN, "--client-port", str(client_port),
                  KASTOR_RECEIVE_TIMEOUT_S=str(RECEIVE_TIMEOUT_S)) as head:
        client = f"127.0.0.1:{client_port}"
        with grpc.insecure_channel(client) as ch:
            hello = pb_grpc.ClientGatewayStub(ch).Hello(pb.HelloRequest(client_version="0.1"),
                                                        metadata=auth.metadata(TOKEN), timeout=DEADLINE_S)
        assert hello.frame_relay_port, "the client port announces no frame relay"
        yield {**head, "client": client, "relay": ("127.0.0.1", hello.frame_relay_port),
               "cluster_id": hello.cluster_id}


@pytest.fixture(scope="module")
def client(cluster):
    kastor.init(f"kastor://{cluster['client']}", token=TOKEN)
    yield cluster
    kastor.shutdown()


@kastor.remote
class Recorder:
    def __init__(self):
        self.seen = []

    def add(self, i: int) -> int:
        self.seen.append(i)
        return i

    def history(self) -> list[int]:
        return self.seen

    def where(self) -> tuple[str, int, int, int]:
        """This worker's host, data port, data-port connections accepted, and pid."""
        from kastor.runtime import context
        core = context.core
        return core.address.rpartition(":")[0], core.data_port(), core.data_server.accepted, os.getpid()

    def block(self, marker: str) -> None:
        import time
        open(marker, "w").close()
        time.sleep(3600)


def _frame(payload: bytes) -> bytes:
    return len(payload).to_bytes(4, "big") + payload


def _recv_exact(s: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = s.recv(n - len(data))
        if not chunk:
            raise ConnectionError("closed")
        data += chunk
    return data


def _read_frame(s: socket.socket) -> bytes:
    return _recv_exact(s, int.from_bytes(_recv_exact(s, 4), "big"))


def _closed(s: socket.socket) -> bool:
    """Waits (up to DEADLINE_S) for the peer to close; True if it did without sending anything."""
    s.settimeout(DEADLINE_S)
    try:
        return s.recv(1) == b""
    except ConnectionResetError:
        return True


def _greeted(cluster) -> socket.socket:
    s = socket.create_connection(cluster["relay"], timeout=DEADLINE_S)
    assert _read_frame(s) == RELAY_GREETING + cluster["cluster_id"].encode()
    return s


def test_actor_calls_reach_the_data_port_through_the_relay_in_order(client):
    r = Recorder.remote()
    refs = [r.add.remote(i) for i in range(300)]
    assert kastor.get(refs, timeout=DEADLINE_S) == list(range(300))
    assert kastor.get(r.history.remote(), timeout=DEADLINE_S) == list(range(300))
    _, _, accepted, _ = kastor.get(r.where.remote(), timeout=DEADLINE_S)
    # one relayed stream, and a relayed lane for the calls made one at a time (history, then where)
    assert accepted == 2, "the notebook's calls did not come to the worker's data port (stream and lane)"


def test_an_actor_killed_mid_call_fails_the_call_with_actor_died(client, tmp_path):
    r = Recorder.remote()
    *_, pid = kastor.get(r.where.remote(), timeout=DEADLINE_S)
    marker = tmp_path / "running"
    ref = r.block.remote(str(marker))
    wait_until(marker.exists, "the call to start running")
    os.kill(pid, signal.SIGKILL)
    with pytest.raises(ActorDiedError):
        kastor.get(ref, timeout=DEADLINE_S)


def test_a_wrong_token_is_cut_off_and_nothing_reaches_the_worker(client):
    r = Recorder.remote()
    kastor.get(r.where.remote(), timeout=DEADLINE_S)  # the second call one at a time opens the lane
    host, port, before, _ = kastor.get(r.where.remote(), timeout=DEADLINE_S)
    with _greeted(client) as s:
        s.sendall(_frame(b"not-the-token") + _frame(f"{host}:{port}".encode()) + _frame(b"\x0a\x00"))
        assert _closed(s)
    with _greeted(client) as s:  # a first frame too long for a token: cut off before its body is read
        s.sendall((1 << 20).to_bytes(4, "big") + b"x" * 100)
        assert _closed(s)
    assert kastor.get(r.where.remote(), timeout=DEADLINE_S)[2] == before, "a refused peer's bytes were relayed"


def test_the_relay_forwards_only_to_the_clusters_nodes(client):
    with _greeted(client) as s:
        s.sendall(_frame(TOKEN.encode()) + _frame(b"192.0.2.1:6379"))
        assert _closed(s)


def test_a_client_stalled_in_the_handshake_is_dropped(client):
    with _greeted(client) as s:
        s.sendall(_frame(TOKEN.encode())[:10])  # part of the token, then nothing
        assert _closed(s)


def test_a_client_stalled_mid_frame_is_dropped_and_the_relay_keeps_serving(client):
    r = Recorder.remote()
    host, port, _, _ = kastor.get(r.where.remote(), timeout=DEADLINE_S)
    with _greeted(client) as s:
        s.sendall(_frame(TOKEN.encode()) + _frame(f"{host}:{port}".encode()))
        assert _read_frame(s) == b"", "the worker did not accept the relayed stream"
        s.sendall((200).to_bytes(4, "big") + b"\x0a" * 20)  # a call's first bytes, then nothing
        assert _closed(s)
    assert kastor.get(r.add.remote(7), timeout=DEADLINE_S) == 7


@pytest.fixture
def relay_route(client):
    """The notebook's route to the frame relay, put back after the test."""
    from kastor.runtime import context
    peers = context.core.peers
    original = peers.frame_relay
    yield peers
    peers.frame_relay = original


def test_an_unreachable_relay_sends_calls_through_the_grpc_relay(relay_route, client):
    """As when the relay's port is not exposed where the notebook is (a port-forward of the client
    port alone): calls still work, through the client port's gRPC relay."""
    from kastor.runtime.frames import RelayRoute
    refused = launcher.free_port()  # nothing listens there
    relay_route.frame_relay = RelayRoute(f"127.0.0.1:{refused}", client["cluster_id"])
    r = Recorder.remote()
    assert kastor.get([r.add.remote(i) for i in range(20)], timeout=DEADLINE_S) == list(range(20))
    assert relay_route.frame_relay is None
    assert kastor.get(r.where.remote(), timeout=DEADLINE_S)[2] == 0, "calls reached the data port anyway"


def test_a_port_that_is_not_the_relay_never_gets_the_token(relay_route, client):
    import threading

    from kastor.runtime.frames import RelayRoute
    received = bytearray()
    with socket.create_server(("127.0.0.1", 0)) as impostor:
        def serve() -> None:
            conn, _ = impostor.accept()
            with conn:
                conn.sendall(_frame(b"SSH-2.0-OpenSSH_9.6"))
                conn.settimeout(DEADLINE_S)
                try:
                    while chunk := conn.recv(4096):
                        received.extend(chunk)
                except OSError:
                    pass

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        relay_route.frame_relay = RelayRoute(f"127.0.0.1:{impostor.getsockname()[1]}", client["cluster_id"])
        r = Recorder.remote()
        assert kastor.get(r.add.remote(1), timeout=DEADLINE_S) == 1
        thread.join(DEADLINE_S)
    assert TOKEN.encode() not in received
    assert relay_route.frame_relay is None


def _node_stats(cluster) -> tuple[dict[str, int], int]:
    """The calls the cluster's node agent has served, by method (its Stats, asked through the
    client port; uploads through its upload port counted as "UploadPort"), and its upload port."""
    [node] = [n for n in kastor.nodes() if n["Alive"]]
    with grpc.insecure_channel(cluster["client"], options=[
            ("grpc.primary_user_agent", f"kastor-target/{node['Address']}")]) as ch:
        stats, call = pb_grpc.NodeAgentStub(ch).Stats.with_call(pb.Empty(), metadata=auth.metadata(TOKEN),
                                                                timeout=DEADLINE_S)
    port = next(int(v) for k, v in call.trailing_metadata() if k == "kastor-upload-port")
    return dict(stats.rpcs_served), port


def _node_rpcs(cluster) -> dict[str, int]:
    return _node_stats(cluster)[0]


def test_a_large_put_goes_as_raw_bytes_and_its_get_is_not_downloaded_back(client):
    """The notebook uploads through the frame relay to the node's upload port (not gRPC
    PutObject), when a worker first needs the value (runtime/lazy_puts.py), and keeps a copy of
    what it uploads; workers read the node's."""
    import numpy as np
    big = np.arange(4 * 1024 * 1024, dtype=np.int64)  # 32 MiB: stored on the node, not inline
    before = _node_rpcs(client)
    ref = kastor.put(big)
    assert np.array_equal(kastor.get(ref, timeout=DEADLINE_S), big)
    assert kastor.get(_total.remote(ref), timeout=DEADLINE_S) == int(big.sum())
    assert np.array_equal(kastor.get(ref, timeout=DEADLINE_S), big)
    after = _node_rpcs(client)
    assert after.get("UploadPort", 0) == before.get("UploadPort", 0) + 1
    assert after.get("PutObject", 0) == before.get("PutObject", 0)
    assert after.get("FetchObject", 0) == before.get("FetchObject", 0), "the notebook downloaded its own value"
    del ref


@kastor.remote
def _total(arr) -> int:
    return int(arr.sum())


def _hello(client_address: str) -> pb.HelloReply:
    with grpc.insecure_channel(client_address) as ch:
        return pb_grpc.ClientGatewayStub(ch).Hello(pb.HelloRequest(client_version="0.1"),
                                                   metadata=auth.metadata(TOKEN), timeout=DEADLINE_S)


def test_the_relay_port_can_be_fixed_and_a_busy_one_is_named(tmp_path):
    """KASTOR_FRAME_RELAY_PORT fixes the relay's port, so it can be exposed beside the client port."""
    import subprocess
    import sys
    client_port, relay_port = launcher.free_port(), launcher.free_port()
    with cli_head(tmp_path / "a", TOKEN, "--client-port", str(client_port),
                  KASTOR_FRAME_RELAY_PORT=str(relay_port)):
        assert _hello(f"127.0.0.1:{client_port}").frame_relay_port == relay_port
        # A second head wanting the same relay port fails at start, naming the setting.
        env = dict(os.environ, KASTOR_TOKEN=TOKEN, KASTOR_SESSION_ROOT=str(tmp_path / "b"),
                   KASTOR_FRAME_RELAY_PORT=str(relay_port))
        other = subprocess.run([sys.executable, "-m", "kastor.runtime.cli", "start", "--head", "--block", "--port",
                                str(launcher.free_port()), "--client-port", str(launcher.free_port())],
                               env=env, capture_output=True, text=True, timeout=DEADLINE_S * 2)
        assert other.returncode != 0
        assert "KASTOR_FRAME_RELAY_PORT" in other.stdout + other.stderr, other.stdout + other.stderr


def _upload_port(cluster) -> socket.socket:
    return socket.create_connection(("127.0.0.1", _node_stats(cluster)[1]), timeout=DEADLINE_S)


def _header(total: int) -> bytes:
    return _frame(pb.ObjectChunk(name=os.urandom(20).hex(), total=total).SerializeToString())


def test_the_upload_port_wants_the_token_first(client):
    before = _node_rpcs(client).get("UploadPort", 0)
    with _upload_port(client) as s:
        s.sendall(_frame(b"not-the-token") + _header(10) + b"x" * 10)
        assert _closed(s)
    with _upload_port(client) as s:  # a first frame too long for a token: cut off unread
        s.sendall((1 << 20).to_bytes(4, "big") + b"x" * 100)
        assert _closed(s)
    assert _node_rpcs(client).get("UploadPort", 0) == before, "a refused upload was stored"


def test_an_upload_that_stalls_or_overruns_is_dropped(client):
    before = _node_rpcs(client).get("UploadPort", 0)
    with _upload_port(client) as s:
        s.sendall(_frame(TOKEN.encode()) + _header(1000))
        assert _read_frame(s) == b"", "the upload was not accepted"
        s.sendall(b"x" * 10)  # then nothing: dropped at the receive deadline
        assert _closed(s)
    with _upload_port(client) as s:
        s.sendall(_frame(TOKEN.encode()) + _header(10))
        assert _read_frame(s) == b""
        s.sendall(b"x" * 20)  # more than announced
        assert _closed(s)
    with _upload_port(client) as s:  # a whole one is stored and answered with its location
        s.sendall(_frame(TOKEN.encode()) + _header(10))
        assert _read_frame(s) == b""
        s.sendall(b"x" * 10)
        outcome = _read_frame(s)
        assert outcome[:1] == b"\x00" and pb.ObjectLocation.FromString(outcome[1:]).size == 10
    assert _node_rpcs(client).get("UploadPort", 0) == before + 1


def _upload(cluster, payload: bytes) -> str:
    """Uploads `payload` through the node's upload port; returns the stored file's path."""
    with _upload_port(cluster) as s:
        s.sendall(_frame(TOKEN.encode()) + _header(len(payload)))
        assert _read_frame(s) == b""
        s.sendall(payload)
        outcome = _read_frame(s)
    assert outcome[:1] == b"\x00", outcome
    return pb.ObjectLocation.FromString(outcome[1:]).path


def _free_on_node(cluster, path: str) -> None:
    [node] = [n for n in kastor.nodes() if n["Alive"]]
    with grpc.insecure_channel(cluster["client"], options=[
            ("grpc.primary_user_agent", f"kastor-target/{node['Address']}")]) as ch:
        pb_grpc.NodeAgentStub(ch).FreeObjects(pb.FreeObjectsRequest(paths=[path]), metadata=auth.metadata(TOKEN),
                                              timeout=DEADLINE_S)


def test_a_freed_upload_is_reused_for_the_next_unless_something_still_maps_it(client):
    """The node agent keeps a freed upload's file and writes the next upload into it in place
    (store_recycle), but never one a reader still maps: that reader keeps its bytes."""
    import mmap

    from kastor.runtime import store_owners
    mib = 1 << 20
    first = _upload(client, b"a" * (3 * mib))
    inode = os.stat(first).st_ino
    _free_on_node(client, first)
    second = _upload(client, b"b" * (2 * mib))
    assert os.stat(second).st_ino == inode, "the freed upload's file was not reused"
    with open(second, "rb") as f:
        assert f.read() == b"b" * (2 * mib)  # cut to the new size: no byte of the old upload is left

    with open(second, "rb") as f:  # a reader maps it, as a worker's get does
        store_owners.lock_for_reading(f.fileno(), second)
        view = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    _free_on_node(client, second)
    third = _upload(client, b"c" * (2 * mib))
    assert os.stat(third).st_ino != inode, "a file still mapped was reused"
    assert view[:] == b"b" * (2 * mib)
    view.close()
    _free_on_node(client, third)


def test_a_notebooks_views_of_its_freed_puts_stay_intact_while_it_keeps_putting(client):
    """The notebook's local copies are reused too (store_recycle), never under its own views."""
    import numpy as np
    mine = kastor.get(kastor.put(np.full(4 << 20, 7, dtype=np.uint8)), timeout=DEADLINE_S)
    for i in range(6):
        out = kastor.get(kastor.put(np.full(4 << 20, i, dtype=np.uint8)), timeout=DEADLINE_S)
        assert out.min() == out.max() == i
    assert mine.min() == mine.max() == 7


def test_a_large_uploads_body_is_spliced_and_still_checked(client):
    """Without TLS the node agent moves a large body socket -> file with splice(2)
    (splice_copy.py); the size check and the receive deadline hold on that path too."""
    import numpy as np
    big = np.arange(2 * 1024 * 1024, dtype=np.int64)  # 16 MiB
    before = _node_rpcs(client)
    assert kastor.get(_total.remote(kastor.put(big)), timeout=DEADLINE_S) == int(big.sum())  # uploads it
    after = _node_rpcs(client)
    assert after.get("UploadPortSpliced", 0) == before.get("UploadPortSpliced", 0) + 1

    mib = 1 << 20
    body = os.urandom(2 * mib)
    path = _upload(client, body)
    with open(path, "rb") as f:
        assert f.read() == body
    _free_on_node(client, path)

    stored = _node_rpcs(client).get("UploadPort", 0)
    with _upload_port(client) as s:  # stalls mid-body: dropped at the receive deadline, nothing stored
        s.sendall(_frame(TOKEN.encode()) + _header(2 * mib))
        assert _read_frame(s) == b""
        s.sendall(b"x" * mib)
        assert _closed(s)
    with _upload_port(client) as s:  # more than announced: the last byte and 10 more come in one send
        s.sendall(_frame(TOKEN.encode()) + _header(2 * mib))
        assert _read_frame(s) == b""
        s.sendall(b"x" * (2 * mib - 1))
        s.sendall(b"x" * 11)
        assert _closed(s)
    assert _node_rpcs(client).get("UploadPort", 0) == stored, "a broken upload was stored"


def test_a_notebooks_sync_calls_take_a_lane_through_the_relay(client):
    """A notebook's calls made one at a time go on a lane (fast_lane.py) like an in-cluster
    caller's: through the relay, which opens the worker's leg as a lane, so the actor's thread
    serves them (lane_host.py); in order with the relayed stream's calls."""
    from kastor.runtime import context
    r = Recorder.remote()
    assert kastor.get([r.add.remote(i) for i in range(5)], timeout=DEADLINE_S) == list(range(5))
    before = context.core.actors.fast_sent
    for i in range(5, 25):
        assert kastor.get(r.add.remote(i), timeout=DEADLINE_S) == i
    assert context.core.actors.fast_sent - before >= 15, "the notebook's sync calls did not take a lane"
    assert kastor.get(r.history.remote(), timeout=DEADLINE_S) == list(range(25))
    _, _, accepted, _ = kastor.get(r.where.remote(), timeout=DEADLINE_S)
    assert accepted == 2, "one relayed stream and one relayed lane"


def test_a_relay_lane_needs_the_token_and_a_node_of_this_cluster(client):
    s = _greeted(client)
    s.sendall(_frame(b"wrong-token") + _frame(b"127.0.0.1:1 lane"))
    assert _closed(s)
    s = _greeted(client)
    s.sendall(_frame(TOKEN.encode()) + _frame(b"192.0.2.1:9 lane"))
    assert _closed(s)
