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
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable

import grpc
from kastor.runtime import config, exceptions, retry, task_events
from kastor.runtime.frame_stream import CallStream, open_call_stream
from kastor.runtime.owned_values import OwnedValues
from kastor.runtime.peers import Peers
from kastor.runtime.pending import PendingCall, fail, resolve_deps, store_result
from kastor.runtime.protocol import kastor_pb2 as pb

log = logging.getLogger("kastor.actors")

RESOLVE_POLL_S = 5.0
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
                 "released", "end_gracefully", "class_name", "created", "killed", "broken_address")

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


class ActorSubmitter:
    def __init__(self, peers: Peers, owned: OwnedValues):
        self.peers = peers
        self.owned = owned
        self.conns: dict[bytes, ActorConn] = {}
        self._closed = False

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
        task_events.submitted(call.spec)
        c = self.conn(call.spec.actor_id)
        if c.death is not None:
            fail(self.owned, call, c.death)
            return
        c.queue.append(call)
        if not call.resolved:
            asyncio.get_running_loop().create_task(self._deps_then_flush(c, call))
        else:
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
        batch = []
        q = c.queue
        while q and q[0].ready:
            call = q.popleft()
            if call.cancelled:
                fail(self.owned, call, exceptions.TaskCancelledError(call.spec.task_id.hex()))
                continue
            c.inflight[call.spec.task_id] = call
            call.stream = c.stream
            task_events.running(call.spec, c.stream.address)
            batch.append(call.spec)
        if batch:
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
                    c.stream = await open_call_stream(self.peers, info.address, self._on_results(
                        c, info.num_restarts), self._on_lost(c), PROBE_TIMEOUT_S)
                    asyncio.get_running_loop().create_task(self._watch_incarnation(c, c.stream, info))
                    break
                after = info.version
        except Exception as e:  # keep the caller's refs from hanging on an internal fault
            log.exception("actor connect failed")
            self._kill_conn(c, exceptions.ActorUnavailableError(f"Could not reach the actor: {e}"), lost)
            return
        finally:
            c.resolving = False
        self._flush(c)

    async def _watch_incarnation(self, c: ActorConn, stream: CallStream, info: pb.ActorInfo) -> None:
        """Drops `stream` once the head has restarted its actor: the instance it reaches is stale.

        A worker whose node the head declared dead stops by itself (see worker_lease), except on
        a node cut off from the head but not from its callers. A caller that hears of the new
        incarnation from the head moves to it at once: the stream is dropped, and its calls are
        retried on the new instance or failed, as for any lost stream.
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
        self._fail_all(list(lost or ()) + list(c.queue), error)
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
            for result in results:
                if result.incarnation != incarnation:
                    log.warning("discarding a result from incarnation %d of actor %s %s; expected %d: dropping "
                                "the stream", result.incarnation, c.class_name, c.actor_id.hex()[:8], incarnation)
                    stream.abort()
                    return
                call = c.inflight.pop(result.task_id, None)
                if call is None:
                    continue
                if result.status == pb.TASK_ACTOR_EXITED:
                    fail(self.owned, call, exceptions.ActorDiedError(
                        f"The actor {c.class_name} ({c.actor_id.hex()}) exited: exit_actor() was called.",
                        c.actor_id.hex()))
                elif call.cancelled and result.status != pb.TASK_OK:
                    fail(self.owned, call, exceptions.TaskCancelledError(call.spec.task_id.hex()))
                else:
                    store_result(self.owned, call, result)
            self._maybe_collect(c)
        return handle

    def _on_lost(self, c: ActorConn):
        def handle(stream: CallStream, error: BaseException | None) -> None:
            if c.stream is not stream:
                return
            retry, lost = [], []
            for call in c.inflight.values():
                call.stream = None
                if not stream.established:  # never written: it did not run, and spends no retry
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
        for actor_id, c in self.conns.items():
            if task_id in c.inflight or any(call.spec.task_id == task_id for call in c.queue):
                return actor_id
        return None

    def cancel(self, actor_id: bytes, task_id: bytes, recursive: bool) -> bool:
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
        self._maybe_collect(c)

    def _maybe_collect(self, c: ActorConn) -> None:
        if not c.released or c.killed or c.queue or c.inflight or self._closed:
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

    async def kill(self, actor_id: bytes, no_restart: bool, reason: str) -> None:
        try:
            await self.peers.head_rpc("KillActor", pb.KillActorRequest(
                actor_id=actor_id, no_restart=no_restart, reason=reason), timeout=30)
        except (grpc.aio.AioRpcError, ConnectionError) as e:
            log.warning("could not kill actor %s: %s", actor_id.hex(), e)

    def owns_actors(self) -> bool:
        """Whether this process created an actor that is not known dead (it dies with its owner)."""
        return any(c.created is not None and c.death is None and not c.killed for c in self.conns.values())

    def close(self) -> None:
        self._closed = True
        for c in self.conns.values():
            if c.stream is not None:
                c.stream.abort()


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
