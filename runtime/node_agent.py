"""The node agent: one per machine or pod. Owns the node's resources and worker processes.

It grants task leases (the owner then talks to the worker directly), places the actors the
head assigns to it, watches its workers and reports their deaths, serves its store's
large objects to other nodes, and heartbeats its free resources to the head.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import os
import re
import shutil
import sys
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

import grpc
from kastor.runtime import (
    auth,
    config,
    flags,
    head_link,
    launcher,
    logging_setup,
    node_labels,
    node_lease,
    retry,
    rpc,
    settings,
    spilling,
    store_owners,
    tls,
)
from kastor.runtime.exceptions import RuntimeEnvSetupError
from kastor.runtime.fork_client import ForkedProcess, ForkServer, ForkServerUnavailable, describe_exit
from kastor.runtime.node_bundles import BundleMixin
from kastor.runtime.placement import cpus, gpu_count, in_group
from kastor.runtime.protocol import kastor_pb2 as pb
from kastor.runtime.protocol import kastor_pb2_grpc as pb_grpc
from kastor.runtime.resources import fits, subtract
from kastor.runtime.rpc import ChannelCache, bind_host
from kastor.runtime.runtime_env_agent import RuntimeEnvAgent, RuntimeEnvSetupFailed, WorkerEnv
from kastor.runtime.serialization import error_value
from kastor.runtime.upload_server import UPLOAD_PORT_METADATA_KEY, UploadServer
from kastor.runtime.worker_registration import ControlLost, RegistrationPair, WorkerControl

log = logging.getLogger("kastor.node")

_OBJECT_NAME = re.compile(r"[0-9a-f]{40}")


@dataclass
class WorkerProc:
    worker_id: bytes
    proc: asyncio.subprocess.Process | ForkedProcess
    address: str = ""
    data_port: int = 0               # where its calls and task pushes go (0: unknown, its lease holder asks it)
    state: str = "starting"          # starting | idle | leased | actor | dead
    held: dict[str, float] = field(default_factory=dict)
    gpu_ids: list[int] = field(default_factory=list)
    actor_id: bytes = b""
    incarnation: int = 0             # the actor's num_restarts when this worker became it
    blocked: bool = False
    job_id: bytes = b""
    owner_address: str = ""          # whose lease (or actor) this is
    lease_seq: int = 0               # bumped on every grant, so a reconcile never frees a newer lease
    leased_at: float = 0.0           # time.monotonic() of the grant
    idle_since: float = 0.0          # time.monotonic() when it last became idle
    keep_until: float = 0.0          # it declined to exit: not asked again before then
    runtime_env: str = ""            # the resolved runtime_env it was started in: only work in that one reuses it
    control: WorkerControl | None = None  # its socket pair, to send StartActor on (None: gRPC's)


def max_starting(total: dict[str, float]) -> int:
    """Workers a node starts at once (config.MAX_STARTING_WORKERS; default: its CPUs, at least 1)."""
    return config.MAX_STARTING_WORKERS or max(1, int(total.get("CPU", 1)))


# Joining a head that is still coming up: any error but a refused token is waited out, up to the
# deadline of register_with_head.
JOIN_RETRY = retry.RetryPolicy(initial_s=0.05, max_s=2.0, jitter=0.2, retry_on=(grpc.aio.AioRpcError,),
                               fatal_codes={grpc.StatusCode.UNAUTHENTICATED})
SHUTDOWN_REAP_S = 10.0  # how long shutdown() waits for the SIGKILLed workers to be gone
EXIT_ANSWER_TIMEOUT_S = 10.0  # an idle worker asked to exit that says nothing for this long is kept, asked later
INFEASIBLE_TTL_S = 5.0  # an infeasible shape stays reported this long after its owner last asked for it


class NodeAgent(BundleMixin, pb_grpc.NodeAgentServicer):
    def __init__(self, *, head_address: str, token: str, ip: str, total: dict[str, float],
                 store_dir: str, session_dir: str, node_id: str, labels: dict[str, str] | None = None,
                 spill_dir: str | None = None):
        self.head_address = head_address
        self.token = token
        self.metadata = auth.metadata(token)
        self.ip = ip
        self.total = total
        self.available = dict(total)
        self.free_gpus = list(range(int(total.get("GPU", 0))))
        self.init_bundles()
        self.store_dir = store_dir
        self.spill_dir = spill_dir  # where objects that do not fit in the store go (spilling), if anywhere
        self.session_dir = session_dir
        self.node_id = node_id
        self.labels = node_labels.with_defaults(labels or {}, node_id)
        self.address = ""
        self.workers: dict[bytes, WorkerProc] = {}
        self.idle: deque[WorkerProc] = deque()
        # (required, granted, its label selectors as a key: what the demand reports it needs)
        self.lease_queue: deque[tuple[dict, asyncio.Future, tuple]] = deque()
        self.registrations: dict[bytes, asyncio.Future] = {}
        self.starting = 0
        self.closing = False  # set by shutdown(): no worker is started after it
        self._start_slots = asyncio.Semaphore(max_starting(total))
        self.infeasible: dict[tuple, tuple[float, set[bytes]]] = {}  # (shape, labels) -> (last asked, jobs)
        self._no_free_elsewhere: dict[tuple, float] = {}  # (shape, labels) -> until when not to ask the head again
        self._lease_seq = 0
        self.in_flight = 0       # lease requests and actor starts being answered (busy: no drain)
        self.draining = False    # it accepted a drain (scale-down): it takes no new work
        # Fencing (see renew_node_lease): how long the node's lease lasts, from the head's node
        # death timeout once registered; whether the head declared this node dead; and the file
        # the lease is published in (one per registration, made by register_with_head).
        self.death_timeout_s = config.NODE_DEATH_TIMEOUT_S
        self.worker_lease_s = self.death_timeout_s * config.WORKER_LEASE_FRACTION
        self.fenced = False
        self.head_confirmed_at = 0.0  # time.monotonic() when the last heartbeat the head knew was sent
        self.node_lease: node_lease.NodeLeaseWriter | None = None
        self.rpcs = rpc.CallCounter()  # the calls this agent served, by method (Stats)
        # Remote clients' large values, as raw bytes through the client port's frame relay.
        self.uploads = UploadServer(token, store_dir, node_id)
        self._channels = ChannelCache()
        self.runtime_envs = RuntimeEnvAgent(os.path.join(session_dir, "runtime_resources"), self._fetch_package)
        self.fork_server: ForkServer | None = None
        if config.FORK_SERVER:
            # Its environment is the workers' own but for what differs per worker (their requests
            # carry that), so the settings it read at import are the ones a fresh worker would read.
            server_env = WorkerEnv("").process_env(dict(os.environ))
            server_env.pop(config.ENV_TOKEN_FILE, None)
            self.fork_server = ForkServer(server_env, os.path.join(session_dir, "logs", "forkserver.log"))

    # ---- plumbing ----

    def head(self) -> pb_grpc.HeadStub:
        return pb_grpc.HeadStub(self._channels.get(self.head_address))

    def worker_stub(self, address: str) -> pb_grpc.CoreWorkerStub:
        return pb_grpc.CoreWorkerStub(self._channels.get(address))

    def node_info(self) -> pb.NodeInfo:
        return pb.NodeInfo(node_id=self.node_id, address=self.address, ip=self.ip, total=self.total,
                           available=self.available, alive=True, store_dir=self.store_dir, labels=self.labels)

    async def register_with_head(self, deadline_s: float) -> None:
        """Joins the cluster, retrying with backoff while the head comes up (a wrong token is final)."""
        async def register() -> tuple[float, pb.RegisterNodeReply]:
            sent = time.monotonic()
            return sent, await self.head().RegisterNode(self.node_info(), metadata=self.metadata, timeout=5)

        try:
            sent, reply = await retry.call_async(register, dataclasses.replace(JOIN_RETRY, deadline_s=deadline_s))
        except grpc.aio.AioRpcError as e:
            if e.code() == grpc.StatusCode.UNAUTHENTICATED:
                raise SystemExit(f"node agent: the head at {self.head_address} rejects this node's cluster "
                                 f"token ({e.details()}); pass the cluster's token with --token-file or "
                                 f"KASTOR_TOKEN_FILE") from e
            raise SystemExit(f"node agent: cannot join head {self.head_address}: {e.details()}") from e
        self.death_timeout_s = reply.node_death_timeout_s or config.NODE_DEATH_TIMEOUT_S
        self.worker_lease_s = self.death_timeout_s * config.WORKER_LEASE_FRACTION
        self.head_confirmed_at = sent
        if self.node_lease is None or self.fenced:
            # A fresh file per registration: no worker of a fenced one can ever see a renewal.
            old, self.node_lease = self.node_lease, node_lease.NodeLeaseWriter(self.session_dir, self.death_timeout_s)
            if old is not None:
                old.close()
        self.fenced = False
        self.renew_node_lease()
        log.info("node %s registered with head %s", self.node_id, self.head_address)

    async def heartbeat_forever(self) -> None:
        """Reports free resources and live actors; rides out a head restart.

        The workers keep serving while the head is away (calls never go through it). Only if
        the head stays unreachable for NODE_HEAD_LOSS_TIMEOUT_S does the agent give up and exit,
        so that its pod is replaced.
        """
        loop = asyncio.get_running_loop()
        lost_at: float | None = None
        was_refused = False
        while True:
            await asyncio.sleep(config.HEARTBEAT_INTERVAL_S)
            sent = time.monotonic()
            try:
                reply = await self.head().Heartbeat(pb.HeartbeatRequest(
                    node_id=self.node_id, available=self.available, actors=self._live_actors(),
                    leases=self.lease_infos(), infeasible=self.infeasible_demands(), total=self.total,
                    queued=self.queued_demands(), draining=self.draining),
                    metadata=self.metadata, timeout=5)
            except grpc.aio.AioRpcError as e:
                refused = e.code() == grpc.StatusCode.UNAUTHENTICATED
                if lost_at is None or refused != was_refused:  # a new outage, or it turned into a refusal
                    lost_at = loop.time() if lost_at is None else lost_at
                    was_refused = refused
                    self._log_head_lost(e.code())
                elif loop.time() - lost_at > config.NODE_HEAD_LOSS_TIMEOUT_S:
                    log.error("the head at %s has been unreachable for %.0fs; exiting",
                              self.head_address, loop.time() - lost_at)
                    return
                continue
            if lost_at is not None:
                log.warning("reconnected to the head at %s after %.1fs", self.head_address, loop.time() - lost_at)
                lost_at, was_refused = None, False
            if not reply.known:
                self.fence_workers()  # first: the head may run this node's actors elsewhere already
                await self.register_with_head(config.STARTUP_TIMEOUT_S)
            else:
                self.head_confirmed_at = max(self.head_confirmed_at, sent)
            for worker_id in reply.kill_worker_ids:
                w = self.workers.get(worker_id)
                if w is not None and w.proc.returncode is None:
                    log.warning("stopping worker %s: the head placed its actor elsewhere", worker_id.hex()[:8])
                    w.proc.kill()

    def fence_workers(self) -> None:
        """The head does not know this node: it declared it dead (and restarted its actors
        elsewhere), or restarted without its state. Every worker is killed at once, before the
        node registers again, so that no actor ever has two live instances; until then no
        worker's lease is renewed."""
        self.fenced = True
        if self.node_lease is not None:
            self.node_lease.fence()  # its workers exit at once, even one this kill misses
        live = [w for w in self.workers.values() if w.proc.returncode is None]
        log.error("the head does not know this node: it declared it dead (missed heartbeats for "
                  "KASTOR_NODE_DEATH_TIMEOUT_S, e.g. the agent was frozen or cut off) or restarted without its "
                  "state. Killing its %d worker(s), whose actors may run elsewhere now, and registering again",
                  len(live))
        for w in live:
            try:
                w.proc.kill()
            except ProcessLookupError:
                pass

    def renew_node_lease(self) -> None:
        """Fencing by lease: a worker starts calls only while this agent keeps renewing the
        node's lease, one lease for all its workers, published in a shared file (node_lease,
        whose docstring has the argument in full).

        The lease lasts WORKER_LEASE_FRACTION (a half) of the head's node death timeout D from
        the renewal. If this agent freezes or dies at time F, nothing is renewed after F, so
        every worker stops by F + D/2. The head declares the node dead no sooner than D after
        the last heartbeat it received, which the agent sent at most one heartbeat interval
        before F, so no sooner than about F + D - 0.5s: the old instance of an actor has
        stopped before the head restarts it elsewhere. A node the head declared dead renews
        nothing (`fenced`) and kills its workers (`fence_workers`).

        A lease that ran out (this agent was slow, not frozen) is renewed only up to D after
        the last heartbeat the head acknowledged was sent: until then the head cannot have
        declared this node dead, even if this agent has not heard so yet.
        """
        if self.fenced or self.node_lease is None:
            return
        self.node_lease.renew(self.worker_lease_s, self.death_timeout_s, self.head_confirmed_at + self.death_timeout_s)

    async def renew_node_lease_forever(self) -> None:
        """Renews the node's lease LEASE_RENEWALS_PER_PERIOD times per lease period, on the event
        loop that heartbeats the head: an agent too frozen to heartbeat renews nothing either."""
        while True:
            await asyncio.sleep(self.worker_lease_s / config.LEASE_RENEWALS_PER_PERIOD)
            self.renew_node_lease()

    async def Stats(self, request, context):
        """What this agent has served (RPCs by method; uploads through its upload port counted as
        "UploadPort", those whose body was spliced as "UploadPortSpliced") and how often it renewed
        the node's lease. Its trailers name the upload port (upload_server.py), which is how a
        remote client learns it."""
        if self.uploads.port:
            context.set_trailing_metadata(((UPLOAD_PORT_METADATA_KEY, str(self.uploads.port)),))
        uploads = {"UploadPort": self.uploads.uploads, "UploadPortSpliced": self.uploads.spliced}
        return pb.NodeAgentStats(rpcs_served={**self.rpcs.counts(), **uploads},
                                 node_lease_renewals=self.node_lease.state.renewals if self.node_lease else 0,
                                 lease_s=self.worker_lease_s, monotonic_s=time.monotonic())

    def _log_head_lost(self, code: grpc.StatusCode) -> None:
        if code == grpc.StatusCode.UNAUTHENTICATED:
            log.error("the head at %s rejects this node's cluster token: it was restarted with another token (or "
                      "another cluster's head took its address). Restart the head with the cluster's token "
                      "(--token-file or KASTOR_TOKEN_FILE); workers keep serving, retrying for up to %.0fs",
                      self.head_address, config.NODE_HEAD_LOSS_TIMEOUT_S)
        else:
            log.warning("lost the head at %s (%s); workers keep serving, retrying for up to %.0fs",
                        self.head_address, code.name, config.NODE_HEAD_LOSS_TIMEOUT_S)

    def lease_infos(self) -> list[pb.LeaseInfo]:
        """Who holds this node's resources: every task lease, and every actor that holds any."""
        return [pb.LeaseInfo(worker_id=w.worker_id, pid=w.proc.pid or 0, job_id=w.job_id, owner_address=w.owner_address,
                             resources=w.held, actor_id=w.actor_id, blocked=w.blocked)
                for w in self.workers.values()
                if w.proc.returncode is None and (w.state == "leased" or (w.state == "actor" and any(w.held.values())))]

    def infeasible_demands(self) -> list[pb.ResourceDemand]:
        """Shapes asked for lately that no node can fit (dropped once nobody asks for them)."""
        now = time.monotonic()
        for shape in [s for s, (seen, _) in self.infeasible.items() if now - seen > INFEASIBLE_TTL_S]:
            del self.infeasible[shape]
        return [pb.ResourceDemand(shape=dict(shape), job_ids=sorted(jobs), kind="task",
                                  labels=[pb.LabelSelector(match=dict(s)) for s in labels])
                for (shape, labels), (_, jobs) in self.infeasible.items()]

    def queued_demands(self) -> list[pb.ResourceDemand]:
        """The shapes of lease requests waiting here for resources (demand an autoscaler may add nodes
        for), with the labels they need."""
        counts: dict[tuple, int] = {}
        for required, fut, labels in self.lease_queue:
            if not fut.done():
                key = (tuple(sorted((k, v) for k, v in required.items() if v)), labels)
                counts[key] = counts.get(key, 0) + 1
        return [pb.ResourceDemand(shape=dict(shape), kind="task", count=n,
                                  labels=[pb.LabelSelector(match=dict(s)) for s in labels])
                for (shape, labels), n in counts.items()]

    def busy_reason(self) -> str:
        """What this node runs or is about to run ("" when nothing): a drain is refused while it runs anything."""
        leased = sum(1 for w in self.workers.values() if w.state == "leased" and w.proc.returncode is None)
        actors = sum(1 for w in self.workers.values() if w.state == "actor" and w.proc.returncode is None)
        parts = [f"{n} {what}" for n, what in ((leased, "task lease(s)"), (actors, "actor(s)"),
                                               (len(self.lease_queue), "queued lease request(s)"),
                                               (self.in_flight, "lease request(s) or actor start(s) in flight"),
                                               (len(self.reserved_bundles), "placement group(s) with bundles here"))
                 if n]
        return ", ".join(parts)

    async def Drain(self, request, context):
        """Accepts a drain only while nothing runs here; from then on this node takes no new work.

        The check and the flag happen without an await in between, and every way work arrives
        (RequestLease, StartActor, ReserveBundles) checks the flag, so nothing starts on a node
        the autoscaler is about to remove.
        """
        busy = self.busy_reason()
        if busy:
            return pb.DrainNodeReply(accepted=False, message=f"node {self.node_id} is busy ({busy}): not drained")
        self.draining = True
        log.info("node %s drained (%s): it takes no new work", self.node_id, request.reason or "no reason given")
        return pb.DrainNodeReply(accepted=True)

    def _live_actors(self) -> list[pb.LiveActor]:
        return [pb.LiveActor(actor_id=w.actor_id, worker_id=w.worker_id, address=w.address, pid=w.proc.pid,
                             num_restarts=w.incarnation)
                for w in self.workers.values() if w.state == "actor" and w.proc.returncode is None]

    # ---- workers ----

    def _lease_path(self) -> str:
        if self.node_lease is None:
            raise RuntimeError("the node agent starts workers only once it has registered with the head")
        return self.node_lease.path

    async def _fetch_package(self, uri: str) -> bytes:
        reply = await self.head().GetPackage(pb.PackageKey(uri=uri), metadata=self.metadata, timeout=600)
        return reply.data

    async def _spawn_worker(self, runtime_env: WorkerEnv | None = None) -> WorkerProc:
        worker_id = os.urandom(16)
        env = dict(os.environ)
        env.update({
            config.ENV_HEAD_ADDRESS: self.head_address, config.ENV_TOKEN: self.token,
            config.ENV_NODE_ADDRESS: self.address, config.ENV_NODE_ID: self.node_id,
            config.ENV_STORE_DIR: self.store_dir, config.ENV_NODE_IP: self.ip,
            config.ENV_WORKER_ID: worker_id.hex(), config.ENV_SESSION_DIR: self.session_dir,
            config.ENV_NODE_LEASE_FILE: self._lease_path(),
        })
        env.pop(config.ENV_TOKEN_FILE, None)
        runtime_env = runtime_env or WorkerEnv("")
        env = runtime_env.process_env(env)
        log_path = os.path.join(self.session_dir, "logs", f"worker-{worker_id.hex()[:12]}.log")
        self.starting += 1
        try:
            async with self._start_slots:  # Ray's maximum_startup_concurrency: a loaded node is not made worse
                return await self._start_process(worker_id, env, log_path, runtime_env)
        finally:
            self.starting -= 1

    async def _start_process(self, worker_id: bytes, env: dict[str, str], log_path: str,
                             runtime_env: WorkerEnv) -> WorkerProc:
        """Starts one worker and waits for it to register; one that does not in time is killed,
        so a slow node never piles up processes that nobody will use."""
        if self.closing:  # a start queued behind others (for its slot) when the agent began to stop
            raise RuntimeError("the node agent is shutting down; it starts no more workers")
        pipe = RegistrationPair(worker_id)  # how it registers and is started (gRPC stays the fallback)
        fut = asyncio.get_running_loop().create_future()
        self.registrations[worker_id] = fut
        try:
            env = {**env, config.ENV_REGISTER_FD: str(pipe.child_fd)}
            try:
                proc = await self._fork(env, log_path, runtime_env, pipe.child_fd)
                if proc is None:
                    with open(log_path, "ab") as log_file:
                        proc = await asyncio.create_subprocess_exec(
                            runtime_env.python, "-m", "kastor.runtime.worker", env=env,
                            stdin=asyncio.subprocess.PIPE, stdout=log_file, stderr=asyncio.subprocess.STDOUT,
                            cwd=runtime_env.cwd, pass_fds=(pipe.child_fd,))
            finally:
                pipe.started()
            pipe.listen(fut)
            w = WorkerProc(worker_id, proc, runtime_env=runtime_env.key)
            self.workers[worker_id] = w
            asyncio.get_running_loop().create_task(self._watch(w))
            try:
                if self.closing:  # shutdown() ran while the process was being spawned: it missed this one
                    raise RuntimeError("the node agent is shutting down; it starts no more workers")
                w.address, w.data_port = await asyncio.wait_for(asyncio.shield(fut), config.STARTUP_TIMEOUT_S)
            except TimeoutError:
                log.warning("worker %s did not register within %.0fs (KASTOR_STARTUP_TIMEOUT_S); killing it (its "
                            "log: %s)", worker_id.hex()[:8], config.STARTUP_TIMEOUT_S, log_path)
                w.state = "dead"
                _kill(proc)
                raise RuntimeError(f"a worker did not start within {config.STARTUP_TIMEOUT_S:.0f}s (the node may be "
                                   f"overloaded; raise KASTOR_STARTUP_TIMEOUT_S, or see {log_path})") from None
            except BaseException:
                # It exited first, the agent is stopping, or this start was cancelled: a worker hung
                # before registering never sees its stdin end, so no half-started one may stay.
                w.state = "dead"
                _kill(proc)
                raise
            w.state, w.idle_since = "idle", time.monotonic()
            w.control = pipe.take_control()
            return w
        finally:
            pipe.close()
            self.registrations.pop(worker_id, None)

    async def _fork(self, env: dict[str, str], log_path: str, runtime_env: WorkerEnv,
                    register_fd: int) -> ForkedProcess | None:
        """A worker forked from the fork server, or None: it is off, or cannot start one (then the
        worker starts fresh). Only workers in the node's own environment fork: a runtime_env may
        change the interpreter, the import path or the settings read at import, which a process
        that imported everything already cannot take back."""
        if self.fork_server is None or runtime_env.key or runtime_env.python != sys.executable or runtime_env.cwd:
            return None
        try:
            return await self.fork_server.spawn(env, log_path, register_fd=register_fd)
        except ForkServerUnavailable as e:
            log.warning("starting a worker fresh: %s", e)
            return None

    async def _take_worker(self, runtime_env: str = "") -> WorkerProc:
        """An idle worker started in `runtime_env` (resolved JSON), or a new one; setting the
        environment up may raise RuntimeEnvSetupFailed."""
        for w in list(self.idle):
            if w.state != "idle":
                self.idle.remove(w)
            elif w.runtime_env == runtime_env:
                self.idle.remove(w)
                self._prestart()
                return w
        setup = await self.runtime_envs.setup(runtime_env)
        w = await self._spawn_worker(setup)
        self._prestart()
        return w

    def _prestart(self) -> None:
        missing = config.PRESTART_WORKERS - sum(1 for w in self.idle if not w.runtime_env) - self.starting
        for _ in range(max(0, missing)):
            asyncio.get_running_loop().create_task(self._prestart_one())

    async def _prestart_one(self) -> None:
        try:
            w = await self._spawn_worker()
        except Exception as e:
            log.warning("prestarting a worker failed: %s", e)
            return
        if w.state == "idle":
            self.idle.append(w)
            self._dispatch()

    async def _watch(self, w: WorkerProc) -> None:
        code = await w.proc.wait()
        previous = w.state
        w.state = "dead"
        if w.control is not None:
            w.control.close()
        self.workers.pop(w.worker_id, None)
        fut = self.registrations.get(w.worker_id)
        if fut is not None and not fut.done():
            fut.set_exception(RuntimeError(f"worker exited with code {code} before registering"))
        if previous in ("leased", "actor"):
            self._give_back(w)
        cause = describe_exit(w.proc, code)
        log.info("worker %s (%s%s) died: %s", w.worker_id.hex()[:8], previous,
                 f", actor {w.actor_id.hex()[:8]}" if w.actor_id else "", cause)
        try:
            await head_link.call(self.head().ReportWorkerDeath, pb.WorkerDeath(
                node_id=self.node_id, worker_id=w.worker_id, actor_id=w.actor_id, cause=cause),
                metadata=self.metadata, address=self.head_address, timeout=10,
                deadline_s=config.NODE_HEAD_LOSS_TIMEOUT_S)
        except (grpc.aio.AioRpcError, ConnectionError) as e:
            # The head's reconciliation will still notice: this worker is missing from heartbeats.
            log.warning("could not report a worker death to the head: %s", e)
        self._dispatch()

    def _give_back(self, w: WorkerProc) -> None:
        held = dict(w.held)
        if w.blocked:
            for name in cpus(held):
                held.pop(name)  # already lent back while it was blocked
        self.release_held(held)
        self.free_gpus.extend(w.gpu_ids)
        w.held, w.gpu_ids, w.blocked = {}, [], False
        w.job_id, w.owner_address = b"", ""

    def _allocate(self, required: dict[str, float]) -> list[int]:
        subtract(self.available, required)
        n = gpu_count(required)  # its own GPUs, or its placement group bundle's
        gpus, self.free_gpus = self.free_gpus[:n], self.free_gpus[n:]
        return gpus

    # ---- leases ----

    async def RequestLease(self, request, context):
        self.in_flight += 1
        try:
            return await self._request_lease(request, context)
        finally:
            self.in_flight -= 1

    async def _request_lease(self, request, context):
        """Grants a worker for `required`, queueing until it fits here, or points elsewhere.

        It points at another node (spillback) when this one can never fit the shape, or, unless
        the owner asks it to queue (a request already spilled here, or SPREAD), when this node is
        full and another has room.
        A shape no node can fit is answered `infeasible` at once when the owner asked for that
        (it warns and asks again); older owners are held here until a node that fits joins.
        Every path either hands out the resources with the reply or returns them: a request
        cancelled while its worker starts gives the worker back too.
        """
        required = dict(request.required)
        while True:
            here = not self.draining and fits(self.total, required)  # a draining node takes nothing new
            if here and not request.labels:
                break
            reply = await self.head().PickNode(pb.PickNodeRequest(
                required=required, exclude_node_id=self.node_id, labels=request.labels),
                metadata=self.metadata, timeout=10)
            if here and reply.excluded_matches:  # its labels are the ones the work's selectors pick
                break
            if reply.found and request.allow_spillback:
                return pb.LeaseReply(spillback_address=reply.node.address)
            if request.report_infeasible and not self.draining:
                if in_group(required):  # its placement group is not (or no longer) reserved: it waits, unlisted
                    return await self.group_not_reserved(required)
                return self._infeasible(required, request, pinned=reply.found)
            await asyncio.sleep(1.0)  # infeasible for now: wait for a node that fits to join
        if request.allow_spillback and not request.queue_if_busy and not fits(self.available, required):
            elsewhere = await self._node_with_room(required, request.labels)
            if elsewhere:
                return pb.LeaseReply(spillback_address=elsewhere)
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        entry = (required, fut, _selectors_key(request.labels))
        self.lease_queue.append(entry)
        self._dispatch()
        try:
            gpu_ids = await fut
        except asyncio.CancelledError:
            if entry in self.lease_queue:
                self.lease_queue.remove(entry)
            elif fut.done() and not fut.cancelled():
                self._unallocate(required, fut.result())
            raise
        take = loop.create_task(self._take_worker(request.runtime_env))
        try:
            w = await asyncio.shield(take)
        except asyncio.CancelledError:  # the owner went away while its worker was starting
            self._unallocate(required, gpu_ids)
            take.add_done_callback(self._keep_idle)
            raise
        except RuntimeEnvSetupFailed as e:
            self._unallocate(required, gpu_ids)
            return pb.LeaseReply(runtime_env_error=f"on node {self.node_id}: {e}")
        except Exception as e:
            self._unallocate(required, gpu_ids)
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"could not start a worker: {e}")
        self._lease_seq += 1
        w.state, w.held, w.gpu_ids = "leased", required, gpu_ids
        w.job_id, w.owner_address = request.job_id, request.owner_address
        w.lease_seq, w.leased_at = self._lease_seq, time.monotonic()
        return pb.LeaseReply(granted=True, worker_address=w.address, worker_id=w.worker_id, gpu_ids=gpu_ids,
                             worker_data_port=w.data_port)

    def _unallocate(self, required: dict[str, float], gpu_ids: list[int]) -> None:
        self.release_held(required)
        self.free_gpus.extend(gpu_ids)
        self._dispatch()

    def _keep_idle(self, take: asyncio.Task) -> None:
        """A worker started for a lease whose owner left: it waits for the next one."""
        if not take.cancelled() and take.exception() is None:
            w = take.result()
            if w.state == "idle":
                self.idle.append(w)

    def _infeasible(self, required: dict[str, float], request: pb.LeaseRequest, pinned: bool) -> pb.LeaseReply:
        shape = tuple(sorted((k, v) for k, v in required.items() if v))
        selectors = [s.match for s in request.labels]
        key = (shape, _selectors_key(request.labels))
        _, jobs = self.infeasible.get(key, (0.0, set()))
        jobs.add(request.job_id)
        self.infeasible[key] = (time.monotonic(), jobs)
        wanted = ", ".join(f"{k}: {v:g}" for k, v in shape)
        has = ", ".join(f"{k}: {v:g}" for k, v in sorted(self.total.items()))
        if selectors:
            pinned_here = f"; it is pinned to node {self.node_id}, whose labels are {self.labels}" if pinned else ""
            return pb.LeaseReply(infeasible=True, message=(
                f"no alive node both has {{{wanted}}} and matches its label_selector "
                f"{node_labels.describe(selectors)}{pinned_here}. It stays pending until a node with matching "
                f"labels joins (kastor start --labels, or a worker group's labels)."))
        where = f"it is pinned to node {self.node_id}, which has only {{{has}}}" if pinned else \
            f"no alive node in the cluster has that much (this node has {{{has}}})"
        return pb.LeaseReply(infeasible=True, message=(
            f"it requires {{{wanted}}} and {where}. It stays pending until a node that fits joins; otherwise "
            f"lower its resource request (num_cpus, num_gpus, memory, resources)."))

    async def _node_with_room(self, required: dict[str, float], labels: Sequence[pb.LabelSelector] = ()) -> str:
        """Another alive node (one the work's `labels` pick) that the head last saw with `required`
        free, or "" (cached briefly)."""
        key = (tuple(sorted(required.items())), _selectors_key(labels))
        now = time.monotonic()
        if self._no_free_elsewhere.get(key, 0.0) > now:
            return ""
        try:
            reply = await self.head().PickNode(pb.PickNodeRequest(required=required, exclude_node_id=self.node_id,
                                                                  labels=labels),
                                               metadata=self.metadata, timeout=10)
        except grpc.aio.AioRpcError:
            reply = pb.PickNodeReply()
        if reply.found and fits(reply.node.available, required):
            return reply.node.address
        self._no_free_elsewhere[key] = now + config.HEARTBEAT_INTERVAL_S
        return ""

    def _dispatch(self) -> None:
        for entry in list(self.lease_queue):
            required, fut, _ = entry
            if fut.done():
                self.lease_queue.remove(entry)
            elif fits(self.available, required):
                self.lease_queue.remove(entry)
                fut.set_result(self._allocate(required))

    async def WorkerIdle(self, request, context):
        w = self.workers.get(request.worker_id)
        if w is not None and w.state == "leased":
            self._free_lease(w)
        return pb.Empty()

    async def reconcile_leases_forever(self) -> None:
        """Returns leases nobody uses: the worker's WorkerIdle was lost, or the owner never
        opened its stream (it died between the grant and its first call).

        The worker, not one message, is the judge: a lease older than LEASE_RECLAIM_GRACE_S
        whose worker has had no stream and no call for that long is taken back.
        """
        while True:
            await asyncio.sleep(config.LEASE_CHECK_INTERVAL_S)
            grace = config.LEASE_RECLAIM_GRACE_S
            now = time.monotonic()
            for w in [w for w in self.workers.values() if w.state == "leased" and now - w.leased_at >= grace]:
                seq = w.lease_seq
                try:
                    state = await self.worker_stub(w.address).LeaseState(pb.Empty(), metadata=self.metadata, timeout=5)
                except grpc.aio.AioRpcError:
                    continue  # dying or swamped: a death returns the lease anyway
                if w.state == "leased" and w.lease_seq == seq and not state.streams and not state.running \
                        and state.idle_s >= grace:
                    log.warning("worker %s has been idle for %.1fs on a lease of job %d (owner %s) that was never "
                                "handed back; returning its %s", w.worker_id.hex()[:8], state.idle_s,
                                int.from_bytes(w.job_id or b"\0", "big"), w.owner_address or "?", w.held)
                    self._free_lease(w)

    def _free_lease(self, w: WorkerProc) -> None:
        self._give_back(w)
        w.state, w.idle_since = "idle", time.monotonic()
        self.idle.append(w)
        self._dispatch()

    def idle_kept(self) -> int:
        """How many idle workers this node keeps (see config.IDLE_WORKERS_KEPT)."""
        kept = config.IDLE_WORKERS_KEPT
        if kept is None:
            kept = int(self.total.get("CPU", 1))
        return max(kept, config.PRESTART_WORKERS)

    async def reap_idle_forever(self) -> None:
        """Stops idle workers beyond idle_kept() once idle for IDLE_WORKER_KILL_S, longest idle
        first, as Ray's raylet does, so a burst of nested work does not leave its pool behind."""
        while True:
            await asyncio.sleep(max(0.1, config.IDLE_WORKER_KILL_S / 2))
            self.reap_idle()

    def reap_idle(self) -> None:
        now = time.monotonic()
        idle = sorted((w for w in self.idle if w.state == "idle"), key=lambda w: w.idle_since)
        for w in idle[:max(0, len(idle) - self.idle_kept())]:
            if now - w.idle_since >= config.IDLE_WORKER_KILL_S and now >= w.keep_until:
                self.idle.remove(w)
                w.state = "exiting"  # no lease takes it meanwhile
                asyncio.get_running_loop().create_task(self._ask_to_exit(w))

    async def _ask_to_exit(self, w: WorkerProc) -> None:
        """On the worker's socket pair when it has one (its gRPC may not run yet: asking there
        would start it just to stop the worker), else by gRPC's Exit."""
        unanswered = ""
        try:
            if w.control is not None:
                refused = await asyncio.wait_for(w.control.ask_to_exit(), EXIT_ANSWER_TIMEOUT_S)
            else:
                await self.worker_stub(w.address).Exit(pb.Empty(), metadata=self.metadata,
                                                       timeout=EXIT_ANSWER_TIMEOUT_S)
                refused = ""
        except grpc.aio.AioRpcError as e:
            refused = e.details() or "refused"
            if e.code() != grpc.StatusCode.FAILED_PRECONDITION:
                unanswered = e.code().name
        except (TimeoutError, ControlLost) as e:
            refused = unanswered = type(e).__name__
            if w.control is not None:  # a request may still be unanswered on it: start actors by gRPC
                w.control.close()
                w.control = None
        if not refused:
            log.info("stopped idle worker %s (more than %d idle)", w.worker_id.hex()[:8], self.idle_kept())
            return
        if w.state != "exiting":
            return  # it died meanwhile
        if unanswered:  # slow is not dead: ask again later
            log.info("idle worker %s did not answer an exit request (%s); keeping it for now",
                     w.worker_id.hex()[:8], unanswered)
        w.state, w.keep_until = "idle", time.monotonic() + 10 * config.IDLE_WORKER_KILL_S
        self.idle.append(w)

    async def NotifyBlocked(self, request, context):
        w = self.workers.get(request.worker_id)
        # its CPUs: the node's, or its placement group bundle's (nested work in the bundle needs them)
        cpu = cpus(w.held) if w is not None and w.state == "leased" else {}
        if cpu and request.blocked != w.blocked:
            w.blocked = request.blocked
            if request.blocked:
                self.release_held(cpu)
                self._dispatch()
            else:
                subtract(self.available, {k: v for k, v in cpu.items() if k in self.total})
        return pb.Empty()

    async def RegisterWorker(self, request, context):
        fut = self.registrations.get(request.worker_id)
        if fut is not None and not fut.done():
            fut.set_result((request.address, request.data_port))
        return pb.Empty()

    # ---- actors ----

    async def StartActor(self, request, context):
        if self.draining:  # the head tries another node
            return pb.StartActorReply(no_resources=True)
        self.in_flight += 1
        try:
            return await self._start_actor(request)
        finally:
            self.in_flight -= 1

    async def _start_actor(self, request):
        spec = request.spec
        if not fits(self.available, dict(spec.required)):
            return pb.StartActorReply(no_resources=True)
        held = dict(spec.held)
        gpu_ids = self._allocate(held)
        try:
            w = await self._take_worker(spec.runtime_env)
        except Exception as e:
            self.release_held(held)
            self.free_gpus.extend(gpu_ids)
            if isinstance(e, RuntimeEnvSetupFailed):
                error = RuntimeEnvSetupError(f"The runtime_env of actor {spec.class_name} could not be set up on "
                                             f"node {self.node_id}: {e}")
                return pb.StartActorReply(started=False, runtime_env_failed=True, message=str(error),
                                          error=error_value(error))
            return pb.StartActorReply(started=False, message=f"could not start a worker: {e}")
        w.state, w.held, w.gpu_ids, w.actor_id = "actor", held, gpu_ids, spec.actor_id
        w.incarnation = request.num_restarts
        w.job_id, w.owner_address = spec.job_id, spec.owner_address
        start = pb.StartActorRequest(spec=spec, gpu_ids=gpu_ids, num_restarts=request.num_restarts,
                                     actor_class=request.actor_class if request.HasField("actor_class") else None)
        try:
            if w.control is not None:  # on the pair it registered on: no channel to open to it
                reply = await w.control.start_actor(start)
            else:
                reply = await self.worker_stub(w.address).StartActor(start, metadata=self.metadata)
        except (grpc.aio.AioRpcError, ControlLost) as e:
            # The worker died in the constructor (os._exit, a crash, the OOM killer), or stopped
            # answering: end it (its watcher returns what it held) and report an actor failure,
            # which the head restarts within max_restarts or ends, as Ray does. Retrying it as a
            # placement instead ran a constructor that kills its process for ever.
            try:  # a worker that died is reaped within moments: say how it ended
                how = describe_exit(w.proc, await asyncio.wait_for(w.proc.wait(), 2))
            except TimeoutError:
                _kill(w.proc)
                why = f"{e.code().name}: {e.details()}" if isinstance(e, grpc.aio.AioRpcError) else str(e)
                how = f"it stopped answering ({why}) and was killed"
            return pb.StartActorReply(started=False, worker_died=True,
                                      message=f"its worker died in its constructor on node {self.node_id}: {how}")
        if not reply.started:
            _kill(w.proc)  # a failed constructor leaves the process in an unknown state
            return reply
        return pb.StartActorReply(started=True, address=w.address, pid=w.proc.pid, worker_id=w.worker_id,
                                  data_port=reply.data_port)

    async def KillWorker(self, request, context):
        for w in list(self.workers.values()):
            if w.worker_id == request.worker_id or (request.actor_id and w.actor_id == request.actor_id):
                log.info("killing worker %s: %s", w.worker_id.hex()[:8], request.reason or "asked to")
                try:
                    w.proc.kill()
                except ProcessLookupError:
                    pass
        return pb.Empty()

    # ---- objects ----

    def _object_dirs(self) -> list[str]:
        """The store, and the spill directory if spilling is on: both hold this node's object files."""
        return [self.store_dir] + ([self.spill_dir] if self.spill_dir else [])

    def _store_path(self, path: str) -> str | None:
        for d in self._object_dirs():
            found = store_owners.in_store(d, path)
            if found is not None:
                return found
        return None

    async def owner_answers(self, address: str) -> bool | None:
        """Whether the owner at `address` still serves its objects: True if it answered, False
        if the connection failed (nothing listens there), None if it could not tell (slow)."""
        try:
            await self.worker_stub(address).GetObjects(pb.GetObjectsRequest(), metadata=self.metadata, timeout=5)
            return True
        except grpc.aio.AioRpcError as e:
            if e.code() == grpc.StatusCode.UNAVAILABLE:
                return False
            return None if e.code() == grpc.StatusCode.DEADLINE_EXCEEDED else True

    async def sweep_dead_owners_forever(self) -> None:
        """Frees the store files of owners that died without freeing them (store_owners)."""
        sweeps = [store_owners.DeadOwnerSweep(d, self.owner_answers) for d in self._object_dirs()]
        while True:
            await asyncio.sleep(config.DEAD_OWNER_SWEEP_S)
            try:
                for sweep in sweeps:
                    await sweep.sweep()
            except OSError as e:  # e.g. the store directory is being removed at shutdown
                log.warning("sweeping dead owners' objects failed: %s", e)

    async def FetchObject(self, request, context):
        path = self._store_path(request.path)
        if path is None or not os.path.exists(path):
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no object at {request.path} in this node's store")
        for chunk, total in store_owners.read_chunks(path, config.FETCH_CHUNK_BYTES):
            yield pb.ObjectChunk(data=chunk, total=total)

    async def PutObject(self, request_iterator, context):
        """Receives a large object from a driver that cannot write this node's store itself."""
        path = tmp = None
        written = 0
        try:
            async for chunk in request_iterator:
                if path is None:
                    if not _OBJECT_NAME.fullmatch(chunk.name):
                        await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                            f"bad object name {chunk.name!r}: expected 40 hex digits")
                    target = spilling.pick_dir(self.store_dir, chunk.total)
                    if target is None:
                        spill = (f"nor in its spill directory ({self.spill_dir}; set KASTOR_OBJECT_SPILLING_DIR on "
                                 f"the node for a disk with more room)" if self.spill_dir else
                                 "and spilling to disk is off (KASTOR_OBJECT_SPILLING=0 on the node)")
                        await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                                            f"an object of {chunk.total} bytes does not fit in this node's "
                                            f"store ({self.store_dir}), {spill}")
                    path = os.path.join(target, chunk.name)
                    tmp = path + ".upload"
                    f = open(tmp, "wb")
                written += len(chunk.data)
                if written > chunk.total:
                    await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "object larger than its announced size")
                f.write(chunk.data)
            if path is None:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "PutObject needs at least one chunk")
            f.close()
            os.rename(tmp, path)
            tmp = None
        finally:
            if tmp is not None:
                f.close()
                os.unlink(tmp)
        return pb.ObjectLocation(node_id=self.node_id, node_address=self.address, path=path, size=written)

    async def FreeObjects(self, request, context):
        paths = self.uploads.keep_freed(list(request.paths))  # a freed upload's file serves the next (store_recycle)
        for d in self._object_dirs():
            store_owners.free(d, paths)
        return pb.Empty()

    async def shutdown(self) -> None:
        """SIGKILLs every worker, those still starting included, starts no more, and waits (up to
        SHUTDOWN_REAP_S) until they are gone. A worker hung before it registered (stopped, or
        starved) never notices its stdin end, so nothing but this kill would end it: without it,
        the starts queued behind it took the freed slots while the server drained, and their
        processes outlived the agent."""
        self.closing = True
        procs = [w.proc for w in self.workers.values()]
        for proc in procs:
            _kill(proc)
        if self.spill_dir:  # before the wait, which a supervisor's grace may cut short: a killed worker writes no more
            shutil.rmtree(self.spill_dir, ignore_errors=True)
        if procs:
            done, _ = await asyncio.wait([asyncio.ensure_future(p.wait()) for p in procs], timeout=SHUTDOWN_REAP_S)
            if len(done) < len(procs):
                log.warning("%d worker(s) had not exited %.0fs after SIGKILL", len(procs) - len(done),
                            SHUTDOWN_REAP_S)
        if self.fork_server is not None:  # after the waits: the fork server reports its children's exits
            self.fork_server.close()
        if self.node_lease is not None:
            self.node_lease.close()
        shutil.rmtree(self.store_dir, ignore_errors=True)


def _selectors_key(labels: Sequence[pb.LabelSelector]) -> tuple:
    """Label selectors (LabelSelector messages) as a hashable key."""
    return tuple(tuple(sorted(s.match.items())) for s in labels)


def _kill(proc: asyncio.subprocess.Process | ForkedProcess) -> None:
    """SIGKILL, which also ends a stopped process; one already gone is fine."""
    try:
        proc.kill()
    except ProcessLookupError:
        pass


def parse_resources(args: argparse.Namespace) -> dict[str, float]:
    import json
    total: dict[str, float] = {"CPU": float(args.num_cpus if args.num_cpus is not None else os.cpu_count() or 1)}
    if args.num_gpus:
        total["GPU"] = float(args.num_gpus)
    if args.memory:
        total["memory"] = float(args.memory)
    if args.resources:
        extra = json.loads(args.resources)
        if not isinstance(extra, dict) or not all(isinstance(v, (int, float)) for v in extra.values()):
            raise SystemExit("--resources must be a JSON object of name -> number, e.g. '{\"TPU\": 4}'")
        total.update({k: float(v) for k, v in extra.items()})
    return total


def parse_labels(args: argparse.Namespace) -> dict[str, str]:
    """The node's own labels, from --labels / KASTOR_NODE_LABELS (`k=v,k2=v2`)."""
    try:
        return node_labels.parse_node_labels(args.labels, "--labels / KASTOR_NODE_LABELS")
    except (TypeError, ValueError) as e:
        raise SystemExit(f"node agent: {e}") from None


async def serve(args: argparse.Namespace) -> int:
    token = auth.resolve_token(args.token, args.token_file)
    if not token:
        raise SystemExit("node agent: no cluster token (pass --token/--token-file or set KASTOR_TOKEN)")
    node_id = args.node_id or os.urandom(8).hex()
    session_dir = args.session_dir or launcher.new_session_dir("node")
    os.makedirs(os.path.join(session_dir, "logs"), exist_ok=True)
    store_dir = os.path.join(args.store_root or config.default_store_root(), f"kastor-{node_id}")
    os.makedirs(store_dir, exist_ok=True)
    spill_dir = spilling.node_spill_dir(args.object_spilling_directory, session_dir, node_id)
    if spill_dir:
        spilling.attach(store_dir, spill_dir)
    agent = NodeAgent(head_address=args.address, token=token, ip=args.node_ip, total=parse_resources(args),
                      store_dir=store_dir, session_dir=session_dir, node_id=node_id, labels=parse_labels(args),
                      spill_dir=spill_dir)
    server = rpc.server(token, counter=agent.rpcs)
    pb_grpc.add_NodeAgentServicer_to_server(agent, server)
    try:
        port = tls.add_port(server, f"{bind_host(args.node_ip)}:{args.port}", "node agent",
                            "Choose another with `kastor start --node-port` (0, the default: any free port).")
    except tls.PortInUseError as e:
        raise SystemExit(f"node agent: {e}") from None
    await server.start()
    agent.address = f"{args.node_ip}:{port}"
    agent.uploads.address = agent.address
    await agent.uploads.start(bind_host(args.node_ip))
    await agent.register_with_head(config.STARTUP_TIMEOUT_S)
    agent._prestart()
    heartbeat = asyncio.get_running_loop().create_task(agent.heartbeat_forever())
    lease_renewer = asyncio.get_running_loop().create_task(agent.renew_node_lease_forever())
    reconciler = asyncio.get_running_loop().create_task(agent.reconcile_leases_forever())
    reaper = asyncio.get_running_loop().create_task(agent.reap_idle_forever())
    sweeper = asyncio.get_running_loop().create_task(agent.sweep_dead_owners_forever())
    launcher.announce_ready(args.ready_fd, agent.address)
    log.info("node agent %s serving on %s with %s, labels %s", node_id, agent.address, agent.total, agent.labels)
    stop = asyncio.get_running_loop().create_task(launcher.wait_for_stop(args.exit_with_parent))
    try:
        # Ends on a stop request, or when the heartbeat gives up on a head that is gone for good.
        await asyncio.wait([stop, heartbeat], return_when=asyncio.FIRST_COMPLETED)
    finally:
        stop.cancel()
        heartbeat.cancel()
        lease_renewer.cancel()
        reconciler.cancel()
        reaper.cancel()
        sweeper.cancel()
        await agent.shutdown()
        await agent.uploads.stop()
        await server.stop(grace=0.5)
    return 0 if stop.done() and not stop.cancelled() else 1


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="kastor-node", description="Kastor node agent")
    flags.add_join_flags(p, address_required=True)
    p.add_argument("--port", type=int, default=0)
    flags.add_node_ip_flag(p)
    p.add_argument("--node-id", default=None)
    flags.add_node_resource_flags(p)
    p.add_argument("--store-root", default=None)
    flags.add_spilling_flag(p)
    p.add_argument("--session-dir", default=None)
    flags.add_child_flags(p)
    return p


def main(argv: list[str] | None = None) -> None:
    logging_setup.configure("node")
    try:
        args = build_parser().parse_args(argv)
    except settings.SettingError as e:
        raise SystemExit(f"node agent: {e}") from None
    code = asyncio.run(serve(args))
    logging.shutdown()
    os._exit(code)  # a daemon thread may sit in a read of stdin; don't let it block interpreter exit


if __name__ == "__main__":
    main()
