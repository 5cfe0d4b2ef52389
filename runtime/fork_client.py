"""The node agent's side of its fork server (see `forkserver`): starting it, asking it for
workers, and holding each forked worker as a process handle with the face of
`asyncio.subprocess.Process` (pid, returncode, wait, kill), so the agent treats forked and
freshly started workers alike.

A worker the server forked is not the agent's child, so the agent cannot wait for it; instead it
holds a pidfd of it (race-free signals, and readable once it exits) and learns its exit code from
the server, which reaps it. If the server dies, its workers live on: the agent then notices
their exits through their pidfds (with the exit code when it can still reap them, e.g. as PID 1
of a container), and starts a new server for the next workers. A server that keeps failing is
given up, and workers start fresh, as they do with KASTOR_FORK_SERVER=0.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import socket
import sys
import time

from kastor.runtime import config

log = logging.getLogger("kastor.forkserver")

MAX_MESSAGE = 1 << 20
# A server that dies this many times within RESTART_WINDOW_S is given up for good.
MAX_RESTARTS = 3
RESTART_WINDOW_S = 60.0


class ForkServerUnavailable(RuntimeError):
    """The fork server could not start a worker; the caller starts it fresh instead."""


class ForkedProcess:
    """A worker the fork server started, as the agent sees it."""

    def __init__(self, pid: int, pidfd: int, stdin_w: int):
        self.pid = pid
        self.returncode: int | None = None
        self.exit_code_known = True  # False once it exited while no fork server could report its code
        self._pidfd = pidfd
        self._stdin_w = stdin_w  # its stdin: closed (so it exits, see launcher.watch_parent) with the agent
        self._exited: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    async def wait(self) -> int:
        return await asyncio.shield(self._exited)

    def send_signal(self, sig: int) -> None:
        if self.returncode is not None:
            raise ProcessLookupError(f"worker process {self.pid} has exited")
        try:
            signal.pidfd_send_signal(self._pidfd, sig)
        except ProcessLookupError:
            pass  # reaped by the fork server, whose report is on its way (as Popen.send_signal)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def exited(self, code: int, known: bool = True) -> None:
        """Its exit: the fork server reaped it with `code`, or (not `known`) it is gone without one."""
        if self._exited.done():
            return
        self.returncode, self.exit_code_known = code, known
        loop = asyncio.get_running_loop()
        loop.remove_reader(self._pidfd)
        for fd in (self._pidfd, self._stdin_w):
            os.close(fd)
        self._exited.set_result(code)

    def orphaned(self) -> None:
        """Its fork server died: watch its pidfd, readable once it exits."""
        if not self._exited.done():
            asyncio.get_running_loop().add_reader(self._pidfd, self._on_pidfd)

    def _on_pidfd(self) -> None:
        try:  # reapable only if it was re-parented to this process (the agent as a container's PID 1)
            result = os.waitid(os.P_PIDFD, self._pidfd, os.WEXITED | os.WNOHANG)
        except ChildProcessError:
            result = None
        if result is None:
            self.exited(-1, known=False)
        else:
            code = result.si_status if result.si_code == os.CLD_EXITED else -result.si_status
            self.exited(code)


def describe_exit(proc: object, code: int) -> str:
    """Why a worker process ended, for logs and actor death causes."""
    if isinstance(proc, ForkedProcess) and not proc.exit_code_known:
        return "worker process exited (its exit code is unknown: the fork server that started it had died)"
    if code >= 0:
        return f"worker process exited with code {code}"
    return f"worker process was killed by signal {signal.Signals(-code).name}"


class ForkServer:
    """The node agent's fork server: started on first use, restarted when it dies, given up
    when it keeps dying (then `spawn` raises ForkServerUnavailable and workers start fresh)."""

    def __init__(self, env: dict[str, str], log_path: str):
        self._env = env
        self._log_path = log_path
        self._sock: socket.socket | None = None
        self._proc: asyncio.subprocess.Process | None = None
        self._start_lock = asyncio.Lock()
        self._pending: dict[int, asyncio.Future[ForkedProcess]] = {}
        self._pending_fds: dict[int, int] = {}  # request id -> the stdin write end it will hold
        self._children: dict[int, ForkedProcess] = {}
        self._next_id = 0
        self._deaths: list[float] = []
        self.given_up = False

    @property
    def pid(self) -> int | None:
        """The running server's pid (None when none runs)."""
        return self._proc.pid if self._proc is not None and self._sock is not None else None

    async def spawn(self, env: dict[str, str], log_path: str, cwd: str | None = None,
                    register_fd: int | None = None) -> ForkedProcess:
        """A worker forked with environment `env`, output appended to `log_path`; `register_fd`,
        its end of its registration socket pair (worker_registration), is passed on to it."""
        for attempt in range(2):
            await self._ensure_started()
            try:
                return await self._request(env, log_path, cwd, register_fd)
            except (BrokenPipeError, ConnectionError):
                # It died and the agent has not read the end of its socket yet: that is now; one
                # new server is tried.
                if self._sock is not None:
                    self._lost()
                if attempt:
                    raise ForkServerUnavailable("the fork server died twice in a row") from None
        raise AssertionError("unreachable")

    async def _request(self, env: dict[str, str], log_path: str, cwd: str | None,
                       register_fd: int | None) -> ForkedProcess:
        assert self._sock is not None
        stdin_r, stdin_w = os.pipe()
        self._next_id += 1
        request_id = self._next_id
        fut = asyncio.get_running_loop().create_future()
        try:
            out_fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                data = json.dumps({"id": request_id, "env": env, "cwd": cwd}).encode()
                fds = [stdin_r, out_fd] + ([register_fd] if register_fd is not None else [])
                socket.send_fds(self._sock, [data], fds)
            finally:
                os.close(out_fd)
        except (BrokenPipeError, ConnectionError):
            os.close(stdin_r)
            os.close(stdin_w)
            raise
        except OSError as e:  # e.g. an environment too large for one message
            os.close(stdin_r)
            os.close(stdin_w)
            raise ForkServerUnavailable(f"could not send the fork server a request: {e}") from e
        os.close(stdin_r)
        self._pending[request_id] = fut
        self._pending_fds[request_id] = stdin_w
        try:
            return await asyncio.wait_for(asyncio.shield(fut), config.STARTUP_TIMEOUT_S)
        except TimeoutError:
            raise ForkServerUnavailable(f"the fork server did not fork within {config.STARTUP_TIMEOUT_S:.0f}s") \
                from None
        finally:
            self._pending.pop(request_id, None)
            fd = self._pending_fds.pop(request_id, None)
            if fd is not None:
                os.close(fd)

    async def _ensure_started(self) -> None:
        async with self._start_lock:
            if self._sock is not None:
                return
            if self.given_up:
                raise ForkServerUnavailable("the fork server was given up (it kept dying); see " + self._log_path)
            await self._start()

    async def _start(self) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            with open(self._log_path, "ab") as log_file:
                self._proc = await asyncio.create_subprocess_exec(
                    sys.executable, "-m", "kastor.runtime.forkserver", "--fd", str(theirs.fileno()),
                    env=self._env, stdin=asyncio.subprocess.DEVNULL, stdout=log_file,
                    stderr=asyncio.subprocess.STDOUT, pass_fds=(theirs.fileno(),))
        except OSError as e:
            ours.close()
            self._died(f"could not start: {e}")
            raise ForkServerUnavailable(f"could not start the fork server: {e}") from e
        finally:
            theirs.close()
        ours.setblocking(False)
        loop = asyncio.get_running_loop()
        try:
            data = await asyncio.wait_for(loop.sock_recv(ours, MAX_MESSAGE), config.STARTUP_TIMEOUT_S)
            hello = json.loads(data) if data else {"error": "it exited before it was ready"}
        except TimeoutError:
            hello = {"error": f"it was not ready within {config.STARTUP_TIMEOUT_S:.0f}s"}
        if "ready" not in hello:
            ours.close()
            if self._proc.returncode is None:
                self._proc.kill()
            self._died(hello.get("error", "bad greeting"))
            raise ForkServerUnavailable(f"the fork server did not start: {hello.get('error')}; see {self._log_path}")
        self._sock = ours
        loop.add_reader(ours, self._on_readable)
        log.info("fork server %d ready", self._proc.pid)

    def _on_readable(self) -> None:
        assert self._sock is not None
        try:
            data, fds, _, _ = socket.recv_fds(self._sock, MAX_MESSAGE, 1)
        except BlockingIOError:
            return
        except OSError:
            data, fds = b"", []
        if not data:
            self._lost()
            return
        message = json.loads(data)
        if "exited" in message:
            child = self._children.pop(message["exited"], None)
            if child is not None:
                child.exited(message["code"])
            return
        fut = self._pending.get(message.get("id"))
        if "pid" in message and fds:
            stdin_w = self._pending_fds.pop(message["id"], None)
            if fut is None or fut.done() or stdin_w is None:  # its requester gave up: nobody will own it
                os.close(fds[0])
                if stdin_w is not None:
                    os.close(stdin_w)
                try:
                    os.kill(message["pid"], signal.SIGKILL)
                except ProcessLookupError:
                    pass
                return
            child = ForkedProcess(message["pid"], fds[0], stdin_w)
            self._children[child.pid] = child
            fut.set_result(child)
        elif fut is not None and not fut.done():
            fut.set_exception(ForkServerUnavailable(f"the fork server refused: {message.get('error')}"))

    def _lost(self) -> None:
        """The server's socket closed: it died. Its workers live on, watched through their pidfds."""
        assert self._sock is not None
        asyncio.get_running_loop().remove_reader(self._sock)
        self._sock.close()
        self._sock = None
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(ForkServerUnavailable("the fork server died while forking"))
        for child in self._children.values():
            child.orphaned()
        self._children.clear()
        self._died("its socket closed")

    def _died(self, why: str) -> None:
        now = time.monotonic()
        self._deaths = [t for t in self._deaths if now - t < RESTART_WINDOW_S] + [now]
        if len(self._deaths) >= MAX_RESTARTS:
            self.given_up = True
            log.warning("the fork server failed %d times within %.0fs (%s); workers start fresh from now on (its "
                        "log: %s)", len(self._deaths), RESTART_WINDOW_S, why, self._log_path)
        else:
            log.warning("the fork server is gone (%s); the next worker starts a new one (its log: %s)",
                        why, self._log_path)

    def close(self) -> None:
        """Stops the server (the agent is shutting down); its workers are the agent's to kill."""
        if self._sock is not None:
            asyncio.get_running_loop().remove_reader(self._sock)
            self._sock.close()
            self._sock = None
        if self._proc is not None and self._proc.returncode is None:
            self._proc.kill()
