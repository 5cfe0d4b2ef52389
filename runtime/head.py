"""The head: Kastor's control service (Ray's GCS).

It keeps the cluster's tables (nodes, actors, names, jobs, the code registry), places
actors on nodes by resources, restarts them per max_restarts, and answers where an actor
lives. It is never on the path of a call: callers ask once, then talk to the worker.
Every change goes through the Store before it is acknowledged.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable

import grpc
from kastor.runtime import auth, config, flags, launcher, logging_setup, node_labels, rpc, settings, tls
from kastor.runtime.cluster_demand import DemandMixin
from kastor.runtime.cluster_watch import ClusterWatchMixin
from kastor.runtime.ids import actor_job_id
from kastor.runtime.placement import in_group
from kastor.runtime.placement_groups import PlacementGroupsMixin
from kastor.runtime.protocol import kastor_pb2 as pb
from kastor.runtime.protocol import kastor_pb2_grpc as pb_grpc
from kastor.runtime.resources import fits
from kastor.runtime.rpc import ChannelCache, bind_host
from kastor.runtime.run_to_end import finish_even_if_cancelled, run_to_end
from kastor.runtime.store import InMemoryStore, Store

log = logging.getLogger("kastor.head")

ACTORS, NODES, JOBS, CODE, META = "actors", "nodes", "jobs", "code", "meta"
PACKAGES = "packages"  # runtime_env packages by URI (not loaded at start: fetched when a node asks)
LOG_QUEUE_MAX = 1000  # worker output batches held per driver session before dropping


def _restartable(info: pb.ActorInfo) -> bool:
    limit = info.spec.max_restarts
    return not info.killed and (limit == -1 or info.num_restarts < limit)


# watch_nodes looks for silent nodes this often; a tick later than this by more than
# WATCH_STALL_S means the head itself did not run meanwhile.
WATCH_TICK_S = 1.0
WATCH_STALL_S = 1.0


class Head(PlacementGroupsMixin, DemandMixin, ClusterWatchMixin, pb_grpc.HeadServicer):
    def __init__(self, store: Store, token: str, cluster_id: str):
        self.store = store
        self.package_uris: set[str] = set()  # runtime_env packages known to be in the store
        self.metadata = auth.metadata(token)
        self.cluster_id = cluster_id
        self.nodes: dict[str, pb.NodeInfo] = {}
        self.node_seen: dict[str, float] = {}
        self.actors: dict[bytes, pb.ActorInfo] = {}
        self.names: dict[tuple[str, str], bytes] = {}
        self.jobs: dict[bytes, pb.RegisterJobRequest] = {}
        self.code: dict[str, pb.FunctionEntry] = {}
        # GetFunction calls served: a worker fetching code. An actor's class goes with its
        # StartActor instead, so creating actors adds none (kastor_head_code_fetches).
        self.code_fetches = 0
        self.waiters: dict[bytes, list[asyncio.Future]] = defaultdict(list)
        self.log_listeners: dict[bytes, set[asyncio.Queue]] = defaultdict(set)
        self.starting_on: Counter[str] = Counter()  # node id -> actors being started there
        self.job_end_hooks: list[Callable[[bytes], None]] = []  # e.g. the client port's object table
        self.pending: set[bytes] = set()
        self.placing: set[bytes] = set()
        # StartActor calls in flight, per node: a node declared dead has them cancelled, since a
        # node that vanished (a deleted pod's network gone) may never answer them.
        self.start_calls: dict[str, set[grpc.aio.UnaryUnaryCall]] = defaultdict(set)
        self._channels = ChannelCache()
        self._next_job = 1
        self.unreconciled: set[str] = set()    # nodes whose live actors we have not yet compared
        self.job_sessions: dict[bytes, int] = defaultdict(int)
        self.stopping = False  # a head shutting down must not read its own closing streams as drivers leaving
        self.state_redis: tuple[str, str | None] = ("", None)  # its Redis (address, password), for durable actors
        self.init_groups()
        self.init_demand()
        self.init_watch()

    def is_node_host(self, host: str) -> bool:
        """Whether `host` runs a live node agent (and so its workers): the client port forwards there only."""
        return any(n.alive and n.ip == host for n in self.nodes.values())

    def node_stub(self, address: str) -> pb_grpc.NodeAgentStub:
        return pb_grpc.NodeAgentStub(self._channels.get(address))

    async def load(self) -> None:
        """Rebuilds the tables from the store: empty for a fresh store, everything after a restart.

        A restarted head then reconciles: nodes that heartbeat report their live actors (see
        `_reconcile`), nodes silent for NODE_RECONNECT_GRACE_S are declared dead by `watch_nodes`, actors caught
        mid-placement are placed again after RECONCILE_GRACE_S, and jobs whose driver does not
        reopen its session within JOB_RECONNECT_GRACE_S are finished.
        """
        # A recovered node is declared dead only NODE_RECONNECT_GRACE_S after this load, not
        # NODE_DEATH_TIMEOUT_S: its agent can reach this head only once the head's Service routes
        # here (readiness probe, endpoints), and a live node declared dead loses every actor it
        # runs that has no restarts left. Declaring it dead later never weakens fencing.
        now = time.monotonic()
        reconnect_by = now + max(0.0, config.NODE_RECONNECT_GRACE_S - config.NODE_DEATH_TIMEOUT_S)
        for raw in (await self.store.get_all(NODES)).values():
            node = pb.NodeInfo.FromString(raw)
            self.nodes[node.node_id] = node
            if node.alive:
                self.node_seen[node.node_id] = reconnect_by
                self.unreconciled.add(node.node_id)
        unplaced = []
        for raw in (await self.store.get_all(ACTORS)).values():
            info = pb.ActorInfo.FromString(raw)
            self.actors[info.spec.actor_id] = info
            if info.spec.name and info.state != pb.DEAD:
                self.names[(info.spec.namespace, info.spec.name)] = info.spec.actor_id
            if info.state in (pb.PENDING, pb.RESTARTING):
                unplaced.append(info.spec.actor_id)
        for raw in (await self.store.get_all(CODE)).values():
            entry = pb.FunctionEntry.FromString(raw)
            self.code[entry.function_id] = entry
        for key, raw in (await self.store.get_all(JOBS)).items():
            self.jobs[int(key).to_bytes(4, "big")] = pb.RegisterJobRequest.FromString(raw)
        await self.load_groups()
        await self.load_demand()
        next_job = await self.store.get(META, "next_job")
        self._next_job = int(next_job) if next_job else 1
        if self.actors or self.nodes:
            log.info("recovered %d actors, %d nodes, %d jobs, %d functions from the store",
                     len(self.actors), len(self.nodes), len(self.jobs), len(self.code))
        loop = asyncio.get_running_loop()
        loop.call_later(config.RECONCILE_GRACE_S, self._place_recovered, unplaced)
        for job_id in self.jobs:
            loop.call_later(config.JOB_RECONNECT_GRACE_S, self._expire_job, job_id)

    def _place_recovered(self, actor_ids: list[bytes]) -> None:
        for actor_id in actor_ids:
            info = self.actors[actor_id]
            if info.state in (pb.PENDING, pb.RESTARTING):  # not adopted from a node meanwhile
                self._place(actor_id)

    def _expire_job(self, job_id: bytes) -> None:
        if job_id in self.jobs and not self.job_sessions.get(job_id):
            log.info("job %d did not reopen its session in time; finishing it", int.from_bytes(job_id, "big"))
            asyncio.get_running_loop().create_task(self._job_finished(job_id))

    def _expire_unopened_job(self, job_id: bytes) -> None:
        """A job registered JOB_SESSION_OPEN_TIMEOUT_S ago whose driver never opened its session."""
        if job_id in self.jobs and job_id not in self.job_sessions:
            log.info("job %d: its driver never opened its session; finishing it", int.from_bytes(job_id, "big"))
            asyncio.get_running_loop().create_task(self._job_finished(job_id))

    # ---- persistence and notification ----

    async def _save(self, info: pb.ActorInfo) -> None:
        info.version += 1
        await self.store.put(ACTORS, info.spec.actor_id.hex(), info.SerializeToString())
        for fut in self.waiters.pop(info.spec.actor_id, ()):
            if not fut.done():
                fut.set_result(None)
        self.note_actor_saved(info)

    # ---- nodes ----

    async def RegisterNode(self, request, context):
        request.alive = True
        rejoined = request.node_id in self.nodes
        self.nodes[request.node_id] = request
        self.node_seen[request.node_id] = time.monotonic()
        # A rejoining node (declared dead meanwhile, or talking to a head that restarted) may
        # run actors the table placed elsewhere by now: compare on its next heartbeat.
        self.unreconciled.add(request.node_id)
        await self.store.put(NODES, request.node_id, request.SerializeToString())
        log.info("node %s %s at %s with %s", request.node_id, "rejoined" if rejoined else "joined",
                 request.address, dict(request.total))
        await self.groups_node_registered(request)
        for info in list(self.actors.values()):  # a node that fits makes waiting actors feasible
            if info.pending_reason and info.state != pb.DEAD and not self._infeasible_reason(info.spec):
                info.pending_reason = ""
                await self._save(info)
        self._place_pending()
        return pb.RegisterNodeReply(cluster_id=self.cluster_id, node_death_timeout_s=config.NODE_DEATH_TIMEOUT_S)

    async def Heartbeat(self, request, context):
        node = self.nodes.get(request.node_id)
        if node is None or not node.alive:
            return pb.HeartbeatReply(known=False)
        self.node_seen[request.node_id] = time.monotonic()
        node.available.clear()
        node.available.update(request.available)
        if request.total:  # it changes as placement group bundles are reserved and returned
            node.total.clear()
            node.total.update(request.total)
            self.return_stale_bundles(node)
        del node.leases[:]
        node.leases.extend(request.leases)  # who holds what, for `kastor status`
        del node.infeasible[:]
        node.infeasible.extend(request.infeasible)
        self.note_usage(node, request)
        kill = self._superseded_workers(request.actors)
        if request.node_id in self.unreconciled:
            self.unreconciled.discard(request.node_id)
            try:  # runs to its end: an actor it marked RESTARTING must still be placed
                kill = await finish_even_if_cancelled(self._compare_node(node, request))
            except asyncio.CancelledError:
                self.unreconciled.add(request.node_id)  # the stale workers to stop went with the reply
                raise
        self._place_pending()
        return pb.HeartbeatReply(known=True, kill_worker_ids=kill)

    def _superseded_workers(self, live) -> list[bytes]:
        """The workers a node reports whose actor the table has moved past: an older (or other)
        incarnation than the table's, or not the worker the table has for an ALIVE actor.

        Checked on every heartbeat, not only a (re)joined node's first: the reply of that first
        comparison can be lost after the head finished it (the caller's deadline passes first,
        the head's own one later), and a restart decided there (the node said the worker was
        gone) must still stop the worker if the node reports it afterwards. The head has given
        such an incarnation up and placed another, so no actor keeps two live instances. So is a
        killed actor's worker: the node's KillWorker, sent after KillActor's answer, may have
        been lost. Workers of other DEAD or of unknown actors are left to the first comparison:
        one may be finishing a graceful exit, and only a head that lost its table has none for
        a live worker."""
        stale = []
        for a in live:
            info = self.actors.get(a.actor_id)
            if info is None:
                continue
            if info.state == pb.DEAD:
                if info.killed:
                    stale.append(a.worker_id)
            elif a.num_restarts != info.num_restarts or (info.state == pb.ALIVE and info.worker_id != a.worker_id):
                stale.append(a.worker_id)
        return stale

    async def _compare_node(self, node: pb.NodeInfo, beat: pb.HeartbeatRequest) -> list[bytes]:
        """A (re)joined node's first heartbeat: its actors and bundles against the tables."""
        kill = await self._reconcile(node, list(beat.actors))
        if beat.total:  # the bundles it really holds, after a head restart that may have lost track
            await self.groups_node_registered(node)
        return kill

    async def _reconcile(self, node: pb.NodeInfo, live: list[pb.LiveActor]) -> list[bytes]:
        """Compares what a node runs with the actor table (after a head restart or a rejoin).

        A worker the table does not place there is stopped (its actor died or moved on, or it
        is another incarnation than the table's); an actor the head lost mid-placement is
        adopted; an actor the table has there but the node no longer runs died while nobody was
        listening, and is restarted per max_restarts.
        """
        kill = []
        running = {a.actor_id: a for a in live}
        for a in live:
            info = self.actors.get(a.actor_id)
            if info is None or info.state == pb.DEAD or a.num_restarts != info.num_restarts or \
                    (info.state == pb.ALIVE and info.worker_id != a.worker_id):
                kill.append(a.worker_id)  # its actor died, moved on, or was restarted since (a stale incarnation)
            elif info.state in (pb.PENDING, pb.RESTARTING) and a.actor_id not in self.placing:
                log.info("adopting actor %s found running on node %s", a.actor_id.hex()[:8], node.node_id)
                info.state, info.pending_reason = pb.ALIVE, ""
                info.address, info.node_id, info.pid, info.worker_id = a.address, node.node_id, a.pid, a.worker_id
                info.data_port = 0  # not in a node's LiveActor: its callers ask the worker (LeaseState)
                self.pending.discard(a.actor_id)
                await self._save(info)
        for info in list(self.actors.values()):
            if info.state == pb.ALIVE and info.node_id == node.node_id and info.spec.actor_id not in running:
                await self._actor_failed(info, "its worker died while the head was away")
        return kill

    async def ListNodes(self, request, context):
        self.requests["ListNodes"] += 1
        return pb.NodeList(nodes=list(self.nodes.values()))

    async def PickNode(self, request, context):
        required = dict(request.required)
        candidates = self.matching_nodes(required, request.labels)
        others = [n for n in candidates if n.node_id != request.exclude_node_id]
        others.sort(key=lambda n: not fits(n.available, required))
        excluded = len(others) < len(candidates)
        if others:
            return pb.PickNodeReply(found=True, node=others[0], feasible=True, excluded_matches=excluded)
        return pb.PickNodeReply(found=False, feasible=bool(candidates), excluded_matches=excluded)

    def matching_nodes(self, required: dict[str, float], labels) -> list[pb.NodeInfo]:
        """The schedulable nodes that can ever fit `required` and match the first of the `labels`
        selectors (label_selector, then its fallbacks) that any of them matches."""
        feasible = [n for n in self.nodes.values() if self.schedulable(n) and fits(n.total, required)]
        return node_labels.choose([s.match for s in labels], feasible, lambda n: n.labels)[1]

    async def watch_nodes(self) -> None:
        """Declares silent nodes dead and fails over their actors.

        Silence is measured on the head, and only while the head itself runs: a head starved of
        CPU (a loaded machine, a paused VM) reads no heartbeats, and when it runs again theirs are
        waiting to be read. So time a tick overran by is not counted against any node (see
        `discount_stall`); a head that stays starved still counts each tick's own second, so a
        node that really went silent is declared dead all the same, only later.
        """
        last = time.monotonic()
        while True:
            await asyncio.sleep(WATCH_TICK_S)
            now = time.monotonic()
            stalled = now - last - WATCH_TICK_S
            last = now
            if stalled > WATCH_STALL_S:
                self.discount_stall(stalled)
            for node in list(self.nodes.values()):
                if node.alive and now - self.node_seen.get(node.node_id, now) > config.NODE_DEATH_TIMEOUT_S:
                    node.alive = False
                    del node.leases[:]
                    del node.infeasible[:]
                    self.forget_node_usage(node.node_id)
                    log.warning("node %s missed heartbeats for %.0fs: marking it dead",
                                node.node_id, config.NODE_DEATH_TIMEOUT_S)
                    await self.store.put(NODES, node.node_id, node.SerializeToString())
                    for call in list(self.start_calls.get(node.node_id, ())):
                        call.cancel()  # its actor goes on to another node, or waits as pending
                    for info in list(self.actors.values()):
                        if info.node_id == node.node_id and info.state == pb.ALIVE:
                            await self._actor_failed(info, f"its node {node.node_id} died")
                    await self.groups_node_died(node.node_id)
            self.check_watch()  # the operator's watch: did what it acts on change?

    def discount_stall(self, stalled_s: float) -> None:
        """The head did not run for `stalled_s`: that time is no node's silence (its heartbeats
        may be queued, unread), so every node's last heartbeat moves forward by as much."""
        log.warning("the head did not run for %.1fs (a starved machine?): that time does not count against the "
                    "nodes' heartbeats", stalled_s)
        for node_id in self.node_seen:
            self.node_seen[node_id] += stalled_s

    # ---- jobs ----

    async def RegisterJob(self, request, context):
        """A new job. Its driver opens the job's session next; a job whose session never opens
        within JOB_SESSION_OPEN_TIMEOUT_S (the driver died first, or this reply reached nobody and
        the driver registered again) is finished, as a restarted head finishes jobs nobody reopens."""
        job_id = self._next_job.to_bytes(4, "big")
        self._next_job += 1
        if not request.namespace:
            request.namespace = f"anonymous-{uuid.uuid4().hex[:12]}"
        self.jobs[job_id] = request
        asyncio.get_running_loop().call_later(config.JOB_SESSION_OPEN_TIMEOUT_S, self._expire_unopened_job, job_id)
        await finish_even_if_cancelled(self._save_job(job_id, request))
        return pb.RegisterJobReply(job_id=job_id, namespace=request.namespace, cluster_id=self.cluster_id)

    async def _save_job(self, job_id: bytes, request: pb.RegisterJobRequest) -> None:
        await self.store.put(META, "next_job", str(self._next_job).encode())
        await self.store.put(JOBS, str(int.from_bytes(job_id, "big")), request.SerializeToString())

    async def ListJobs(self, request, context):
        """The running jobs, for util.state.list_jobs(); `connected`: its driver's session is open."""
        return pb.JobList(jobs=[pb.JobInfo(job_id=job_id, namespace=r.namespace, driver_address=r.driver_address,
                                           pid=r.pid, connected=bool(self.job_sessions.get(job_id)))
                                for job_id, r in self.jobs.items()])

    async def JobSession(self, request, context):
        """Lives as long as the driver: when it ends, the job's non-detached actors go."""
        if request.job_id not in self.jobs:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                                f"job {int.from_bytes(request.job_id, 'big')} is finished (its driver was away longer "
                                f"than its grace period); its non-detached actors are gone. Call kastor.shutdown() "
                                f"and kastor.init() again.")
        self.job_sessions[request.job_id] += 1
        logs: asyncio.Queue[pb.WorkerLog] = asyncio.Queue(LOG_QUEUE_MAX)
        if request.logs:
            self.log_listeners[request.job_id].add(logs)
        try:
            yield pb.JobEvent(kind="registered")
            while True:
                batch = [await logs.get()]
                while not logs.empty():
                    batch.append(logs.get_nowait())
                yield pb.JobEvent(kind="logs", logs=batch)
        finally:
            self.log_listeners[request.job_id].discard(logs)
            if not self.log_listeners[request.job_id]:
                del self.log_listeners[request.job_id]
            if request.job_id not in self.jobs:  # finished meanwhile: FinishJob, or its grace ran out
                self.job_sessions.pop(request.job_id, None)
            else:
                self._session_closed(request)

    def _session_closed(self, request: pb.JobSessionRequest) -> None:
        self.job_sessions[request.job_id] -= 1
        if self.job_sessions[request.job_id] or self.stopping:
            return
        if request.reconnect_grace_s > 0:  # a remote client may be back (laptop sleep, port-forward)
            log.info("job %d: its remote driver's session dropped; keeping the job for %.0fs",
                     int.from_bytes(request.job_id, "big"), request.reconnect_grace_s)
            asyncio.get_running_loop().call_later(request.reconnect_grace_s, self._expire_job, request.job_id)
        else:
            asyncio.get_running_loop().create_task(self._job_finished(request.job_id))

    async def PublishLogs(self, request, context):
        """Worker output, forwarded to its job's driver; dropped if it is not listening or keeping up."""
        for record in request.logs:
            for queue in self.log_listeners.get(record.job_id, ()):
                if not queue.full():
                    queue.put_nowait(record)
        return pb.Empty()

    async def FinishJob(self, request, context):
        if request.job_id in self.jobs:  # dropped from the table first: nothing would find its actors again
            await finish_even_if_cancelled(self._job_finished(request.job_id))
        return pb.Empty()

    async def _job_finished(self, job_id: bytes) -> None:
        self.job_sessions.pop(job_id, None)
        if self.jobs.pop(job_id, None) is not None:
            await self.store.delete(JOBS, str(int.from_bytes(job_id, "big")))
        for hook in self.job_end_hooks:
            hook(job_id)
        for info in list(self.actors.values()):
            if info.spec.job_id == job_id and not info.spec.detached and info.state != pb.DEAD:
                await self._kill(info, "its job's driver exited")
        await self.groups_of_job_finished(job_id)

    # ---- code registry ----

    async def PutFunction(self, request, context):
        if request.function_id not in self.code:
            await self.store.put(CODE, request.function_id, request.SerializeToString())
            self.code[request.function_id] = request
        return pb.Empty()

    async def GetFunction(self, request, context):
        self.code_fetches += 1
        entry = self.code.get(request.function_id)
        if entry is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no function or class {request.function_id} registered")
        return entry

    # ---- runtime_env packages ----

    async def PutPackage(self, request, context):
        """Keeps a driver's working_dir / py_modules zip (its URI is its content hash) in the store,
        so a restarted head on Redis still serves it to nodes that join later."""
        if not request.uri.startswith("kastor-pkg://"):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"not a package URI: {request.uri!r}")
        await self.store.put(PACKAGES, request.uri, request.data)
        self.package_uris.add(request.uri)
        return pb.Empty()

    async def GetPackage(self, request, context):
        data = await self.store.get(PACKAGES, request.uri)
        if data is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no runtime_env package {request.uri} was uploaded")
        return pb.Package(uri=request.uri, data=data)

    async def HasPackage(self, request, context):
        if request.uri not in self.package_uris and await self.store.get(PACKAGES, request.uri) is not None:
            self.package_uris.add(request.uri)  # uploaded before this head (re)started
        return pb.HasPackageReply(found=request.uri in self.package_uris)

    # ---- actors ----

    async def CreateActor(self, request, context):
        spec = request.spec
        if spec.actor_id in self.actors:  # a retry of a creation the head already acknowledged
            return pb.CreateActorReply(info=self.actors[spec.actor_id], existed=True)
        if spec.name:
            existing = self.names.get((spec.namespace, spec.name))
            if existing is not None and self.actors[existing].state != pb.DEAD:
                if request.get_if_exists:
                    return pb.CreateActorReply(info=self.actors[existing], existed=True)
                await context.abort(grpc.StatusCode.ALREADY_EXISTS,
                                    f"an actor named '{spec.name}' already exists in namespace "
                                    f"'{spec.namespace}'")
        info = pb.ActorInfo(spec=spec, state=pb.PENDING, pending_reason=self._infeasible_reason(spec))
        if info.pending_reason:
            log.warning("actor %s (%s) is infeasible: %s", spec.class_name, spec.actor_id.hex()[:8],
                        info.pending_reason)
        self.actors[spec.actor_id] = info
        if spec.name:
            self.names[(spec.namespace, spec.name)] = spec.actor_id
        # A caller that goes away (its deadline, a dropped connection) must not leave the actor
        # recorded but never placed: its retry finds it and answers `existed`.
        await finish_even_if_cancelled(self._save_and_place(info))
        return pb.CreateActorReply(info=info)

    async def _save_and_place(self, info: pb.ActorInfo) -> None:
        await self._save(info)
        group = info.spec.placement_group.placement_group_id
        if self.group_removed(group):
            await self._mark_dead(info, f"its placement group {group.hex()} was removed before the actor could be "
                                        f"placed")
            return
        self._place(info.spec.actor_id)

    async def GetActor(self, request, context):
        self.requests["GetActor"] += 1
        actor_id = request.actor_id
        if not actor_id:
            actor_id = self.names.get((request.namespace, request.name), b"")
        info = self.actors.get(actor_id)
        if info is None:
            if not (request.actor_id and actor_job_id(actor_id) in self.jobs):
                return pb.GetActorReply(found=False)
            # A borrowed handle can outrun its creator's CreateActor: wait for it while the job runs.
            await self._wait_for_change(actor_id, request.timeout_s)
            if actor_id not in self.actors:
                return pb.GetActorReply(found=False, unregistered=actor_job_id(actor_id) in self.jobs)
        elif request.after_version and info.version <= request.after_version:
            await self._wait_for_change(actor_id, request.timeout_s)
        return pb.GetActorReply(found=True, info=self.actors[actor_id])

    async def _wait_for_change(self, actor_id: bytes, timeout_s: float) -> None:
        """Until the actor's next save, or `timeout_s` (a long poll's bound)."""
        fut = asyncio.get_running_loop().create_future()
        waiters = self.waiters[actor_id]
        waiters.append(fut)
        try:
            await asyncio.wait_for(fut, timeout_s or 30)
        except TimeoutError:
            if fut in waiters:
                waiters.remove(fut)
            if not waiters and self.waiters.get(actor_id) is waiters:
                del self.waiters[actor_id]

    async def GetCheckpointStore(self, request, context):
        """Where `kastor.state.RedisStore()` keeps actor checkpoints: this cluster's Redis, under
        its key prefix (an empty address: the head keeps its state in memory, so there is none)."""
        self.requests["GetCheckpointStore"] += 1
        address, password = self.state_redis
        return pb.CheckpointStoreReply(redis_address=address, redis_password=password or "",
                                       key_prefix=f"kastor:{self.cluster_id}:checkpoint")

    async def ListActors(self, request, context):
        return pb.ActorList(actors=list(self.actors.values()))

    async def KillActor(self, request, context):
        info = self.actors.get(request.actor_id)
        if info is None:
            return pb.KillActorReply()
        answer = pb.KillActorReply(known=True, has_state=bool(info.spec.state))  # kastor.kill asks no GetActor
        if info.state == pb.DEAD:
            return answer
        reason = request.reason or "killed by kastor.kill()"
        if request.no_restart:  # marked DEAD first: a retry finds it so, so the worker must be stopped regardless
            # As Ray's GCS does, the answer does not wait for the node to stop the worker: the
            # caller's own handle fails its later calls from the answer on (ActorSubmitter.kill),
            # and other callers' once the worker is gone. A durable actor's answer waits, since
            # its caller deletes the checkpoint next, which a worker still running could rewrite.
            await finish_even_if_cancelled(self._kill(info, reason, wait_for_worker=bool(info.spec.state)))
        elif info.state == pb.ALIVE:
            await self._kill_worker(info, reason)  # its death report restarts it per max_restarts
        return answer

    async def ReportWorkerDeath(self, request, context):
        # Shielded: the reporting node agent may be shutting down (its pod deleted) and go away
        # before the reply. Its call is then cancelled, and so was this handler, between marking
        # the actor RESTARTING and placing it: the actor was neither placing nor pending, and
        # stayed RESTARTING for ever.
        await finish_even_if_cancelled(self._worker_died(request))
        return pb.Empty()

    async def _worker_died(self, request: pb.WorkerDeath) -> None:
        info = self.actors.get(request.actor_id) if request.actor_id else None
        if info is not None and info.worker_id == request.worker_id and info.state == pb.ALIVE:
            if request.intentional:
                await self._mark_dead(info, request.cause)
            else:
                await self._actor_failed(info, request.cause)
        await self._kill_owned_by(request.worker_id, "its owner worker died")

    async def _actor_failed(self, info: pb.ActorInfo, cause: str) -> None:
        if not _restartable(info):
            await self._mark_dead(info, cause if info.spec.max_restarts == 0 else
                                  f"{cause} (max_restarts={info.spec.max_restarts} used up)")
            return
        dead_worker = info.worker_id
        info.num_restarts += 1
        info.state = pb.RESTARTING
        info.death_cause = cause
        info.address, info.node_id, info.pid, info.worker_id, info.data_port = "", "", 0, b"", 0
        log.info("actor %s (%s) failed: %s; restarting (%d/%s)", info.spec.class_name,
                 info.spec.actor_id.hex()[:8], cause, info.num_restarts,
                 "inf" if info.spec.max_restarts == -1 else info.spec.max_restarts)
        await self._save(info)
        await self._kill_owned_by(dead_worker, "its owner actor restarted")
        self._place(info.spec.actor_id)

    async def kill_actor(self, info: pb.ActorInfo, reason: str) -> None:
        """Ends an actor for good (no restart), e.g. when its placement group is removed."""
        await self._kill(info, reason)

    async def _kill(self, info: pb.ActorInfo, reason: str, wait_for_worker: bool = True) -> None:
        info.killed = True
        was_alive = info.state == pb.ALIVE
        await self._mark_dead(info, reason)
        if not was_alive:
            return
        if wait_for_worker:
            await self._kill_worker(info, reason)
        else:
            run_to_end(self._kill_worker(info, reason))

    async def _kill_worker(self, info: pb.ActorInfo, reason: str) -> None:
        node = self.nodes.get(info.node_id)
        if node is None:
            return
        try:
            await self.node_stub(node.address).KillWorker(
                pb.KillWorkerRequest(worker_id=info.worker_id, actor_id=info.spec.actor_id, reason=reason),
                metadata=self.metadata, timeout=10)
        except grpc.aio.AioRpcError as e:
            log.warning("could not reach node %s to kill an actor: %s", info.node_id, e.code().name)

    async def _mark_dead(self, info: pb.ActorInfo, cause: str, error: pb.Value | None = None) -> None:
        info.state = pb.DEAD
        info.death_cause = cause
        if error is not None:
            info.death_error.CopyFrom(error)
        self.pending.discard(info.spec.actor_id)
        key = (info.spec.namespace, info.spec.name)
        if info.spec.name and self.names.get(key) == info.spec.actor_id:
            del self.names[key]
        log.info("actor %s (%s) is dead: %s", info.spec.class_name, info.spec.actor_id.hex()[:8], cause)
        await self._save(info)
        await self.groups_of_actor_dead(info.spec.actor_id)
        if info.worker_id:
            await self._kill_owned_by(info.worker_id, "its owner actor died")

    async def _kill_owned_by(self, worker_id: bytes, reason: str) -> None:
        if not worker_id:
            return
        for other in list(self.actors.values()):
            if other.spec.owner_worker_id == worker_id and not other.spec.detached and other.state != pb.DEAD:
                await self._kill(other, reason)

    # ---- placement ----

    def _place(self, actor_id: bytes) -> None:
        if actor_id not in self.placing:
            self.placing.add(actor_id)
            self.pending.discard(actor_id)
            asyncio.get_running_loop().create_task(self._try_place(actor_id))

    def place_pending_actors(self) -> None:
        """Tries the waiting actors again (a placement group they wait for was just created)."""
        self._place_pending()

    def _place_pending(self) -> None:
        """Places the waiting actors that some node fits now. Runs on every heartbeat, so each
        distinct shape (resources and label selectors) is tested against the nodes once, not
        each actor: with thousands of waiting actors of one shape, testing each against every
        node on every heartbeat took the head's whole loop (bench/README.md, named actors)."""
        self.place_groups()
        fits_now: dict[tuple[object, ...], bool] = {}
        for actor_id in list(self.pending):
            info = self.actors.get(actor_id)
            if info is None:
                continue
            required = dict(info.spec.required)
            labels = info.spec.placement.labels
            shape = (tuple(sorted(required.items())),
                     tuple(selector.SerializeToString(deterministic=True) for selector in labels))
            if shape not in fits_now:
                fits_now[shape] = any(fits(n.available, required) for n in self.matching_nodes(required, labels))
            if fits_now[shape]:
                self._place(actor_id)

    def _infeasible_reason(self, spec: pb.ActorSpec) -> str:
        """Why no alive node can ever fit the actor ("" when one can): what its creator is warned."""
        required = {k: v for k, v in spec.required.items() if v}
        if in_group(required):
            return ""  # it waits for its placement group, which stays pending as long as it must
        alive = [n for n in self.nodes.values() if n.alive]
        feasible = [n for n in alive if fits(n.total, required)]
        selectors = [s.match for s in spec.placement.labels]
        if feasible and node_labels.choose(selectors, feasible, lambda n: n.labels)[0] >= 0:
            return ""
        if feasible:
            seen = "; ".join(str(dict(sorted(n.labels.items()))) for n in feasible[:5])
            return (f"no alive node that can fit it matches its label_selector {node_labels.describe(selectors)} "
                    f"(node labels: {seen}). It stays PENDING until a node with matching labels joins "
                    f"(kastor start --labels, or a worker group's labels).")
        wanted = ", ".join(f"{k}: {v:g}" for k, v in sorted(required.items()))
        have = "; ".join("{" + ", ".join(f"{k}: {v:g}" for k, v in sorted(n.total.items())) + "}" for n in alive)
        return (f"it requires {{{wanted}}} and no alive node has that much (nodes: {have or 'none yet'}). It stays "
                f"PENDING until a node that fits joins; otherwise lower its resource request (num_cpus, num_gpus, "
                f"memory, resources).")

    def _candidates(self, spec: pb.ActorSpec) -> list[pb.NodeInfo]:
        """Nodes to try, best first, per the actor's resources and scheduling_strategy."""
        required, where = dict(spec.required), spec.placement
        nodes = self.matching_nodes(required, where.labels)
        if where.spread:
            # Fewest actors first, alive or on their way, even before what the last heartbeats say
            # is free: that view lags (resources a killed actor frees show a heartbeat later), and
            # trusting it put two SPREAD actors on one node. A node that really is full answers
            # no_resources and the next one is tried.
            load = Counter(a.node_id for a in self.actors.values() if a.state == pb.ALIVE) + self.starting_on
            nodes.sort(key=lambda n: (load[n.node_id], not fits(n.available, required), -n.available.get("CPU", 0)))
        else:
            nodes.sort(key=lambda n: (not fits(n.available, required), -n.available.get("CPU", 0)))
        if where.node_id:
            pinned = [n for n in nodes if n.node_id == where.node_id]
            if not where.soft:
                return pinned
            others = [n for n in nodes if n.node_id != where.node_id]
            if pinned and fits(pinned[0].available, required):
                return pinned + others
            return others + pinned  # soft: elsewhere while it is full, gone or too small
        return nodes

    async def _try_place(self, actor_id: bytes) -> None:
        try:
            failure = await self._place_once(actor_id)
        finally:
            self.placing.discard(actor_id)
        info = self.actors.get(actor_id)
        if failure and info is not None and info.state != pb.DEAD:
            await self._actor_failed(info, failure)  # restarts it (placing again) or ends it

    async def _place_once(self, actor_id: bytes) -> str:
        """One pass over the candidate nodes. Returns why the actor failed if its worker died in
        the constructor (an actor failure, which counts against max_restarts), else ""."""
        info = self.actors[actor_id]
        nodes = self._candidates(info.spec)
        where = info.spec.placement
        if where.node_id and not where.soft and not nodes:
            await self._mark_dead(info, f"it is pinned to node {where.node_id} (NodeAffinitySchedulingStrategy, "
                                        f"soft=False), which is not alive or can never fit it")
            return ""
        for node in nodes:
            if not node.alive:  # declared dead while this placement tried the nodes before it
                continue
            self.starting_on[node.node_id] += 1  # SPREAD counts actors on their way too
            # The class goes with the request, so the constructor does not ask GetFunction for it.
            call = self.node_stub(node.address).StartActor(
                pb.StartActorRequest(spec=info.spec, num_restarts=info.num_restarts,
                                     actor_class=self.code.get(info.spec.class_id)), metadata=self.metadata)
            self.start_calls[node.node_id].add(call)
            try:
                reply = await call
            except grpc.aio.AioRpcError as e:
                log.warning("placing actor on node %s failed: %s", node.node_id, e.code().name)
                continue
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    raise  # this placement itself is being cancelled (the head stops)
                log.warning("placing actor %s on node %s was abandoned: the node was declared dead",
                            actor_id.hex()[:8], node.node_id)
                continue
            finally:
                self.starting_on[node.node_id] -= 1
                self.start_calls[node.node_id].discard(call)
            if info.state == pb.DEAD:  # killed while it was starting
                if reply.started:
                    await self.node_stub(node.address).KillWorker(
                        pb.KillWorkerRequest(worker_id=reply.worker_id), metadata=self.metadata)
                return ""
            if reply.no_resources:
                continue
            if reply.worker_died:
                return reply.message
            if reply.started:
                info.state = pb.ALIVE
                info.pending_reason = ""
                self.idle_since.pop(node.node_id, None)  # busy now, not only from its next heartbeat on
                info.address, info.node_id, info.pid, info.worker_id, info.data_port = \
                    reply.address, node.node_id, reply.pid, reply.worker_id, reply.data_port
                await self._save(info)
                return ""
            if reply.error.data or reply.error.location.path:
                what = ("its runtime_env could not be set up" if reply.runtime_env_failed
                        else "its constructor raised")
                await self._mark_dead(info, f"{what}: {reply.message}", reply.error)
                return ""
            log.warning("node %s could not start actor %s: %s", node.node_id, actor_id.hex()[:8], reply.message)
        self.pending.add(actor_id)
        reason = self._infeasible_reason(info.spec)
        if reason != info.pending_reason:
            info.pending_reason = reason
            await self._save(info)
        return ""


async def serve(args: argparse.Namespace) -> None:
    token = auth.resolve_token(args.token, args.token_file)
    if not token:
        raise SystemExit("head: no cluster token (pass --token/--token-file or set KASTOR_TOKEN)")
    store = await _open_store(args)
    cluster_id = args.cluster_id or uuid.uuid4().hex[:12]
    try:
        await check_cluster_token(store, token, cluster_id, args.redis_address)
    except SystemExit:
        await store.close()
        raise
    head = Head(store, token, cluster_id)
    if args.redis_address:
        from kastor.runtime.redis_store import resolve_password
        head.state_redis = (args.redis_address, resolve_password(args.redis_password_file))
    await head.load()
    try:
        servers = await _open_ports(head, token, args)
    except tls.PortInUseError as e:
        await head.store.close()
        raise SystemExit(f"head: {e}") from None
    watcher = asyncio.get_running_loop().create_task(head.watch_nodes())
    launcher.announce_ready(args.ready_fd, servers.address, client=servers.client_address,
                            dashboard=servers.dashboard_url)
    log.info("head serving on %s (cluster %s)", servers.address, head.cluster_id)
    try:
        await launcher.wait_for_stop(args.exit_with_parent)
    finally:
        head.stopping = True
        watcher.cancel()
        await servers.close()
        await head.store.close()


class _Ports:
    """The head's listening ports: control (gRPC), and optionally the client port and the dashboard."""

    def __init__(self, server: grpc.aio.Server, address: str):
        self.server, self.address = server, address
        self.gateway: grpc.aio.Server | None = None
        self.forwarder = None
        self.dashboard = None
        self.dashboard_url = ""
        self.client_address = ""

    async def close(self) -> None:
        if self.dashboard is not None:
            await self.dashboard.cleanup()
        if self.gateway is not None:
            await self.gateway.stop(grace=0.5)
            await self.forwarder.close()
        await self.server.stop(grace=0.5)


async def _open_ports(head: Head, token: str, args: argparse.Namespace) -> _Ports:
    """Binds every port the head serves; a busy one raises PortInUseError naming it and the flag to change."""
    server = rpc.server(token)
    pb_grpc.add_HeadServicer_to_server(head, server)
    port = tls.add_port(server, f"{bind_host(args.node_ip)}:{args.port}", "head",
                        "Choose another with --port / KASTOR_HEAD_PORT.")
    await server.start()
    ports = _Ports(server, f"{args.node_ip}:{port}")
    try:
        if args.client_port is not None and args.client_port >= 0:
            from kastor.runtime import client_gateway
            from kastor.runtime.client_objects import ObjectDirectory
            directory = ObjectDirectory()
            head.job_end_hooks.append(directory.forget_job)
            ports.gateway, ports.forwarder, client_port = await client_gateway.start(
                args.client_port, bind_host(args.node_ip), args.node_ip, token, ports.address, head.cluster_id,
                head.is_node_host, directory)
            ports.client_address = f"{args.node_ip}:{client_port}"
        if args.dashboard_port is not None and args.dashboard_port >= 0:
            from kastor.runtime import dashboard as dashboard_http
            ports.dashboard, bound = await dashboard_http.start(head, token, bind_host(args.node_ip),
                                                                args.dashboard_port)
            ports.dashboard_url = f"http{'s' if tls.serving() else ''}://{args.node_ip}:{bound}"
            log.info("metrics and state on %s (token required)", ports.dashboard_url)
    except BaseException:
        await ports.close()
        raise
    return ports


TOKEN_FINGERPRINT = "token_fingerprint"  # META key: auth.fingerprint() of the cluster's token


async def check_cluster_token(store: Store, token: str, cluster_id: str, where: str | None) -> None:
    """Refuses to serve a stored cluster with a token other than the one it was started with.

    A head restarted on its Redis state with a new token (say, `kastor start --head` without
    `--token-file`, which generates one) would lock out every node and driver of the cluster;
    after NODE_DEATH_TIMEOUT_S it would declare the nodes dead and mark every detached actor
    DEAD in the store for good. So the store keeps a salted hash of the token (never the token),
    written by the cluster's first head, and a later head must match it or exit.
    """
    stored = await store.get(META, TOKEN_FINGERPRINT)
    if stored is None:
        if await store.get_all(ACTORS) or await store.get_all(NODES):
            log.warning("the stored cluster %r has no token fingerprint (written by an older head); "
                        "recording this head's token as the cluster's", cluster_id)
        await store.put(META, TOKEN_FINGERPRINT, auth.fingerprint(token).encode())
        return
    if not auth.fingerprint_matches(token, stored.decode()):
        raise SystemExit(
            f"head: the stored state of cluster {cluster_id!r} (Redis at {where}) belongs to a cluster with a "
            f"different token than this head was given. Serving it would lock out the cluster's nodes and "
            f"drivers, and after KASTOR_NODE_DEATH_TIMEOUT_S mark its detached actors dead. Start the head with "
            f"the cluster's token: --token-file PATH or KASTOR_TOKEN_FILE (the token file `kastor start` printed "
            f"when the cluster was first started, or the operator's token Secret). To start a new cluster "
            f"instead, use another --cluster-id, or drop this one's state with "
            f"`kastor redis-clean --cluster-id {cluster_id}`.")


async def _open_store(args: argparse.Namespace) -> Store:
    if not args.redis_address:
        return InMemoryStore()
    from kastor.runtime import redis_store
    try:
        return await redis_store.RedisStore.open(args.redis_address, args.cluster_id,
                                                 redis_store.resolve_password(args.redis_password_file))
    except (ValueError, OSError, redis_store.RedisError) as e:
        raise SystemExit(f"head: {e}") from None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="kastor-head", description="Kastor head (control service)")
    flags.add_head_flags(p, client_port_by_default=False)
    flags.add_token_flags(p)
    flags.add_node_ip_flag(p)
    flags.add_child_flags(p)
    return p


def main(argv: list[str] | None = None) -> None:
    logging_setup.configure("head")
    try:
        args = build_parser().parse_args(argv)
    except settings.SettingError as e:
        raise SystemExit(f"head: {e}") from None
    asyncio.run(serve(args))
    logging.shutdown()
    os._exit(0)  # a daemon thread may sit in a read of stdin; don't let it block interpreter exit


if __name__ == "__main__":
    main()
