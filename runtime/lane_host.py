"""A serial actor's lanes, read and answered on its main thread (issue 16, step three).

Why: on the core loop's path the worker makes two thread hand-offs per call (the loop reads
the frame and puts the call on `main_queue`; the method thread posts the result back to the
loop, which writes it: hops 4 and 5 in bench/README.md, "The remaining gap"). A caller's
*lane* (fast_lane.py) carries one sync call at a time, so for a serial actor (max_concurrency=1,
not async, no concurrency groups), which runs one call at a time on its main thread anyway,
that thread can read the lane's frame itself, run the method and write the result frame on the
same socket.

How a connection becomes a lane here: the caller's first frame is the cluster token followed by
LANE_MARK. The data server checks the token (nothing else is parsed before it), and if the
engine serves lanes (`Engine.adopt_lane`: a constructed serial actor, KASTOR_LANE_EXECUTION
on) and the connection is plain TCP, it takes the socket out of the loop's transport
(a duplicate of its descriptor; the transport is dropped before it read anything more), writes
the accept frame and hands the socket to the main thread through `main_queue`. Otherwise the
connection is served on the loop as any other (`LANE_MARK` then means nothing).

The main thread then waits on a selector over its lanes and a pipe: every `main_queue.put`
writes a byte to the pipe while a lane is open (`LaneHost.wake`), so calls of other callers
(the loop's path) are not stuck behind an idle lane. With no lane open nothing is written and
the main thread blocks in `main_queue.get()` as before, so an actor without lanes pays nothing.
Before it sleeps on the selector, the main thread polls it for a short window (spin_wait.py):
a lane's caller usually sends its next call within it, and the wake-up would cost more than the
call's work.

Fallbacks to the loop's path, each kept on purpose:

- TLS: the data port's TLS state lives in the loop's SSL transport and cannot be handed to a
  thread, so a TLS lane is served on the loop (the caller cannot tell);
- threaded and async actors, actors with concurrency groups, a worker still starting or
  constructing its actor, and an actor that is exiting: served on the loop;
- a call whose arguments made borrows here: it runs on the main thread, which then waits for
  the owners' acknowledgements (as the loop's `borrows.after_flush` would) before it writes the
  result.
"""

from __future__ import annotations

import collections
import logging
import os
import queue
import select
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kastor.runtime import spin_wait
from kastor.runtime.frames import HEADER_BYTES, MAX_FRAME_BYTES
from kastor.runtime.protocol import kastor_pb2 as pb

log = logging.getLogger("kastor.lane_host")

LANE_POLL_EVERY = 16  # while lanes are open, the main thread looks at them after this many queued calls
LANE_MARK = b"\x00kastor-lane/1"  # after the token in a lane's first frame: "serve me on the actor's thread"


def one_item_frame(item: bytes) -> bytes:
    """The frame of an ExecuteRequest (or ExecuteReply) holding one serialized TaskSpec (or
    TaskResult): the bytes protobuf writes for it (field 1, length-delimited), without first
    copying the message into a wrapper. Why: `ExecuteRequest(tasks=[spec])` deep-copies the
    spec, ~4 µs of a lane call's caller (and ~1 µs of the worker's reply), every call."""
    n = len(item)
    if n < 0x80:
        tag = bytes((0x0A, n))
    else:
        head = bytearray(b"\x0a")
        while n >= 0x80:
            head.append((n & 0x7F) | 0x80)
            n >>= 7
        head.append(n)
        tag = bytes(head)
    return (len(tag) + len(item)).to_bytes(HEADER_BYTES, "big") + tag + item


def split_lane_mark(first_frame: bytes) -> tuple[bytes, bool]:
    """(the token part of a first frame, whether the caller asked to be served as a lane)."""
    if first_frame.endswith(LANE_MARK):
        return first_frame[:-len(LANE_MARK)], True
    return first_frame, False


@dataclass(eq=False)
class ServedLane:
    """One lane at the worker: its socket, the bytes read past the last whole frame, and the
    engine's accounting for it (an `_Outbox`: what `lease_state` and exit read)."""

    sock: socket.socket
    outbox: Any
    on_closed: Callable[[], None]
    buf: bytearray = field(default_factory=bytearray)
    frame_started: float = 0.0
    ended: bool = False  # the caller's empty frame came: no more calls


@dataclass(frozen=True)
class LaneCall:
    """A call read from a lane, for the main thread to run and answer on the same lane."""

    lane: ServedLane
    spec: pb.TaskSpec


class LaneHost:
    """The main thread's lanes (touched by the main thread only, except `wake`)."""

    def __init__(self, receive_timeout: float) -> None:
        self._timeout = receive_timeout
        # epoll itself, not `selectors`: its Python wrapper (a SelectorKey per event, a map
        # lookup per fd) was a tenth of the main thread's own time per lane call.
        self._poll = select.epoll()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._poll.register(self._wake_r, select.EPOLLIN)
        self._by_fd: dict[int, ServedLane] = {}
        # Lanes holding part of a frame: only they have a receive deadline to wait for and
        # check, so an idle or whole-frame lane costs a wait no scan of the lanes.
        self._partial: set[ServedLane] = set()
        self._ready: collections.deque[LaneCall] = collections.deque()
        self._lanes: set[ServedLane] = set()
        self.active = False  # a lane is open: the main thread waits on the selector, not on main_queue
        # Set by the main thread before it last looks at main_queue and waits on the selector,
        # cleared after: a put that finds it False needs no wake-up (the main thread looks at
        # the queue again before it next waits), so a busy main thread costs a put no syscall.
        self.waiting = False
        self._queue_streak = 0  # main_queue items run in a row while lanes are open (LANE_POLL_EVERY)
        self.calls = 0  # calls read from lanes and answered on them (tests and diagnostics read it)
        self.adopted = 0  # lanes taken over from the data port
        self.flush_waits = 0  # lane results that waited for borrows to be acknowledged (Engine._serve_lane_call)
        self.spin = spin_wait.SpinPolicy()  # the wait for the next call polls first (spin_wait.py)

    # ---- any thread ----

    def wake(self) -> None:
        """Called after each `main_queue.put`: the main thread may be waiting on its lanes."""
        if self.waiting:
            self.waiting = False  # one wake-up is enough: the main thread looks at the queue before it waits again
            try:
                os.write(self._wake_w, b"\0")
            except (BlockingIOError, OSError):
                pass  # the pipe is full of wake-ups already

    # ---- the main thread ----

    def open_lanes(self) -> int:
        return len(self._lanes)

    def adopt(self, lane: ServedLane) -> None:
        try:
            lane.sock.setblocking(False)
            self._poll.register(lane.sock.fileno(), select.EPOLLIN)
            self._by_fd[lane.sock.fileno()] = lane
        except (OSError, ValueError):  # it broke before it got here
            lane.sock.close()
            lane.on_closed()
            return
        self._lanes.add(lane)
        self.adopted += 1
        self.active = True
        if lane.buf:  # bytes the data server read past the token
            lane.frame_started = time.monotonic()
            self._frames(lane)

    def next_item(self, main_queue: queue.SimpleQueue) -> Any:
        """The main thread's next work while a lane is open: an item of `main_queue`, or a call
        read from a lane. Queued items go first, but the lanes are looked at after every
        LANE_POLL_EVERY of them, so a lane's caller waits behind a stream of queued calls for
        a bounded number of them. (Not after each: a look is a syscall that lets go of the GIL,
        and with the core loop busy feeding the queue, taking it back cost the main thread a
        wait per call: 0.35 voluntary switches per call instead of 0.09 in a 5,000-call burst.)"""
        self._queue_streak += 1
        if self._queue_streak >= LANE_POLL_EVERY:
            self._queue_streak = 0
            if (call := self.next_call(block=False)) is not None:
                return call
        while True:
            self.waiting = True  # before the queue is looked at: a put from now on wakes the selector
            try:
                item = main_queue.get_nowait()
            except queue.Empty:
                pass
            else:
                self.waiting = False
                return item
            if not self.active:
                self.waiting = False
                return main_queue.get()
            try:
                call = self.next_call(block=True)
            finally:
                self.waiting = False
            if call is not None:
                self._queue_streak = 0
                return call

    def next_call(self, block: bool) -> LaneCall | None:
        """A call read from a lane; None when there is none (block=False), or when the wait was
        woken by `main_queue` (block=True: the caller looks at the queue again)."""
        while True:
            if self._ready:
                return self._ready.popleft()
            timeout = self._select_timeout() if block else 0.0
            # The lanes' (and the wake pipe's) events if any came within the spin window, before
            # the main thread sleeps: a lane's caller usually sends its next call within it.
            events = (self.spin.wait(lambda: spin_wait.events_now(self._poll), timeout) if block else None) or []
            if not events:
                try:
                    events = self._poll.poll(-1 if timeout is None else timeout)
                except InterruptedError:  # PEP 475 retries; kept for a signal handler that returns
                    events = []
            woken = False
            for fd, _ in events:
                lane = self._by_fd.get(fd)
                if lane is None:
                    if fd == self._wake_r:
                        self._drain_wake()
                        woken = True
                else:
                    self._read(lane)
            if self._partial:
                self._expire_stalled()
            if self._ready:
                continue
            if woken or not block or not self._lanes:
                return None

    def answer(self, call: LaneCall, result: pb.TaskResult) -> None:
        """Writes the result frame on the call's lane; a lane that cannot take it is closed
        (its caller handles the call as lost, as for a broken stream)."""
        lane = call.lane
        if lane.sock.fileno() < 0:
            return
        payload = one_item_frame(result.SerializeToString())
        try:
            try:
                sent = lane.sock.send(payload)  # the socket is non-blocking: a result fits its buffer in one go
            except BlockingIOError:
                sent = 0
            if sent < len(payload):  # a big result, or a caller slow to read: wait, within the receive timeout
                lane.sock.settimeout(self._timeout)  # a caller that stops reading cannot hold the actor for ever
                try:
                    lane.sock.sendall(payload[sent:])
                finally:
                    lane.sock.setblocking(False)
        except OSError as e:
            log.debug("a lane broke while its result was written: %s", e)
            lane.outbox.delivered += 1  # nobody will read it: the caller handles the call as lost
            self.close(lane)
            return
        lane.outbox.delivered += 1
        self.calls += 1
        if lane.ended and not self._has_calls(lane):
            self.close(lane)

    def close(self, lane: ServedLane) -> None:
        if lane not in self._lanes:
            return
        self._lanes.discard(lane)
        self._partial.discard(lane)
        self.active = bool(self._lanes)
        fd = lane.sock.fileno()
        if self._by_fd.get(fd) is lane:
            del self._by_fd[fd]
            try:
                self._poll.unregister(fd)
            except (OSError, ValueError):
                pass
        lane.sock.close()
        self._ready = collections.deque(c for c in self._ready if c.lane is not lane)
        lane.on_closed()

    # ---- reading ----

    def _has_calls(self, lane: ServedLane) -> bool:
        return any(c.lane is lane for c in self._ready)

    def _drain_wake(self) -> None:
        try:
            os.read(self._wake_r, 65536)  # one read: any byte left over only makes the next select return at once
        except BlockingIOError:
            pass

    def _read(self, lane: ServedLane) -> None:
        try:
            data = lane.sock.recv(1 << 16)
        except BlockingIOError:
            return
        except OSError as e:
            log.debug("a lane broke: %s", e)
            self.close(lane)
            return
        if not data:
            self.close(lane)  # the caller went away; a call it sent and we ran is answered into nothing
            return
        if not lane.buf and len(data) > HEADER_BYTES and \
                int.from_bytes(data[:HEADER_BYTES], "big") == len(data) - HEADER_BYTES:
            self._payload(lane, data[HEADER_BYTES:])  # one whole frame (a sync call's usual read): no buffering
            return
        if not lane.buf:
            lane.frame_started = time.monotonic()
        lane.buf += data
        self._frames(lane)

    def _frames(self, lane: ServedLane) -> None:
        buf = lane.buf
        while len(buf) >= HEADER_BYTES:
            n = int.from_bytes(buf[:HEADER_BYTES], "big")
            if n > MAX_FRAME_BYTES:
                log.warning("a lane sent a frame of %d bytes, over the limit of %d; closing it", n, MAX_FRAME_BYTES)
                self.close(lane)
                return
            if len(buf) < HEADER_BYTES + n:
                break
            payload = bytes(buf[HEADER_BYTES:HEADER_BYTES + n])
            del buf[:HEADER_BYTES + n]
            lane.frame_started = time.monotonic()
            if not self._payload(lane, payload):
                break
        if buf and lane in self._lanes:  # part of a frame: its receive deadline runs
            self._partial.add(lane)
        else:
            self._partial.discard(lane)

    def _payload(self, lane: ServedLane, payload: bytes) -> bool:
        """Queues the calls of one frame's payload; False if the lane is done with (its end, or
        a frame that did not parse)."""
        if not payload:  # no more calls: closed once those read are answered
            lane.ended = True
            if not self._has_calls(lane):
                self.close(lane)
            return False
        try:
            request = pb.ExecuteRequest.FromString(payload)
        except Exception:  # protobuf's DecodeError and friends
            log.warning("a lane's ExecuteRequest frame did not parse; closing it")
            self.close(lane)
            return False
        for spec in request.tasks:
            lane.outbox.expected += 1
            self._ready.append(LaneCall(lane, spec))
        return True

    def _select_timeout(self) -> float | None:
        started = [lane.frame_started for lane in self._partial]
        if not started:
            return None
        return max(0.0, min(started) + self._timeout - time.monotonic())

    def _expire_stalled(self) -> None:
        now = time.monotonic()
        for lane in [lane for lane in self._partial if now - lane.frame_started >= self._timeout]:
            log.warning("a lane's frame did not arrive in full within %gs (KASTOR_RECEIVE_TIMEOUT_S); closing it",
                        self._timeout)
            self.close(lane)
