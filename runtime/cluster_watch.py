"""The head's side of the operator's watch: tell it when what it reads of the cluster changes.

The operator reconciles a running ActorCluster from what the head says (the nodes alive, the
work that does not fit, which nodes are idle) and mirrors each DetachedActor's record. It
used to ask every few seconds; now it holds one `WatchCluster` stream per cluster and
reconciles only when a message says something changed (issue 12 defect 6):

- `scaling`: the answer of GetClusterDemand / ListNodes changed in what the operator acts on:
  a node joined, died or is draining, the pending work or the requested resources changed, or
  a node became idle (idle for IDLE_SETTLE_S: a node between two short tasks is not) or busy
  again. Free resources and idle seconds alone are left out: they change all the time, and
  the operator times the idle timeout itself from the idle_s it reads.
  The head compares a signature of those facts once per `watch_nodes` tick, and only while
  somebody watches.
- `actors`: the names of named actors whose record was saved (state, restarts, address).
- the head's store going unreachable or coming back (`scaling` too): a managed Redis on a lost
  node is noticed by nothing else, since its pod reports nothing and the head keeps answering;
  the reconcile that follows finds the pod's node lost and replaces it. While somebody
  watches, the head PINGs its store once per tick (GCS_PROBE_TIMEOUT_S), one probe at a time.

Messages to one watcher are coalesced and sent at most once per WATCH_MIN_INTERVAL_S (the
first at once), so a busy cluster costs the operator no more than the old poll did; a
`keepalive` after WATCH_KEEPALIVE_S of silence lets the operator tell a quiet head from a lost
one (whose TCP connection may never say so). `requests` counts the reads an operator makes
(`kastor_head_operator_requests_total` on the dashboard's /metrics), which shows the watch
replaced the polling.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter

from kastor.runtime.protocol import kastor_pb2 as pb
from kastor.runtime.store import Store

log = logging.getLogger("kastor.head")

WATCH_KEEPALIVE_S = 10.0
WATCH_MIN_INTERVAL_S = 2.0
IDLE_SETTLE_S = 2.0
GCS_PROBE_TIMEOUT_S = 3.0
# The head RPCs an operator makes, counted for /metrics.
OPERATOR_METHODS = ("WatchCluster", "ListNodes", "GetClusterDemand", "GetActor", "GetCheckpointStore", "DrainNode")


class _Watcher:
    """One open WatchCluster stream: what changed since its last message."""

    def __init__(self) -> None:
        self.wake = asyncio.Event()
        self.scaling = False
        self.actors: set[tuple[str, str]] = set()


class ClusterWatchMixin:
    """The Head's WatchCluster RPC (the Head provides `cluster_demand`, `idle_since` and `store`)."""

    idle_since: dict[str, float]
    store: Store

    def init_watch(self) -> None:
        self.watchers: set[_Watcher] = set()
        self.scaling_signature = b""
        self.requests: Counter[str] = Counter()  # OPERATOR_METHODS -> calls served
        self.store_reachable = True
        self.store_probe: asyncio.Task[None] | None = None

    def cluster_demand(self) -> pb.ClusterDemand:  # provided by DemandMixin
        raise NotImplementedError

    def _signature(self) -> bytes:
        """What the operator acts on in GetClusterDemand's answer, in a stable form."""
        demand = self.cluster_demand()
        now = time.monotonic()
        nodes = sorted((n.node_id, n.ip, n.draining, tuple(sorted(n.total.items())),
                        now - self.idle_since.get(n.node_id, now) >= IDLE_SETTLE_S) for n in demand.nodes)
        pending = sorted(d.SerializeToString(deterministic=True) for d in demand.pending)
        groups = sorted(g.SerializeToString(deterministic=True) for g in demand.placement_groups)
        requested = [d.SerializeToString(deterministic=True) for d in demand.requested]
        return repr((nodes, pending, groups, requested, self.store_reachable)).encode()

    async def _probe_store(self) -> None:
        reachable = await self.store.reachable(GCS_PROBE_TIMEOUT_S)
        if reachable != self.store_reachable:
            log.warning("the head's store is %s", "reachable again" if reachable else
                        f"not answering (no PING reply within {GCS_PROBE_TIMEOUT_S:.0f}s)")
            self.store_reachable = reachable

    def check_watch(self) -> None:
        """Called on every watch_nodes tick: tells the watchers if the scaling facts changed."""
        if not self.watchers:
            return
        if self.store_probe is None or self.store_probe.done():
            self.store_probe = asyncio.get_running_loop().create_task(self._probe_store())
        try:
            signature = self._signature()
        except Exception:  # never let the operator's watch stop watch_nodes, which declares nodes dead
            log.exception("could not compare the cluster's state for the operator's watch")
            return
        if signature != self.scaling_signature:
            self.scaling_signature = signature
            for w in self.watchers:
                w.scaling = True
                w.wake.set()

    def note_actor_saved(self, info: pb.ActorInfo) -> None:
        """An actor's record changed: watchers hear of a named one (a DetachedActor mirrors it)."""
        if not info.spec.name:
            return
        for w in self.watchers:
            w.actors.add((info.spec.namespace, info.spec.name))
            w.wake.set()

    async def WatchCluster(self, request, context):
        self.requests["WatchCluster"] += 1
        watcher = _Watcher()
        if not self.watchers:
            self.scaling_signature = self._signature()
        self.watchers.add(watcher)
        try:
            yield pb.ClusterChange(initial=True)
            while True:
                try:
                    await asyncio.wait_for(watcher.wake.wait(), WATCH_KEEPALIVE_S)
                except TimeoutError:
                    yield pb.ClusterChange(keepalive=True)
                    continue
                watcher.wake.clear()
                change = pb.ClusterChange(scaling=watcher.scaling, actors=[
                    pb.ActorName(namespace=ns, name=name) for ns, name in sorted(watcher.actors)])
                watcher.scaling, watcher.actors = False, set()
                yield change
                await asyncio.sleep(WATCH_MIN_INTERVAL_S)  # what changes meanwhile goes in the next message
        finally:
            self.watchers.discard(watcher)
