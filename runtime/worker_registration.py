"""A new worker tells its node agent its address over a pipe the agent made for it, instead of a
RegisterWorker call (issue 16: actor creation rate).

Why: a RegisterWorker call made the worker open a gRPC channel to its agent (a connection, an
HTTP/2 handshake, the token check) and the agent serve one more call, per worker, on the path of
every actor creation; an actor worker otherwise never calls its agent. A pipe carries the same
line with none of that, and is as private as the worker's stdin: the agent creates it and hands
its write end to that one child (through the fork server, or `pass_fds` for a fresh
interpreter), so no other process can write to it, and no token is needed to trust it.

The agent still serves RegisterWorker, and a worker falls back to it when it has no pipe (a
worker started by something else than its agent) or cannot write to it.
"""

from __future__ import annotations

import asyncio
import json
import os

from kastor.runtime import settings

MAX_LINE = 4096  # PIPE_BUF on Linux: a write this small reaches the reader whole


def announce(worker_id: bytes, address: str) -> bool:
    """In the worker: writes its registration to the pipe KASTOR_REGISTER_FD names, and closes
    it. False when there is no pipe or writing failed (then it registers with RegisterWorker)."""
    fd = settings.REGISTER_FD.get()
    os.environ.pop(settings.REGISTER_FD.name, None)  # not inherited by the processes it starts
    if fd is None:
        return False
    line = json.dumps({"worker_id": worker_id.hex(), "address": address}).encode() + b"\n"
    try:
        if len(line) > MAX_LINE or os.write(fd, line) != len(line):
            return False
        return True
    except OSError:
        return False
    finally:
        try:
            os.close(fd)
        except OSError:
            pass


class RegistrationPipe:
    """In the node agent: the pipe one worker announces itself on. `child_fd` goes to the child
    (as KASTOR_REGISTER_FD), `started` closes the agent's copy of it once the child holds it, and
    `listen` resolves `registered` (the future the agent waits on) with the worker's address."""

    def __init__(self, worker_id: bytes):
        self._worker_id = worker_id
        self._read_fd, self.child_fd = os.pipe()
        os.set_blocking(self._read_fd, False)
        self._buffer = b""
        self._registered: asyncio.Future | None = None
        self._listening = False

    def started(self) -> None:
        """The child holds its end now (or was never started): the agent's copy is closed, so the
        pipe reads as ended once the child exits."""
        if self.child_fd >= 0:
            os.close(self.child_fd)
            self.child_fd = -1

    def listen(self, registered: asyncio.Future) -> None:
        self._registered = registered
        asyncio.get_running_loop().add_reader(self._read_fd, self._on_readable)
        self._listening = True

    def _on_readable(self) -> None:
        try:
            data = os.read(self._read_fd, MAX_LINE)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        self._buffer += data
        if b"\n" in self._buffer:
            line = self._buffer.split(b"\n", 1)[0]
            try:
                message = json.loads(line)
                valid = message.get("worker_id") == self._worker_id.hex() and isinstance(message.get("address"), str)
            except (ValueError, AttributeError):
                valid = False
            if valid and self._registered is not None and not self._registered.done():
                self._registered.set_result(message["address"])
            self.close()
        elif not data or len(self._buffer) > MAX_LINE:
            # Ended without a registration (the worker exited, or fell back to RegisterWorker):
            # its exit, or its call, settles the wait.
            self.close()

    @property
    def closed(self) -> bool:
        """Whether it stopped listening: a line came, or the pipe ended."""
        return self._read_fd < 0

    def close(self) -> None:
        self.started()
        if self._read_fd >= 0:
            if self._listening:
                asyncio.get_running_loop().remove_reader(self._read_fd)
                self._listening = False
            os.close(self._read_fd)
            self._read_fd = -1
