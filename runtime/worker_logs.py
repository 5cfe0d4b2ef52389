"""Worker output on the driver: `print()` in a task or actor shows up where its job runs, as in Ray.

The worker's `sys.stdout` and `sys.stderr` are teed. Every write still lands in the worker's
log file; whole lines are also tagged with the running job and a label (the task's function
or the actor's class), taken from the task context so that threads and asyncio tasks are
told apart, and shipped to the head in small batches. The head forwards them on the job's
session stream to its driver, which prints them as `(label pid=N) line`.

Lines written on the core's loop thread are Kastor's own and stay in the file. So does
output written straight to file descriptors 1 and 2 (C extensions, subprocesses).
"""

from __future__ import annotations

import io
import os
import sys
import threading
from collections.abc import Callable

import grpc
from kastor.runtime import context
from kastor.runtime.core import CoreWorker
from kastor.runtime.protocol import kastor_pb2 as pb

SHIP_DELAY_S = 0.05  # gathers a burst of prints into one message
MAX_PENDING_LINES = 10_000  # a driver-less flood is cut here, not buffered without bound

Key = tuple[bytes, str, bool]  # (job id, label, is stderr)


class LogShipper:
    def __init__(self, core: CoreWorker, fallback: Callable[[], tuple[bytes, str] | None]):
        self._core = core
        self._fallback = fallback  # (job, label) for lines outside any task, e.g. an actor's own threads
        self._lock = threading.Lock()
        self._partial: dict[Key, str] = {}
        self._pending: dict[Key, list[str]] = {}
        self._count = 0
        self._dropped = 0
        self._scheduled = False
        self._pid = os.getpid()

    def install(self) -> None:
        sys.stdout = _Tee(sys.stdout, self, is_err=False)
        sys.stderr = _Tee(sys.stderr, self, is_err=True)

    def add(self, text: str, is_err: bool) -> None:
        if self._core.on_loop_thread():
            return
        task = context.current_task.get()
        owner = (task.job_id, task.label) if task is not None and task.job_id else self._fallback()
        if owner is None:
            return
        key = (owner[0], owner[1], is_err)
        with self._lock:
            *lines, rest = (self._partial.pop(key, "") + text).split("\n")
            if rest:
                self._partial[key] = rest
            if not lines:
                return
            self._pending.setdefault(key, []).extend(lines)
            self._count += len(lines)
            if self._count > MAX_PENDING_LINES:
                self._trim()
            if self._scheduled:
                return
            self._scheduled = True
        self._core.post(self._ship_soon)

    def _trim(self) -> None:
        for lines in self._pending.values():
            cut = min(len(lines), self._count - MAX_PENDING_LINES)
            del lines[:cut]
            self._count -= cut
            self._dropped += cut

    def _ship_soon(self) -> None:
        loop = self._core.loop
        loop.call_later(SHIP_DELAY_S, lambda: loop.create_task(self._ship()))

    async def _ship(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, {}
            dropped, self._dropped = self._dropped, 0
            self._count = 0
            self._scheduled = False
        logs = [pb.WorkerLog(job_id=job_id, label=label, pid=self._pid, ip=self._core.ip, is_err=is_err, lines=lines)
                for (job_id, label, is_err), lines in pending.items() if lines]
        if dropped and logs:
            logs[0].lines.insert(0, f"[kastor: {dropped} lines of output dropped; the driver was not keeping up]")
        if not logs:
            return
        try:
            await self._core.head_rpc("PublishLogs", pb.PublishLogsRequest(logs=logs), timeout=10)
        except (grpc.aio.AioRpcError, ConnectionError):
            pass  # the lines are still in the worker's log file


class _Tee(io.TextIOBase):
    """A text stream that writes through to `inner` and hands a copy to the shipper."""

    def __init__(self, inner, shipper: LogShipper, is_err: bool):
        self._inner = inner
        self._shipper = shipper
        self._is_err = is_err

    def write(self, text: str) -> int:
        n = self._inner.write(text)
        self._shipper.add(text, self._is_err)
        return n

    def flush(self) -> None:
        self._inner.flush()

    def fileno(self) -> int:
        return self._inner.fileno()

    def isatty(self) -> bool:
        return self._inner.isatty()

    def writable(self) -> bool:
        return True

    @property
    def encoding(self) -> str:
        return self._inner.encoding

    @property
    def buffer(self):
        return self._inner.buffer
