"""Submitting normal tasks: lease workers from node agents, then push tasks straight to them.

This is Ray's ownership model in small. The owner asks a node agent for a worker that fits
the task's resources (a lease); the agent answers with a worker address, or with another
node's address when it can never fit the shape. Tasks then travel on an Execute stream to
the leased worker, with no agent or head in between. Short tasks are pipelined a few deep
per lease; a lease lingers briefly when its queue empties so a tight loop keeps its worker.

A lease belongs to this process (its owner address travels with the request): the worker
exits if our stream to it breaks mid-call, and its node takes back a lease we were granted
but never used. A shape no node can fit is reported infeasible: we warn once and ask again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict, deque

import grpc
from kastor.runtime import config, exceptions, node_labels, task_events
from kastor.runtime.frame_stream import CallStream, open_call_stream
from kastor.runtime.owned_values import OwnedValues
from kastor.runtime.peers import Peers
from kastor.runtime.pending import PendingCall, fail, resolve_deps, store_result
from kastor.runtime.placement import in_group
from kastor.runtime.protocol import kastor_pb2 as pb

log = logging.getLogger("kastor.tasks")

MAX_LEASE_REQUESTS = 8      # outstanding lease requests per scheduling key
SHORT_TASK_S = 0.005        # tasks faster than this are pipelined
# Calls in flight per lease for short tasks. 32 rather than 8: a burst of 1,000 no-op tasks then
# goes in frames 4x as large, which cut the CPU per task by ~20% over all processes (driver, both
# workers: bench/README.md, "Tasks"); a short task holds the rest of its frame for < 5 ms.
PIPELINE_DEPTH = 32
INFEASIBLE_RETRY_S = (0.5, 2.0)  # first and longest wait before asking again for an infeasible shape


class Lease:
    __slots__ = ("key", "worker_id", "gpu_ids", "stream", "inflight", "closing", "calls_left", "idle_since",
                 "linger_timer", "last_result", "node", "granted_at")

    def __init__(self, key: tuple, worker_id: bytes, gpu_ids: list[int], stream: CallStream, max_calls: int = 0,
                 node: str = ""):
        self.key = key
        self.worker_id = worker_id
        self.gpu_ids = gpu_ids
        self.stream = stream
        self.inflight: dict[bytes, tuple[PendingCall, float]] = {}
        self.closing = False
        self.calls_left = max_calls or -1  # max_calls: the worker exits after that many; -1: no limit
        self.idle_since = 0.0  # when its last call finished with nothing else to do (time.monotonic())
        self.linger_timer: asyncio.TimerHandle | None = None  # the one pending check for an idle lease
        self.last_result = 0.0  # when its last frame of results arrived (time.monotonic())
        self.node = node  # the node agent that granted it (where it goes back)
        self.granted_at = time.monotonic()


class TaskSubmitter:
    def __init__(self, peers: Peers, owned: OwnedValues):
        self.peers = peers
        self.owned = owned
        self.queues: dict[tuple, deque[PendingCall]] = defaultdict(deque)
        self.leases: dict[tuple, list[Lease]] = defaultdict(list)
        self.requesting: dict[tuple, int] = defaultdict(int)
        self.runtime_ema: dict[tuple, float] = {}
        self.calls: dict[bytes, PendingCall] = {}
        self.children: dict[bytes, list[bytes]] = defaultdict(list)
        self._spread_turn = 0
        # SPREAD turns given back: the nodes whose lease's stream was lost before its worker
        # accepted it, which the next lease request of that key asks again (_lost_before_accepted).
        self._turns_back: dict[tuple, deque[str]] = defaultdict(deque)
        self.handed_back = 0  # leases given back to their node unused (tests and diagnostics read it)
        self._closed = False
        self._warned_infeasible: set[tuple] = set()

    # ---- entry points (on the loop) ----

    def submit(self, call: PendingCall) -> None:
        self.calls[call.spec.task_id] = call
        task_events.submitted(call.spec)
        if call.spec.parent_task_id:
            self.children[call.spec.parent_task_id].append(call.spec.task_id)
        if not call.resolved:
            asyncio.get_running_loop().create_task(self._submit_after_deps(call))
        else:
            self._enqueue(call)

    async def _submit_after_deps(self, call: PendingCall) -> None:
        await resolve_deps(self.owned, call)
        if call.finished:
            return
        if call.cancelled:
            self._finish(call, exc=exceptions.TaskCancelledError(call.spec.task_id.hex()))
        else:
            self._enqueue(call)

    def _enqueue(self, call: PendingCall, front: bool = False) -> None:
        q = self.queues[call.key]
        q.appendleft(call) if front else q.append(call)
        self._pump(call.key)

    def cancel(self, task_id: bytes, force: bool, recursive: bool) -> bool:
        call = self.calls.get(task_id)
        if call is None:
            return False
        call.cancelled = True
        call.force_cancel = force
        q = self.queues.get(call.key)
        if not call.resolved:
            self._finish(call, exc=exceptions.TaskCancelledError(task_id.hex()))
        elif q is not None and call in q:
            q.remove(call)
            self._finish(call, exc=exceptions.TaskCancelledError(task_id.hex()))
        elif call.stream is not None:
            asyncio.get_running_loop().create_task(self._cancel_remote(call, force, recursive))
        return True

    async def _cancel_remote(self, call: PendingCall, force: bool, recursive: bool) -> None:
        try:
            await self.peers.worker_stub(call.stream.address).CancelTask(
                pb.CancelRequest(task_id=call.spec.task_id, force=force, recursive=recursive),
                metadata=self.peers.metadata, timeout=10)
        except grpc.aio.AioRpcError:
            pass  # the worker is gone: the lost stream settles the call

    def children_of(self, task_id: bytes) -> list[bytes]:
        """The tasks this process submitted from inside task `task_id` (for a recursive cancel)."""
        return list(self.children.get(task_id, ()))

    def close(self) -> None:
        self._closed = True
        for leases in self.leases.values():
            for lease in leases:
                lease.stream.abort()

    # ---- leases ----

    def _pump(self, key: tuple) -> None:
        q = self.queues[key]
        depth = PIPELINE_DEPTH if self.runtime_ema.get(key, 1.0) < SHORT_TASK_S else 1
        for lease in self.leases[key]:
            if not q:
                break
            if lease.closing or lease.stream.lost:
                continue
            batch = []
            while q and len(lease.inflight) + len(batch) < depth and lease.calls_left != 0:
                lease.calls_left -= 1
                call = q.popleft()
                call.stream = lease.stream
                if lease.gpu_ids:
                    call.spec.gpu_ids[:] = lease.gpu_ids
                batch.append(call)
            if batch:
                now = time.monotonic()
                for call in batch:
                    lease.inflight[call.spec.task_id] = (call, now)
                    task_events.running(call.spec, lease.stream.address)
                lease.stream.send([c.spec for c in batch])
        wanted = min(len(q), MAX_LEASE_REQUESTS) - self.requesting[key]
        for _ in range(max(0, wanted)):
            self.requesting[key] += 1
            asyncio.get_running_loop().create_task(
                self._lease(key, q[0].required, q[0].spec.job_id, q[0].placement, q[0].spec.name,
                            q[0].spec.runtime_env))

    async def _first_node(self, where: pb.Placement | None, key: tuple = ()) -> str | None:
        """The node agent to ask for a lease: this host's, the next one in turn (SPREAD), or the
        pinned one. None when a task is pinned (not soft) to a node that is not alive.

        For work with a label_selector (and no other strategy) this host's agent is asked too:
        it serves the work when its labels are the ones picked, and otherwise points elsewhere."""
        if where is None or not (where.spread or where.node_id):
            return self.peers.node_address
        if where.spread and self._turns_back.get(key):
            return self._turns_back[key].popleft()  # (a node since gone fails the request: the next turn then)
        try:
            nodes = [n for n in (await self.peers.head_rpc("ListNodes", pb.ListRequest())).nodes if n.alive]
        except (grpc.aio.AioRpcError, ConnectionError) as e:
            log.warning("cannot list nodes to place a task (%s); asking this host's node", e)
            return self.peers.node_address
        if where.spread and where.labels:  # SPREAD among the nodes its labels pick
            nodes = node_labels.choose([s.match for s in where.labels], nodes, lambda n: n.labels)[1]
        if where.spread and nodes:
            nodes.sort(key=lambda n: n.node_id)
            self._spread_turn += 1
            return nodes[self._spread_turn % len(nodes)].address
        pinned = [n.address for n in nodes if n.node_id == where.node_id]
        if pinned:
            return pinned[0]
        return self.peers.node_address if where.soft else None

    def _unschedulable(self, key: tuple, where: pb.Placement) -> None:
        q = self.queues[key]
        error = exceptions.TaskUnschedulableError(
            f"The task is pinned to node {where.node_id} (NodeAffinitySchedulingStrategy, soft=False), which is "
            f"not alive. Pass soft=True to let it run elsewhere.")
        while q:
            self._finish(q.popleft(), exc=error)

    def _runtime_env_failed(self, key: tuple, name: str, message: str) -> None:
        """As in Ray, work whose runtime_env cannot be set up fails (it is not retried)."""
        q = self.queues[key]
        error = exceptions.RuntimeEnvSetupError(f"The runtime_env of task {name} could not be set up {message}")
        while q:
            self._finish(q.popleft(), exc=error)

    def _group_removed(self, key: tuple, message: str) -> None:
        q = self.queues[key]
        error = exceptions.TaskPlacementGroupRemoved(f"The task cannot run: {message}.")
        while q:
            self._finish(q.popleft(), exc=error)

    def _warn_infeasible(self, key: tuple, name: str, message: str) -> None:
        """Once per shape of work, as Ray does: the work waits, but the user should know why."""
        if key in self._warned_infeasible:
            return
        self._warned_infeasible.add(key)
        log.warning("Warning: the task %s is infeasible and cannot be scheduled right now: %s", name, message)

    async def _lease(self, key: tuple, required: dict, job_id: bytes, where: pb.Placement | None,
                     name: str = "", runtime_env: str = "") -> None:
        """One lease for `key`'s queue: asked for, its stream opened, then put to work.

        It counts in `requesting` until it is in `leases`, its stream open, not merely until it
        was granted: a `_pump` in between (another lease of the key opening) saw the queue not
        yet served and no request for it, and asked for one more lease. Under SPREAD that extra
        request took the next node's turn, and whichever of the two leases opened first took the
        task, so three tasks that had to run at once ran on n2, n2, n3 (tests/test_scheduling.py)."""
        try:
            address = await self._first_node(where, key)
            if address is None:
                self._unschedulable(key, where)
                return
            spill = where is None or where.spread or where.soft or not where.node_id
            # SPREAD or node affinity chose this node: no spilling for busyness.
            queued = where is not None and bool(where.spread or where.node_id)
            wait = INFEASIBLE_RETRY_S[0]
            while True:
                try:
                    reply = await self.peers.node_stub(address).RequestLease(
                        pb.LeaseRequest(required=required, job_id=job_id, allow_spillback=spill,
                                        owner_address=self.peers.address, queue_if_busy=queued, report_infeasible=True,
                                        runtime_env=runtime_env, labels=where.labels if where is not None else ()),
                        metadata=self.peers.metadata)
                except grpc.aio.AioRpcError as e:
                    if self._closed:
                        return
                    log.warning("lease request to %s failed (%s); retrying", address, e.code().name)
                    await asyncio.sleep(0.5)
                    address = await self._first_node(where, key)
                    if address is None:
                        self._unschedulable(key, where)
                        return
                    continue
                if reply.spillback_address:
                    address, queued = reply.spillback_address, True
                    continue
                if reply.runtime_env_error:
                    self._runtime_env_failed(key, name, reply.runtime_env_error)
                    return
                if reply.placement_group_removed:
                    self._group_removed(key, reply.message)
                    return
                if reply.infeasible:
                    if not in_group(required):  # a placement group's work waits for its group quietly, as in Ray
                        self._warn_infeasible(key, name, reply.message)
                    await asyncio.sleep(wait)
                    wait = min(wait * 2, INFEASIBLE_RETRY_S[1])
                    if self._closed or not self.queues[key]:
                        return  # shut down, or the work was cancelled meanwhile
                    continue
                break
            if self._closed:
                await self._hand_back(address, reply.worker_id)
                return
            lease = Lease(key, reply.worker_id, list(reply.gpu_ids), None, key[-1], address)  # type: ignore[arg-type]
            lease.stream = await open_call_stream(self.peers, reply.worker_address, self._on_results(lease),
                                                  self._on_lost(lease), data_port=reply.worker_data_port)
            if self._closed:
                lease.stream.abort()
                await self._hand_back(address, reply.worker_id)
                return
            self.leases[key].append(lease)
        finally:
            self.requesting[key] -= 1
        if self.queues[key]:
            self._pump(key)
        else:
            self._release(lease)

    async def _hand_back(self, address: str, worker_id: bytes) -> None:
        """Returns a lease granted after close() or whose stream was lost before it was
        accepted; if this never arrives, the node reclaims it."""
        try:
            await self.peers.node_stub(address).WorkerIdle(pb.WorkerIdleRequest(worker_id=worker_id),
                                                           metadata=self.peers.metadata, timeout=2)
        except grpc.aio.AioRpcError:
            return
        self.handed_back += 1

    def _release(self, lease: Lease) -> None:
        if lease.linger_timer is not None:
            lease.linger_timer.cancel()
            lease.linger_timer = None
        lease.closing = True
        lease.stream.close()
        leases = self.leases[lease.key]
        if lease in leases:
            leases.remove(lease)

    def _linger(self, lease: Lease, now: float) -> None:
        """The lease went idle at `now`: it is handed back once it stayed idle LEASE_LINGER_S.

        Why from the moment it went idle, and one timer per lease: a tight loop of `get(f.remote())`
        leaves its lease idle for a moment between every two tasks. Released whenever a timer set by
        an earlier task happened to fire in such a moment, the loop paid a lease round trip every
        ~50 tasks and moved between workers; Ray's owner likewise keeps its worker while it has
        work of that shape coming."""
        lease.idle_since = now
        if lease.linger_timer is None:
            lease.linger_timer = asyncio.get_running_loop().call_later(
                config.LEASE_LINGER_S, self._maybe_release, lease)

    def _maybe_release(self, lease: Lease) -> None:
        lease.linger_timer = None
        if lease.inflight or lease.closing or self.queues[lease.key]:
            return  # busy again: its next idle moment sets a new timer
        idle = time.monotonic() - lease.idle_since
        if idle < config.LEASE_LINGER_S:  # it worked since the timer was set
            lease.linger_timer = asyncio.get_running_loop().call_later(
                config.LEASE_LINGER_S - idle, self._maybe_release, lease)
            return
        self._release(lease)

    # ---- results ----

    def _on_results(self, lease: Lease):
        def handle(stream: CallStream, results: list[pb.TaskResult]) -> None:
            now = time.monotonic()
            done = [(result, lease.inflight.pop(result.task_id, None)) for result in results]
            sent = [entry[1] for _, entry in done if entry is not None]
            if sent:
                took = per_task_runtime(min(sent), lease.last_result, now, len(sent))
                ema = self.runtime_ema.get(lease.key)
                self.runtime_ema[lease.key] = took if ema is None else 0.8 * ema + 0.2 * took
            lease.last_result = now
            for result, entry in done:
                if entry is None:
                    continue
                call, _ = entry
                if result.status == pb.TASK_APP_ERROR and self._retry_app_error(call, result):
                    call.stream = None
                    self._enqueue(call, front=True)
                    continue
                self._finish(call, result=result)
            self._pump(lease.key)
            if not lease.inflight and lease.calls_left == 0 and not lease.closing:
                self._release(lease)  # its worker retires (max_calls); the queue gets a new lease
                self._pump(lease.key)
            elif not lease.inflight and not self.queues[lease.key]:
                self._linger(lease, now)
        return handle

    def _retry_app_error(self, call: PendingCall, result: pb.TaskResult) -> bool:
        allowed = call.retry_exceptions
        if not allowed or call.cancelled:
            return False
        if allowed is not True:
            try:
                err = self.owned.decode(call.spec.task_id, result.error)
            except BaseException as e:
                err = getattr(e, "cause", e)
            else:
                err = None
            if not isinstance(err, allowed):
                return False
        return call.take_retry()

    def _on_lost(self, lease: Lease):
        def handle(stream: CallStream, error: BaseException | None) -> None:
            leases = self.leases[lease.key]
            if lease in leases:
                leases.remove(lease)
            lost = [call for call, _ in lease.inflight.values()]
            lease.inflight.clear()
            for call in reversed(lost):
                call.stream = None
                if call.cancelled:
                    self._finish(call, exc=exceptions.TaskCancelledError(call.spec.task_id.hex()))
                elif not self._closed and (not stream.established or call.take_retry()):
                    self.queues[call.key].appendleft(call)  # never written to the worker: no retry spent
                else:
                    self._finish(call, exc=_crashed(call, error, self._closed))
            if not stream.established and not self._closed:
                self._lost_before_accepted(lease, error, lost)
            if not self._closed and self.queues[lease.key]:
                self._pump(lease.key)
        return handle

    def _lost_before_accepted(self, lease: Lease, error: BaseException | None, calls: list[PendingCall]) -> None:
        """The worker never accepted the stream, so it ran none of the calls (those not cancelled
        are queued again, no retry spent) and its node still counts the lease as ours: hand it
        back now rather than leave the node to reclaim it after LEASE_RECLAIM_GRACE_S. Only soon
        after the grant, though: later the node may have reclaimed it already and leased the
        worker to someone else, whose lease a WorkerIdle would end. The SPREAD turn the lease took
        goes back to its key, so its calls ask the same node again rather than the next one."""
        requeued = [call for call in calls if not call.cancelled]
        spread = bool(requeued) and requeued[0].placement is not None and requeued[0].placement.spread
        if spread:
            self._turns_back[lease.key].append(lease.node)
        handing_back = time.monotonic() - lease.granted_at < config.LEASE_RECLAIM_GRACE_S / 2
        tasks = f"; its {len(requeued)} task(s) ask{' that node' if spread else ''} for a new lease" if requeued else ""
        log.warning("the stream to worker %s (leased from node %s) was lost before the worker accepted it (%s): %s%s",
                    lease.stream.address, lease.node, _describe(error),
                    "its lease goes back to the node" if handing_back else "the node reclaims its lease", tasks)
        if handing_back:
            asyncio.get_running_loop().create_task(self._hand_back(lease.node, lease.worker_id))

    def _finish(self, call: PendingCall, result: pb.TaskResult | None = None,
                exc: BaseException | None = None) -> None:
        self.calls.pop(call.spec.task_id, None)
        self.children.pop(call.spec.task_id, None)
        if exc is not None:
            fail(self.owned, call, exc)
        elif result is not None:
            if call.cancelled and result.status != pb.TASK_OK:
                fail(self.owned, call, exceptions.TaskCancelledError(call.spec.task_id.hex()))
            else:
                store_result(self.owned, call, result)


def per_task_runtime(first_sent: float, last_result: float, now: float, count: int) -> float:
    """How long each of `count` tasks whose results arrived together at `now` took to run.

    Timed from the later of the frame's first send and the lease's previous results, and shared
    among the frame's tasks: pipelined tasks queue at the worker behind the ones sent before them,
    and timed from their own send, 32 no-op tasks in flight looked like 4 ms each and could pass
    SHORT_TASK_S, which turned pipelining off for the very tasks it is for."""
    return max(0.0, now - max(first_sent, last_result)) / max(1, count)


def _crashed(call: PendingCall, error: BaseException | None, closing: bool) -> exceptions.WorkerCrashedError:
    """Says how often the task ran: `spec.attempt` counts the retries taken (crashes, and
    application errors under retry_exceptions), so runs = attempt + 1."""
    name, cause = call.spec.name, _describe(error)
    if closing:
        return exceptions.WorkerCrashedError(
            f"The worker running {name} died while this process was shutting down; it was not retried. "
            f"Cause: {cause}")
    runs = call.spec.attempt + 1
    if runs == 1:
        return exceptions.WorkerCrashedError(
            f"The worker running {name} died, and the task has max_retries=0: set max_retries to retry it. "
            f"Cause: {cause}")
    return exceptions.WorkerCrashedError(
        f"The worker running {name} died on the last of its {runs} attempts: its {runs - 1} retries "
        f"(max_retries) are used up. Cause: {cause}")


def _describe(error: BaseException | None) -> str:
    if isinstance(error, grpc.aio.AioRpcError):
        return f"{error.code().name}: {error.details()}"
    return "the connection closed" if error is None else repr(error)
