"""The client port's frame relay: a remote client's actor calls, spliced to the worker's data port.

In the cluster, a caller sends actor calls as frames straight to the worker's data port
(frames.py). A remote client (`kastor://`) cannot reach it, and relaying its calls as gRPC
cost three processes' gRPC stacks per call (0.3x the in-cluster rate on 2026-11-30). This
relay, served by the head beside the client port, carries the same frames without decoding
them: after a short handshake it copies bytes between the client's connection and the
worker's, in the head loop's protocol callbacks, with no parsing and no thread.

A connection is:

    relay -> client: a greeting frame, `RELAY_GREETING + cluster id` (so a client that reached some
                     other program at this port never sends it the token)
    client -> relay: the cluster token (compared in constant time before anything else the
                     client sent is looked at), then the target frame: a worker's data port
                     or a node agent's upload port (upload_server.py) as `host:port`, which
                     must be a registered node's host (not an open proxy); an upload's is
                     `host:port upload=<body bytes>`, a lane's (fast_lane.py) `host:port lane`
    relay -> worker: the cluster token (followed by LANE_MARK for a lane, so a serial actor's
                     thread serves it: lane_host.py); from then on both directions are spliced as bytes:
                     the worker's acceptance, the caller's ExecuteRequest frames, the
                     worker's ExecuteReply frames, the caller's end frame

Guarantees kept: per-caller order (one client connection is one worker connection, bytes in
order); the receive deadline (the relay times the greeting's answer and the target; after
that the worker times every frame it gets, and a stalled client's partial frame makes the
worker drop its connection, so the relay drops the client's); TLS on both legs when the
cluster serves it; the end of either connection ends the other (a client that goes away
ends its call stream at the worker, as gRPC's relay cancelled it). Back-pressure: a leg
whose send buffer is full pauses reading the other.

An upload's body (a notebook's large value, relay_upload.py) of a MiB or more is not copied
through Python: once its header frame is forwarded, the body's announced bytes move client
socket -> pipe -> node socket by `splice(2)` on a thread of their own (splice_copy.py), the
client's transport paused meanwhile. Not with TLS on either leg (splice moves ciphertext).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import os
import re
import threading
from collections.abc import Callable

from kastor.runtime import auth, config, event_loops, receive_deadline, settings, splice_copy, tls
from kastor.runtime.frames import (
    MAX_TOKEN_BYTES,
    RELAY_GREETING,
    RELAY_LANE,
    FrameProtocol,
    connected_socket,
    frame,
    listening_socket,
)
from kastor.runtime.lane_host import LANE_MARK

log = logging.getLogger("kastor.frame_relay")

MAX_TARGET_BYTES = 300  # "host:port"; a longer target frame closes the connection unread
MAX_UPLOAD_HEADER_BYTES = 256  # an upload's header frame (upload_server.MAX_HEADER_BYTES)
_UPLOAD = re.compile(r"upload=([0-9]{1,15})")


class _Upstream(asyncio.Protocol):
    """The relay's connection to the worker's data port: bytes back to the client as they come."""

    def __init__(self, inbound: _Inbound) -> None:
        self._inbound = inbound
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self._inbound.send_down(data)

    def pause_writing(self) -> None:  # the worker reads slower than the client writes
        self._inbound.pause_reading()

    def resume_writing(self) -> None:
        self._inbound.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self._inbound.upstream_lost()


class _Inbound(FrameProtocol):
    """One client's connection: greeting, token, target, then a byte splice to the worker."""

    def __init__(self, relay: FrameRelay) -> None:
        super().__init__(relay.receive_timeout)
        self._relay = relay
        self._authenticated = False
        self._upstream: _Upstream | None = None
        self._early: list[bytes] = []  # bytes after the target frame, until the worker's leg is open
        self._splicing = False
        self._opening: asyncio.Task | None = None  # connecting to the target (held: the loop keeps weak refs)
        self._peer = ""
        self._upload_body: int | None = None  # an upload's body bytes not yet relayed, once its header is
        self._upload_head_sent = False
        self._splice_stop: threading.Event | None = None  # set while a thread splices the body

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._relay.opened(self)
        peer = transport.get_extra_info("peername")
        self._peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) and len(peer) >= 2 else str(peer)
        self.write(RELAY_GREETING + self._relay.cluster_id.encode())
        self.arm_deadline()  # the token and the target must come within the receive timeout

    def limit(self) -> int:
        return MAX_TARGET_BYTES if self._authenticated else MAX_TOKEN_BYTES

    def data_received(self, data: bytes) -> None:
        if self._splicing:
            self._send_up(data)
        else:
            super().data_received(data)

    def on_frame(self, payload: bytes) -> None:
        if not self._authenticated:
            if not hmac.compare_digest(payload, self._relay.token):
                auth.log_refused_peer(self._peer, "a frame-relay connection", "a wrong" if payload else "no")
                self.close("wrong cluster token")
                return
            self._authenticated = True
            return
        # The target frame: everything after it is the caller's stream, relayed unread.
        self._splicing = True
        self.clear_deadline()
        rest = self.take_buffered()
        if rest:
            self._early.append(rest)
        self._opening = asyncio.get_running_loop().create_task(self._open_upstream(payload))

    async def _open_upstream(self, target_frame: bytes) -> None:
        try:
            target, _, kind = target_frame.decode().partition(" ")
            host, _, port = target.rpartition(":")
            host = host.strip("[]")
            port_number = int(port)
            lane = kind == RELAY_LANE
            if kind and not lane:
                upload = _UPLOAD.fullmatch(kind)
                if upload is None:
                    raise ValueError(kind)
                self._upload_body = int(upload.group(1))
        except ValueError:
            self.close("the target frame is not host:port (or host:port upload=<bytes>, or host:port lane)")
            return
        if not await self._relay.allowed_host(host):
            log.warning("frame relay: %s asked for %s, which is not a node of this cluster", self._peer, target)
            self.close(f"{target} is not an address of this cluster's nodes")
            return
        ctx = tls.client_ssl_context()
        sock = None
        try:
            sock = await connected_socket(host, port_number, config.CONNECT_TIMEOUT_S)
            _, upstream = await asyncio.wait_for(asyncio.get_running_loop().create_connection(
                lambda: _Upstream(self), sock=sock, ssl=ctx,
                server_hostname=tls.server_name() if ctx is not None else None), config.CONNECT_TIMEOUT_S)
        except (OSError, TimeoutError) as e:
            if sock is not None:
                sock.close()
            self.close(f"cannot reach the worker's data port {target}: {e}")
            return
        if self.transport is None or self.transport.is_closing():
            upstream.transport.close()  # the client went away meanwhile
            return
        self._upstream = upstream
        # A lane's first frame asks a serial actor's worker to serve it on the actor's thread (lane_host.py).
        upstream.transport.write(frame(self._relay.token + (LANE_MARK if lane else b"")))
        if self._upload_body is not None:
            self._send_upload_head()
            return
        for data in self._early:
            upstream.transport.write(data)
        self._early.clear()

    def _send_up(self, data: bytes) -> None:
        upstream = self._upstream
        if upstream is None or upstream.transport is None:
            self._early.append(data)
        elif self._upload_body is not None and not self._upload_head_sent:
            self._early.append(data)
            self._send_upload_head()
        else:
            upstream.transport.write(data)

    def _send_upload_head(self) -> None:
        """Forwards an upload's header frame once it is whole, then splices its body (if worth it)."""
        assert self._upstream is not None and self._upstream.transport is not None and self._upload_body is not None
        buf = b"".join(self._early)
        self._early = [buf] if buf else []
        if len(buf) < 4:
            return
        size = int.from_bytes(buf[:4], "big")
        if size > MAX_UPLOAD_HEADER_BYTES:
            self.close("an upload header frame too long")
            return
        if len(buf) < 4 + size:
            return
        self._early.clear()
        self._upload_head_sent = True
        upstream = self._upstream.transport
        upstream.write(buf)  # the header, and any body bytes that came with it
        body = self._upload_body - (len(buf) - 4 - size)
        if (body >= splice_copy.MIN_BYTES and self._relay.splice and not upstream.get_write_buffer_size()
                and self.transport is not None and not self.transport.is_closing()):
            self._splice_body(body)

    def _splice_body(self, count: int) -> None:
        """Moves `count` body bytes client -> node inside the kernel, on a thread; the client's
        transport stays paused until they are through."""
        assert self.transport is not None and self._upstream is not None and self._upstream.transport is not None
        src, dst = self.transport.get_extra_info("socket"), self._upstream.transport.get_extra_info("socket")
        if src is None or dst is None:
            return
        self.transport.pause_reading()
        loop = asyncio.get_running_loop()
        stop = self._splice_stop = threading.Event()
        # The thread's own descriptors: either transport may close its fd meanwhile.
        src_fd, dst_fd = os.dup(src.fileno()), os.dup(dst.fileno())
        timeout = self._relay.receive_timeout * 2  # the node times the body; this only ends a forgotten thread

        def run() -> None:
            error: BaseException | None = None
            try:
                splice_copy.copy_exactly(src_fd, dst_fd, count, timeout, stop)
            except (OSError, splice_copy.SpliceStopped) as e:
                error = e
            finally:
                os.close(src_fd)
                os.close(dst_fd)
            try:
                loop.call_soon_threadsafe(self._body_spliced, error)
            except RuntimeError:  # the relay's loop is gone: so are the connections
                pass
        threading.Thread(target=run, name="kastor-relay-splice", daemon=True).start()

    def _body_spliced(self, error: BaseException | None) -> None:
        self._splice_stop = None
        if error is not None:
            self.close(f"the upload's body did not go through: {error}")
            return
        self._relay.spliced += 1
        if self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()  # anything more goes through Python (the node refuses it)

    def send_down(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def pause_reading(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.transport is not None and not self.transport.is_closing() and self._splice_stop is None:
            self.transport.resume_reading()

    def pause_writing(self) -> None:  # the client reads slower than the worker answers
        super().pause_writing()
        if self._upstream is not None and self._upstream.transport is not None:
            self._upstream.transport.pause_reading()

    def resume_writing(self) -> None:
        super().resume_writing()
        if self._upstream is not None and self._upstream.transport is not None:
            self._upstream.transport.resume_reading()

    def upstream_lost(self) -> None:
        """The worker closed (every result went out, or it died): so does the client's leg,
        after what the worker sent was written."""
        if self._splice_stop is not None:
            self._splice_stop.set()
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        if self._splice_stop is not None:
            self._splice_stop.set()
        self._relay.closed(self)
        if self._upstream is not None and self._upstream.transport is not None:
            # The client went away: its stream to the worker ends too (the worker then cancels
            # what the stream still runs, as for any lost caller).
            self._upstream.transport.abort()


class FrameRelay:
    """Listens for remote clients' framed calls beside the client port.

    The relay runs on a thread of its own with its own loop (uvloop when KASTOR_UVLOOP allows):
    a call's bytes then never wait behind the head's own work on its loop, and uvloop's
    callbacks cost a fraction of asyncio's: sync calls through the relay ran at about 1,200/s on
    the head's asyncio loop and 1,600-1,900/s here (2026-11-30, a loaded 2-core machine). Only
    the target check reaches the head's loop.
    """

    def __init__(self, token: str, cluster_id: str, allowed_host: Callable[[str], bool]) -> None:
        """`allowed_host(ip)`: whether a target is a host of a registered node (or the head's),
        asked on the loop `start` is awaited on (the head's tables live there)."""
        self.token = token.encode()
        self.cluster_id = cluster_id
        self._allowed_host = allowed_host
        self.receive_timeout = receive_deadline.receive_timeout_s()
        self._server: asyncio.AbstractServer | None = None
        self._owner_loop: asyncio.AbstractEventLoop | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._connections: set[_Inbound] = set()
        self.splice = False  # uploads' bodies go by splice (no TLS on either leg; set by start)
        self.spliced = 0  # upload bodies relayed so (tests read it)
        self.port = 0

    async def allowed_host(self, host: str) -> bool:
        """Asked on the relay's loop; answered on the owner's."""
        async def ask() -> bool:
            return self._allowed_host(host)
        assert self._owner_loop is not None
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(ask(), self._owner_loop))

    def opened(self, conn: _Inbound) -> None:
        self._connections.add(conn)

    def closed(self, conn: _Inbound) -> None:
        self._connections.discard(conn)

    async def start(self, host: str, port: int = 0) -> int:
        """Listens on `host`:`port` (0: a free port the kernel picks); returns the port."""
        self._owner_loop = asyncio.get_running_loop()
        sock = listening_socket(host, port)
        self.port = sock.getsockname()[1]
        self.splice = (tls.server_ssl_context() is None and tls.client_ssl_context() is None
                       and splice_copy.available() and settings.UPLOAD_SPLICE.get())
        loop = self._loop = event_loops.new_event_loop()
        self._thread = threading.Thread(target=loop.run_forever, name="kastor-frame-relay", daemon=True)
        self._thread.start()

        async def serve() -> asyncio.AbstractServer:
            return await loop.create_server(lambda: _Inbound(self), sock=sock, ssl=tls.server_ssl_context())
        try:
            self._server = await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(serve(), loop))
        except BaseException:
            sock.close()
            await self.stop()
            raise
        return self.port

    async def stop(self) -> None:
        """Stops listening, drops every relayed connection (their callers see the stream end)
        and ends the relay's thread."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        self._loop = self._thread = None

        def shut() -> None:
            if self._server is not None:
                self._server.close()
            for conn in list(self._connections):
                conn.close("the client port is shutting down")
            loop.call_soon(loop.stop)
        loop.call_soon_threadsafe(shut)
        await asyncio.to_thread(thread.join, 10)
        if not thread.is_alive():
            loop.close()

