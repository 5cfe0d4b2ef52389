"""The head's placement group table: creating, placing, removing and rescheduling groups.

Kept out of head.py; `Head` mixes this in. A group is placed all at once: the head plans a
node per bundle from its view of the nodes' free resources (runtime/placement.py's `plan`,
per strategy), then asks each chosen node to reserve its bundles. If any node refuses (its
free resources changed since its last heartbeat) the others give theirs back and the group
stays PENDING; so does a group no node set can hold (infeasible STRICT_* groups included, as
in Ray). Pending groups are tried again on every heartbeat, so they are placed as soon as
resources free up or a node joins. Every change is saved to the Store first (so a head
restarted on Redis keeps its groups) and wakes the long polls of `ready()`/`wait()`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable

import grpc
from kastor.runtime import node_labels, placement
from kastor.runtime.protocol import kastor_pb2 as pb
from kastor.runtime.protocol import kastor_pb2_grpc as pb_grpc
from kastor.runtime.resources import fits, release, subtract
from kastor.runtime.run_to_end import finish_even_if_cancelled
from kastor.runtime.store import Store

log = logging.getLogger("kastor.head")

GROUPS, NODES = "placement_groups", "nodes"


class PlacementGroupsMixin:
    """The Head's placement-group RPCs and table (the Head provides the attributes below)."""

    store: Store
    nodes: dict[str, pb.NodeInfo]
    actors: dict[bytes, pb.ActorInfo]
    metadata: tuple
    node_stub: Callable[[str], pb_grpc.NodeAgentStub]
    kill_actor: Callable[[pb.ActorInfo, str], Awaitable[None]]
    place_pending_actors: Callable[[], None]
    schedulable: Callable[[pb.NodeInfo], bool]  # alive and not draining (DemandMixin)

    def init_groups(self) -> None:
        self.groups: dict[bytes, pb.PlacementGroupInfo] = {}
        self.group_names: dict[tuple[str, str], bytes] = {}
        self.groups_placing: set[bytes] = set()
        self.groups_returning: set[tuple[str, bytes]] = set()  # (node, group): stale bundles being returned
        self.group_waiters: dict[bytes, list[asyncio.Future]] = defaultdict(list)

    async def load_groups(self) -> None:
        """After a head restart: the groups as saved; pending ones are placed on the next heartbeat."""
        for raw in (await self.store.get_all(GROUPS)).values():
            info = pb.PlacementGroupInfo.FromString(raw)
            self.groups[info.spec.placement_group_id] = info
            if info.spec.name and info.state != pb.PG_REMOVED:
                self.group_names[(info.spec.namespace, info.spec.name)] = info.spec.placement_group_id

    async def _save_group(self, info: pb.PlacementGroupInfo) -> None:
        info.version += 1
        await self.store.put(GROUPS, info.spec.placement_group_id.hex(), info.SerializeToString())
        for fut in self.group_waiters.pop(info.spec.placement_group_id, ()):
            if not fut.done():
                fut.set_result(None)

    def group_removed(self, pg_id: bytes) -> bool:
        info = self.groups.get(pg_id)
        return info is not None and info.state == pb.PG_REMOVED

    # ---- RPCs ----

    async def CreatePlacementGroup(self, request: pb.PlacementGroupSpec, context) -> pb.PlacementGroupInfo:
        existing = self.groups.get(request.placement_group_id)
        if existing is not None:  # a retry of a creation already acknowledged
            return existing
        if request.name:
            other = self.group_names.get((request.namespace, request.name))
            if other is not None:
                await context.abort(grpc.StatusCode.ALREADY_EXISTS,
                                    f"a placement group named '{request.name}' already exists in namespace "
                                    f"'{request.namespace}'; remove it first or choose another name")
            self.group_names[(request.namespace, request.name)] = request.placement_group_id
        info = pb.PlacementGroupInfo(spec=request, state=pb.PG_PENDING, bundle_nodes=[""] * len(request.bundles),
                                     created_at=time.time())
        self.groups[request.placement_group_id] = info
        await self._save_group(info)
        self.place_groups()
        return info

    async def RemovePlacementGroup(self, request: pb.PlacementGroupRequest, context) -> pb.Empty:
        info = self._find_group(request)
        if info is not None:  # marked REMOVED first: a retry finds it so, so its actors must still be killed
            await finish_even_if_cancelled(self.remove_group(info, "removed by remove_placement_group()"))
        return pb.Empty()

    async def GetPlacementGroup(self, request: pb.PlacementGroupRequest, context) -> pb.PlacementGroupReply:
        info = self._find_group(request)
        if info is None:
            return pb.PlacementGroupReply(found=False)
        if request.after_version and info.version <= request.after_version and info.state != pb.PG_REMOVED:
            fut = asyncio.get_running_loop().create_future()
            waiters = self.group_waiters[info.spec.placement_group_id]
            waiters.append(fut)
            try:
                await asyncio.wait_for(fut, request.timeout_s or 30)
            except TimeoutError:
                if fut in waiters:
                    waiters.remove(fut)
        return pb.PlacementGroupReply(found=True, info=self.groups[info.spec.placement_group_id])

    async def ListPlacementGroups(self, request, context) -> pb.PlacementGroupList:
        return pb.PlacementGroupList(groups=list(self.groups.values()))

    def _find_group(self, request: pb.PlacementGroupRequest) -> pb.PlacementGroupInfo | None:
        pg_id = request.placement_group_id or self.group_names.get((request.namespace, request.name), b"")
        return self.groups.get(pg_id)

    # ---- lifecycle ----

    async def remove_group(self, info: pb.PlacementGroupInfo, reason: str) -> None:
        """Ends the group: its actors die, its nodes end the tasks in it and get its resources back."""
        if info.state == pb.PG_REMOVED:
            return
        pg_id = info.spec.placement_group_id
        info.state, info.pending_reason = pb.PG_REMOVED, reason
        key = (info.spec.namespace, info.spec.name)
        if info.spec.name and self.group_names.get(key) == pg_id:
            del self.group_names[key]
        await self._save_group(info)
        log.info("placement group %s removed: %s", pg_id.hex()[:8], reason)
        for actor in list(self.actors.values()):
            if actor.spec.placement_group.placement_group_id == pg_id and actor.state != pb.DEAD:
                await self.kill_actor(actor, f"its placement group {pg_id.hex()} was removed")
        await self._return_bundles(info, range(len(info.bundle_nodes)))

    async def _return_bundles(self, info: pb.PlacementGroupInfo, indexes) -> None:
        by_node: dict[str, list[int]] = defaultdict(list)
        for i in indexes:
            if info.bundle_nodes[i]:
                by_node[info.bundle_nodes[i]].append(i)
        for node_id, idxs in by_node.items():
            node = self.nodes.get(node_id)
            if node is None or not node.alive:
                continue
            try:
                await self.node_stub(node.address).ReturnBundles(
                    _reservation(info, idxs), metadata=self.metadata, timeout=10)
            except grpc.aio.AioRpcError as e:
                log.warning("could not return placement group bundles on node %s: %s", node_id, e.code().name)
            self._account(node, info, idxs, reserve=False)
            await self.store.put(NODES, node.node_id, node.SerializeToString())

    async def groups_of_job_finished(self, job_id: bytes) -> None:
        """As in Ray, a group that is not detached goes with the job that created it."""
        for info in list(self.groups.values()):
            if info.spec.job_id == job_id and not info.spec.detached and info.state != pb.PG_REMOVED:
                await self.remove_group(info, "its job finished")

    async def groups_of_actor_dead(self, actor_id: bytes) -> None:
        """As in Ray, a group an actor created (not detached) goes when that actor is dead for good."""
        for info in list(self.groups.values()):
            if info.spec.creator_actor_id == actor_id and not info.spec.detached and info.state != pb.PG_REMOVED:
                await self.remove_group(info, "the actor that created it died")

    async def groups_node_died(self, node_id: str) -> None:
        """Bundles on a dead node are reserved again elsewhere (the group is RESCHEDULING until then)."""
        for info in list(self.groups.values()):  # awaits below: creations may land meanwhile
            if info.state != pb.PG_REMOVED and node_id in info.bundle_nodes:
                for i, where in enumerate(info.bundle_nodes):
                    if where == node_id:
                        info.bundle_nodes[i] = ""
                info.state = pb.PG_RESCHEDULING
                log.info("placement group %s lost bundles on dead node %s; rescheduling them",
                         info.spec.placement_group_id.hex()[:8], node_id)
                await self._save_group(info)
        self.place_groups()

    async def groups_node_registered(self, node: pb.NodeInfo) -> None:
        """Compares the bundles a (re)registering node holds with the table (also on the first
        heartbeat a restarted head hears from each node).

        A node agent that restarted holds none: the table's bundles there are reserved again
        (RESCHEDULING). A node that was declared dead and comes back may hold bundles that were
        moved elsewhere or whose group was removed meanwhile: it gives those back.
        """
        held: dict[bytes, list[int]] = defaultdict(list)
        for name in node.total:
            index = placement.bundle_index(name)
            if index is not None:
                held[bytes.fromhex(placement.group_of(name))].append(index)
        for info in list(self.groups.values()):
            pg_id = info.spec.placement_group_id
            lost = [i for i, where in enumerate(info.bundle_nodes)
                    if where == node.node_id and i not in held.get(pg_id, ())]
            if lost and info.state != pb.PG_REMOVED:
                for i in lost:
                    info.bundle_nodes[i] = ""
                info.state = pb.PG_RESCHEDULING
                log.info("node %s no longer holds bundles %s of placement group %s; rescheduling them",
                         node.node_id, lost, pg_id.hex()[:8])
                await self._save_group(info)
        self.return_stale_bundles(node)
        self.place_groups()

    def return_stale_bundles(self, node: pb.NodeInfo) -> None:
        """Has the node give back bundles the table does not place there (on every heartbeat).

        They are left by a removal or a failed placement whose ReturnBundles was lost, by a
        head that crashed halfway, or by a node that was declared dead and came back. Groups
        being placed right now are skipped: the table records their bundles once every node
        has answered.
        """
        held: dict[bytes, list[int]] = defaultdict(list)
        for name in node.total:
            index = placement.bundle_index(name)
            if index is not None:
                held[bytes.fromhex(placement.group_of(name))].append(index)
        for pg_id, indexes in held.items():
            if pg_id in self.groups_placing or (node.node_id, pg_id) in self.groups_returning:
                continue
            info = self.groups.get(pg_id)
            stale = [i for i in indexes if info is None or info.state == pb.PG_REMOVED or
                     i >= len(info.bundle_nodes) or info.bundle_nodes[i] != node.node_id]
            if stale:
                self.groups_returning.add((node.node_id, pg_id))
                asyncio.get_running_loop().create_task(self._return_stale(node, pg_id, stale))

    async def _return_stale(self, node: pb.NodeInfo, pg_id: bytes, indexes: list[int]) -> None:
        log.info("node %s gives back bundles %s of placement group %s, no longer placed there",
                 node.node_id, indexes, pg_id.hex()[:8])
        try:
            await self.node_stub(node.address).ReturnBundles(
                pb.BundleReservation(placement_group_id=pg_id, indexes=indexes), metadata=self.metadata, timeout=10)
        except grpc.aio.AioRpcError as e:
            log.warning("could not return stale bundles on node %s: %s", node.node_id, e.code().name)
        finally:
            self.groups_returning.discard((node.node_id, pg_id))

    # ---- placement ----

    def place_groups(self) -> None:
        for pg_id, info in self.groups.items():
            if info.state in (pb.PG_PENDING, pb.PG_RESCHEDULING) and pg_id not in self.groups_placing:
                self.groups_placing.add(pg_id)
                asyncio.get_running_loop().create_task(self._try_place_group(pg_id))

    def _group_candidates(self, info: pb.PlacementGroupInfo) -> list[pb.NodeInfo]:
        nodes = [n for n in self.nodes.values() if self.schedulable(n)]
        used = {n for n in info.bundle_nodes if n}
        if info.spec.strategy == "STRICT_PACK" and used:
            nodes = [n for n in nodes if n.node_id in used]
        elif info.spec.strategy == "STRICT_SPREAD":
            nodes = [n for n in nodes if n.node_id not in used]
        nodes.sort(key=lambda n: (-n.available.get("CPU", 0.0), n.node_id))
        return nodes

    async def _try_place_group(self, pg_id: bytes) -> None:
        try:
            info = self.groups[pg_id]
            missing = [i for i, where in enumerate(info.bundle_nodes) if not where]
            bundles = [dict(info.spec.bundles[i].resources) for i in missing]
            nodes = self._group_candidates(info)
            chosen = placement.plan(bundles, info.spec.strategy, [(n.node_id, n.available) for n in nodes],
                                    _allowed(info, missing, nodes))
            if chosen is None:
                reason = _pending_reason(info, nodes)
                if reason != info.pending_reason:
                    info.pending_reason = reason
                    await self._save_group(info)
                return
            by_node: dict[str, list[int]] = defaultdict(list)
            for i, node_id in zip(missing, chosen, strict=True):
                by_node[node_id].append(i)
            asked: list[str] = []  # nodes asked to reserve (a timed-out request may have been applied too)
            granted: list[str] = []
            for node_id, idxs in by_node.items():
                asked.append(node_id)
                if not await self._reserve(info, self.nodes[node_id], idxs):
                    break
                granted.append(node_id)
            if len(granted) < len(by_node) or info.state == pb.PG_REMOVED:
                for node_id in asked:  # all or nothing: give back what the others reserved
                    node = self.nodes[node_id]
                    try:
                        await self.node_stub(node.address).ReturnBundles(
                            _reservation(info, by_node[node_id]), metadata=self.metadata, timeout=10)
                    except grpc.aio.AioRpcError as e:
                        log.warning("could not return bundles on node %s: %s", node_id, e.code().name)
                    if node_id in granted:
                        self._account(node, info, by_node[node_id], reserve=False)
                return
            # No await from the REMOVED check above to here: a removal cannot slip in between.
            for node_id, idxs in by_node.items():
                for i in idxs:
                    info.bundle_nodes[i] = node_id
            info.state, info.pending_reason = pb.PG_CREATED, ""
            log.info("placement group %s (%s) created on %s", pg_id.hex()[:8], info.spec.strategy,
                     list(info.bundle_nodes))
            await self._save_group(info)
            for node_id in by_node:
                await self.store.put(NODES, node_id, self.nodes[node_id].SerializeToString())
            self.place_pending_actors()  # actors that wait for the group's resources
        finally:
            self.groups_placing.discard(pg_id)

    async def _reserve(self, info: pb.PlacementGroupInfo, node: pb.NodeInfo, idxs: list[int]) -> bool:
        try:
            reply = await self.node_stub(node.address).ReserveBundles(
                _reservation(info, idxs), metadata=self.metadata, timeout=10)
        except grpc.aio.AioRpcError as e:
            log.warning("reserving bundles on node %s failed: %s", node.node_id, e.code().name)
            return False
        if reply.reserved:
            self._account(node, info, idxs, reserve=True)
        return reply.reserved

    def _account(self, node: pb.NodeInfo, info: pb.PlacementGroupInfo, idxs: list[int], reserve: bool) -> None:
        """The head's view of a node after it reserved or returned bundles (its next heartbeat confirms)."""
        bundles = {i: dict(info.spec.bundles[i].resources) for i in idxs}
        base = placement.base_total(list(bundles.values()))
        added = placement.bundle_resources(bundles, info.spec.placement_group_id.hex())
        total, available = dict(node.total), dict(node.available)
        if reserve:
            subtract(available, base)
            release(total, added)
            release(available, added)
        else:
            release(available, base)
            subtract(total, added)
            subtract(available, added)
            for pool in (total, available):
                for name in [k for k, v in pool.items() if k in added and abs(v) < 1e-6]:
                    del pool[name]
        node.total.clear()
        node.total.update(total)
        node.available.clear()
        node.available.update(available)


def _reservation(info: pb.PlacementGroupInfo, idxs: list[int]) -> pb.BundleReservation:
    return pb.BundleReservation(placement_group_id=info.spec.placement_group_id, indexes=idxs,
                                bundles=[info.spec.bundles[i] for i in idxs])


def _allowed(info: pb.PlacementGroupInfo, indexes: list[int], nodes: list[pb.NodeInfo]) -> list[set[str] | None]:
    """Per bundle (of `indexes`), the nodes its bundle_label_selector matches (None: any node)."""
    selectors = info.spec.bundle_labels
    return [{n.node_id for n in nodes if node_labels.matches(n.labels, selectors[i].match)}
            if i < len(selectors) and selectors[i].match else None for i in indexes]


def _pending_reason(info: pb.PlacementGroupInfo, nodes: list[pb.NodeInfo]) -> str:
    bundles = [dict(b.resources) for b in info.spec.bundles]
    everything = list(range(len(bundles)))
    if not placement.plan(bundles, info.spec.strategy, [(n.node_id, n.total) for n in nodes]):
        return (f"no set of alive nodes can ever hold its bundles with strategy {info.spec.strategy} (it "
                f"stays pending until nodes that fit join)")
    if not all(any(fits(n.total, b) for n in nodes) for b in bundles):
        return "a bundle is larger than any alive node"
    if not placement.plan(bundles, info.spec.strategy, [(n.node_id, n.total) for n in nodes],
                          _allowed(info, everything, nodes)):
        return (f"no set of alive nodes that match its bundle_label_selector "
                f"{[dict(s.match) for s in info.spec.bundle_labels]} can hold its bundles with strategy "
                f"{info.spec.strategy} (it stays pending until nodes with matching labels join)")
    return "waiting for resources to free up"
