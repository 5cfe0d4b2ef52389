"""The fork server: one per node agent, a process that has imported the worker runtime and forks
workers on request, so that starting an actor costs a fork instead of an interpreter start and
the imports (gRPC, protobuf, cloudpickle, the runtime) are shared copy-on-write between workers.

Why it is safe to fork here: the server imports modules but never starts a gRPC channel, server
or any thread (gRPC's core is initialised lazily, by the first channel or server; a process
whose gRPC threads exist cannot fork safely, GRPC_ENABLE_FORK_SUPPORT or not). It checks that it
has one thread before it announces itself ready, and refuses to serve otherwise.

It talks only to its node agent, over a Unix socket pair the agent created and passed down (no
path in the filesystem, so nothing else can reach it). Each request carries the worker's
environment and working directory, and two or three file descriptors: the read end of a pipe
whose write end the agent keeps (the worker's stdin, which `launcher.watch_parent` watches), the
worker's log file (its stdout and stderr) and, if sent, the worker's end of the socket pair it
registers on (`worker_registration`; its number in the child goes into KASTOR_REGISTER_FD). The
reply carries a pidfd of the child, through which the agent signals it and notices its exit even
if this server dies; while it lives, the server reaps its children and sends each exit code. The
agent side is `fork_client`.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import select
import signal
import socket
import sys
import threading
import traceback

# What a worker imports before it serves: imported once here and shared by every forked worker.
# That includes the public API (`kastor`, which user code imports): Python imports a package
# before its sub-packages, so importing kastor.runtime runs kastor/__init__.py, which imports
# the public modules. This module need not (and, being in the runtime, may not) name it.
import cloudpickle  # noqa: F401
import grpc  # noqa: F401
import grpc.aio  # noqa: F401
from kastor.runtime import settings, worker

try:  # the core's loop (event_loops.new_event_loop): ~10 ms of import per worker if each one did it after the fork
    import uvloop  # noqa: F401
except ImportError:
    pass

MAX_MESSAGE = 1 << 20
# Set in a worker that this server forked: what tells an actor (and the tests) where it came from.
FORKED_FROM: int | None = None
# The modules the server had imported when it began to serve (set once, shared by its children):
# what a worker imports after its fork is start time that every actor pays (imported_since_fork).
SERVER_MODULES: frozenset[str] = frozenset()


def forked_from() -> int | None:
    """The pid of the fork server this process was forked from, or None if it started fresh."""
    return FORKED_FROM


def imported_since_fork() -> list[str]:
    """The modules this process imported after the fork server forked it ([] if it started
    fresh): each one costs every forked worker its import, so the server should preload it."""
    if FORKED_FROM is None:
        return []
    return sorted(set(sys.modules) - SERVER_MODULES)


def _threads() -> int:
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return threading.active_count()


def _send(sock: socket.socket, message: dict, fds: list[int] = ()) -> None:
    data = json.dumps(message).encode()
    if fds:
        socket.send_fds(sock, [data], list(fds))
    else:
        sock.send(data)


def _run_child(request: dict, stdin_fd: int, out_fd: int, register_fd: int | None, server_fds: list[int]) -> None:
    """In the forked child: become a worker as `python -m kastor.runtime.worker` would. Never returns."""
    global FORKED_FROM
    code = 1
    try:
        FORKED_FROM = os.getppid()
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        for fd in server_fds:  # the agent must see the server's socket close when the server dies
            os.close(fd)
        os.dup2(stdin_fd, 0)
        os.dup2(out_fd, 1)
        os.dup2(out_fd, 2)
        os.close(stdin_fd)
        os.close(out_fd)
        if request.get("cwd"):
            os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        if register_fd is not None:  # the agent named its own number for it; this is the child's
            os.environ[settings.REGISTER_FD.name] = str(register_fd)
        sys.argv = [worker.__file__]
        gc.enable()  # the server froze its imports (gc.freeze), so collecting does not touch their pages
        worker.main()
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except BaseException:
        traceback.print_exc()
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def _spawn(sock: socket.socket, request: dict, fds: list[int], server_fds: list[int]) -> None:
    if len(fds) not in (2, 3):
        for fd in fds:
            os.close(fd)
        _send(sock, {"id": request.get("id"), "error": f"expected 2 or 3 file descriptors, got {len(fds)}"})
        return
    stdin_fd, out_fd = fds[:2]
    register_fd = fds[2] if len(fds) == 3 else None
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        _run_child(request, stdin_fd, out_fd, register_fd, server_fds)
    for fd in fds:
        os.close(fd)
    pidfd = os.pidfd_open(pid)  # not yet reaped (only this loop reaps), so it is this child's
    try:
        _send(sock, {"id": request["id"], "pid": pid}, [pidfd])
    finally:
        os.close(pidfd)


def _reap(sock: socket.socket) -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        _send(sock, {"exited": pid, "code": os.waitstatus_to_exitcode(status)})


def serve(fd: int) -> int:
    sock = socket.socket(fileno=fd)
    sock.setblocking(True)
    if _threads() != 1:
        _send(sock, {"error": f"the fork server has {_threads()} threads after its imports; forking it is unsafe"})
        return 1
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    # Move everything imported so far out of the collector's reach: a child's collections then do
    # not write to (and so copy) the pages it shares with this server and its siblings.
    global SERVER_MODULES
    SERVER_MODULES = frozenset(sys.modules)
    gc.freeze()
    _send(sock, {"ready": os.getpid()})
    server_fds = [sock.fileno(), wake_r, wake_w]
    while True:
        readable, _, _ = select.select([sock, wake_r], [], [])
        if wake_r in readable:
            try:
                while os.read(wake_r, 4096):
                    pass
            except BlockingIOError:
                pass
            _reap(sock)
        if sock in readable:
            data, fds, _, _ = socket.recv_fds(sock, MAX_MESSAGE, 3)
            if not data:
                return 0  # the agent is gone; its workers see their stdin close and exit on their own
            _spawn(sock, json.loads(data), fds, server_fds)
            _reap(sock)


def main(argv: list[str] | None = None) -> None:
    gc.disable()  # re-enabled in each child, after gc.freeze()
    parser = argparse.ArgumentParser(prog="kastor-forkserver", description="Kastor's fork server (node agent only)")
    parser.add_argument("--fd", type=int, required=True, help="the agent's end of a Unix SOCK_SEQPACKET pair")
    args = parser.parse_args(argv)
    try:
        code = serve(args.fd)
    except (BrokenPipeError, ConnectionResetError):
        code = 0  # the agent went away mid-reply
    sys.stdout.flush()
    os._exit(code)


if __name__ == "__main__":
    # Run as the imported module, not as __main__, so a forked worker's `forked_from()` is this one's.
    from kastor.runtime import forkserver
    forkserver.main()
