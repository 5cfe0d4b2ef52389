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
import socket
from collections.abc import Callable

import grpc
from kastor.runtime import config, receive_deadline, tls
from kastor.runtime.exec_stream import ExecStream
from kastor.runtime.frames import DATA_PORT_METADATA_KEY, FrameProtocol, RelayRoute, connected_socket, frame
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
    def __init__(self, address: str, data_address: str, token: str, on_results: OnResults, on_lost: OnLost,
                 relay: RelayRoute | None = None, on_relay_failed: Callable[[str], None] | None = None):
        """`address`: the worker's gRPC address (what cancellation and logs name);
        `data_address`: its data port's host:port; `relay`: reach it through the client port's
        frame relay (a remote client), which must greet first; `on_relay_failed(reason)`: the
        relay could not be reached or is not this cluster's (the stream is then lost before it
        was established, so its calls are re-sent)."""
        self.address = address
        self._relay = relay
        self._on_relay_failed = on_relay_failed
        self._greeted = relay is None
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
        self._sock: socket.socket | None = None  # the connected socket, to see a peer that closed it (_peer_closed)
        self._loop = asyncio.get_running_loop()
        self._handshake: asyncio.Future[bool] = self._loop.create_future()  # established, or lost before
        self._connecting = self._loop.create_task(self._connect())

    @property
    def lost(self) -> bool:
        return self._lost

    def send(self, specs: list[pb.TaskSpec]) -> None:
        self._outbox.extend(specs)
        if self._flush_handle is None:
            self._flush_handle = self._loop.call_soon(self._flush) if not self._unanswered \
                else self._loop.call_later(FLUSH_DELAY_S, self._flush)

    def unwritten(self) -> set[bytes]:
        """The task ids of the calls handed to this stream that it has not written (they
        cannot have run, so a lost stream's caller re-sends them without spending a retry)."""
        return {spec.task_id for spec in self._outbox}

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
        host, _, port = (self._relay.address if self._relay is not None else self.data_address).rpartition(":")
        host = host.strip("[]")
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
            if self._relay is not None and not isinstance(e, asyncio.CancelledError):
                self._relay_failed(f"cannot connect to it: {e!r}")
            self._report_lost(e)
            return
        self._proto = proto
        self._sock = sock
        if self._relay is None:  # (through a relay, the token goes once it greeted: _on_frame)
            proto.write(self._token)
        if not self.established:
            proto.arm_deadline()  # the worker's acceptance (the relay's greeting) must come in time too

    def _on_frame(self, proto: _Client, payload: bytes) -> None:
        if not self._greeted:
            # Only a relay that names this cluster is given the token (not some other program
            # that took the port, e.g. behind a port-forward).
            if payload != self._relay.greeting():  # type: ignore[union-attr]
                reason = f"it is not this cluster's frame relay (it greeted with {payload[:60]!r})"
                self._relay_failed(reason)
                proto.close(reason)
                return
            self._greeted = True
            proto.write(self._token)
            proto.write(self.data_address.encode())
            proto.arm_deadline()
            return
        if not self.established:
            if payload:
                proto.close("the worker did not accept the stream with an empty frame")
                return
            self.established = True
            if not self._handshake.done():
                self._handshake.set_result(True)
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

    def _relay_failed(self, reason: str) -> None:
        if self._on_relay_failed is not None:
            self._on_relay_failed(f"the client port's frame relay at {self._relay.address}: "  # type: ignore[union-attr]
                                  f"{reason}")

    def _flush(self) -> None:
        self._flush_handle = None
        proto = self._proto
        if not self.established or proto is None or not proto.writable or self._lost:
            return
        if self._outbox and self._peer_closed():
            # The peer is gone (a killed worker, or the head whose frame relay carried this
            # stream) but the loop has not read its FIN yet: what is written now cannot reach
            # it. Kept unwritten, these calls are re-sent on the next stream as never sent.
            proto.transport.abort()  # type: ignore[union-attr]
            return
        if self._outbox:
            batch, self._outbox = self._outbox, []
            self._unanswered += len(batch)
            proto.write(pb.ExecuteRequest(tasks=batch).SerializeToString())
        if self._closing and proto.transport is not None:
            proto.transport.write(frame(b""))
            self._closing = False

    def _peer_closed(self) -> bool:
        """Whether the peer has closed the connection, as far as the kernel knows: a peek that
        reads the end of the stream (a frame or TLS record waiting to be read is not the end)."""
        if self._sock is None:
            return False
        try:
            return self._sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
        except (BlockingIOError, InterruptedError):
            return False
        except OSError:
            return True  # reset by the peer

    def _on_connection_lost(self, exc: Exception | None, reason: str) -> None:
        error: BaseException | None = exc
        if error is None and reason:
            error = ConnectionError(reason)
        self._report_lost(error)

    def _report_lost(self, error: BaseException | None) -> None:
        if self._lost:
            return
        self._lost = True
        if not self._handshake.done():
            self._handshake.set_result(False)
        self._on_lost(self, error)

    async def handshake(self) -> bool:
        """Whether the worker accepted the stream (False: it was lost before)."""
        return await self._handshake


CallStream = FrameStream | ExecStream  # one contract: frames in the cluster, gRPC through the client port


async def open_call_stream(peers: Peers, address: str, on_results: Callable, on_lost: Callable,
                           probe_timeout: float = PROBE_TIMEOUT_S, data_port: int = 0) -> CallStream:
    """A stream of calls to the worker at `address`: framed to its data port when this process
    may (`peers.framed_calls`, or a remote client's `peers.frame_relay`) and the worker names
    one, else gRPC's Execute stream. `data_port`: the port when the caller knows it already (an
    actor's record has it), which spares a LeaseState call and a gRPC channel to the worker."""
    if peers.framed_calls or peers.frame_relay is not None:
        port = data_port or await data_port_of(peers.worker_stub(address), peers.metadata, probe_timeout)
        data_address = f"{address.rpartition(':')[0]}:{port}"
        if port and peers.frame_relay is not None:
            stream = await _through_relay(peers, address, data_address, on_results, on_lost)
            if stream is not None:
                return stream
        elif port:
            return FrameStream(address, data_address, peers.token, on_results, on_lost)
    return ExecStream(peers.channel(address), peers.metadata, address, on_results, on_lost)


async def _through_relay(peers: Peers, address: str, data_address: str, on_results: Callable,
                         on_lost: Callable) -> FrameStream | None:
    """A remote client's stream through the client port's frame relay, once the handshake is
    over; None if the relay failed (`peers.drop_frame_relay` then sends this and later calls
    through the client port's gRPC relay), so the caller never sees a stream lost for it."""
    handed = False
    early_loss: list[BaseException | None] = []

    def lost(stream: FrameStream, error: BaseException | None) -> None:
        if handed:
            on_lost(stream, error)
        else:
            early_loss.append(error)

    stream = FrameStream(address, data_address, peers.token, on_results, lost, relay=peers.frame_relay,
                         on_relay_failed=peers.drop_frame_relay)
    if not await stream.handshake() and peers.frame_relay is None:
        return None
    handed = True
    if early_loss:  # lost for another reason (e.g. the worker refused it): reported as any loss
        asyncio.get_running_loop().call_soon(on_lost, stream, early_loss[0])
    return stream


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
