"""One caller's framed stream to an actor's worker: ExecStream's contract over frames.

Same interface and guarantees as exec_stream.ExecStream (which the actor submitter uses when
it cannot use this): calls written in submission order on one connection, nothing written
before the worker accepted (`established`), results handed to `on_results` and the end of the
connection to `on_lost` exactly once. Frames are read in the core loop's protocol callback:
no gRPC threads between the socket and the submitter.

Batching under load, as Nagle's algorithm: a call made while none is unanswered goes out at
once (a synchronous caller never waits), and calls made while some are unanswered wait for
the next results frame, or FLUSH_DELAY_S at most, and go out together. gRPC's stream batched
the same way by accident (its write took a trip through its own threads); without it, 5,000
pipelined calls went out as ~700 small frames, each waking both loops, and ran 2x slower.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import grpc
from kastor.runtime import config, receive_deadline, tls
from kastor.runtime.exec_stream import ExecStream
from kastor.runtime.frames import DATA_PORT_METADATA_KEY, FrameProtocol, connected_socket, frame
from kastor.runtime.peers import Peers
from kastor.runtime.protocol import kastor_pb2 as pb

log = logging.getLogger("kastor.frame_stream")

PROBE_TIMEOUT_S = 5.0  # asking a worker for its data port: past this, the call goes over gRPC
FLUSH_DELAY_S = 0.001  # the longest a call waits for earlier calls' results before it goes out anyway

OnResults = Callable[["FrameStream", list[pb.TaskResult]], None]
OnLost = Callable[["FrameStream", BaseException | None], None]


class _Client(FrameProtocol):
    def __init__(self, stream: FrameStream, timeout: float) -> None:
        super().__init__(timeout)
        self._stream = stream

    def on_frame(self, payload: bytes) -> None:
        self._stream._on_frame(self, payload)

    def on_writable(self) -> None:
        self._stream._flush()

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self._stream._on_connection_lost(exc, self.closed_reason)


class FrameStream:
    def __init__(self, address: str, data_address: str, token: str, on_results: OnResults, on_lost: OnLost):
        """`address`: the worker's gRPC address (what cancellation and logs name);
        `data_address`: its data port's host:port."""
        self.address = address
        self.data_address = data_address
        self._token = token.encode()
        self._outbox: list[pb.TaskSpec] = []
        self._flush_handle: asyncio.Handle | None = None
        self._unanswered = 0  # calls written whose results have not come back
        self._closing = False
        self._lost = False
        self.established = False  # the worker accepted the stream: calls written from now on may run
        self._on_results = on_results
        self._on_lost = on_lost
        self._proto: _Client | None = None
        self._loop = asyncio.get_running_loop()
        self._connecting = self._loop.create_task(self._connect())

    @property
    def lost(self) -> bool:
        return self._lost

    def send(self, specs: list[pb.TaskSpec]) -> None:
        self._outbox.extend(specs)
        if self._flush_handle is None:
            self._flush_handle = self._loop.call_soon(self._flush) if not self._unanswered \
                else self._loop.call_later(FLUSH_DELAY_S, self._flush)

    def close(self) -> None:
        """Ends the stream after queued specs are written; the worker then closes it."""
        self._closing = True
        self.send([])

    def abort(self) -> None:
        if self._proto is not None and self._proto.transport is not None:
            self._proto.transport.abort()  # connection_lost reports the loss
        elif not self._connecting.done():
            self._connecting.cancel()

    async def _connect(self) -> None:
        host, _, port = self.data_address.rpartition(":")
        ctx = tls.client_ssl_context()
        sock = None
        try:
            sock = await connected_socket(host, int(port), config.CONNECT_TIMEOUT_S)
            _, proto = await asyncio.wait_for(self._loop.create_connection(
                lambda: _Client(self, receive_deadline.receive_timeout_s()), sock=sock, ssl=ctx,
                server_hostname=tls.server_name() if ctx is not None else None), config.CONNECT_TIMEOUT_S)
        except (OSError, TimeoutError, asyncio.CancelledError) as e:
            if sock is not None:
                sock.close()  # a no-op once a transport has taken it
            self._report_lost(e)
            return
        self._proto = proto
        proto.write(self._token)
        proto.arm_deadline()  # the worker's acceptance must come in time too

    def _on_frame(self, proto: _Client, payload: bytes) -> None:
        if not self.established:
            if payload:
                proto.close("the worker did not accept the stream with an empty frame")
                return
            self.established = True
            self._flush()
            return
        try:
            reply = pb.ExecuteReply.FromString(payload)
        except Exception:
            proto.close("an ExecuteReply frame did not parse")
            return
        self._unanswered -= len(reply.results)
        self._on_results(self, list(reply.results))
        if self._outbox and self._flush_handle is not None:  # results came: send what waited for them
            self._flush_handle.cancel()
            self._flush()

    def _flush(self) -> None:
        self._flush_handle = None
        proto = self._proto
        if not self.established or proto is None or not proto.writable or self._lost:
            return
        if self._outbox:
            batch, self._outbox = self._outbox, []
            self._unanswered += len(batch)
            proto.write(pb.ExecuteRequest(tasks=batch).SerializeToString())
        if self._closing and proto.transport is not None:
            proto.transport.write(frame(b""))
            self._closing = False

    def _on_connection_lost(self, exc: Exception | None, reason: str) -> None:
        error: BaseException | None = exc
        if error is None and reason:
            error = ConnectionError(reason)
        self._report_lost(error)

    def _report_lost(self, error: BaseException | None) -> None:
        if self._lost:
            return
        self._lost = True
        self._on_lost(self, error)


CallStream = FrameStream | ExecStream  # one contract: frames in the cluster, gRPC through the client port


async def open_call_stream(peers: Peers, address: str, on_results: Callable, on_lost: Callable,
                           probe_timeout: float = PROBE_TIMEOUT_S) -> CallStream:
    """A stream of calls to the worker at `address`: framed to its data port when this process
    may (`peers.framed_calls`) and the worker names one, else gRPC's Execute stream."""
    if peers.framed_calls:
        port = await data_port_of(peers.worker_stub(address), peers.metadata, probe_timeout)
        if port:
            return FrameStream(address, f"{address.rpartition(':')[0]}:{port}", peers.token, on_results, on_lost)
    return ExecStream(peers.channel(address), peers.metadata, address, on_results, on_lost)


async def data_port_of(stub, metadata, timeout: float) -> int | None:
    """The data port the worker behind `stub` serves frames on, or None (it serves none, or
    does not answer: the caller then uses gRPC, whose failure it handles as for any stream)."""
    try:
        call = stub.LeaseState(pb.Empty(), metadata=metadata, timeout=timeout)
        await call
        for key, value in await call.trailing_metadata() or ():
            if key == DATA_PORT_METADATA_KEY:
                return int(value)
    except (grpc.aio.AioRpcError, ValueError):
        return None
    return None
