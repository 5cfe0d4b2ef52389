"""Joining a cluster as a driver: find this host's node (or serve as one), register a job, hold its session."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import shutil
import socket
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable

import grpc
from kastor.runtime import config, context, retry, settings, startup_gc, tls
from kastor.runtime.core import CoreWorker
from kastor.runtime.frames import RelayRoute
from kastor.runtime.protocol import kastor_pb2 as pb
from kastor.runtime.protocol import kastor_pb2_grpc as pb_grpc

log = logging.getLogger("kastor.driver")

# A worker ships what it printed every SHIP_DELAY_S (worker_logs); this covers that and a round trip.
OUTPUT_QUIET_S = 0.2
OUTPUT_LINGER_MAX_S = 1.0
RELAY_RELEARN_TIMEOUT_S = 10.0  # a restarted head's client port asked where its frame relay is


def connect(head_address: str, token: str, namespace: str | None, node_address: str | None = None,
            timeout: float = 30.0, log_to_driver: bool = True) -> CoreWorker:
    """Creates this process's CoreWorker as the driver of a new job.

    On a host that runs a node of the cluster the driver shares that node's store and address.
    Elsewhere (an ordinary pod, a machine that joins with `kastor.init(address=...)`) it has no
    node of its own: it advertises an address the cluster's workers can reach (see
    advertised_ip), listens on it, and serves its own values over the inline limit from there
    (driver_store), since no node agent holds them; its leases still go to a node of the cluster.
    """
    nodes = asyncio.run(_list_nodes(head_address, token, timeout))
    node = _pick_local_node(nodes, node_address)
    if node is None:
        raise ConnectionError(f"The Kastor cluster at {head_address} has no live node to run work on.")
    local = node.ip in ("127.0.0.1", "localhost") or node.ip == settings.NODE_IP.get()
    if local and os.path.isdir(node.store_dir):
        core = CoreWorker(head_address=head_address, token=token, node_address=node.address, node_id=node.node_id,
                          store_dir=node.store_dir, ip=node.ip)
    else:
        ip, bind_ip = advertised_ip(head_address)
        # A pid is no identity across pods (a driver is often pid 1): a node id must not collide,
        # or one driver would read another's object paths as its own files.
        core = CoreWorker(head_address=head_address, token=token, node_address=node.address,
                          node_id=f"driver-{uuid.uuid4().hex[:12]}", ip=ip, serves_store=True, bind_ip=bind_ip,
                          store_dir=tempfile.mkdtemp(prefix="kastor-driver-"))
        log.info("no node of this cluster on this host: serving this driver's objects at %s", core.address)
    try:
        reply = core.head_call("RegisterJob", pb.RegisterJobRequest(
            namespace=namespace or "", driver_address=core.address, pid=os.getpid()), timeout)
    except BaseException:
        _close(core)
        raise
    core.job_id = reply.job_id
    core.namespace = reply.namespace
    core.output = OutputPrinter(core.ip) if log_to_driver else None
    core.spawn(_hold_session(core))
    context.core = core
    startup_gc.freeze_startup_objects()
    return core


def advertised_ip(head_address: str) -> tuple[str, str | None]:
    """The address a driver without a node advertises to the cluster, and the one it binds.

    KASTOR_NODE_IP when set (e.g. a pod's `status.podIP` through the Downward API; bound as a
    node agent binds it). Otherwise the source address of this host's route to the head: the
    interface the head is reached on is the one the head's other pods reach back (a pod's IP,
    never 127.0.0.1 unless the head is on this host's loopback); it is bound exactly.
    """
    if settings.NODE_IP.is_set():
        return settings.NODE_IP.get(), None
    host, _, port = head_address.rpartition(":")
    host = host.strip("[]")
    try:
        # IPv4 first, as node addresses are (a name such as localhost may list ::1 first).
        found = sorted(socket.getaddrinfo(host, int(port), type=socket.SOCK_DGRAM),
                       key=lambda info: info[0] != socket.AF_INET)
        family, _, _, _, sockaddr = found[0]
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            probe.connect(sockaddr)  # a route lookup: UDP sends nothing until written to
            ip = probe.getsockname()[0]
    except (OSError, ValueError) as e:
        raise ConnectionError(f"Could not find the address of this host that the head at {head_address} is reached "
                              f"from ({e}); set KASTOR_NODE_IP to an address the cluster's pods can reach this "
                              f"driver on (in a pod: its status.podIP, through the Downward API).") from None
    if ":" in ip:  # an IPv6 source: bracketed, as in host:port addresses
        ip = f"[{ip}]"
    return ip, ip


def _close(core: CoreWorker) -> None:
    """Shuts a driver's core down; a driver's own store folder goes with it (its values are its own)."""
    core.shutdown()
    if core.serves_own_store():
        shutil.rmtree(core.store_dir, ignore_errors=True)


def connect_remote(gateway: str, token: str, namespace: str | None, timeout: float = 30.0,
                   log_to_driver: bool = True) -> CoreWorker:
    """Creates the driver of a new job that reaches the cluster only through the client port."""
    hello = asyncio.run(_hello(gateway, token, timeout))
    core = CoreWorker(head_address=hello.head_address, token=token, node_address="", node_id=f"client-{os.getpid()}",
                      store_dir=tempfile.mkdtemp(prefix="kastor-client-"), ip="127.0.0.1", gateway=gateway)
    core.address = hello.owner_address  # borrowers in the cluster ask the gateway for this client's objects
    core.peers.use_frame_relay(_frame_relay_route(gateway, hello))
    try:
        nodes = [n for n in core.head_call("ListNodes", pb.ListRequest(), timeout).nodes if n.alive]
        if not nodes:
            raise ConnectionError(f"The Kastor cluster behind {gateway} has no live node to run work on.")
        core.node_address = nodes[0].address  # leases and large-object uploads go to this node
        reply = core.head_call("RegisterJob", pb.RegisterJobRequest(
            namespace=namespace or "", driver_address=core.address, pid=os.getpid()), timeout)
    except BaseException:
        core.shutdown()
        raise
    core.job_id = reply.job_id
    core.namespace = reply.namespace
    core.output = OutputPrinter(core.ip) if log_to_driver else None
    core.spawn(_hold_session(core, reconnect_grace_s=config.CLIENT_RECONNECT_GRACE_S,
                             on_restored=lambda: _relearn_frame_relay(core, gateway, token)))
    context.core = core
    startup_gc.freeze_startup_objects()
    log.info("connected to cluster %s through kastor://%s", hello.cluster_id, gateway)
    return core


def _frame_relay_route(gateway: str, hello: pb.HelloReply) -> RelayRoute | None:
    """Where a remote client's actor calls go as frames (spliced by the head's frame relay), if
    the client port announces a relay and frames are on; None sends them through its gRPC relay."""
    if not hello.frame_relay_port or not settings.FRAMED_CALLS.get():
        return None
    return RelayRoute(f"{gateway.rpartition(':')[0]}:{hello.frame_relay_port}", hello.cluster_id)


async def _relearn_frame_relay(core: CoreWorker, gateway: str, token: str) -> None:
    """Asks the client port again where its frame relay is, once the session with a restarted
    head is back: a head started with a random relay port (KASTOR_FRAME_RELAY_PORT=0) comes back
    on another one, and the calls that failed on the old one went to the gRPC relay."""
    try:
        hello = await _hello(gateway, token, timeout=RELAY_RELEARN_TIMEOUT_S)
    except (ConnectionError, PermissionError, RuntimeError) as e:
        log.warning("could not ask kastor://%s for its frame relay after the head came back (%s); actor calls "
                    "keep their present route", gateway, e)
        return
    core.peers.use_frame_relay(_frame_relay_route(gateway, hello))


async def _hello(gateway: str, token: str, timeout: float) -> pb.HelloReply:
    from kastor.runtime import __version__, auth, client_gateway
    async with tls.aio_channel(gateway) as channel:
        try:
            hello = await pb_grpc.ClientGatewayStub(channel).Hello(
                pb.HelloRequest(client_version=client_gateway.VERSION), metadata=auth.metadata(token), timeout=timeout)
        except grpc.aio.AioRpcError as e:
            if e.code() == grpc.StatusCode.UNAUTHENTICATED:
                raise PermissionError(f"The cluster at kastor://{gateway} rejected the token: {e.details()}") from None
            if e.code() == grpc.StatusCode.UNIMPLEMENTED:
                raise ConnectionError(f"{gateway} is not a Kastor client port (it may be the head's control port; "
                                      f"use the client port, 10001 by default)") from None
            hint = await asyncio.to_thread(tls.unreachable_hint, gateway) \
                if e.code() == grpc.StatusCode.UNAVAILABLE else ""
            raise ConnectionError(f"Could not reach a Kastor client port at {gateway}: "
                                  f"{e.code().name} {e.details()}.{hint}") from None
    if not client_gateway.compatible(client_gateway.VERSION, hello.server_version):
        raise RuntimeError(f"Version skew: this client speaks Kastor protocol {client_gateway.VERSION} "
                           f"(kastor {__version__}) but the cluster at {gateway} speaks {hello.server_version}. "
                           f"Install the cluster's version of kastor in this environment.")
    return hello


async def _list_nodes(head_address: str, token: str, timeout: float) -> list[pb.NodeInfo]:
    from kastor.runtime import auth
    async with tls.aio_channel(head_address) as channel:
        stub = pb_grpc.HeadStub(channel)
        try:
            reply = await stub.ListNodes(pb.ListRequest(), metadata=auth.metadata(token), timeout=timeout)
        except grpc.aio.AioRpcError as e:
            if e.code() == grpc.StatusCode.UNAUTHENTICATED:
                raise PermissionError(f"The cluster at {head_address} rejected the token: {e.details()}") from None
            hint = await asyncio.to_thread(tls.unreachable_hint, head_address) \
                if e.code() == grpc.StatusCode.UNAVAILABLE else ""
            raise ConnectionError(f"Could not reach a Kastor head at {head_address}: "
                                  f"{e.code().name} {e.details()}.{hint}") from None
    return [n for n in reply.nodes if n.alive]


def _pick_local_node(nodes: list[pb.NodeInfo], preferred: str | None) -> pb.NodeInfo | None:
    for n in nodes:
        if preferred and n.address == preferred:
            return n
    local_ips = {"127.0.0.1", "localhost", settings.NODE_IP.get()}
    for n in nodes:
        if n.ip in local_ips:
            return n
    return nodes[0] if nodes else None


class SessionDropped(Exception):
    """The job session's stream dropped before the head sent anything: the head is still away."""


# Reopening a dropped job session: every 0.2 s, until the head is back or has been gone for
# max(KASTOR_HEAD_RECONNECT_TIMEOUT_S, the job's reconnect grace) (the deadline is set per outage).
SESSION_RETRY = retry.RetryPolicy(initial_s=0.2, max_s=0.2, retry_on=(SessionDropped,))


async def _hold_session(core: CoreWorker, reconnect_grace_s: float = 0.0,
                        on_restored: Callable[[], Awaitable[None]] | None = None) -> None:
    """The head notices the driver is gone when this stream drops; the job's worker output arrives on it.

    If the head restarts, the stream breaks from the head's side: reopen it, so the new head
    knows this job lives on (it waits JOB_RECONNECT_GRACE_S for that before cleaning up). An
    outage ends when the reopened stream delivers an event; the next drop starts a new one.
    `on_restored` runs once at the end of each outage (a remote client re-learns its relay).
    """
    loop = asyncio.get_running_loop()
    lost_at: float | None = None
    request = pb.JobSessionRequest(job_id=core.job_id, reconnect_grace_s=reconnect_grace_s,
                                   logs=core.output is not None)
    outage = dataclasses.replace(SESSION_RETRY,
                                 deadline_s=max(config.HEAD_RECONNECT_TIMEOUT_S, reconnect_grace_s))

    async def follow() -> bool:
        """Follows the session until it ends: True if for good (the job finished, this process
        stops, or an error that reopening cannot fix), False if it dropped after events came;
        raises SessionDropped if it dropped before any came."""
        nonlocal lost_at
        restored = False
        try:
            async for event in core.head_stub().JobSession(request, metadata=core.metadata):
                if event.logs and core.output is not None:
                    core.output.print(event.logs)
                restored = True
                if lost_at is not None:
                    log.warning("job session with the head restored after %.1fs", loop.time() - lost_at)
                    lost_at = None
                    if on_restored is not None:
                        core.spawn(on_restored())
        except grpc.aio.AioRpcError as e:
            if e.code() != grpc.StatusCode.UNAVAILABLE:
                if e.code() != grpc.StatusCode.CANCELLED:
                    log.error("job session with the head ended: %s %s", e.code().name, e.details())
                return True
        if not restored:
            raise SessionDropped
        return False

    try:
        ended = await follow()
    except SessionDropped:
        ended = False
    while not ended:
        lost_at = loop.time()
        log.warning("job session with the head at %s dropped; reconnecting", core.head_address)
        await asyncio.sleep(SESSION_RETRY.initial_s)
        try:
            ended = await retry.call_async(follow, outage)
        except SessionDropped:
            log.error("the head at %s has been gone for %.0fs; giving up on the job session",
                      core.head_address, loop.time() - lost_at)
            return


def disconnect(core: CoreWorker) -> None:
    """A clean shutdown: let the tail of the workers' output in, then end the job at once (a
    remote client's job would otherwise wait out its reconnect grace with its actors alive)."""
    if core.output is not None:
        core.output.wait_for_quiet()

    async def finish() -> None:
        await core.head_stub().FinishJob(pb.FinishJobRequest(job_id=core.job_id), metadata=core.metadata, timeout=5)

    try:
        core.run(finish(), timeout=10)
    except Exception as e:  # the head may be gone already; the dropped session then ends the job
        log.debug("could not finish job: %s", e)
    from kastor.runtime import checkpoint
    checkpoint.job_ended(core)  # the checkpoints of its unnamed durable actors, dead with the job
    _close(core)
    startup_gc.unfreeze()


class OutputPrinter:
    """Prints the job's worker output as Ray does: `(f pid=123) line`, with the ip when it is another host's."""

    def __init__(self, own_ip: str):
        self._own_ip = own_ip
        self._arrived = threading.Condition()

    def print(self, logs: Iterable[pb.WorkerLog]) -> None:
        for record in logs:
            where = f"pid={record.pid}" if record.ip == self._own_ip else f"pid={record.pid}, ip={record.ip}"
            prefix = f"({record.label} {where}) " if record.label else f"({where}) "
            stream = sys.stderr if record.is_err else sys.stdout
            try:
                stream.write("".join(f"{prefix}{line}\n" for line in record.lines))
                stream.flush()
            except (OSError, ValueError):  # the driver's own stream is closed: nothing to show it on
                break
        with self._arrived:
            self._arrived.notify_all()

    def wait_for_quiet(self) -> None:
        """Lines printed just before the driver's last `get` may still be on their way: at
        shutdown, wait until none has come for OUTPUT_QUIET_S (at most OUTPUT_LINGER_MAX_S)."""
        end = time.monotonic() + OUTPUT_LINGER_MAX_S
        quiet_at = time.monotonic() + OUTPUT_QUIET_S
        with self._arrived:
            while (remaining := min(quiet_at, end) - time.monotonic()) > 0:
                if self._arrived.wait(remaining):
                    quiet_at = time.monotonic() + OUTPUT_QUIET_S
