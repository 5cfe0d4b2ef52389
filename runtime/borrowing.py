"""Borrowers: reference counting across processes, after Ray's borrower protocol.

A ref pickled inside a value (a list passed to a task, a result, an actor's state) is a
*borrowed* ref wherever it is unpickled. The owner keeps the value while any borrower holds
it, and frees it once the last borrower, its own local refs and the calls that carry it are
gone:

* The sender pins the nested refs it serialized until they are safe: a caller keeps the refs
  of a call's arguments until the call's results come back (PendingCall.pins), and those of an
  actor's constructor until it started (or, if it may restart, until it is dead); a worker keeps
  the refs inside a value it returned (Pins, under the value's object id) until the value's
  owner holds them itself and sends `unpin`.
* A process that comes to hold a ref owned elsewhere (count 0 -> 1) tells the owner `add`,
  and `remove` when its last ref goes (Links). Both travel, in order, on one Borrow stream
  per owner, so the owner's count never dips between a release and a new borrow.
* A worker replies to a call only once the owners acknowledged the borrows its arguments made
  (Links.after_flush): the caller's pins cover the gap until then.
* A value that holds refs keeps them while its owner keeps the value (Value.nested).
* The owner counts each stream's borrows and drops them when the stream ends: a borrower that
  died lets go of everything it held.

Where a ref is pickled outside these paths (a user's own pickle.dumps, a remote client that
the cluster cannot call back), it "escapes" as before: its owner keeps it for good.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import deque
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import grpc
from kastor.runtime.protocol import kastor_pb2 as pb

if TYPE_CHECKING:  # the core hands itself in: importing it here would be a cycle
    from kastor.runtime.core import CoreWorker

log = logging.getLogger("kastor.borrowing")

_collecting = threading.local()


class Collector:
    """Gathers the refs pickled on this thread while a value is serialized (see ObjectRef.__reduce__)."""

    def __init__(self) -> None:
        self.refs: list[Any] = []

    def __enter__(self) -> Collector:
        self._outer = getattr(_collecting, "current", None)
        _collecting.current = self
        return self

    def __exit__(self, *exc: object) -> None:
        _collecting.current = self._outer


def collect(ref: Any) -> bool:
    """Records a ref being pickled; False when no collector runs on this thread (it escapes)."""
    current = getattr(_collecting, "current", None)
    if current is None:
        return False
    current.refs.append(ref)
    return True


def nested_of(refs: list[Any]) -> list[pb.NestedRef]:
    seen: set[bytes] = set()
    out = []
    for ref in refs:
        oid = ref.binary()
        if oid not in seen:
            seen.add(oid)
            out.append(pb.NestedRef(object_id=oid, owner=ref.owner_address))
    return out


class Pins:
    """Refs a worker keeps for values it returned, until their owner holds them (`unpin`)."""

    def __init__(self) -> None:
        self._pins: dict[bytes, list[Any]] = {}
        self._lock = threading.Lock()

    def pin(self, key: bytes, refs: list[Any]) -> None:
        with self._lock:
            self._pins.setdefault(key, []).extend(refs)

    def release(self, key: bytes) -> None:
        with self._lock:
            self._pins.pop(key, None)

    def __len__(self) -> int:
        return len(self._pins)


class _Link:
    """The Borrow stream from this process to one owner."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.updates: deque[tuple[int, str, bytes]] = deque()  # (seq, "add"|"remove"|"unpin", id)
        self.queued = 0      # seq of the last update queued
        self.last_add = 0    # seq of the last `add` or `unpin` queued: what after_flush waits for
        self.acked = 0       # seq of the last update the owner applied
        self.broken = False  # the owner is gone: nothing it holds needs protecting any more
        self.waiters: list[tuple[int, Callable[[], None]]] = []
        self.wake: asyncio.Event | None = None
        self.task: asyncio.Task | None = None
        self.call: Any = None  # the Borrow call, cancelled at shutdown

    def settled(self, seq: int) -> bool:
        return self.broken or self.acked >= seq


class Links:
    """This process's borrows, as Borrow streams to their owners.

    `add`, `remove` and `unpin` may be called on any thread (a ref is unpickled on the thread
    that reads a value); they only queue, under one lock, and the core's loop sends.
    """

    def __init__(self, core: CoreWorker) -> None:
        self.core = core
        self._links: dict[str, _Link] = {}
        self._lock = threading.Lock()
        self._kicked: set[str] = set()
        # Owners that do not count borrowers (a remote client's objects, served by the client
        # port, are kept for good): nothing is sent to them.
        self._untracked: set[str] = set()

    def add(self, object_id: bytes, owner: str) -> None:
        self._queue(owner, "add", object_id)

    def remove(self, object_id: bytes, owner: str) -> None:
        self._queue(owner, "remove", object_id)

    def unpin(self, key: bytes, pinned_at: str) -> None:
        self._queue(pinned_at, "unpin", key)

    def _queue(self, address: str, kind: str, key: bytes) -> None:
        with self._lock:
            if address in self._untracked:
                return
            link = self._links.get(address)
            if link is None or link.broken:
                if kind == "remove" and link is not None:
                    return  # the owner is gone, and its borrows with it
                link = self._links[address] = _Link(address)
            link.queued += 1
            link.updates.append((link.queued, kind, key))
            if kind != "remove":
                link.last_add = link.queued
            kick = address not in self._kicked
            self._kicked.add(address)
        if kick:
            self.core.post(lambda: self._kick(address))

    def _kick(self, address: str) -> None:
        with self._lock:
            self._kicked.discard(address)
            link = self._links.get(address)
        if link is None:
            return
        if link.task is None:
            link.wake = asyncio.Event()
            link.task = self.core.loop.create_task(self._run(link))
        link.wake.set()

    def settled(self) -> bool:
        """Whether every borrow (and unpin) queued so far was acknowledged: then `after_flush`
        would run its function at once. Any thread (a serial actor's main thread asks it
        before it writes a lane's result itself; see lane_host.py)."""
        with self._lock:
            return all(link.settled(link.last_add) for link in self._links.values())

    def after_flush(self, fn: Callable[[], None]) -> None:
        """Runs fn (on the loop) once every owner acknowledged the borrows (and unpins) queued so
        far; a release needs no wait, so one slow owner does not hold replies that only let go."""
        with self._lock:
            pending = [(link, link.last_add) for link in self._links.values() if not link.settled(link.last_add)]
        if not pending:
            fn()
            return
        remaining = [len(pending)]

        def one_done() -> None:
            remaining[0] -= 1
            if remaining[0] == 0:
                fn()
        for link, seq in pending:
            if link.settled(seq):
                one_done()
            else:
                link.waiters.append((seq, one_done))

    def pending(self) -> int:
        """Updates queued and not yet acknowledged (for tests and `kastor memory`-like views)."""
        with self._lock:
            return sum(link.queued - link.acked for link in self._links.values() if not link.broken)

    async def _run(self, link: _Link) -> None:
        writer = None
        try:
            call = link.call = self.core.worker_stub(link.address).Borrow(metadata=self.core.metadata)
            writer = asyncio.get_running_loop().create_task(self._write(link, call))
            async for ack in call:
                link.acked = max(link.acked, ack.seq)
                self._settle(link)
        except grpc.aio.AioRpcError as e:
            if e.code() == grpc.StatusCode.UNIMPLEMENTED:
                with self._lock:
                    self._untracked.add(link.address)
            elif e.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED):
                log.warning("borrow stream to %s failed: %s %s", link.address, e.code().name, e.details())
        except asyncio.CancelledError:
            pass
        finally:
            if writer is not None:
                writer.cancel()
                await asyncio.gather(writer, return_exceptions=True)
            with self._lock:
                link.broken = True
                if self._links.get(link.address) is link:
                    del self._links[link.address]
                requeue = [u for u in link.updates if u[1] != "remove"] \
                    if not self.core.closed and link.address not in self._untracked else []
            self._settle(link)
            for _, kind, key in requeue:  # never sent: a new stream carries them (the owner may be back)
                self._queue(link.address, kind, key)

    async def _write(self, link: _Link, call: Any) -> None:
        """Sends the queued updates as they come (writes, not a request iterator: nothing is
        left suspended inside gRPC when the stream ends)."""
        while True:
            while not link.updates:
                link.wake.clear()
                await link.wake.wait()
            await call.write(self._batch(link))

    def _batch(self, link: _Link) -> pb.BorrowUpdate:
        update = pb.BorrowUpdate()
        with self._lock:
            while link.updates:
                seq, kind, key = link.updates.popleft()
                getattr(update, kind).append(key)
                update.seq = seq
        return update

    def _settle(self, link: _Link) -> None:
        ready = [fn for seq, fn in link.waiters if link.settled(seq)]
        link.waiters = [(seq, fn) for seq, fn in link.waiters if not link.settled(seq)]
        for fn in ready:
            fn()

    async def close(self) -> None:
        """Ends the streams (on the loop, at shutdown): the owners drop this process's borrows."""
        with self._lock:
            links = list(self._links.values())
        tasks = []
        for link in links:
            if link.call is not None:
                link.call.cancel()
            if link.task is not None:
                link.task.cancel()
                tasks.append(link.task)
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)


async def serve(core: CoreWorker, updates: Any) -> Iterator[pb.BorrowAck]:
    """The owner's side of one borrower's Borrow stream: counts its borrows, and drops those
    still counted when the stream ends (the borrower released them, or died)."""
    counts: dict[bytes, int] = {}
    objects = core.objects
    try:
        async for update in updates:
            for oid in update.add:
                counts[oid] = counts.get(oid, 0) + 1
                objects.add_borrow(oid)
            for oid in update.remove:
                n = counts.get(oid, 0)
                if n <= 0:
                    continue
                if n == 1:
                    del counts[oid]
                else:
                    counts[oid] = n - 1
                objects.remove_borrow(oid)
            for key in update.unpin:
                core.pins.release(key)
            yield pb.BorrowAck(seq=update.seq)
    finally:
        for oid, n in counts.items():
            objects.remove_borrow(oid, n)
