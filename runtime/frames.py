"""The data plane's wire: length-prefixed protobuf frames on a plain (or TLS) socket.

Why not gRPC: a sync actor call over gRPC's asyncio stack makes four extra thread hand-offs
(event engine -> poller -> loop, on each side) and spends about half of the caller loop's
busy time in gRPC (bench/README.md, "The remaining gap"). Frames read in the core's own
uvloop protocol callback reach the dispatch code with no thread hop at all.

Who uses which path:

- a driver or worker inside the cluster sends actor calls, and pushes tasks to the workers it
  leased, over frames (frame_stream.FrameStream) to the worker's data port
  (data_server.DataServer), which it learns from the worker itself (`data_port_of`, once per
  stream); `KASTOR_FRAMED_CALLS=0` keeps these on gRPC;
- a remote client (`kastor://`) sends the same frames through the client port's frame relay
  (frame_relay.py), which splices them to the worker's data port undecoded; with the relay
  off (KASTOR_FRAME_RELAY_PORT=-1 on the head), or not reachable, it uses the client port's gRPC relay
  (client_gateway.py), i.e. the gRPC `Execute` stream (exec_stream.ExecStream), which every
  worker keeps serving; so does a caller that cannot learn a worker's data port;
- the control plane (head, node agents, leases, registration), objects, cancellation and
  generator items stay on gRPC.

A frame is a 4-byte big-endian length and that many bytes. A connection is:

    caller -> worker: the cluster token (raw bytes, compared in constant time; nothing else
                      is parsed before it matched), then ExecuteRequest frames; an empty
                      frame means "no more calls" (gRPC's half-close; TLS has no half-close)
    worker -> caller: an empty frame once the worker accepted (gRPC's initial metadata: calls
                      are written only after it), then ExecuteReply frames

Receive deadlines (see receive_deadline.py): the token must arrive within the receive timeout
of the connection's start, and every later frame within it of its first byte. An idle
connection (no partial frame) is never timed out: a caller may wait as long as it likes
between calls, which the gRPC stream could not tell from a stalled message.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import socket
from dataclasses import dataclass

from kastor.runtime import config, settings

log = logging.getLogger("kastor.frames")

HEADER_BYTES = 4
MAX_FRAME_BYTES = config.MAX_MESSAGE_BYTES  # as gRPC's message limit
MAX_TOKEN_BYTES = 1024  # a longer first frame is not a token: the connection is closed unread
DATA_PORT_METADATA_KEY = "kastor-data-port"  # a worker's LeaseState reply names its data port in this
RELAY_GREETING = b"kastor-frame-relay/1 "  # + the cluster id: the client port's frame relay speaks first
RELAY_LANE = "lane"  # after the target in a relay's target frame: open the worker's leg as a lane (fast_lane.py)


@dataclass(frozen=True)
class RelayRoute:
    """How a remote client reaches workers' data ports: the client port's frame relay
    (frame_relay.py) at `address`, which greets with RELAY_GREETING + `cluster_id`."""

    address: str
    cluster_id: str

    def greeting(self) -> bytes:
        return RELAY_GREETING + self.cluster_id.encode()


def frame(payload: bytes) -> bytes:
    return len(payload).to_bytes(HEADER_BYTES, "big") + payload


class FrameProtocol(asyncio.Protocol):
    """Splits a byte stream into frames and hands each to `on_frame`, on the loop's thread.

    `limit()` bounds the next frame's length (a longer one closes the connection before its
    body is read); a frame begun and not finished within `timeout` seconds closes it too.
    Writes made while the transport is paused (its buffer is over the high-water mark) stay
    queued by the caller: see `writable`.
    """

    def __init__(self, timeout: float) -> None:
        self.transport: asyncio.Transport | None = None
        self._buf = bytearray()
        self._timeout = timeout
        self._deadline: asyncio.TimerHandle | None = None
        self.writable = True
        self.closed_reason = ""  # why this side closed the connection ("" when the peer did)

    # ---- to override ----

    def on_frame(self, payload: bytes) -> None:
        raise NotImplementedError

    def limit(self) -> int:
        return MAX_FRAME_BYTES

    def on_writable(self) -> None:
        """The transport's buffer drained below its low-water mark."""

    # ---- asyncio.Protocol ----

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        buf = self._buf
        buf += data
        while len(buf) >= HEADER_BYTES and self.transport is not None and not self.transport.is_closing():
            n = int.from_bytes(buf[:HEADER_BYTES], "big")
            if n > self.limit():
                self.close(f"a frame of {n} bytes is over the limit of {self.limit()}")
                return
            end = HEADER_BYTES + n
            if len(buf) < end:
                break
            payload = bytes(buf[HEADER_BYTES:end])
            del buf[:end]
            self.clear_deadline()  # the next frame's time starts with its first byte
            self.on_frame(payload)
        if buf:
            if self._deadline is None:
                self._deadline = asyncio.get_running_loop().call_later(self._timeout, self._stalled)
        else:
            self.clear_deadline()

    def pause_writing(self) -> None:
        self.writable = False

    def resume_writing(self) -> None:
        self.writable = True
        self.on_writable()

    def connection_lost(self, exc: Exception | None) -> None:
        self.clear_deadline()
        self.transport = None

    # ---- helpers ----

    def take_buffered(self) -> bytes:
        """The bytes received after the last whole frame, removed: a subclass that stops parsing
        frames (the client port's relay, after its handshake) passes them on as they are."""
        rest = bytes(self._buf)
        self._buf.clear()
        return rest

    def arm_deadline(self) -> None:
        """Starts the receive deadline now (the token's, at the connection's start)."""
        self.clear_deadline()
        self._deadline = asyncio.get_running_loop().call_later(self._timeout, self._stalled)

    def clear_deadline(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _stalled(self) -> None:
        self._deadline = None
        self.close(f"a frame did not arrive in full within {self._timeout:g}s (a peer that stalled part-way "
                   f"through a message); raise {settings.RECEIVE_TIMEOUT_S.name} on the workers "
                   f"to allow slower senders")

    def write(self, payload: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(frame(payload))

    def close(self, reason: str) -> None:
        """Drops the connection at once (nothing queued is flushed): a broken or hostile peer."""
        if self.transport is not None and not self.transport.is_closing():
            self.closed_reason = reason
            log.debug("closing a data connection: %s", reason)
            self.transport.abort()


# Sockets are made here, not by the loop from a host name: uvloop resolves even a numeric
# host in libuv's thread pool, which would start four threads in every worker for nothing.

def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def listening_socket(host: str, port: int = 0, share_port: bool = False) -> socket.socket:
    """A socket listening on `host` (an IP address) at `port` (0: a port the kernel picks).

    `share_port`: with SO_REUSEPORT, so that another socket of this user may listen on the same
    port beside it (lazy_grpc_server.py); an IPv6 one then takes IPv4 connections too."""
    sock = socket.socket(_family(host), socket.SOCK_STREAM)
    try:
        if port:  # a fixed port is taken again at once after a restart (no TIME_WAIT wait)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if share_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if sock.family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind((host, port))
        sock.listen(128)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


async def connected_socket(host: str, port: int, timeout: float) -> socket.socket:
    """A socket connected to `host` (an IP address):`port`, within `timeout` seconds."""
    loop = asyncio.get_running_loop()
    sock = socket.socket(_family(host), socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        err = sock.connect_ex((host, port))
        if err == errno.EINPROGRESS:
            writable = loop.create_future()
            loop.add_writer(sock.fileno(), lambda: writable.done() or writable.set_result(None))
            try:
                await asyncio.wait_for(writable, timeout)
            finally:
                loop.remove_writer(sock.fileno())
            err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            raise OSError(err, f"cannot connect to {host}:{port}: {os.strerror(err)}")
    except BaseException:
        sock.close()
        raise
    return sock
