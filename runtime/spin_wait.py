"""A short spin before a lane's thread sleeps: a sync call's wake-ups, not its work, were its cost.

Why: a thread asleep in `recv` or `epoll_wait` on an idle CPU is woken by the other side's send
through the scheduler, and on the VMs Kastor runs on that wake-up costs tens of microseconds (the
idle vCPU halts and must be woken). A sync actor call pays two: the worker's main thread woken
by the call, the caller's thread by the result. Measured on the 2-core VM (bench/README.md,
"Step four: both ends of a lane spin before they sleep"): a blocking Python ping-pong over
loopback TCP with 40 µs of work on each side took 216-230 µs per round trip; polling the socket
for up to 100 µs before blocking, on both sides, 96-100 µs, the sum of the work. So a lane's two
ends poll for a short window before they block (fast_lane.py: the caller waiting for its
result; lane_host.py: the actor's main thread waiting for the next call), and so does a durable
actor's save waiting for Redis's reply (checkpoint_stores.RedisStore).

Bounded, so an actor or a caller that waits longer pays almost nothing:

- a spin lasts at most the window (`KASTOR_SPIN_US`, 200 µs; 0 turns spinning off);
- `SpinPolicy` stops spinning after MISSES_BEFORE_BACKOFF waits in a row outlasted the window
  (a slow method, a caller that thinks between calls), then spins once every PROBE_EVERY
  waits to notice when the waits are short again;
- each turn of the loop is a syscall that lets go of the GIL, then `sched_yield`, so another
  thread of the process, or a process with work on this CPU, runs before the spinner goes on;
  CONTENDED_YIELDS yields that gave the CPU away (each took longer than CONTENDED_YIELD_S) end
  the spin as a miss: on a busy machine a spinner takes the CPU from work (8 caller processes
  and their 8 actors on 2 cores ran ~15% slower while they spun through their yields). One
  such yield is not enough: it often ran the peer, which is why a spin looks once more after
  its last yield.
"""

from __future__ import annotations

import os
import select
import socket
import time
from collections.abc import Callable
from typing import TypeVar

from kastor.runtime import settings

T = TypeVar("T")

MISSES_BEFORE_BACKOFF = 1  # waits in a row longer than the window before spinning stops
PROBE_EVERY = 16  # while stopped, one wait in this many spins again
CONTENDED_YIELD_S = 20e-6  # a sched_yield this long ran something else: the CPU has other work
CONTENDED_YIELDS = 3  # yields in one spin that ran something else before it stops


class SpinPolicy:
    """Whether the next wait of one lane end spins, from how its last waits went. Used by one
    thread at a time (a lane's reader, or the actor's main thread), so it takes no lock."""

    def __init__(self, window_s: float | None = None) -> None:
        self.window_s = settings.SPIN_US.get() / 1e6 if window_s is None else window_s
        self._misses = 0  # waits in a row the window did not cover
        self._skipped = 0  # waits not spun since spinning stopped
        self.spins = 0  # waits that spun (tests and diagnostics read them)
        self.hits = 0  # spins that found what they waited for

    def should_spin(self) -> bool:
        if self.window_s <= 0:
            return False
        if self._misses < MISSES_BEFORE_BACKOFF:
            return True
        self._skipped += 1
        if self._skipped >= PROBE_EVERY:
            self._skipped = 0
            return True
        return False

    def record(self, hit: bool) -> None:
        """The outcome of a spin: `hit` if what it waited for came within the window."""
        self.spins += 1
        if hit:
            self.hits += 1
            self._misses = 0
        else:
            self._misses += 1

    def wait(self, look: Callable[[], T | None], timeout: float | None = None) -> T | None:
        """What `look()` finds (not None) within the window, or within `timeout` if shorter;
        None when this wait does not spin or nothing came: then the caller blocks as usual."""
        if not self.should_spin():
            return None
        found = first(look, self.window_s if timeout is None else min(self.window_s, timeout))
        self.record(found is not None)
        return found


def recv_now(sock: socket.socket, size: int = 1 << 16) -> bytes | None:
    """What `sock` (a blocking socket: no timeout set, or Python polls before each recv) has
    now, b"" at its end; None if nothing."""
    try:
        return sock.recv(size, socket.MSG_DONTWAIT)
    except BlockingIOError:
        return None


def events_now(epoll: select.epoll) -> list[tuple[int, int]] | None:
    """The events `epoll` has now; None if none."""
    return epoll.poll(0) or None


def first(look: Callable[[], T | None], window_s: float) -> T | None:
    """The first thing `look()` finds (not None), looking between yields for up to `window_s`."""
    spin = _Spin(window_s)
    while True:
        found = look()
        if found is not None or spin.over:
            return found
        spin.yield_once()  # then one more look, even when over: what ran meanwhile may have been the peer


class _Spin:
    """One spin's clock: over once the window has passed or CONTENDED_YIELDS yields gave the
    CPU to something else (the CPU is wanted)."""

    def __init__(self, window_s: float) -> None:
        self._end = time.perf_counter() + window_s
        self._contended = 0
        self.over = False

    def yield_once(self) -> None:
        before = time.perf_counter()
        if before >= self._end:
            self.over = True
            return
        os.sched_yield()
        if time.perf_counter() - before >= CONTENDED_YIELD_S:
            self._contended += 1
            self.over = self._contended >= CONTENDED_YIELDS
