"""A synchronous actor call that the calling thread sends and reads itself (issue 16, step two).

Why: on the core loop's path a sync call `get(actor.m.remote())` makes two thread hand-offs
on the caller's side (the calling thread posts the call to the core loop, and the loop wakes
the thread when the result is stored: hops 1 and 8 in bench/README.md, "The remaining gap").
A lane is one actor's second connection to its worker's data port, owned by no loop: the
thread that makes the call writes the frame at `.remote()`, and the same thread blocks in
`recv` on it in `get`. At the worker, a serial actor's main thread reads the lane, runs the call
and writes the result itself (lane_host.py, step three); other actors, and TLS lanes, are
served by the data port's ordinary stream (data_server.py).

When the fast path is taken (ActorSubmitter.send_from_thread decides; every condition is
checked under the lane's lock):

- the call: one return, not a generator, no ref among its top-level arguments (a call that
  waits for its arguments goes through the loop), made on a user thread that runs no event
  loop (not the core's, and not an async actor's or the user's: there the ref is awaited);
- the actor: a serial one (max_concurrency=1, not async, no concurrency groups). It runs one
  call at a time in order anyway, so a call that waits for the one on the lane to finish loses
  no concurrency; an async or threaded actor's calls overlap, and stay on the loop;
- this process has a framed stream to the actor (`KASTOR_FRAMED_CALLS` on, or a remote client's
  through the client port's frame relay, whose lanes the relay opens as lanes at the worker;
  not with TLS) that the worker accepted and that is not lost: the first call to an actor, and
  the first after it restarted, go through the loop, which learns where it lives;
- no call of this process to the actor is queued, in flight or unfinished on the loop's path
  (a per-lane count of them, taken under the lock before they are posted), no other call is on
  the lane, and the actor's handle is not released;
- the caller makes its calls one at a time: the last SYNC_STREAK calls to the actor (this one
  included) each found nothing of this process in flight to it. A burst (calls made before the
  earlier ones are back) stays on the loop, which sends it in one frame; on a lane its first
  call would hold the rest for a round trip (a burst of 20 ran at ~0.75x);
- the calling thread has no other call on any lane: a thread that makes several calls before
  it gets them (a fan-out to many actors) sends the first on a lane and the others through the
  loop, whose thread then sends them while this one pickles the next (on one thread, every send
  waking a worker, a 20-actor fan-out ran 10-25% slower);
- `KASTOR_FAST_ACTOR_CALLS` is on (the default).

Otherwise the call goes to the core loop as before. So at most one call per (process, actor)
is on a lane, and a loop-path call made while it is in flight waits (ActorSubmitter._flush)
until its result is read: no call overtakes another, in either direction.

Who reads the result: the sending thread, in a `get` of that ref (CoreWorker.get; a get of
several refs first reads, in turn, the lanes of those this thread sent, as it needs them all).
It polls the socket for a short window before it blocks (spin_wait.py: the wake-up from a
blocking `recv` cost more than the call), unless another thread of this process waits on a
lane too (spinning threads would pass the GIL back and forth).
In every other case the lane is *handed over* (`request_handover`): a short-lived daemon
thread reads the result and posts it to the loop, which stores it as for any call. That
happens when the `get` times out or is interrupted (Ctrl-C), when anything else waits for the
ref (another thread's get, `wait`, an argument of another call, a borrower: the memory store's
missing hook), when a loop-path call to the actor has waited behind it for
HANDOVER_DELAY_S (2 ms: time for its sender's get to come and read it), on `cancel`, and on
the handle's release. Only a plain result is decoded on the thread (status OK, inline, no nested refs); an
error, a cancelled call, a big (stored) result or one holding refs is posted to the loop and
read from the memory store, so those keep their one code path.

A lost lane (the connection breaks, a frame stalls past the receive deadline, a result from
another incarnation) hands its call to the loop as a lost in-flight call: retried while
`max_task_retries` allows, else failed with the typed error (ActorDiedError when the head says
the actor is dead, ActorUnavailableError when it is coming back).
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable

from kastor.runtime import spin_wait, tls
from kastor.runtime.frames import HEADER_BYTES, MAX_FRAME_BYTES, RELAY_LANE, RelayRoute, frame
from kastor.runtime.lane_host import LANE_MARK, one_item_frame
from kastor.runtime.protocol import kastor_pb2 as pb

log = logging.getLogger("kastor.fast_lane")


MAX_OPEN_LANES = 64  # lanes open at once per process: past this, calls to more actors take the loop's path


class LaneBudget:
    """How many lanes a process may hold open: each is a socket here and a connection at the
    worker, beside the loop's stream, and a driver calling a thousand actors must not need
    twice the file descriptors it did."""

    def __init__(self, limit: int = MAX_OPEN_LANES) -> None:
        self._lock = threading.Lock()
        self._left = limit

    def take(self) -> bool:
        with self._lock:
            if self._left <= 0:
                return False
            self._left -= 1
            return True

    def give(self) -> None:
        with self._lock:
            self._left += 1


class LaneLost(Exception):
    """The lane's connection can no longer be used; the call on it is handled as lost."""


class FastLane:
    """One actor's caller-side lane in this process: a blocking socket and at most one call.

    `lock` guards every field; the socket is read by whoever set `reading` (the sending thread
    in its get, or the hand-over thread), written only by the sending thread under the lock.
    """

    def __init__(self, token: bytes, receive_timeout: float, budget: LaneBudget,
                 on_result: Callable[[FastLane, object, pb.TaskResult], None],
                 on_lost: Callable[[FastLane, object, BaseException], None]) -> None:
        self.lock = threading.Lock()
        self._budget = budget
        self._token = token
        self._receive_timeout = receive_timeout
        self._on_result = on_result
        self._on_lost = on_lost
        self._sock: socket.socket | None = None
        self._tls = False  # an SSL socket takes no send flags: it sends as it always did
        # The socket's timeout as last set (settimeout is a syscall even when nothing changes):
        # a sync call keeps it blocking (None), so its send and its recv are one syscall each.
        self._sock_timeout: float | None = None
        self._buf = bytearray()
        self._frame_started = 0.0
        self.data_address = ""
        self.address = ""  # the worker's gRPC address (cancellation)
        self.incarnation = -1
        self._refused: tuple[str, int] | None = None  # an incarnation whose lane would not open
        self.call = None  # the PendingCall in flight on the lane
        self.sender = 0  # the ident of the thread that sent it
        self.reading = False
        self.handing_over = False
        self.handovers = 0  # reader threads started for it (tests and diagnostics read it)
        # Calls of this process to the actor on the loop's path: counted by the threads that post
        # them (under the lock) and by the loop as they finish; a fast call needs the two equal.
        self.loop_sent = 0
        self.loop_done = 0
        self.idle_streak = 0  # calls in a row that found nothing in flight (ActorSubmitter.SYNC_STREAK)
        self.spin = spin_wait.SpinPolicy()  # the sender's wait for its result polls first (spin_wait.py)

    # ---- sending (the calling thread, lock held) ----

    def connect(self, address: str, data_address: str, incarnation: int, timeout: float,
                relay: RelayRoute | None = None) -> bool:
        """Makes sure the lane reaches `data_address` at `incarnation`; False if it cannot.
        `relay`: a remote client's route, the client port's frame relay, which is greeted,
        given the token and the target marked `lane`, and sends the worker the lane's first
        frame itself (frame_relay.py); not with TLS (the relay's leg would need its own)."""
        if self._sock is not None and self.data_address == data_address and self.incarnation == incarnation:
            return True
        self.close()
        if self._refused == (data_address, incarnation) or not self._budget.take():
            return False
        ctx = tls.client_ssl_context()
        if relay is not None and ctx is not None:
            self._budget.give()
            return False
        host, _, port = (relay.address if relay is not None else data_address).rpartition(":")
        try:
            try:
                sock = socket.create_connection((host.strip("[]"), int(port)), timeout)
            except BaseException:
                self._budget.give()
                raise
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if ctx is not None:
                sock = ctx.wrap_socket(sock, server_hostname=tls.server_name())
            self._sock = sock
            self._tls = ctx is not None
            self._buf.clear()
            sock.settimeout(timeout)
            self._sock_timeout = timeout
            if relay is None:
                sock.sendall(frame(self._token + LANE_MARK))  # a serial actor's thread may serve it (lane_host.py)
            else:
                if self._read_frame(timeout) != relay.greeting():  # only this cluster's relay gets the token
                    raise LaneLost(f"{relay.address} is not this cluster's frame relay")
                sock.sendall(frame(self._token) + frame(f"{data_address} {RELAY_LANE}".encode()))
            if self._read_frame(timeout) != b"":
                raise LaneLost("the worker did not accept the lane with an empty frame")
        except (OSError, ValueError, LaneLost, TimeoutError) as e:
            log.debug("no fast lane to %s: %s", data_address, e)
            self.close()
            self._refused = (data_address, incarnation)
            return False
        self.address, self.data_address, self.incarnation = address, data_address, incarnation
        return True

    def send(self, call, spec: pb.TaskSpec) -> bool:
        """Writes the call; False (nothing the worker could parse was sent) if the lane broke."""
        payload = one_item_frame(spec.SerializeToString())
        try:
            sent = 0
            if not self._tls:
                try:  # a call fits the socket's buffer: one syscall, whatever the socket's timeout
                    sent = self._sock.send(payload, socket.MSG_DONTWAIT)  # type: ignore[union-attr]
                except BlockingIOError:
                    pass
            if sent < len(payload):  # a big call, or a worker slow to read: within the receive timeout
                self._settimeout(self._receive_timeout)
                self._sock.sendall(payload[sent:])  # type: ignore[union-attr]
        except OSError as e:
            log.debug("fast lane to %s broke on send: %s", self.data_address, e)
            self.close()
            return False
        self.call = call
        self.sender = threading.get_ident()
        return True

    # ---- reading ----

    def claim_read(self, call) -> bool:
        """Whether the calling thread, which sent `call`, may read its result now."""
        with self.lock:
            if self.call is not call or self.sender != threading.get_ident() or self.reading or self.handing_over:
                return False
            self.reading = True
            return True

    def read(self, timeout: float | None, spin: bool = False) -> pb.TaskResult:
        """The result of the lane's call (the reader only). TimeoutError: not within `timeout`
        (the call stays in flight; hand the lane over). LaneLost: the lane broke. `spin`: the
        sender's get, which polls the socket for a short window before it sleeps (spin_wait.py);
        a hand-over thread just blocks."""
        call = self.call
        deadline = None if timeout is None else time.monotonic() + timeout
        payload = self._spin_for_result(timeout) if spin and not self._buf else None
        while True:
            if payload is None:
                remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
                payload = self._read_frame(remaining)
            try:
                reply = pb.ExecuteReply.FromString(payload)
            except Exception as e:
                raise LaneLost("an ExecuteReply frame did not parse") from e
            for result in reply.results:
                if result.task_id != call.spec.task_id:  # type: ignore[union-attr]
                    raise LaneLost("a result for a call the lane did not carry")
                if result.incarnation != self.incarnation:
                    raise LaneLost(f"a result from incarnation {result.incarnation}; the lane reaches "
                                   f"{self.incarnation}")
                return result
            payload = None

    def _spin_for_result(self, timeout: float | None) -> bytes | None:
        """The result frame's payload if it came within the spin window; None when it did not
        (or spinning is off, stopped, or the lane is TLS, whose socket takes no flags): the
        bytes that did come, if any, are buffered for `_read_frame`."""
        sock = self._sock
        if self._tls or sock is None:
            return None
        self._settimeout(None)  # blocking: with a timeout set, Python polls before each recv
        try:
            data = self.spin.wait(lambda: spin_wait.recv_now(sock), timeout)
        except OSError as e:
            raise LaneLost(f"the connection broke: {e}") from e
        return None if data is None else self._whole_frame_or_buffer(data)

    def done_reading(self, finished: bool) -> None:
        """The reader stops: the call is finished (its result or loss is being handled), or
        not (a timeout, an interrupt): then the lane is handed over."""
        with self.lock:
            self.reading = False
            if finished:
                self.call = None
                self.handing_over = False
                return
            self.handing_over = False
        self.request_handover()

    def request_handover(self) -> None:
        """Something other than the sender's get needs the lane's result: a thread reads it
        (at once, or once the sender's get stops reading)."""
        with self.lock:
            if self.call is None or self.handing_over:
                return
            self.handing_over = True
            if self.reading:
                return  # the reader finishes it, or hands over when it stops
            self.reading = True
            self.handovers += 1
        threading.Thread(target=self._drain, name="kastor-lane", daemon=True).start()

    def _drain(self) -> None:
        call = self.call
        try:
            result = self.read(None)
        except LaneLost as e:
            self.finish_lost(call, e)
            return
        except BaseException as e:  # noqa: BLE001 (a closed socket at shutdown, say)
            self.finish_lost(call, LaneLost(str(e)))
            return
        self.done_reading(True)
        self._on_result(self, call, result)

    def finish_lost(self, call, error: BaseException) -> None:
        """The reader saw the lane break: the call goes back to the loop as lost."""
        with self.lock:
            self.close()
        self.done_reading(True)
        self._on_lost(self, call, error)

    def _read_frame(self, timeout: float | None) -> bytes:
        """The next frame. TimeoutError if none began within `timeout`; LaneLost if the
        connection ended, or a frame begun did not finish within the receive deadline."""
        buf = self._buf
        if not buf and timeout is None and self._sock is not None:
            whole = self._read_whole_frame(self._sock)
            if whole is not None:
                return whole
        first_by = None if timeout is None else time.monotonic() + timeout
        while True:
            if len(buf) >= HEADER_BYTES:
                n = int.from_bytes(buf[:HEADER_BYTES], "big")
                if n > MAX_FRAME_BYTES:
                    raise LaneLost(f"a frame of {n} bytes is over the limit of {MAX_FRAME_BYTES}")
                if len(buf) >= HEADER_BYTES + n:
                    payload = bytes(buf[HEADER_BYTES:HEADER_BYTES + n])
                    del buf[:HEADER_BYTES + n]
                    self._frame_started = time.monotonic()
                    return payload
            now = time.monotonic()
            if buf:
                stalled_by = self._frame_started + self._receive_timeout
                if now >= stalled_by:
                    raise LaneLost(f"a frame did not arrive in full within {self._receive_timeout:g}s")
                wait_until = stalled_by if first_by is None else min(first_by, stalled_by)
            else:
                wait_until = first_by
            if wait_until is not None and now >= wait_until:
                raise TimeoutError("no result yet")
            sock = self._sock
            if sock is None:
                raise LaneLost("the lane is closed")
            try:
                self._settimeout(None if wait_until is None else wait_until - now)
                data = sock.recv(1 << 16)
            except TimeoutError:
                continue
            except OSError as e:
                raise LaneLost(f"the connection broke: {e}") from e
            if not data:
                raise LaneLost("the worker closed the connection")
            if not buf:
                self._frame_started = time.monotonic()
            buf += data

    def _read_whole_frame(self, sock: socket.socket) -> bytes | None:
        """A sync get's usual read (nothing buffered, no deadline): one blocking recv that holds
        the whole result frame, returned without going through the buffer. None when the recv
        brought less or more (then buffered, for `_read_frame` to go on with)."""
        self._settimeout(None)
        try:
            data = sock.recv(1 << 16)
        except OSError as e:
            raise LaneLost(f"the connection broke: {e}") from e
        return self._whole_frame_or_buffer(data)

    def _whole_frame_or_buffer(self, data: bytes) -> bytes | None:
        """The payload when `data`, read with nothing buffered, is exactly one frame; else None,
        with `data` buffered for `_read_frame` (LaneLost when it is the connection's end)."""
        if not data:
            raise LaneLost("the worker closed the connection")
        if len(data) >= HEADER_BYTES and int.from_bytes(data[:HEADER_BYTES], "big") == len(data) - HEADER_BYTES:
            return data[HEADER_BYTES:]
        self._frame_started = time.monotonic()
        self._buf += data
        return None

    def _settimeout(self, timeout: float | None) -> None:
        if timeout is None and self._sock_timeout is None:
            return
        self._sock.settimeout(timeout)  # type: ignore[union-attr]
        self._sock_timeout = timeout

    def close_if_idle(self) -> None:
        """Closes the lane unless a call is on it (that call's reader then sees it end)."""
        if not self.lock.acquire(blocking=False):
            return  # a thread is sending on it: that call's end deals with it
        try:
            if self.call is None and not self.reading:
                self.close()
        finally:
            self.lock.release()

    def close(self) -> None:
        """Closes the connection; a thread blocked reading it sees its end (shutdown wakes it)."""
        sock, self._sock = self._sock, None
        self._buf.clear()
        self.data_address = ""
        self.incarnation = -1
        if sock is not None:
            self._budget.give()
            for end in (lambda: sock.shutdown(socket.SHUT_RDWR), sock.close):
                try:
                    end()
                except OSError:
                    pass
