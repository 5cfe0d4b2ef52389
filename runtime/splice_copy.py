"""Moving a large body from a socket to a file or another socket inside the kernel (`splice(2)`).

A notebook's upload (upload_server.py, through the client port's frame relay) crossed two
processes that each read every byte into Python and wrote it out again (bench/README.md,
client port). `splice` moves the bytes socket -> pipe -> file (or socket) with no copy into
user space: the pipe's pages are the socket's buffers, handed on. It runs on a thread of its
own, blocking in `poll`, while the connection's asyncio transport is paused.

Not for TLS connections (the bytes on the socket are ciphertext that only the TLS layer in
user space can decrypt): callers keep their Python copy there.
"""

from __future__ import annotations

import array
import fcntl
import os
import select
import stat
import termios
import threading
import time

_PIPE_BYTES = 1 << 20  # one splice moves at most this much (the pipe is grown to it where allowed)
_F_SETPIPE_SZ = 1031
_SLICE_S = 0.25  # how often a blocked splice looks at its stop event

MIN_BYTES = 1 << 20  # smaller bodies are not worth a thread: the caller copies them itself


class SpliceStopped(Exception):
    """The copy ended before `count` bytes: the source closed, stalled, or `stop` was set."""


def available() -> bool:
    """Whether this Python and kernel offer splice (Linux, Python 3.10+)."""
    return hasattr(os, "splice")


def copy_exactly(src: int, dst: int, count: int, idle_timeout_s: float, stop: threading.Event) -> None:
    """Moves exactly `count` bytes from the socket `src` to `dst` (a file, or a socket).

    Both may be non-blocking (an asyncio transport's sockets): the copy waits in `poll`.
    Raises SpliceStopped if `src` closes first, if no byte moves for `idle_timeout_s` (the
    receive deadline), or once `stop` is set; OSError if a write fails (e.g. a full store)."""
    r, w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
    try:
        try:
            fcntl.fcntl(w, _F_SETPIPE_SZ, _PIPE_BYTES)
        except OSError:
            pass  # the default 64 KiB pipe works, with more calls
        dst_is_socket = _is_socket(dst)
        in_pipe = 0
        last_move = time.monotonic()
        while count or in_pipe:
            moved = False
            if count and in_pipe < _PIPE_BYTES:
                try:
                    n = os.splice(src, w, min(count, _PIPE_BYTES - in_pipe), flags=_FLAGS)
                except BlockingIOError:
                    n = -1
                if n == 0:
                    raise SpliceStopped(f"the connection closed with {count} bytes of the body still to come")
                if n > 0:
                    count -= n
                    in_pipe += n
                    moved = True
            if in_pipe:
                try:
                    n = os.splice(r, dst, in_pipe, flags=_FLAGS)
                except BlockingIOError:
                    n = 0
                in_pipe -= n
                moved = moved or n > 0
            if moved:
                last_move = time.monotonic()
                continue
            if stop.is_set():
                raise SpliceStopped("stopped")
            if time.monotonic() - last_move > idle_timeout_s:
                raise SpliceStopped(f"no byte came for {idle_timeout_s:g} s")
            _wait(src if count and in_pipe < _PIPE_BYTES else None, dst if in_pipe and dst_is_socket else None)
    finally:
        os.close(r)
        os.close(w)


def readable_bytes(sock_fd: int) -> int:
    """How many bytes wait unread on the socket (FIONREAD): a peer that sent more than it announced."""
    buf = array.array("i", [0])
    fcntl.ioctl(sock_fd, termios.FIONREAD, buf)
    return buf[0]


_FLAGS = getattr(os, "SPLICE_F_MOVE", 1) | getattr(os, "SPLICE_F_NONBLOCK", 2)


def _wait(readable: int | None, writable: int | None) -> None:
    poller = select.poll()
    if readable is not None:
        poller.register(readable, select.POLLIN | select.POLLHUP | select.POLLERR)
    if writable is not None:
        poller.register(writable, select.POLLOUT | select.POLLERR)
    if readable is None and writable is None:
        time.sleep(0.001)  # a file destination that returned 0: try again at once, politely
        return
    poller.poll(_SLICE_S * 1000)


def _is_socket(fd: int) -> bool:
    return stat.S_ISSOCK(os.fstat(fd).st_mode)
