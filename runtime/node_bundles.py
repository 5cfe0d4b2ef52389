"""A node agent's share of placement groups: reserving bundles for the head, and returning them.

Kept out of node_agent.py; `NodeAgent` mixes this in. A reservation moves the bundles' own
resources (CPU, GPU, ...) out of the node's free pool and adds the group's resources in their
place (see runtime/placement.py), so leases and actors placed into the group draw on the
bundle and nothing else can. Returning the bundles kills the workers that hold any of the
group's resources (Ray: removing a group kills its actors and tasks) and gives the bundles'
resources back to the pool.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from kastor.runtime import placement
from kastor.runtime.protocol import kastor_pb2 as pb
from kastor.runtime.resources import fits, release, subtract

log = logging.getLogger("kastor.node")


class BundleMixin:
    """ReserveBundles/ReturnBundles on a NodeAgent (which provides total, available, workers, _dispatch)."""

    total: dict[str, float]
    available: dict[str, float]
    workers: dict
    draining: bool  # it accepted a drain: it reserves nothing new
    _dispatch: Callable[[], None]

    def init_bundles(self) -> None:
        self.reserved_bundles: dict[bytes, dict[int, dict[str, float]]] = {}  # group -> index -> bundle

    def _bundles(self) -> dict[bytes, dict[int, dict[str, float]]]:
        return self.reserved_bundles

    async def ReserveBundles(self, request, context):
        """All the given bundles here, or none (the head then tries other nodes or waits)."""
        if self.draining:
            return pb.ReserveBundlesReply(reserved=False, message="this node is draining (being removed)")
        held = self._bundles().setdefault(request.placement_group_id, {})
        new = {i: dict(b.resources) for i, b in zip(request.indexes, request.bundles, strict=True) if i not in held}
        needed = placement.base_total(list(new.values()))
        if not fits(self.available, needed):
            if not held:
                self._bundles().pop(request.placement_group_id, None)
            have = ", ".join(f"{k}: {v:g}" for k, v in sorted(self.available.items()) if not placement.group_of(k))
            return pb.ReserveBundlesReply(reserved=False, message=f"this node has only {{{have}}} free")
        subtract(self.available, needed)
        added = placement.bundle_resources(new, request.placement_group_id.hex())
        release(self.total, added)
        release(self.available, added)
        held.update(new)
        log.info("reserved bundles %s of placement group %s", sorted(new), request.placement_group_id.hex()[:8])
        return pb.ReserveBundlesReply(reserved=True)

    async def ReturnBundles(self, request, context):
        """Gives back the group's bundles here (those in `indexes`, or all), ending the work in them."""
        held = self._bundles().get(request.placement_group_id, {})
        indexes = [i for i in (request.indexes or list(held)) if i in held]
        if not indexes:
            return pb.Empty()
        pg_hex = request.placement_group_id.hex()
        for w in list(self.workers.values()):
            if any(placement.group_of(name) == pg_hex for name in w.held):
                log.info("killing worker %s: its placement group was removed", w.worker_id.hex()[:8])
                try:
                    w.proc.kill()
                except ProcessLookupError:
                    pass
        returned = {i: held.pop(i) for i in indexes}
        if not held:
            self._bundles().pop(request.placement_group_id, None)
        for name, amount in placement.bundle_resources(returned, pg_hex).items():
            for pool in (self.total, self.available):
                pool[name] = pool.get(name, 0.0) - amount
                if not held or name not in self.total or abs(self.total[name]) < 1e-6:
                    pool.pop(name, None)  # that bundle (or the whole group) is gone here
        release(self.available, placement.base_total(list(returned.values())))
        log.info("returned bundles %s of placement group %s", sorted(indexes), pg_hex[:8])
        self._dispatch()
        return pb.Empty()

    async def group_not_reserved(self, required: dict[str, float]) -> pb.LeaseReply:
        """The answer to a lease for a placement group no node holds: wait (pending), or fail (removed)."""
        pg_id = next(bytes.fromhex(g) for g in map(placement.group_of, required) if g)
        reply = await self.head().GetPlacementGroup(pb.PlacementGroupRequest(placement_group_id=pg_id),
                                                    metadata=self.metadata, timeout=10)
        if not reply.found or reply.info.state == pb.PG_REMOVED:
            return pb.LeaseReply(infeasible=True, placement_group_removed=True,
                                 message=f"its placement group {pg_id.hex()} was removed")
        return pb.LeaseReply(infeasible=True, message=f"its placement group {pg_id.hex()} is not created yet")

    def release_held(self, amounts: dict[str, float]) -> None:
        """Returns what a worker held, except resources of a group whose bundles are gone meanwhile."""
        release(self.available, {k: v for k, v in amounts.items() if k in self.total})
