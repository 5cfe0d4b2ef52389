"""Handing work to an event loop from another thread, one wake-up per burst.

`loop.call_soon_threadsafe` writes to the loop's self-pipe on every call: a system call that
releases the GIL, and a wake-up of the loop's thread. An async actor used it once per call
its worker's core loop dispatched, so a frame of 300 pipelined calls cost 300 writes and as
many GIL hand-overs between the core loop and the actor's loop (bench/README.md, "Pipelined
calls"). An inbox queues the callbacks and wakes the loop only when no wake-up is pending:
the loop then runs everything queued, in order.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable

log = logging.getLogger("kastor.loop_inbox")


class LoopInbox:
    """Runs the callables given to `post` (from any thread) on `loop`, in the order given."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._queue: deque[Callable[[], None]] = deque()
        self._wake_pending = False

    def post(self, fn: Callable[[], None]) -> None:
        self._queue.append(fn)
        if not self._wake_pending:
            # Set before the wake-up is scheduled, and cleared by the loop before it drains: a
            # callable appended after the drain emptied the queue always finds it cleared.
            self._wake_pending = True
            try:
                self._loop.call_soon_threadsafe(self._drain)
            except RuntimeError:  # the loop closed: this process is exiting
                self._wake_pending = False

    def _drain(self) -> None:
        self._wake_pending = False
        queue = self._queue
        while queue:
            fn = queue.popleft()
            try:
                fn()
            except Exception:
                log.exception("a callable posted to an event loop failed")
