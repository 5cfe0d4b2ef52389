"""Submitting actor calls: one ordered stream per (caller, actor), straight to its worker.

The head is asked where the actor lives (a long poll on the actor's version), never to
carry a call; for an actor this process created, CreateActor's reply is the first answer.
When the stream breaks, calls in flight are re-sent to the restarted actor
while `max_task_retries` allows, else fail with ActorUnavailableError (it is coming back)
or ActorDiedError (it is not). Calls queued meanwhile wait and keep their order.

A broken stream is not proof that the actor moved: when only its node agent died, the head
keeps reporting the old address until it declares the node dead. So the incarnation whose
stream broke is reconnected only if its worker still answers a probe (a blip, or a slow
worker); otherwise the queue waits for the head to report a new incarnation, and calls
that were never sent are never failed for it.

A sync call may skip the loop altogether: see fast_lane.py for when, and how its calls keep
their order with the loop's.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Literal

import grpc
from kastor.runtime import config, exceptions, receive_deadline, retry, settings, task_events
from kastor.runtime.exceptions import GetTimeoutError
from kastor.runtime.fast_lane import FastLane, LaneBudget, LaneLost
from kastor.runtime.frame_stream import CallStream, FrameStream, open_call_stream
from kastor.runtime.frames import RelayRoute
from kastor.runtime.ids import return_id
from kastor.runtime.owned_values import OwnedValues
from kastor.runtime.peers import Peers
from kastor.runtime.pending import PendingCall, fail, resolve_deps, store_plain, store_result, store_results
from kastor.runtime.protocol import kastor_pb2 as pb

log = logging.getLogger("kastor.actors")

RESOLVE_POLL_S = 5.0
# A loop-path call queued behind a call on the actor's lane waits this long for the lane's
# sender to read that result itself (a get of several refs does) before a thread is started
# to read it (see fast_lane.py).
HANDOVER_DELAY_S = 0.002
# A lane is used once this many calls in a row to the actor found nothing of this process in
# flight to it: a caller that makes calls one at a time. A burst (calls made before the
# earlier ones came back) stays on the loop, which sends it in one frame; on a lane its first
# call would hold the others for a round trip.
SYNC_STREAK = 2
PROBE_TIMEOUT_S = 5.0  # a worker that does not answer this fast is treated as gone until the head says more


class StopPolling(Exception):
    """Ends a retried long poll of the head: what it watched for no longer matters (the
    submitter closed, or the stream it guarded was replaced)."""


# Resolving where an actor lives: a head that is away (restarting) is asked again every 0.5 s, for ever.
RESOLVE_RETRY = retry.RetryPolicy(initial_s=0.5, max_s=0.5, retry_on=(grpc.aio.AioRpcError, ConnectionError),
                                  fatal=(StopPolling,))
# Watching a live stream's incarnation: any error (the head away, this process shutting down)
# is waited out, 0.5 s doubling up to a poll's length; calls keep flowing meanwhile.
RELEASED_KILL_MARGIN_S = 5.0  # after the graceful-shutdown timeout, before a released actor still there is killed
WATCH_RETRY = retry.RetryPolicy(initial_s=0.5, max_s=RESOLVE_POLL_S, retry_on=(Exception,), fatal=(StopPolling,))


class ActorConn:
    __slots__ = ("actor_id", "queue", "inflight", "stream", "version", "death", "resolving",
                 "released", "end_gracefully", "class_name", "created", "killed", "broken_address",
                 "incarnation", "orphans", "serial", "flush_due")

    def __init__(self, actor_id: bytes):
        self.actor_id = actor_id
        self.queue: deque[PendingCall] = deque()
        self.inflight: dict[bytes, PendingCall] = {}
        self.stream: CallStream | None = None
        self.version = 0
        self.death: BaseException | None = None
        self.resolving = False
        self.released = False  # its owner (this process) saw its last strong handle go (actor_handles)
        self.end_gracefully: Callable[[], None] | None = None  # queues its __ray_terminate__ (given at release)
        self.class_name = ""
        self.created: asyncio.Future | None = None
        self.killed = False
        self.broken_address = ""  # the address whose stream last broke: not reused unless it answers
        self.incarnation = -1  # the num_restarts of the instance `stream` reaches
        self.orphans: list[PendingCall] = []  # calls a broken fast lane carried, spent their retries
        self.serial = False  # it runs one call at a time, in order (no async, no threads, no groups)
        self.flush_due = False  # a _flush is scheduled for this loop turn (ActorSubmitter.submit)


class ActorSubmitter:
    def __init__(self, peers: Peers, owned: OwnedValues):
        self.peers = peers
        self.owned = owned
        self._loop: asyncio.AbstractEventLoop | None = None  # the core loop, known from the first submit
        self.conns: dict[bytes, ActorConn] = {}
        self._closed = False
        self._fast_on = settings.FAST_ACTOR_CALLS.get()  # and framed calls, direct or relayed (_lane_route)
        self._lanes: dict[bytes, FastLane] = {}
        self._lane_budget = LaneBudget()
        self._fast: dict[bytes, tuple[FastLane, PendingCall]] = {}  # return id -> a call on a lane
        self._sent_by: dict[bytes, int] = {}  # return id of a call on a lane -> the thread that sent it
        self._busy_senders: set[int] = set()  # threads with a call on a lane: their next calls take the loop
        self.fast_sent = 0  # calls sent on a lane (tests and diagnostics read it)
        self._handovers_due: set[FastLane] = set()

    def conn(self, actor_id: bytes) -> ActorConn:
        c = self.conns.get(actor_id)
        if c is None:
            c = self.conns[actor_id] = ActorConn(actor_id)
        return c

    # ---- creation (called on the loop) ----

    def expect_creation(self, actor_id: bytes) -> asyncio.Future:
        """Calls to a new actor wait until its CreateActor reached the head; the future's result
        is the head's record as CreateActor answered it (see _connect)."""
        c = self.conn(actor_id)
        c.created = asyncio.get_running_loop().create_future()
        return c.created

    # ---- calls ----

    def submit(self, call: PendingCall) -> None:
        self._loop = asyncio.get_running_loop()
        task_events.submitted(call.spec)
        c = self.conn(call.spec.actor_id)
        if c.death is not None:
            fail(self.owned, call, c.death)
            return
        c.queue.append(call)
        if not call.resolved:
            self._loop.create_task(self._deps_then_flush(c, call))
        elif c.stream is None or c.stream.lost:
            self._flush(c)  # starts finding the actor (once)
        elif not c.flush_due:
            # One flush per actor per loop turn: the core's inbox hands the loop a burst of
            # `.remote()`s in one turn, and flushing after each call cost a pipelined call a
            # pass over the queue, a task-event update and a stream send of its own.
            c.flush_due = True
            self._loop.call_soon(self._due_flush, c)

    def _due_flush(self, c: ActorConn) -> None:
        c.flush_due = False
        self._flush(c)

    async def _deps_then_flush(self, c: ActorConn, call: PendingCall) -> None:
        await resolve_deps(self.owned, call)
        self._flush(c)

    def _flush(self, c: ActorConn) -> None:
        if c.stream is None or c.stream.lost:
            if not c.resolving and c.death is None and not self._closed:
                c.resolving = True
                asyncio.get_running_loop().create_task(self._connect(c))
            return
        q = c.queue
        lane = self._lanes.get(c.actor_id)
        if q and lane is not None and lane.call is not None:
            self._handover_later(lane)  # a call on the lane goes first; its result flushes these
            return
        batch = []
        while q and q[0].ready:
            call = q.popleft()
            if call.cancelled:
                fail(self.owned, call, exceptions.TaskCancelledError(call.spec.task_id.hex()))
                continue
            c.inflight[call.spec.task_id] = call
            call.stream = c.stream
            batch.append(call.spec)
        if batch:
            task_events.running_many(batch, c.stream.address)
            c.stream.send(batch)
        self._maybe_collect(c)

    async def _connect(self, c: ActorConn, lost: list[PendingCall] | None = None) -> None:
        """Finds the actor's live address (waiting through PENDING/RESTARTING) and connects."""
        try:
            # The head's record from CreateActor's reply serves as the first answer: asking
            # GetActor for it again cost the head and this process a call per creation.
            known = await c.created if c.created is not None else None
            after = c.version
            while not self._closed:
                if known is not None and known.version > after:
                    info, known = known, None
                else:
                    info = await self._get_actor(c.actor_id, after)
                if c.orphans:
                    lost, c.orphans = list(lost or ()) + c.orphans, []
                if info is None:
                    self._kill_conn(c, exceptions.ActorDiedError(
                        f"Actor {c.actor_id.hex()} does not exist (it may belong to a finished job).",
                        c.actor_id.hex()), lost)
                    return
                c.class_name = info.spec.class_name
                if info.state == pb.DEAD:
                    self._kill_conn(c, death_error(self.owned, info), lost)
                    return
                if lost:
                    self._fail_all(lost, exceptions.ActorUnavailableError(
                        f"The actor {info.spec.class_name} ({c.actor_id.hex()}) was unreachable "
                        f"({pb.ActorState.Name(info.state)} now); the call may or may not have run. "
                        f"Set max_task_retries to retry such calls.", c.actor_id.hex()))
                    lost = None
                if info.state == pb.ALIVE and info.address == c.broken_address \
                        and not await self._answers(info.address):
                    log.info("actor %s: its worker at %s is unreachable and the head has no newer address yet; "
                             "queued calls wait", c.actor_id.hex()[:8], info.address)
                    after = info.version
                    continue
                if info.state == pb.ALIVE:
                    c.version = info.version
                    c.broken_address = ""
                    c.incarnation = info.num_restarts
                    c.serial = info.spec.max_concurrency == 1 and not info.spec.is_async \
                        and not info.spec.concurrency_groups
                    c.stream = await open_call_stream(self.peers, info.address, self._on_results(
                        c, info.num_restarts), self._on_lost(c), PROBE_TIMEOUT_S, data_port=info.data_port)
                    asyncio.get_running_loop().create_task(self._watch_incarnation(c, c.stream, info))
                    break
                after = info.version
        except Exception as e:  # keep the caller's refs from hanging on an internal fault
            log.exception("actor connect failed")
            self._kill_conn(c, exceptions.ActorUnavailableError(f"Could not reach the actor: {e}"), lost)
            return
        finally:
            c.resolving = False
        if c.orphans:  # a lane broke while the stream was being opened: as for calls lost at the start
            orphans, c.orphans = c.orphans, []
            self._fail_all(orphans, exceptions.ActorUnavailableError(
                f"The actor {c.class_name} ({c.actor_id.hex()}) was unreachable (ALIVE now); the call may or may "
                f"not have run. Set max_task_retries to retry such calls.", c.actor_id.hex()))
        self._flush(c)

    async def _watch_incarnation(self, c: ActorConn, stream: CallStream, info: pb.ActorInfo) -> None:
        """Drops `stream` once the head has restarted its actor: the instance it reaches is stale.

        A worker whose node the head declared dead stops by itself (see worker_lease), except on
        a node cut off from the head but not from its callers. A caller that hears of the new
        incarnation from the head moves to it at once: the stream is dropped, and its calls are
        retried on the new instance or failed, as for any lost stream. The watch ends when the
        head says DEAD, which is final: asking again only parked a long poll on the head.
        """
        after = info.version

        async def poll() -> pb.GetActorReply:
            if c.stream is not stream or stream.lost or self._closed:
                raise StopPolling
            return await self.peers.head_rpc("GetActor", pb.GetActorRequest(
                actor_id=c.actor_id, after_version=after, timeout_s=RESOLVE_POLL_S), timeout=RESOLVE_POLL_S + 30)

        while True:
            try:
                reply = await retry.call_async(poll, WATCH_RETRY)
            except StopPolling:
                return
            if not reply.found:
                return
            if reply.info.num_restarts != info.num_restarts and c.stream is stream and not stream.lost:
                log.warning("actor %s %s was restarted (incarnation %d, this stream reaches %d at %s): moving to "
                            "the new instance", c.class_name, c.actor_id.hex()[:8], reply.info.num_restarts,
                            info.num_restarts, stream.address)
                stream.abort()
                return
            if reply.info.state == pb.DEAD:
                return  # final: no later record to move to (the stream's loss fails or retries its calls)
            after = reply.info.version

    async def _answers(self, address: str) -> bool:
        """Whether the worker at `address` still serves (a broken stream alone does not tell)."""
        try:
            await self.peers.worker_stub(address).LeaseState(pb.Empty(), metadata=self.peers.metadata,
                                                            timeout=PROBE_TIMEOUT_S)
        except grpc.aio.AioRpcError as e:
            return e.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
        return True

    async def actor_info(self, actor_id: bytes, after_version: int = 0) -> pb.ActorInfo | None:
        """The head's record of an actor once it is newer than `after_version` (a long poll),
        or None when it does not exist or this process is closing."""
        return await self._get_actor(actor_id, after_version)

    async def _get_actor(self, actor_id: bytes, after_version: int) -> pb.ActorInfo | None:
        """The head's record of the actor once it is newer than `after_version` (a long poll), or
        None if the actor is unknown or this submitter closed."""

        def on_retry(error: BaseException, attempt: int, delay: float) -> None:
            if self._closed:
                raise StopPolling from error
            log.warning("cannot resolve actor %s yet: %s", actor_id.hex()[:8], error)

        async def poll() -> pb.GetActorReply:
            return await self.peers.head_rpc("GetActor", pb.GetActorRequest(
                actor_id=actor_id, after_version=after_version, timeout_s=RESOLVE_POLL_S), timeout=RESOLVE_POLL_S + 30)

        while True:
            try:
                reply = await retry.call_async(poll, RESOLVE_RETRY, on_retry=on_retry)
            except StopPolling:
                return None
            if reply.found:
                return reply.info
            if not reply.unregistered or self._closed:
                return None

    def _kill_conn(self, c: ActorConn, error: BaseException, lost: list[PendingCall] | None) -> None:
        c.death = error
        lane = self._lanes.get(c.actor_id)
        if lane is not None:
            lane.close_if_idle()  # no call takes it again
        self._fail_all(list(lost or ()) + c.orphans + list(c.queue), error)
        c.orphans = []
        c.queue.clear()

    def _fail_all(self, calls: list[PendingCall], error: BaseException) -> None:
        for call in calls:
            fail(self.owned, call, error)

    def _on_results(self, c: ActorConn, incarnation: int):
        """Results of the stream to the actor's `incarnation` (its num_restarts when the head
        named its address). A result another instance made is never acknowledged: a stale
        instance (one the head already replaced) or a new one at a reused address. The stream is
        then dropped, and its calls are retried or failed as for a lost stream."""
        def handle(stream: CallStream, results: list[pb.TaskResult]) -> None:
            plain: list[tuple[PendingCall, pb.TaskResult]] = []  # stored together: one lock, one wake-up
            try:
                for result in results:
                    if result.incarnation != incarnation:
                        log.warning("discarding a result from incarnation %d of actor %s %s; expected %d: "
                                    "dropping the stream", result.incarnation, c.class_name, c.actor_id.hex()[:8],
                                    incarnation)
                        stream.abort()
                        return
                    call = c.inflight.pop(result.task_id, None)
                    if call is None:
                        continue
                    if result.status == pb.TASK_ACTOR_EXITED or (call.cancelled and result.status != pb.TASK_OK):
                        self._finish(c, call, result)
                    else:
                        plain.append((call, result))
            finally:
                store_results(self.owned, plain)
            self._maybe_collect(c)
        return handle

    def _finish(self, c: ActorConn, call: PendingCall, result: pb.TaskResult) -> None:
        if result.status == pb.TASK_ACTOR_EXITED:
            fail(self.owned, call, exceptions.ActorDiedError(
                f"The actor {c.class_name} ({c.actor_id.hex()}) exited: exit_actor() was called.",
                c.actor_id.hex()))
        elif call.cancelled and result.status != pb.TASK_OK:
            fail(self.owned, call, exceptions.TaskCancelledError(call.spec.task_id.hex()))
        else:
            store_result(self.owned, call, result)

    def _on_lost(self, c: ActorConn):
        def handle(stream: CallStream, error: BaseException | None) -> None:
            if c.stream is not stream:
                return
            if c.death is not None:  # known dead (killed from here): final, so no head to ask
                self._fail_all(list(c.inflight.values()), c.death)
                c.inflight.clear()
                return
            retry, lost = [], []
            unwritten = stream.unwritten()
            for call in c.inflight.values():
                call.stream = None
                if not stream.established or call.spec.task_id in unwritten:  # it did not run: no retry spent
                    retry.append(call)
                elif call.cancelled:
                    fail(self.owned, call, exceptions.TaskCancelledError(call.spec.task_id.hex()))
                elif call.take_retry():
                    retry.append(call)
                else:
                    lost.append(call)
            c.inflight.clear()
            c.queue.extendleft(reversed(retry))
            c.broken_address = stream.address
            if self._closed:
                return
            c.resolving = True
            asyncio.get_running_loop().create_task(self._connect(c, lost))
        return handle

    # ---- cancellation ----

    def actor_of_task(self, task_id: bytes) -> bytes | None:
        """The actor a call this process sent (queued or in flight) goes to, if any."""
        fast = self._fast.get(return_id(task_id, 0))
        if fast is not None:
            return fast[1].spec.actor_id
        for actor_id, c in self.conns.items():
            if task_id in c.inflight or any(call.spec.task_id == task_id for call in c.queue):
                return actor_id
        return None

    def cancel(self, actor_id: bytes, task_id: bytes, recursive: bool) -> bool:
        fast = self._fast.get(return_id(task_id, 0))
        if fast is not None:  # on a lane: the worker cancels it; the lane's reader stores the outcome
            lane, call = fast
            call.cancelled = True
            asyncio.get_running_loop().create_task(self._cancel_remote(lane.address, task_id, recursive))
            lane.request_handover()
            return True
        c = self.conns.get(actor_id)
        if c is None:
            return False
        for call in c.queue:
            if call.spec.task_id == task_id:
                call.cancelled = True
                if call.ready:
                    c.queue.remove(call)
                    fail(self.owned, call, exceptions.TaskCancelledError(task_id.hex()))
                return True
        call = c.inflight.get(task_id)
        if call is None or call.stream is None:
            return False
        call.cancelled = True
        asyncio.get_running_loop().create_task(self._cancel_remote(call.stream.address, task_id, recursive))
        return True

    async def _cancel_remote(self, address: str, task_id: bytes, recursive: bool) -> None:
        try:
            await self.peers.worker_stub(address).CancelTask(
                pb.CancelRequest(task_id=task_id, force=False, recursive=recursive),
                metadata=self.peers.metadata, timeout=10)
        except grpc.aio.AioRpcError:
            pass

    # ---- handle-based lifetime ----

    def release(self, actor_id: bytes, end_gracefully: Callable[[], None]) -> None:
        """No strong handle to an actor this process owns is left anywhere (its handle token was
        released: see runtime/actor_handles.py). As in Ray, it ends once this process's calls to
        it are done, gracefully: `end_gracefully` queues its `__ray_terminate__` (its
        `__ray_shutdown__` and atexit handlers run, and what it printed reaches the driver); it
        is killed only if it is still there after the graceful-shutdown timeout."""
        c = self.conn(actor_id)
        c.released = True
        c.end_gracefully = end_gracefully
        lane = self._lanes.get(actor_id)
        if lane is not None:
            lane.request_handover()  # its call finishes without its caller's get
        self._maybe_collect(c)

    def _maybe_collect(self, c: ActorConn) -> None:
        lane = self._lanes.get(c.actor_id)
        if not c.released or c.killed or c.queue or c.inflight or self._closed \
                or (lane is not None and lane.call is not None):
            return
        c.killed = True
        if c.death is not None or c.end_gracefully is None:
            return
        c.end_gracefully()
        asyncio.get_running_loop().create_task(self._kill_if_still_there(c))

    async def _kill_if_still_there(self, c: ActorConn) -> None:
        await asyncio.sleep(config.actor_graceful_shutdown_timeout_s() + RELEASED_KILL_MARGIN_S)
        info = await self.actor_info(c.actor_id)
        if not self._closed and info is not None and info.state != pb.DEAD:
            await self.kill(c.actor_id, True, "all handles went out of scope, and it did not end gracefully in time")

    async def kill(self, actor_id: bytes, no_restart: bool, reason: str) -> pb.KillActorReply | None:
        """The head's answer (None if it could not be reached: the kill is only logged).

        A kill for good is final here once the head has answered: this process's later calls
        fail at once, since the head (as Ray's GCS) answers before the node has stopped the
        worker, which could otherwise still serve them on their lane or stream."""
        try:
            reply = await self.peers.head_rpc("KillActor", pb.KillActorRequest(
                actor_id=actor_id, no_restart=no_restart, reason=reason), timeout=30)
        except (grpc.aio.AioRpcError, ConnectionError) as e:
            log.warning("could not kill actor %s: %s", actor_id.hex(), e)
            return None
        c = self.conns.get(actor_id)  # a live stream (and lane) could still reach the worker: not any more
        if no_restart and reply.known and c is not None and c.death is None and c.stream is not None \
                and not c.stream.lost:
            name = f"{c.class_name} ({actor_id.hex()})" if c.class_name else actor_id.hex()
            self._kill_conn(c, exceptions.ActorDiedError(f"The actor {name} is dead: {reason}", actor_id.hex()), None)
        return reply

    def owns_actors(self) -> bool:
        """Whether this process created an actor that is not known dead (it dies with its owner)."""
        return any(c.created is not None and c.death is None and not c.killed for c in self.conns.values())

    def close(self) -> None:
        self._closed = True
        for c in self.conns.values():
            if c.stream is not None:
                c.stream.abort()
        for lane in list(self._lanes.values()):
            lane.close()  # a reader blocked on it sees the end

    # ---- the fast path: a sync call its own thread sends and reads (fast_lane.py) ----

    def _lane(self, actor_id: bytes) -> FastLane:
        lane = self._lanes.get(actor_id)
        if lane is None:
            lane = self._lanes.setdefault(actor_id, FastLane(
                self.peers.token.encode(), receive_deadline.receive_timeout_s(), self._lane_budget, self._lane_result,
                self._lane_lost))
        return lane

    def send_from_thread(self, call: PendingCall, may_block: bool) -> bool:
        """Sends a new call on the actor's lane when the fast path applies (True), else counts it
        as a loop-path call (False: the caller posts it to `submit`). From any thread;
        `may_block`: the caller is a user thread (never the core loop)."""
        spec = call.spec
        if not self._fast_on:
            return False
        known = self.conns.get(spec.actor_id)
        if known is not None and known.stream is not None and not known.serial:
            return False  # an async or threaded actor: never on a lane, so nothing to count either
        lane = self._lane(spec.actor_id)
        with lane.lock:
            c = self.conns.get(spec.actor_id)
            stream = c.stream if c is not None else None
            idle = lane.call is None and not lane.reading and lane.loop_sent == lane.loop_done \
                and (c is None or (not c.queue and not c.inflight))
            lane.idle_streak = lane.idle_streak + 1 if idle else 0
            if (idle and lane.idle_streak >= SYNC_STREAK and may_block and self._fast_on and not self._closed
                    and self._loop is not None and threading.get_ident() not in self._busy_senders
                    and isinstance(stream, FrameStream)
                    and stream.established and not stream.lost and c is not None and c.serial and not c.resolving
                    and c.death is None and not c.released
                    and call.resolved and not spec.generator and len(call.return_ids) == 1
                    and (route := self._lane_route()) is not False
                    and lane.connect(stream.address, stream.data_address, c.incarnation, config.CONNECT_TIMEOUT_S,
                                     relay=route)):
                task_events.submitted_running(spec, lane.address)
                self._fast[call.return_ids[0]] = (lane, call)
                self._sent_by[call.return_ids[0]] = me = threading.get_ident()
                self._busy_senders.add(me)
                if lane.send(call, spec):
                    self.fast_sent += 1
                    return True
                self._forget_fast(call.return_ids[0])
            lane.loop_sent += 1
        call.lane = lane  # its end counts it in lane.loop_done (pending._settle)
        return False

    def _lane_route(self) -> RelayRoute | None | Literal[False]:
        """How a lane reaches workers: directly (None), through the client port's frame relay (a
        remote client, which has no direct route), or not at all (False: calls go by gRPC)."""
        if self.peers.framed_calls:
            return None
        relay = self.peers.frame_relay
        return relay if relay is not None else False

    def handovers(self) -> int:
        """Reader threads started so far for lane calls their senders did not read themselves."""
        return sum(lane.handovers for lane in list(self._lanes.values()))

    def lane_spins(self) -> tuple[int, int]:
        """(waits for a lane call's result that spun first, those that found it spinning):
        spin_wait.py, for tests and diagnostics."""
        lanes = list(self._lanes.values())
        return sum(lane.spin.spins for lane in lanes), sum(lane.spin.hits for lane in lanes)

    def has_fast_calls(self) -> bool:
        return bool(self._fast)

    def fast_get(self, object_id: bytes, timeout: float | None) -> pb.Value | None:
        """The value of `object_id` read off its lane by the thread that sent the call, when it is
        a plain one (see fast_lane.py); None: wait for it in the memory store instead."""
        fast = self._fast.get(object_id)
        if fast is None:
            return None
        lane, call = fast
        if not lane.claim_read(call):
            return None
        try:
            # Spins only while no other thread of this process waits on a lane: spinning threads
            # pass the GIL back and forth, and with 16 callers it cost them ~40% of their calls.
            result = lane.read(timeout, spin=len(self._busy_senders) <= 1)
        except TimeoutError:
            lane.done_reading(False)
            raise GetTimeoutError(f"Get timed out after {timeout}s: object {object_id.hex()} is not ready "
                                  f"(1 of 1 pending).") from None
        except LaneLost as e:
            lane.finish_lost(call, e)
            return None
        except BaseException:  # Ctrl-C: the call stays in flight, its result is stored when it comes
            lane.done_reading(False)
            raise
        lane.done_reading(True)
        value = result.returns[0] if result.status == pb.TASK_OK and len(result.returns) == 1 else None
        if value is None or value.is_error or value.location.path or value.nested or value.pinned_at \
                or call.on_done is not None:
            self._lane_result(lane, call, result)  # the loop stores it, with its one code path
            return None
        # A plain value is stored here, as put() stores one on its caller's thread (this thread
        # holds the ref, so it cannot be freed meanwhile); the loop is woken only when it has
        # something to do: calls queued behind this one, or a released handle to collect.
        self._forget_fast(object_id)
        store_plain(self.owned, call, value)
        c = self.conns.get(call.spec.actor_id)
        if c is not None and (c.queue or c.released):
            self._post(lambda: self._after_fast(c))
        return value

    def read_own_lanes(self, object_ids: list[bytes], timeout: float | None) -> None:
        """For a get of several refs: reads on this thread the results of the lane calls among
        them that this thread sent (the get needs them all anyway), instead of a thread each."""
        deadline = None if timeout is None else time.monotonic() + timeout
        me = threading.get_ident()
        for object_id in object_ids:
            fast = self._fast.get(object_id)
            if fast is not None and fast[0].sender == me:
                self.fast_get(object_id, None if deadline is None else max(0.0, deadline - time.monotonic()))

    def _handover_later(self, lane: FastLane) -> None:
        if lane in self._handovers_due:
            return
        self._handovers_due.add(lane)

        def handover() -> None:
            self._handovers_due.discard(lane)
            lane.request_handover()  # a no-op if its sender read it meanwhile
        asyncio.get_running_loop().call_later(HANDOVER_DELAY_S, handover)

    def need(self, object_id: bytes) -> None:
        """Something waits for `object_id` in the memory store (any thread): if it is a call on a
        lane, its result is read for the store now rather than by its sender's get."""
        fast = self._fast.get(object_id)
        if fast is not None:
            fast[0].request_handover()

    def _forget_fast(self, object_id: bytes) -> None:
        """A lane call's result is in hand: its sender may take a lane again."""
        self._fast.pop(object_id, None)
        sender = self._sent_by.pop(object_id, None)
        if sender is not None:
            self._busy_senders.discard(sender)

    def _post(self, fn: Callable[[], None]) -> None:
        """Hands `fn` to the core loop from a lane's reader."""
        try:
            self._loop.call_soon_threadsafe(fn)  # type: ignore[union-attr]
        except RuntimeError:  # the loop closed: this process is shutting down
            pass

    def _lane_result(self, lane: FastLane, call: PendingCall, result: pb.TaskResult) -> None:
        self._forget_fast(call.return_ids[0])
        self._post(lambda: self._fast_done(call, result))

    def _lane_lost(self, lane: FastLane, call: PendingCall, error: BaseException) -> None:
        self._forget_fast(call.return_ids[0])
        log.info("fast lane to actor %s broke: %s", call.spec.actor_id.hex()[:8], error)
        self._post(lambda: self._fast_lost(call))
        # (the lane is closed now: the next fast call opens a new one, or the loop's path is used)

    def _fast_done(self, call: PendingCall, result: pb.TaskResult) -> None:
        c = self.conn(call.spec.actor_id)
        self._finish(c, call, result)
        self._after_fast(c)

    def _after_fast(self, c: ActorConn) -> None:
        self._maybe_collect(c)
        if c.queue:
            self._flush(c)

    def _fast_lost(self, call: PendingCall) -> None:
        """A call whose lane broke, as a call in flight on a lost stream: retried, or failed
        with the typed error once the head tells what became of the actor (see _connect)."""
        c = self.conn(call.spec.actor_id)
        if call.cancelled:
            fail(self.owned, call, exceptions.TaskCancelledError(call.spec.task_id.hex()))
        elif c.death is not None:
            fail(self.owned, call, c.death)
        else:
            if call.take_retry():
                c.queue.appendleft(call)
            else:
                c.orphans.append(call)
            if self._closed or c.resolving:
                return  # the connect under way takes them
            if c.stream is not None and not c.stream.lost:
                c.stream.abort()  # its loss reconnects, as the head tells (_on_lost, _connect)
            else:
                c.resolving = True
                asyncio.get_running_loop().create_task(self._connect(c))
            return
        self._maybe_collect(c)
        if c.queue:
            self._flush(c)


def death_error(owned: OwnedValues, info: pb.ActorInfo) -> exceptions.ActorDiedError:
    name = f"{info.spec.class_name} ({info.spec.actor_id.hex()})"
    if info.death_error.data or info.death_error.location.path:
        try:
            owned.decode(info.spec.actor_id, info.death_error)
        except exceptions.ActorDiedError as died:  # the constructor called exit_actor(): no error of its own
            return died
        except BaseException as cause:
            err = exceptions.ActorDiedError(
                f"The actor {name} died because of an error raised in its creation task: {cause}",
                info.spec.actor_id.hex())
            err.__cause__ = cause
            return err
    return exceptions.ActorDiedError(f"The actor {name} is dead: {info.death_cause or 'unknown cause'}",
                                     info.spec.actor_id.hex())
