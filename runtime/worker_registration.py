"""A new worker and its node agent talk over a socket pair the agent made for it: the worker
announces its address there instead of a RegisterWorker call, and the agent sends it StartActor
there instead of over a gRPC channel to the worker (issue 16: actor creation rate).

Why: RegisterWorker made the worker open a gRPC channel to its agent, and StartActor made the
agent open one to the worker (each a connection, an HTTP/2 handshake, a token check, a call to
serve), per worker, on the path of every actor creation; an actor worker otherwise never talks to
its agent. The pair carries the same messages with none of that, and is as private as the
worker's stdin: the agent creates it and hands one end to that one child (through the fork
server, or `pass_fds` for a fresh interpreter), so no other process can reach it, and no token
is needed to trust it.

The protocol: the worker writes one JSON line (its id, address and data port); then the agent
sends requests, each answered before the next, as a 4-byte big-endian length, then a kind byte
and its body: `S` and a StartActorRequest, answered by a StartActorReply; `X` (reaping an idle
worker), answered by why it stays (UTF-8, empty: it exits), so that a worker's gRPC, started
only on its first connection (lazy_grpc_server.py), is not started just to stop it. The agent
still serves RegisterWorker and the worker still serves StartActor and Exit on gRPC: a worker
without the pair (started by something else than its agent), or that could not write to it,
registers and is started and stopped that way.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
from collections.abc import Awaitable, Callable

from kastor.runtime import settings
from kastor.runtime.protocol import kastor_pb2 as pb

log = logging.getLogger("kastor.worker")

MAX_LINE = 4096  # PIPE_BUF on Linux: a write this small reaches the reader whole


# "pair" once the agent sent this worker StartActor on its socket pair (else "": not an actor, or
# started through gRPC). What tells the tests which path a start took.
STARTED_BY = ""


def started_by() -> str:
    """"pair" if this process became an actor through its socket pair, else ""."""
    return STARTED_BY


def announce(worker_id: bytes, address: str, data_port: int) -> int | None:
    """In the worker: writes its registration to the socket KASTOR_REGISTER_FD names. Returns
    that socket's fd, for `serve`; None when there is none or writing failed (the fd is then
    closed, and the worker registers with RegisterWorker)."""
    fd = settings.REGISTER_FD.get()
    os.environ.pop(settings.REGISTER_FD.name, None)  # not inherited by the processes it starts
    if fd is None:
        return None
    line = json.dumps({"worker_id": worker_id.hex(), "address": address, "data_port": data_port}).encode() + b"\n"
    try:
        if len(line) <= MAX_LINE and os.write(fd, line) == len(line):
            return fd
    except OSError:
        pass
    try:
        os.close(fd)
    except OSError:
        pass
    return None


_START, _EXIT = b"S", b"X"


async def serve(fd: int, start_actor: Callable[[pb.StartActorRequest], Awaitable[pb.StartActorReply]],
                exit_if_idle: Callable[[], str]) -> None:
    """In the worker, on its core loop: answers the agent's requests on the pair until the agent
    closes it. A start that raises closes the pair: the agent reads that as a worker that stopped
    answering, as it would a failed gRPC call, and ends it."""
    global STARTED_BY
    reader, writer = await asyncio.open_unix_connection(sock=socket.socket(fileno=fd))
    try:
        while True:
            try:
                size = int.from_bytes(await reader.readexactly(4), "big")
                message = await reader.readexactly(size)
            except (asyncio.IncompleteReadError, ConnectionError):
                return
            kind, body = message[:1], message[1:]
            if kind == _EXIT:
                data = exit_if_idle().encode()
            elif kind == _START:
                STARTED_BY = "pair"
                try:
                    reply = await start_actor(pb.StartActorRequest.FromString(body))
                except Exception:
                    log.exception("starting the actor failed")
                    return
                data = reply.SerializeToString()
            else:
                log.error("unknown request %r from the node agent on the socket pair; closing it", kind)
                return
            writer.write(len(data).to_bytes(4, "big") + data)
            await writer.drain()
    finally:
        writer.close()


class ControlLost(ConnectionError):
    """The worker's end of the pair closed before it answered: it died or stopped answering."""


class WorkerControl:
    """In the node agent: its end of one registered worker's pair, to start an actor on, or to
    ask an idle worker to exit."""

    def __init__(self, sock: socket.socket):
        self._sock = sock
        self._streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        self._lock = asyncio.Lock()

    async def start_actor(self, request: pb.StartActorRequest) -> pb.StartActorReply:
        """The worker's answer; raises ControlLost if it closes the pair first (it died)."""
        return pb.StartActorReply.FromString(await self._ask(_START + request.SerializeToString()))

    async def ask_to_exit(self) -> str:
        """Asks an idle worker to exit: "" if it does, else why it stays (it owns objects others
        may still use, say). Raises ControlLost if the pair closed first."""
        return (await self._ask(_EXIT)).decode()

    async def _ask(self, message: bytes) -> bytes:
        async with self._lock:
            try:
                if self._streams is None:
                    self._streams = await asyncio.open_unix_connection(sock=self._sock)
                reader, writer = self._streams
                writer.write(len(message).to_bytes(4, "big") + message)
                await writer.drain()
                size = int.from_bytes(await reader.readexactly(4), "big")
                return await reader.readexactly(size)
            except (asyncio.IncompleteReadError, ConnectionError, OSError) as e:
                raise ControlLost(f"its socket pair closed ({type(e).__name__})") from e

    def close(self) -> None:
        if self._streams is not None:
            self._streams[1].close()
        else:
            self._sock.close()


class RegistrationPair:
    """In the node agent: the socket pair one worker announces itself on. `child_fd` goes to the
    child (as KASTOR_REGISTER_FD), `started` closes the agent's copy of it once the child holds
    it, `listen` resolves `registered` (the future the agent waits on) with the worker's address
    and data port, and `take_control` then hands over the agent's end, to start an actor on."""

    def __init__(self, worker_id: bytes):
        self._worker_id = worker_id
        self._ours, self._theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self._read_fd, self.child_fd = self._ours.fileno(), self._theirs.fileno()
        self._ours.setblocking(False)
        self._control: WorkerControl | None = None
        self._buffer = b""
        self._registered: asyncio.Future | None = None
        self._listening = False

    def started(self) -> None:
        """The child holds its end now (or was never started): the agent's copy is closed, so the
        pipe reads as ended once the child exits."""
        if self.child_fd >= 0:
            self._theirs.close()
            self.child_fd = -1

    def listen(self, registered: asyncio.Future) -> None:
        self._registered = registered
        asyncio.get_running_loop().add_reader(self._read_fd, self._on_readable)
        self._listening = True

    def _on_readable(self) -> None:
        try:
            data = self._ours.recv(MAX_LINE)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        self._buffer += data
        if b"\n" in self._buffer:
            line = self._buffer.split(b"\n", 1)[0]
            try:
                message = json.loads(line)
                valid = message.get("worker_id") == self._worker_id.hex() and isinstance(message.get("address"), str) \
                    and isinstance(message.get("data_port", 0), int)
            except (ValueError, AttributeError):
                valid = False
            if valid and self._registered is not None and not self._registered.done():
                self._registered.set_result((message["address"], message.get("data_port", 0)))
                self._stop_listening()
                self._control = WorkerControl(self._ours)  # the agent's now, for StartActor
                self._read_fd = -1
                return
            self.close()
        elif not data or len(self._buffer) > MAX_LINE:
            # Ended without a registration (the worker exited, or fell back to RegisterWorker):
            # its exit, or its call, settles the wait.
            self.close()

    @property
    def closed(self) -> bool:
        """Whether it stopped listening: a line came, or the pipe ended."""
        return self._read_fd < 0

    def take_control(self) -> WorkerControl | None:
        """The registered worker's pair, to start an actor on (None: it registered otherwise)."""
        control, self._control = self._control, None
        return control

    def _stop_listening(self) -> None:
        if self._listening:
            asyncio.get_running_loop().remove_reader(self._read_fd)
            self._listening = False

    def close(self) -> None:
        """Stops listening; closes the pair unless `take_control` took it."""
        self.started()
        if self._read_fd >= 0:
            self._stop_listening()
            self._ours.close()
            self._read_fd = -1
        if self._control is not None:
            self._control.close()
            self._control = None
