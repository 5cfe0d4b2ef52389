"""Starting Kastor's long-running processes and knowing when they are ready or must stop.

A child reports readiness by writing its address to an inherited pipe, so a parent waits
on an event, not on a sleep; embedded children also watch their stdin and exit when the
parent that started them goes away.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import select
import signal
import socket
import subprocess
import sys
from collections.abc import Callable

from kastor.runtime import config, session_dirs

log = logging.getLogger("kastor.launcher")


def new_session_dir(kind: str) -> str:
    """A new session folder (with `logs/`), kept while this process or any Child it starts runs;
    dead ones beyond the newest few are pruned (see session_dirs)."""
    return session_dirs.new(kind)


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on or connects from now, for a server that binds it later.

    Chosen below the kernel's ephemeral range: `bind(0)` hands out an ephemeral port, and any
    outgoing connection on the machine may take that port before the server binds it (a test's
    operator once failed to start with "address already in use" that way). Outside the range
    only another server choosing the same port at random can collide.
    """
    low = _ephemeral_low()
    if low > _LOWEST_CHOSEN_PORT + 1000:
        rng = random.SystemRandom()
        for _ in range(100):
            port = rng.randrange(_LOWEST_CHOSEN_PORT, low)
            with socket.socket() as s:
                try:
                    s.bind((host, port))
                except OSError:
                    continue
                return port
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


_LOWEST_CHOSEN_PORT = 10000  # below: well-known and commonly configured service ports


def _ephemeral_low() -> int:
    """The first port of the kernel's ephemeral range (Linux; 32768 where it cannot be read)."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def announce_ready(fd: int | None, address: str, **extra: str) -> None:
    """Tells the parent this process serves at `address`; `extra` (e.g. dashboard=URL) rides
    along as key=value words, read back by `Child.wait_ready` into `Child.ready_info`."""
    words = " ".join([address, *(f"{k}={v}" for k, v in extra.items() if v)])
    if fd is None:
        print(f"KASTOR_READY {words}", flush=True)
        return
    os.write(fd, f"{words}\n".encode())
    os.close(fd)


async def wait_for_stop(exit_with_parent: bool) -> None:
    """Returns on SIGTERM/SIGINT, or (embedded) when the parent closes our stdin."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if exit_with_parent:
        watch_parent(loop, stop.set)
    await stop.wait()


def watch_parent(loop: asyncio.AbstractEventLoop, on_gone: Callable[[], None]) -> None:
    """Calls `on_gone` (on the loop) once our stdin, a pipe the parent holds, reaches its end:
    the parent exited or died, and an embedded process must not outlive it (no orphans).

    Watched from the event loop, not from a thread of its own: a worker keeps its threads to
    the main one, the core loop and gRPC's (tests/test_ray_compat_workers.py). Call it on the
    loop's thread."""
    fd = sys.stdin.fileno()
    os.set_blocking(fd, False)

    def on_readable() -> None:
        try:
            data = os.read(fd, 4096)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            loop.remove_reader(fd)
            on_gone()

    try:
        loop.add_reader(fd, on_readable)
    except (PermissionError, OSError) as e:  # stdin is a file or a terminal, not the parent's pipe
        log.warning("not watching the parent process: stdin is not a pipe (%s)", e)


class Child:
    """A started Kastor process whose address arrives on a pipe once it serves."""

    def __init__(self, module: str, args: list[str], env: dict[str, str], log_path: str,
                 embedded: bool = True):
        self.module = module
        self.log_path = log_path
        read_fd, write_fd = os.pipe()
        cmd = [sys.executable, "-m", module, *args, "--ready-fd", str(write_fd)]
        if embedded:
            cmd.append("--exit-with-parent")
        with open(log_path, "ab") as log:
            self.proc = subprocess.Popen(
                cmd, env=env, stdin=subprocess.PIPE if embedded else subprocess.DEVNULL,
                stdout=log, stderr=subprocess.STDOUT, pass_fds=(write_fd, *session_dirs.held_fds()),
                start_new_session=not embedded)
        os.close(write_fd)
        self._read_fd = read_fd
        self.ready_info: dict[str, str] = {}  # what the child announced beside its address

    def wait_ready(self, timeout: float = config.STARTUP_TIMEOUT_S) -> str:
        try:
            ready, _, _ = select.select([self._read_fd], [], [], timeout)
            line = os.read(self._read_fd, 4096).decode().strip() if ready else ""
        finally:
            os.close(self._read_fd)
        if not line:
            if ready:  # the pipe closed without an address: the child is exiting
                try:
                    self.proc.wait(5)
                except subprocess.TimeoutExpired:
                    pass
            exited = self.proc.poll() is not None
            self.proc.kill()
            how = f"exited with code {self.proc.returncode}" if exited else f"did not start within {timeout}s"
            raise RuntimeError(f"{self.module} {how}; its log {self.log_path} ends with:\n{tail(self.log_path)}")
        address, *extra = line.split()
        self.ready_info = dict(word.split("=", 1) for word in extra)
        return address

    def stop(self, grace: float = 3.0) -> None:
        if self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(grace)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def tail(path: str, lines: int = 20) -> str:
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-lines:])
    except OSError:
        return ""
