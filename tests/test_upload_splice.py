"""A notebook's upload moves through the client port's frame relay and into the node's store by
splice(2) (runtime/splice_copy.py), with no copy through Python, and arrives intact.

A real FrameRelay and a real UploadServer, on real sockets, served from a loop of this test
process (relay_upload.upload is the notebook's side); the CLI-cluster tests of the same path
are in test_client_frame_relay.py.
"""

from __future__ import annotations

import asyncio
import os
import socket
import threading

import numpy as np
import pytest
from kastor.runtime import relay_upload, serialization, splice_copy
from kastor.runtime.frame_relay import FrameRelay
from kastor.runtime.frames import RelayRoute, frame
from kastor.runtime.protocol import kastor_pb2 as pb
from kastor.runtime.upload_server import UploadServer
from support import DEADLINE_S, wait_until

TOKEN = "splice-test-" + os.urandom(8).hex()

pytestmark = pytest.mark.skipif(not splice_copy.available(), reason="needs os.splice (Linux, Python 3.10+)")


@pytest.fixture
def servers(tmp_path, monkeypatch):
    monkeypatch.setenv("KASTOR_RECEIVE_TIMEOUT_S", "3")
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    def run(coro):
        return asyncio.run_coroutine_threadsafe(coro, loop).result(DEADLINE_S)

    store = tmp_path / "store"
    store.mkdir()
    relay = FrameRelay(TOKEN, "splice-cluster", lambda host: host == "127.0.0.1")
    uploads = UploadServer(TOKEN, str(store), "node1")
    uploads.address = "127.0.0.1:1"
    relay_port = run(relay.start("127.0.0.1"))
    upload_port = run(uploads.start("127.0.0.1"))
    yield relay, uploads, RelayRoute(f"127.0.0.1:{relay_port}", "splice-cluster"), f"127.0.0.1:{upload_port}", store
    run(relay.stop())
    run(uploads.stop())
    loop.call_soon_threadsafe(loop.stop)
    thread.join(DEADLINE_S)


def test_a_large_upload_is_spliced_by_the_relay_and_the_node_and_arrives_whole(servers):
    relay, uploads, route, upload_address, store = servers
    value = np.random.default_rng(1).integers(0, 255, 8 * 2**20 + 12345, dtype=np.uint8)
    ser = serialization.serialize(value)
    loc = relay_upload.upload(route, TOKEN, upload_address, ser, "ab" * 20)
    assert loc.size == ser.size and loc.path == str(store / ("ab" * 20))
    assert np.array_equal(serialization.load_file(loc.path), value)
    wait_until(lambda: relay.spliced == 1, "the relay's splice thread reports the body through (not copied "
               "through Python)")
    assert uploads.spliced == 1, "the node copied the body through Python"


def test_a_small_upload_is_copied_as_before(servers):
    relay, uploads, route, upload_address, _ = servers
    value = np.arange(100_000, dtype=np.uint8)
    loc = relay_upload.upload(route, TOKEN, upload_address, serialization.serialize(value), "cd" * 20)
    assert np.array_equal(serialization.load_file(loc.path), value)
    assert relay.spliced == uploads.spliced == 0


def _host_port(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host, int(port)


def _read_frame(s: socket.socket) -> bytes:
    size = int.from_bytes(s.recv(4, socket.MSG_WAITALL), "big")
    return s.recv(size, socket.MSG_WAITALL) if size else b""


def test_a_client_gone_mid_body_leaves_nothing_in_the_store(servers):
    relay, uploads, route, upload_address, store = servers
    total = 4 * 2**20
    header = pb.ObjectChunk(name="ef" * 20, total=total).SerializeToString()
    with socket.create_connection(_host_port(route.address), timeout=DEADLINE_S) as s:
        assert _read_frame(s) == route.greeting()
        s.sendall(frame(TOKEN.encode()) + frame(f"{upload_address} upload={total}".encode()) + frame(header))
        assert _read_frame(s) == b"", "the upload was not accepted"
        s.sendall(b"x" * (total // 2))
    wait_until(lambda: sorted(os.listdir(store)) == [], "the partial upload is deleted", timeout=DEADLINE_S)
    assert uploads.uploads == 0 and relay.spliced == 0


def test_a_malformed_upload_target_is_refused(servers):
    _, _, route, upload_address, _ = servers
    with socket.create_connection(_host_port(route.address), timeout=DEADLINE_S) as s:
        assert _read_frame(s) == route.greeting()
        s.sendall(frame(TOKEN.encode()) + frame(f"{upload_address} upload=lots".encode()))
        s.settimeout(DEADLINE_S)
        assert s.recv(1) == b""


def test_a_slow_but_steady_spliced_body_outlives_the_receive_timeout(servers):
    """The receive deadline bounds the body's pauses, not its length: a body that takes longer
    than the timeout (3 s here) but never pauses that long is stored."""
    import time
    _, uploads, _, upload_address, store = servers
    total, pieces = 2 * 2**20, 10
    header = pb.ObjectChunk(name="12" * 20, total=total).SerializeToString()
    body = os.urandom(total)
    with socket.create_connection(_host_port(upload_address), timeout=DEADLINE_S) as s:
        s.sendall(frame(TOKEN.encode()) + frame(header))
        assert _read_frame(s) == b""
        step = total // pieces
        for i in range(pieces):  # 10 x 0.4 s: 4 s in all, never a 3-s pause
            s.sendall(body[i * step:(i + 1) * step if i < pieces - 1 else total])
            time.sleep(0.4)  # the slow sender under test, not a synchronisation
        outcome = _read_frame(s)
    assert outcome[:1] == b"\x00", outcome
    assert (store / ("12" * 20)).read_bytes() == body
    assert uploads.spliced == 1
