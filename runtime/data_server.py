"""A worker's data port: actor calls arriving as frames (see frames.py), run by its engine.

Each connection is one caller's ordered stream, exactly as one gRPC `Execute` stream is: its
requests go to the same `Engine.serve_stream` (so dispatch, ordering, concurrency groups,
fencing by incarnation and the end-of-stream rules are shared), and its replies come back in
the order the engine hands them out. The cluster token is checked on the first frame before
anything else the peer sent is looked at, and a peer that fails it is cut off unread.

A caller's *lane* (fast_lane.py) marks its token frame (lane_host.LANE_MARK): to a serial
actor's worker, its plain-TCP socket is then handed to the actor's main thread, which reads
and answers its calls itself (lane_host.py); otherwise it is served here as any connection.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import os
import socket
from collections.abc import AsyncIterator, Callable
from typing import Any

from kastor.runtime import auth, receive_deadline, tls
from kastor.runtime.frames import MAX_TOKEN_BYTES, FrameProtocol, frame, listening_socket
from kastor.runtime.lane_host import split_lane_mark
from kastor.runtime.protocol import kastor_pb2 as pb

log = logging.getLogger("kastor.data_server")

_END = None  # the caller's empty frame: no more requests


class _Connection(FrameProtocol):
    def __init__(self, token: bytes, engine: Callable[[], Any], timeout: float,
                 on_accepted: Callable[[], None]) -> None:
        super().__init__(timeout)
        self._on_accepted = on_accepted
        self._token = token
        self._engine = engine
        self._authenticated = False
        self._requests: asyncio.Queue[pb.ExecuteRequest | None] = asyncio.Queue()
        self._pump: asyncio.Task | None = None
        self._peer = ""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        peer = transport.get_extra_info("peername")
        self._peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) and len(peer) >= 2 else str(peer)
        self.arm_deadline()  # the token must come within the receive timeout

    def limit(self) -> int:
        return super().limit() if self._authenticated else MAX_TOKEN_BYTES

    def on_frame(self, payload: bytes) -> None:
        if not self._authenticated:
            self._authenticate(payload)
            return
        if not payload:
            self._requests.put_nowait(_END)
            return
        try:
            request = pb.ExecuteRequest.FromString(payload)
        except Exception:  # protobuf's DecodeError and friends
            self.close("an ExecuteRequest frame did not parse")
            return
        self._requests.put_nowait(request)

    def _authenticate(self, first: bytes) -> None:
        given, lane = split_lane_mark(first)
        if not hmac.compare_digest(given, self._token):
            auth.log_refused_peer(self._peer, "a data-port connection", "a wrong" if given else "no")
            self.close("wrong cluster token")
            return
        engine = self._engine()
        if engine is None:
            self.close("this worker is still starting: no work yet")
            return
        self._authenticated = True
        self._on_accepted()
        if lane and self._hand_over(engine):
            return
        self.write(b"")  # accepted: the caller writes its calls only after this
        self._pump = asyncio.get_running_loop().create_task(self._serve(engine))

    def _hand_over(self, engine: Any) -> bool:
        """A lane to a serial actor: its socket goes to the actor's main thread (lane_host.py),
        with any bytes already read past the token. Only a plain-TCP connection; else False
        (the loop serves it)."""
        transport = self.transport
        if transport is None or transport.get_extra_info("sslcontext") is not None:
            return False
        raw = transport.get_extra_info("socket")
        if raw is None or not engine.takes_lanes():
            return False
        sock = socket.socket(fileno=os.dup(raw.fileno()))  # the transport's own descriptor closes below
        transport.pause_reading()
        rest = self.take_buffered()  # a caller writes its calls only after the accept frame: normally nothing
        transport.abort()  # closes the loop's descriptor only: the connection lives on in `sock`
        self.clear_deadline()
        try:
            sock.send(frame(b""))  # accepted (4 bytes into a fresh connection's empty send buffer)
        except OSError:
            sock.close()
            return True
        engine.adopt_lane(sock, rest)
        return True

    async def _each_request(self) -> AsyncIterator[pb.ExecuteRequest]:
        while True:
            request = await self._requests.get()
            if request is _END:
                return
            yield request

    async def _serve(self, engine: Any) -> None:
        try:
            async for reply in engine.serve_stream(self._each_request(), None):
                self.write(reply.SerializeToString())
        except asyncio.CancelledError:
            return
        except Exception:
            log.exception("a data-port stream failed")
        if self.transport is not None:
            self.transport.close()  # every result went out: the caller sees the end of the stream

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        if self._pump is not None and not self._pump.done():
            self._pump.cancel()  # as a broken gRPC stream: serve_stream's cleanup runs


class DataServer:
    """Listens for framed actor calls beside the worker's gRPC server, on the core's loop."""

    def __init__(self, token: str, engine: Callable[[], Any]) -> None:
        """`engine` returns the worker's engine, or None while it is still starting."""
        self._token = token.encode()
        self._engine = engine
        self._server: asyncio.AbstractServer | None = None
        self.port = 0
        self.accepted = 0  # connections that passed the token check (tests and diagnostics read it)

    def _accepted(self) -> None:
        self.accepted += 1

    async def start(self, host: str) -> int:
        timeout = receive_deadline.receive_timeout_s()

        def connection() -> _Connection:
            return _Connection(self._token, self._engine, timeout, self._accepted)

        sock = listening_socket(host)
        self.port = sock.getsockname()[1]
        self._server = await asyncio.get_running_loop().create_server(
            connection, sock=sock, ssl=tls.server_ssl_context())
        return self.port

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
