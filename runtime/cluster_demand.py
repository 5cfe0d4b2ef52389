"""The head's autoscaling face: the demand that does not fit, node idleness, and drains.

An autoscaler (the operator, see `kastor.operator.autoscaling`) sizes the cluster from what
the head reports here, as Ray's autoscaler v2 does from the GCS's GetClusterResourceState:

- the work that waits: actors the head could not place, task lease requests queued on a
  node or fitting no node, and placement groups whose bundles are not reserved, each with
  its resource shape (and the node labels it needs: its label_selector and fallbacks);
- the standing `request_resources()` bundles, which the cluster must be able to hold at
  once whatever runs (Ray's cluster resource constraints);
- every alive node's resources and how long it has run nothing.

Scale-down drains through the head: `DrainNode` asks the node agent, which accepts only while
it runs nothing and from then on takes no new work, so the autoscaler never kills anything
busy. The head then places nothing there either.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import grpc
from kastor.runtime.placement import group_of, in_group
from kastor.runtime.protocol import kastor_pb2 as pb
from kastor.runtime.protocol import kastor_pb2_grpc as pb_grpc
from kastor.runtime.store import Store

log = logging.getLogger("kastor.head")

META = "meta"
REQUESTED = "requested_resources"  # META key: the last request_resources() (a ResourceRequest)


def _shape(resources: Any) -> tuple[tuple[str, float], ...]:
    return tuple(sorted((k, float(v)) for k, v in dict(resources).items() if v))


def _labels(selectors: Any) -> tuple[tuple[tuple[str, str], ...], ...]:
    """Label selectors (label_selector and fallbacks) as a hashable key."""
    return tuple(tuple(sorted(s.match.items())) for s in selectors)


def _selectors(key: tuple[tuple[tuple[str, str], ...], ...]) -> list[pb.LabelSelector]:
    return [pb.LabelSelector(match=dict(items)) for items in key]


class DemandMixin:
    """The Head's autoscaling RPCs and bookkeeping (the Head provides the attributes below)."""

    store: Store
    nodes: dict[str, pb.NodeInfo]
    actors: dict[bytes, pb.ActorInfo]
    groups: dict[bytes, pb.PlacementGroupInfo]
    pending: set[bytes]
    starting_on: Counter[str]
    metadata: tuple
    requests: Counter[str]
    node_stub: Callable[[str], pb_grpc.NodeAgentStub]

    def init_demand(self) -> None:
        self.idle_since: dict[str, float] = {}   # node id -> time.monotonic() since it runs nothing
        self.draining: set[str] = set()          # nodes that accepted a drain: nothing is placed there
        self.queued: dict[str, list[pb.ResourceDemand]] = {}  # node id -> its queued lease shapes
        self.requested: list[pb.ResourceDemand] = []

    async def load_demand(self) -> None:
        """After a head restart: the standing request_resources() (drains come back on heartbeats)."""
        raw = await self.store.get(META, REQUESTED)
        if raw:
            self.requested = list(pb.ResourceRequest.FromString(raw).bundles)

    def schedulable(self, node: pb.NodeInfo) -> bool:
        """Whether new work may go to `node`: alive and not draining."""
        return node.alive and node.node_id not in self.draining

    def note_usage(self, node: pb.NodeInfo, beat: pb.HeartbeatRequest) -> None:
        """Records what a heartbeat says about the node's load: queued requests, drain, idleness."""
        self.queued[node.node_id] = list(beat.queued)
        if beat.draining:  # e.g. told to a head that restarted since the drain
            self.draining.add(node.node_id)
        # An actor's worker still running there counts even if the table has the actor dead already:
        # a killed actor's worker may still be shutting down (`__ray_shutdown__`, atexit handlers),
        # and the node agent refuses a drain until it is gone.
        if self.node_busy(node, bool(beat.leases) or bool(beat.queued) or bool(beat.actors)):
            self.idle_since.pop(node.node_id, None)
        else:
            self.idle_since.setdefault(node.node_id, time.monotonic())

    def node_busy(self, node: pb.NodeInfo, has_work: bool) -> bool:
        """Busy: a task lease or a queued request, an actor there or on its way, or a reserved bundle."""
        return (has_work or self.starting_on[node.node_id] > 0
                or any(group_of(name) for name in node.total)
                or any(a.node_id == node.node_id and a.state == pb.ALIVE for a in self.actors.values()))

    def forget_node_usage(self, node_id: str) -> None:
        """A node died: it is neither idle nor draining any more."""
        self.idle_since.pop(node_id, None)
        self.queued.pop(node_id, None)
        self.draining.discard(node_id)

    # ---- RPCs ----

    async def GetClusterDemand(self, request, context):
        self.requests["GetClusterDemand"] += 1
        return self.cluster_demand()

    def cluster_demand(self) -> pb.ClusterDemand:
        """The work that waits, the standing request and every alive node's usage (GetClusterDemand)."""
        counts: Counter[tuple[str, tuple, tuple]] = Counter()
        for actor_id in self.pending:
            info = self.actors.get(actor_id)
            if info is None or info.state == pb.DEAD or in_group(info.spec.required):
                continue  # an actor in a placement group waits for its group, reported below
            counts[("actor", _shape(info.spec.required), _labels(info.spec.placement.labels))] += 1
        for node in self.nodes.values():
            if not node.alive:
                continue
            for d in node.infeasible:
                counts[("task", _shape(d.shape), _labels(d.labels))] += max(d.count, 1)
            for d in self.queued.get(node.node_id, ()):
                counts[("task", _shape(d.shape), _labels(d.labels))] += max(d.count, 1)
        pending = [pb.ResourceDemand(shape=dict(shape), kind=kind, count=n, labels=_selectors(labels))
                   for (kind, shape, labels), n in counts.items()]
        groups = []
        for pg_id, info in self.groups.items():
            if info.state in (pb.PG_PENDING, pb.PG_RESCHEDULING):
                bundles = [b for b, where in zip(info.spec.bundles, info.bundle_nodes, strict=False) if not where]
                groups.append(pb.PlacementGroupDemand(placement_group_id=pg_id, strategy=info.spec.strategy,
                                                      bundles=bundles))
        now = time.monotonic()
        nodes = [pb.NodeUsage(node_id=n.node_id, ip=n.ip, total=n.total, available=n.available,
                              idle_s=now - self.idle_since[n.node_id] if n.node_id in self.idle_since else 0.0,
                              draining=n.node_id in self.draining)
                 for n in self.nodes.values() if n.alive]
        return pb.ClusterDemand(pending=pending, placement_groups=groups, requested=self.requested, nodes=nodes)

    async def RequestResources(self, request, context):
        """Replaces the standing request (Ray's request_resources: the latest call wins)."""
        for bundle in request.bundles:
            bad = {k: v for k, v in bundle.shape.items() if v < 0}
            if bad:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                    f"request_resources: negative amounts {bad}; every amount must be >= 0")
        self.requested = [pb.ResourceDemand(shape=b.shape, kind="request", count=max(b.count, 1))
                          for b in request.bundles]
        await self.store.put(META, REQUESTED, pb.ResourceRequest(bundles=self.requested).SerializeToString())
        log.info("request_resources: %d bundle(s)", sum(b.count for b in self.requested))
        return pb.Empty()

    async def DrainNode(self, request, context):
        """Asks an idle node to take no new work, so it can be removed; refused while it runs anything."""
        self.requests["DrainNode"] += 1
        node = self.nodes.get(request.node_id)
        if node is None or not node.alive:
            return pb.DrainNodeReply(accepted=True, message=f"node {request.node_id} is not alive")
        if self.node_busy(node, bool(node.leases)):
            return pb.DrainNodeReply(message=f"node {node.node_id} is busy (actors, leases or placement group "
                                             f"bundles): it is not drained")
        try:
            reply = await self.node_stub(node.address).Drain(request, metadata=self.metadata, timeout=10)
        except grpc.aio.AioRpcError as e:
            return pb.DrainNodeReply(message=f"node {node.node_id} did not answer the drain: {e.code().name}")
        if reply.accepted:
            self.draining.add(node.node_id)
            log.info("node %s drained (%s): it takes no new work", node.node_id, request.reason or "no reason given")
        return reply
