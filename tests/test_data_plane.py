"""The worker's data port (runtime/frames.py): actor calls as frames on a plain socket.

Actor calls and task pushes from a process in the cluster go there; a peer without the cluster token is cut off
before any frame of its is parsed; a frame that stops arriving part-way is dropped at the
receive deadline (2 s for this module's cluster) while an idle connection is kept; one
caller's calls run in the order it made them.
"""

from __future__ import annotations

import asyncio
import os
import pickle
import socket
import time

import kastor
import pytest
from kastor.runtime.protocol import kastor_pb2 as pb
from support import DEADLINE_S, SerialLog, embedded_cluster_with_receive_timeout

RECEIVE_TIMEOUT_S = 2.0
GIVE_UP_S = 30.0  # a connection still open this long after a stall is open for good


@pytest.fixture(scope="module")
def embedded_cluster():
    """This module's own cluster, whose workers drop a stalled frame after 2 s."""
    with embedded_cluster_with_receive_timeout(RECEIVE_TIMEOUT_S) as info:
        yield info


pytestmark = pytest.mark.usefixtures("embedded_cluster")


@kastor.remote
class Log(SerialLog):
    def accepted(self) -> int:
        """Data-port connections that passed the token check."""
        from kastor.runtime import context
        return context.core.data_server.accepted


class PickleBomb:
    """Unpickling this creates a file: proof of whether anyone unpickled it."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def frame(payload: bytes) -> bytes:
    return len(payload).to_bytes(4, "big") + payload


def until_closed(s: socket.socket) -> tuple[bytes, float]:
    """Reads until the worker closes the connection; what it sent, and after how long."""
    start, received = time.monotonic(), b""
    s.settimeout(GIVE_UP_S)
    try:
        while data := s.recv(65536):
            received += data
    except ConnectionResetError:
        pass
    except TimeoutError:
        pytest.fail(f"the worker kept the connection open for {GIVE_UP_S}s")
    return received, time.monotonic() - start


def connect(address: str) -> socket.socket:
    host, port = address.rsplit(":", 1)
    return socket.create_connection((host, int(port)), timeout=10)


def test_calls_from_the_cluster_use_the_data_port():
    log = Log.remote()
    # Its worker may have run tasks before (a pooled worker), each lease a connection of its own.
    first = kastor.get(log.accepted.remote(), timeout=DEADLINE_S)
    assert first >= 1  # this call's own connection
    kastor.get([log.add.remote(i) for i in range(5)], timeout=DEADLINE_S)
    # At most one more: the lane this caller's sync calls take (runtime/fast_lane.py).
    second = kastor.get(log.accepted.remote(), timeout=DEADLINE_S)
    assert second <= first + 1
    kastor.get([log.add.remote(i) for i in range(5)], timeout=DEADLINE_S)
    assert kastor.get(log.accepted.remote(), timeout=DEADLINE_S) == second  # and no more, however it calls


@kastor.remote
def accepted_here() -> int:
    """Data-port connections the worker running this task accepted."""
    from kastor.runtime import context
    return context.core.data_server.accepted


def test_task_pushes_use_the_data_port():
    assert kastor.get(accepted_here.remote(), timeout=DEADLINE_S) >= 1  # its lease's stream at least


def test_one_callers_calls_run_in_order():
    log = Log.remote()
    refs = [log.add.remote(i) for i in range(500)]
    kastor.get(refs, timeout=DEADLINE_S)
    assert kastor.get(log.items.remote(), timeout=DEADLINE_S) == list(range(500))


def test_without_the_token_nothing_is_parsed(tmp_path):
    log = Log.remote()
    address = kastor.get(log.data_address.remote(), timeout=DEADLINE_S)
    accepted = kastor.get(log.accepted.remote(), timeout=DEADLINE_S)
    marker = tmp_path / "unpickled"
    spec = pb.TaskSpec(task_id=os.urandom(16), actor_id=b"x" * 16, method="add",
                       args=pb.Value(data=b"\x00" + pickle.dumps(PickleBomb(str(marker)))))
    request = frame(pb.ExecuteRequest(tasks=[spec]).SerializeToString())
    for first in (frame(b"wrong-token"), frame(b""), request, os.urandom(4096), b"\xff\xff\xff\xff" + b"x" * 64):
        with connect(address) as s:
            s.sendall(first + request)
            received, after = until_closed(s)
        assert received == b"", f"the worker answered a peer without the token: {received[:40]!r}"
        assert after < RECEIVE_TIMEOUT_S, f"a peer without the token was cut off only after {after:.1f}s"
    assert not marker.exists(), "a peer without the token got a pickle loaded"
    assert kastor.get(log.accepted.remote(), timeout=DEADLINE_S) == accepted  # none of them got in
    kastor.get(log.add.remote("alive"), timeout=DEADLINE_S)
    assert kastor.get(log.items.remote(), timeout=DEADLINE_S) == ["alive"]


def test_a_stalled_token_is_dropped_at_the_receive_deadline():
    log = Log.remote()
    address = kastor.get(log.data_address.remote(), timeout=DEADLINE_S)
    with connect(address) as s:
        s.sendall(b"\x00\x00")  # half a length
        received, after = until_closed(s)
    assert received == b""
    assert after >= RECEIVE_TIMEOUT_S * 0.9, f"dropped after {after:.1f}s, before the receive deadline"


def test_a_truncated_frame_is_dropped_at_the_receive_deadline_and_an_idle_connection_is_not():
    from kastor.runtime import context
    log = Log.remote()
    address = kastor.get(log.data_address.remote(), timeout=DEADLINE_S)
    accepted = kastor.get(log.accepted.remote(), timeout=DEADLINE_S)  # the driver's connection is idle from now
    with connect(address) as stalled:
        stalled.sendall(frame(context.core.token.encode()))
        stalled.settimeout(DEADLINE_S)
        assert stalled.recv(4) == b"\x00\x00\x00\x00", "the worker did not accept a caller with the token"
        stalled.sendall((200).to_bytes(4, "big") + b"\x0a\x03abc")  # 5 of the 200 bytes it announces
        received, after = until_closed(stalled)
    assert received == b""
    assert after >= RECEIVE_TIMEOUT_S * 0.9, f"dropped after {after:.1f}s, before the receive deadline"
    # The driver's connection, idle for longer than the stalled one waited, still carries its calls.
    kastor.get(log.add.remote("alive"), timeout=DEADLINE_S)
    assert kastor.get(log.items.remote(), timeout=DEADLINE_S) == ["alive"]
    assert kastor.get(log.accepted.remote(), timeout=DEADLINE_S) == accepted + 1, "the idle caller had to reconnect"


def test_a_truncated_frame_on_a_lane_the_actors_main_thread_serves_is_dropped_at_the_receive_deadline():
    """The same deadline where a serial actor's main thread reads the lane (lane_host.py): the
    stalled lane is closed, and calls on the loop's path are served meanwhile and after."""
    from kastor.runtime import context
    from kastor.runtime.lane_host import LANE_MARK
    log = Log.remote()
    address = kastor.get(log.data_address.remote(), timeout=DEADLINE_S)  # constructed: lanes go to its main thread
    with connect(address) as stalled:
        stalled.sendall(frame(context.core.token.encode() + LANE_MARK))
        stalled.settimeout(DEADLINE_S)
        assert stalled.recv(4) == b"\x00\x00\x00\x00", "the worker did not accept the lane"
        stalled.sendall((200).to_bytes(4, "big") + b"\x0a\x03abc")  # 5 of the 200 bytes it announces
        sent = time.monotonic()
        kastor.get(log.add.remote("while stalled"), timeout=DEADLINE_S)
        received, _ = until_closed(stalled)
        after = time.monotonic() - sent
    assert received == b""
    assert after >= RECEIVE_TIMEOUT_S * 0.9, f"dropped after {after:.1f}s, before the receive deadline"
    kastor.get(log.add.remote("after"), timeout=DEADLINE_S)
    assert kastor.get(log.items.remote(), timeout=DEADLINE_S) == ["while stalled", "after"]


def test_calls_made_while_others_are_unanswered_go_out_together(monkeypatch):
    """Batching under load (frame_stream's Nagle rule): the first call goes out at once; calls
    made while it is unanswered wait and go out in one frame when its result arrives."""
    from kastor.runtime import frame_stream
    monkeypatch.setattr(frame_stream, "FLUSH_DELAY_S", 60.0)  # here only a result releases them
    assert asyncio.run(_frames_for_calls_made_one_by_one(50)) == [1, 50]


async def _frames_for_calls_made_one_by_one(n: int) -> list[int]:
    """How many calls each request frame a worker-side peer received carried."""
    from kastor.runtime.frame_stream import FrameStream
    frames: list[int] = []
    first_seen, all_seen = asyncio.Event(), asyncio.Event()
    writers: list[asyncio.StreamWriter] = []

    async def read_frame(reader: asyncio.StreamReader) -> bytes:
        return await reader.readexactly(int.from_bytes(await reader.readexactly(4), "big"))

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        await read_frame(reader)  # the token
        writer.write(frame(b""))  # accepted
        while sum(frames) < n + 1:
            frames.append(len(pb.ExecuteRequest.FromString(await read_frame(reader)).tasks))
            first_seen.set()
        all_seen.set()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    stream = FrameStream("127.0.0.1:1", f"127.0.0.1:{port}", "token", lambda s, r: None, lambda s, e: None)
    try:
        stream.send([pb.TaskSpec(task_id=b"first")])
        await asyncio.wait_for(first_seen.wait(), DEADLINE_S)
        for i in range(n):
            stream.send([pb.TaskSpec(task_id=b"%d" % i)])
            await asyncio.sleep(0)  # a loop turn between calls, as when a thread makes them one by one
        writers[0].write(frame(pb.ExecuteReply(results=[pb.TaskResult(task_id=b"first")]).SerializeToString()))
        await asyncio.wait_for(all_seen.wait(), DEADLINE_S)
    finally:
        stream.abort()
        server.close()
    return frames


def test_a_call_made_after_the_peer_closed_is_kept_unwritten():
    """A call made once the peer has closed the connection, before the loop has read its FIN (a
    head whose frame relay carried the stream was just killed): writing it would lose it for a
    call that "may have run", though it cannot reach anyone. The stream keeps it unwritten, and
    the submitter re-sends it as never sent (test_client_head_restart once failed this way)."""
    assert asyncio.run(_calls_left_unwritten_after_the_peer_closed()) == {b"late"}


async def _calls_left_unwritten_after_the_peer_closed() -> set[bytes]:
    from kastor.runtime.frame_stream import FrameStream
    loop = asyncio.get_running_loop()
    listener = socket.create_server(("127.0.0.1", 0))
    listener.setblocking(False)
    lost = asyncio.Event()
    stream = FrameStream("127.0.0.1:1", f"127.0.0.1:{listener.getsockname()[1]}", "token", lambda s, r: None,
                         lambda s, e: lost.set())
    peer, _ = await loop.sock_accept(listener)
    try:
        token = b""
        while len(token) < 4 + len("token"):
            token += await loop.sock_recv(peer, 64)
        await loop.sock_sendall(peer, frame(b""))  # accepted
        assert await asyncio.wait_for(stream.handshake(), DEADLINE_S)
        peer.close()  # its FIN is in this side's kernel at once (loopback); the loop reads it next turn
        stream.send([pb.TaskSpec(task_id=b"late")])  # flushed on that turn, before the FIN is read
        await asyncio.wait_for(lost.wait(), DEADLINE_S)
        return stream.unwritten()
    finally:
        stream.abort()
        listener.close()
