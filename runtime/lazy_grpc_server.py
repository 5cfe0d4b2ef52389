"""A worker's gRPC server, started when its first connection arrives.

Why: starting gRPC was most of what was left of a forked actor worker's start (issue 16,
bench/README "actor creation"): gRPC core's init, the server and its threads, ~5 ms of CPU of
the ~12 ms a new worker spent before serving, a quarter of a creation's CPU over the whole
tree. Most workers never need it: actor calls and task pushes reach them on the data port
(data_server.py), their start and an idle worker's exit on the socket pair
(worker_registration.py), a kill by a signal. Some do, later: a caller cancelling a call, a
borrower of an object the worker owns, the node agent's probe of a lease nobody handed back.

How. The worker's address must answer from the start (it is registered, and written into the
refs it owns), so its port is bound and listened on at once, by a plain socket with
SO_REUSEPORT. When a connection arrives there, gRPC is started on the same port, where it joins
the socket's reuseport group, and on a private loopback port. A classic BPF program on the
group (SO_ATTACH_REUSEPORT_CBPF, no privilege needed) then hands every new connection to gRPC's
listener. The connections already queued on the plain socket are accepted by hand and copied
byte for byte (TLS included, unread) to the private port for as long as they last; the token is
checked by gRPC behind the copy, as for any call. The copy is also the fallback: where the
steering cannot be set (no IPv6, so gRPC's socket is of another family; a kernel without it),
every connection goes through it, correct and slower.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import socket
import struct
from collections.abc import Callable

import grpc
from kastor.runtime import tls
from kastor.runtime.frames import listening_socket

log = logging.getLogger("kastor.lazy_grpc_server")

SO_ATTACH_REUSEPORT_CBPF = 51  # linux/asm-generic/socket.h
_BPF_RET_K = 0x06  # BPF_RET | BPF_K: return the constant


def steer_to_second_socket(sock: socket.socket) -> bool:
    """Makes `sock`'s reuseport group hand new connections to its second socket (index 1, the
    next one to listen after `sock`); False where the kernel refused."""
    program = ctypes.create_string_buffer(struct.pack("=HBBI", _BPF_RET_K, 0, 0, 1))
    fprog = struct.pack("HL", 1, ctypes.addressof(program))  # struct sock_fprog {len; *filter}
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, fprog)
    except OSError as e:
        log.info("cannot steer new connections to the gRPC server (%s); they are copied to it instead", e)
        return False
    return True


def _bind_like_grpc(host: str) -> socket.socket:
    """A listening socket on `host` in the family gRPC binds it in (IPv6: v4-mapped for an IPv4
    address, dual-stack for the wildcard), so that the two share one reuseport group."""
    if socket.has_ipv6 and ":" not in host:
        try:
            return listening_socket("::" if host == "0.0.0.0" else f"::ffff:{host}", share_port=True)
        except OSError:  # IPv6 off in this network namespace: gRPC then binds IPv4 too
            pass
    return listening_socket(host, share_port=True)


class _Copy(asyncio.Protocol):
    """One leg of a copied connection: what it reads goes out on the other leg. The legs connect
    one after the other, and gRPC speaks first (its SETTINGS frame): what a leg reads before the
    other is connected waits in `early`."""

    def __init__(self, on_closed: Callable[[_Copy], None] = lambda leg: None) -> None:
        self.transport: asyncio.Transport | None = None
        self.other: _Copy | None = None
        self.early: list[bytes] = []
        self.closed = False
        self._on_closed = on_closed

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        other = self.other
        if other is not None:
            for chunk in other.early:
                self.transport.write(chunk)
            other.early.clear()
            if other.closed:
                self.transport.close()

    def data_received(self, data: bytes) -> None:
        if self.other is not None and self.other.transport is not None:
            self.other.transport.write(data)
        else:
            self.early.append(data)

    def pause_writing(self) -> None:  # the other side sends faster than this one's peer reads
        if self.other is not None and self.other.transport is not None:
            self.other.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.other is not None and self.other.transport is not None:
            self.other.transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._on_closed(self)
        if self.other is not None and self.other.transport is not None:
            self.other.transport.close()  # after what it still has to write


class LazyGrpcServer:
    """A gRPC server on `host`, built by `build` when its port gets its first connection.

    Drop-in for the part of grpc.aio.Server a core worker uses: `port` (known at once), `stop`.
    Created and used on one event loop (the core's)."""

    def __init__(self, host: str, build: Callable[[], grpc.aio.Server], what: str) -> None:
        self._host = host
        self._build = build
        self._what = what
        self._sock = _bind_like_grpc(host)
        self.port: int = self._sock.getsockname()[1]
        self._server: grpc.aio.Server | None = None
        self._private: tuple[str, int] | None = None  # where copied connections go
        self._starting: asyncio.Task | None = None
        self._copies: set[_Copy] = set()  # the accepted legs of copied connections still open
        self.copied = 0  # connections copied by hand so far (tests and diagnostics read it)
        self.steered = False  # whether new connections go straight to gRPC's listener
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self._sock.fileno(), self._on_connection)

    @property
    def started(self) -> bool:
        """Whether gRPC runs (a connection came, or `start` was called)."""
        return self._server is not None

    async def start(self) -> None:
        """Starts gRPC now (idempotent): the first connection calls it."""
        if self._starting is None:
            self._starting = self._loop.create_task(self._start())
        await asyncio.shield(self._starting)

    async def _start(self) -> None:
        server = self._build()
        loopback = self._host if self._host.startswith("127.") else "127.0.0.1"
        private = tls.add_port(server, f"{loopback}:0", f"{self._what} (its private port)")
        try:
            shared = tls.add_port(server, f"{self._host}:{self.port}", self._what)
        except tls.PortInUseError:  # gRPC would not share the port: every connection is copied
            shared = 0
        await server.start()
        self._server, self._private = server, (loopback, private)
        self.steered = bool(shared) and steer_to_second_socket(self._sock)
        log.debug("gRPC started on its first connection (port %d, steered: %s)", self.port, self.steered)

    def _on_connection(self) -> None:
        if self._server is None:
            self._loop.remove_reader(self._sock.fileno())  # they wait in the backlog until gRPC runs
            self._loop.create_task(self._start_then_copy())
            return
        self._accept_all()

    async def _start_then_copy(self) -> None:
        try:
            await self.start()
        except Exception:
            log.exception("could not start the gRPC server on port %d", self.port)
            self._sock.close()  # its callers see the connection refused, as for a dead worker
            return
        if self._sock.fileno() == -1:  # stopped meanwhile
            return
        self._accept_all()
        self._loop.add_reader(self._sock.fileno(), self._accept_all)

    def _accept_all(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                log.warning("accept on port %d failed: %s", self.port, e)
                return
            self.copied += 1
            self._loop.create_task(self._copy(conn))

    async def _copy(self, conn: socket.socket) -> None:
        assert self._private is not None
        inbound, outbound = _Copy(self._copies.discard), _Copy()
        inbound.other, outbound.other = outbound, inbound
        self._copies.add(inbound)
        try:
            await self._loop.create_connection(lambda: outbound, *self._private)
            await self._loop.connect_accepted_socket(lambda: inbound, conn)
        except OSError as e:
            log.warning("could not hand a connection to the gRPC server: %s", e)
            self._copies.discard(inbound)
            conn.close()
            if outbound.transport is not None:
                outbound.transport.close()

    async def stop(self, grace: float | None) -> None:
        if self._sock.fileno() != -1:
            self._loop.remove_reader(self._sock.fileno())
            self._sock.close()
        for leg in list(self._copies):
            if leg.transport is not None:
                leg.transport.close()
        if self._starting is not None:
            try:
                await asyncio.shield(self._starting)
            except Exception:
                pass
        if self._server is not None:
            await self._server.stop(grace)
