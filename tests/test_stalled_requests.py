"""A peer that sends the start of a request and then stalls is cut off on every port.

The peer here speaks HTTP/2 by hand (so it can stop part-way through a gRPC message), with
the cluster's real token, and behaves otherwise: it acknowledges the server's settings and
answers its pings. Every server must end such a stream once the receive deadline
(KASTOR_RECEIVE_TIMEOUT_S, 2 s for this module's cluster) has passed, and keep serving.
"""

from __future__ import annotations

import socket
import struct
import time

import kastor
import pytest
from kastor.runtime import context
from kastor.util.state import list_nodes
from support import DEADLINE_S, embedded_cluster_with_receive_timeout

RECEIVE_TIMEOUT_S = 2.0
GIVE_UP_S = 30.0  # a stream still open this long after the stall is open for good


@pytest.fixture(scope="module")
def embedded_cluster():
    """This module's own cluster, whose servers all drop a stalled request after 2 s."""
    with embedded_cluster_with_receive_timeout(RECEIVE_TIMEOUT_S) as info:
        yield info


pytestmark = pytest.mark.usefixtures("embedded_cluster")


@kastor.remote
class Echo:
    def echo(self, x):
        return x

    def address(self) -> str:
        from kastor.runtime import context
        return context.core.address


_keep: list = []  # the actor whose worker port is tested (an unreferenced actor is collected)


def targets(cluster) -> list[tuple[str, str]]:
    """(address, method path) for the head, a node agent, a worker and this driver, with a
    unary call, a call answered by a stream, and a request stream."""
    _keep.append(Echo.remote())
    worker = kastor.get(_keep[-1].address.remote(), timeout=DEADLINE_S)
    head, node = cluster.address_info["gcs_address"], list_nodes()[0]["address"]
    return [(head, "/kastor.Head/ListNodes"), (head, "/kastor.Head/JobSession"),
            (node, "/kastor.NodeAgent/FreeObjects"), (node, "/kastor.NodeAgent/FetchObject"),
            (node, "/kastor.NodeAgent/PutObject"), (worker, "/kastor.CoreWorker/GetObjects"),
            (context.core.address, "/kastor.CoreWorker/GetObjects")]


# ---- a minimal HTTP/2 peer ----

_DATA, _HEADERS, _RST_STREAM, _SETTINGS, _PING, _GOAWAY = 0, 1, 3, 4, 6, 7
_END_STREAM, _ACK, _END_HEADERS = 0x1, 0x1, 0x4


def _frame(kind: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload


def _hpack_int(value: int, prefix_bits: int = 7) -> bytes:
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes([value])
    out, value = [limit], value - limit
    while value >= 128:
        out.append(value % 128 + 128)
        value //= 128
    return bytes([*out, value])


def _headers(pairs: list[tuple[str, str]]) -> bytes:
    # Every field as "literal without indexing, new name", no Huffman: valid and stateless.
    block = b""
    for name, value in pairs:
        block += b"\x00" + _hpack_int(len(name)) + name.encode() + _hpack_int(len(value)) + value.encode()
    return block


def stall_part_way(address: str, path: str, token: str | None) -> tuple[str, float]:
    """Opens a call, sends 5 of the 200 bytes its message announces, then waits; returns how
    the server ended the stream (or "still open") and after how many seconds."""
    host, port = address.rsplit(":", 1)
    metadata = [(":method", "POST"), (":scheme", "http"), (":path", path), (":authority", address),
                ("content-type", "application/grpc"), ("te", "trailers")]
    if token is not None:
        metadata.append(("kastor-token", token))
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + _frame(_SETTINGS, 0, 0)
                  + _frame(_HEADERS, _END_HEADERS, 1, _headers(metadata))
                  + _frame(_DATA, 0, 1, b"\x00" + struct.pack(">I", 200) + b"\x0a\x03abc"))
        start = time.monotonic()
        buffer = b""
        while time.monotonic() - start < GIVE_UP_S:
            s.settimeout(max(0.1, GIVE_UP_S - (time.monotonic() - start)))
            try:
                data = s.recv(65536)
            except TimeoutError:
                break
            except ConnectionResetError:
                return "connection reset", time.monotonic() - start
            if not data:
                return "connection closed", time.monotonic() - start
            buffer += data
            while len(buffer) >= 9 and len(buffer) >= 9 + int.from_bytes(buffer[:3], "big"):
                length = int.from_bytes(buffer[:3], "big")
                kind, flags = buffer[3], buffer[4]
                stream = int.from_bytes(buffer[5:9], "big") & 0x7FFFFFFF
                payload, buffer = buffer[9:9 + length], buffer[9 + length:]
                if kind == _SETTINGS and not flags & _ACK:
                    s.sendall(_frame(_SETTINGS, _ACK, 0))
                elif kind == _PING and not flags & _ACK:
                    s.sendall(_frame(_PING, _ACK, 0, payload))
                elif stream == 1 and kind == _RST_STREAM:
                    return "stream reset", time.monotonic() - start
                elif stream == 1 and kind == _HEADERS and flags & _END_STREAM:
                    return "stream ended with a status", time.monotonic() - start
                elif kind == _GOAWAY:
                    return "connection closed", time.monotonic() - start
        return "still open", time.monotonic() - start


def still_serving() -> None:
    e = Echo.remote()
    assert kastor.get(e.echo.remote("alive"), timeout=DEADLINE_S) == "alive"


def test_a_stalled_request_is_dropped_on_every_port(embedded_cluster):
    token = context.core.token
    for address, path in targets(embedded_cluster):
        outcome, after = stall_part_way(address, path, token)
        assert outcome != "still open", f"{path} at {address} kept a stalled request open for {after:.0f}s"
        # Dropped by the deadline, not refused at once for some other reason (a malformed frame).
        assert after >= RECEIVE_TIMEOUT_S * 0.9, (path, outcome, after)
    still_serving()


def test_a_stalled_request_without_the_token_is_refused_at_once(embedded_cluster):
    for address, path in targets(embedded_cluster):
        outcome, after = stall_part_way(address, path, None)
        assert outcome != "still open", f"{path} at {address} kept a stalled request open for {after:.0f}s"
        assert after < RECEIVE_TIMEOUT_S, (path, outcome, after)
    still_serving()
