"""Placement groups, as `ray.util.placement_group` has them.

A placement group reserves bundles of resources (`[{"CPU": 2}, {"GPU": 1}]`) across the
cluster's nodes, all at once or not at all, per a strategy:

- ``PACK``: as few nodes as possible (one if it fits), best effort;
- ``SPREAD``: as many distinct nodes as possible, best effort;
- ``STRICT_PACK``: all bundles on one node, or the group stays pending;
- ``STRICT_SPREAD``: each bundle on its own node, or the group stays pending.

The head places it (runtime/placement_groups.py); until every bundle fits it stays PENDING and
is placed as soon as resources free up or nodes join. Work is scheduled into a group with
``scheduling_strategy=PlacementGroupSchedulingStrategy(pg, placement_group_bundle_index=i)``
(or the older ``.options(placement_group=pg, placement_group_bundle_index=i)``); it then uses
the bundle's reserved resources, never the node's free pool, so its ``num_cpus`` etc. must fit
in the bundle. ``remove_placement_group(pg)`` kills the group's actors and tasks and frees its
resources. A group not created with ``lifetime="detached"`` is removed when its creator ends: the job, or
the actor that created it once that actor is dead for good (as in Ray).
Everything here works through the client port (``kastor://``) as well.
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Mapping
from typing import Any

import grpc
from kastor import labels
from kastor.runtime import placement
from kastor.runtime.protocol import kastor_pb2 as pb
from kastor.runtime.resources import fits
from kastor.runtime.state_rows import group_row

__all__ = ["PlacementGroup", "PlacementGroupID", "get_current_placement_group", "get_placement_group",
           "placement_group", "placement_group_table", "remove_placement_group"]

_POLL_S = 30.0  # one long poll of the head while waiting for a group


class PlacementGroupID:
    """A placement group's id (18 bytes, as Ray's): `.hex()`, `.binary()`."""

    def __init__(self, binary: bytes):
        self._binary = bytes(binary)

    def binary(self) -> bytes:
        return self._binary

    def hex(self) -> str:
        return self._binary.hex()

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PlacementGroupID) and other._binary == self._binary

    def __hash__(self) -> int:
        return hash(self._binary)

    def __repr__(self) -> str:
        return f"PlacementGroupID({self.hex()})"


class PlacementGroup:
    """A handle on a placement group; it pickles, so tasks and actors can be given one."""

    def __init__(self, id: PlacementGroupID, bundle_cache: list[dict[str, float]] | None = None):
        self.id = id
        self._bundles = bundle_cache

    @staticmethod
    def empty() -> PlacementGroup:
        return PlacementGroup(PlacementGroupID(b"\0" * 18), [])

    @property
    def is_empty(self) -> bool:
        return self.id.binary() == b"\0" * 18

    @property
    def bundle_specs(self) -> list[dict[str, float]]:
        """The bundles as given to placement_group(), in order."""
        if self._bundles is None:
            info = _get(self.id.binary())
            self._bundles = [] if info is None else [dict(b.resources) for b in info.spec.bundles]
        return [dict(b) for b in self._bundles]

    @property
    def bundle_count(self) -> int:
        return len(self.bundle_specs)

    def ready(self) -> Any:
        """An ObjectRef that resolves (to this group) once every bundle is reserved, for get()/wait().

        As in Ray it is a tiny task scheduled into bundle 0, so it runs exactly when the group exists.
        """
        from kastor.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        strategy = PlacementGroupSchedulingStrategy(self, placement_group_bundle_index=0)
        return _bundle_reservation_check().options(scheduling_strategy=strategy).remote(self)

    def wait(self, timeout_seconds: float | int = 30) -> bool:
        """True once every bundle is reserved; False if that did not happen within `timeout_seconds`."""
        deadline = time.monotonic() + timeout_seconds
        info = _get(self.id.binary())
        while info is not None and info.state != pb.PG_CREATED:
            left = deadline - time.monotonic()
            if left <= 0 or info.state == pb.PG_REMOVED:
                return False
            info = _get(self.id.binary(), after_version=info.version, timeout_s=min(left, _POLL_S))
        return info is not None

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PlacementGroup) and other.id == self.id

    def __hash__(self) -> int:
        return hash(self.id)

    def __repr__(self) -> str:
        return f"PlacementGroup(id={self.id.hex()})"

    def __reduce__(self):
        return PlacementGroup, (self.id, self._bundles)


_check_fn = None


def _bundle_reservation_check():
    """The remote function ready() runs (made on first use: kastor.remote needs no cluster, only an import)."""
    global _check_fn
    if _check_fn is None:
        from kastor import remote

        def bundle_reservation_check(pg: PlacementGroup) -> PlacementGroup:
            return pg

        _check_fn = remote(num_cpus=0, max_retries=0)(bundle_reservation_check)
    return _check_fn


def _check_bundle_selectors(selectors: Any, count: int) -> list[dict[str, str]]:
    """bundle_label_selector as Ray checks it: a list of label selectors, one per bundle ([]: none)."""
    if selectors is None:
        return []
    if not isinstance(selectors, list):
        raise ValueError(f"Placement group bundle_label_selector must be a list, got {type(selectors).__name__}.")
    if selectors and len(selectors) != count:
        raise ValueError(f"Placement group bundle_label_selector has {len(selectors)} selector(s) for {count} "
                         f"bundle(s): give one per bundle ({{}} for a bundle that may go on any node).")
    for selector in selectors:
        labels.check_selector(selector, "bundle_label_selector")
    return list(selectors)


def placement_group(bundles: list[dict[str, float]], strategy: str = "PACK", name: str = "",
                    lifetime: str | None = None, _max_cpu_fraction_per_node: float = 1.0,
                    _soft_target_node_id: str | None = None,
                    bundle_label_selector: list[dict[str, str]] | None = None) -> PlacementGroup:
    """Asks the head to reserve `bundles` per `strategy`; returns at once (use .ready() or .wait()).

    `bundle_label_selector` (one label selector per bundle, as Ray's) keeps each bundle to the
    nodes whose labels match it (see kastor.runtime.node_labels)."""
    checked = _check_bundles(bundles)
    selectors = _check_bundle_selectors(bundle_label_selector, len(checked))
    if strategy not in placement.STRATEGIES:
        raise ValueError(f"Invalid placement group strategy {strategy!r}: use one of "
                         f"{', '.join(placement.STRATEGIES)}.")
    if lifetime not in (None, "detached"):
        raise ValueError(f"Placement group `lifetime` must be None or 'detached', got {lifetime!r}.")
    if not isinstance(name, str):
        raise TypeError(f"Placement group `name` must be a string, got {type(name).__name__}.")
    for option, value, default in (("_max_cpu_fraction_per_node", _max_cpu_fraction_per_node, 1.0),
                                   ("_soft_target_node_id", _soft_target_node_id, None)):
        if value != default:
            warnings.warn(f"Kastor accepts placement_group()'s {option} for Ray compatibility but ignores it: nodes "
                          f"are chosen by resources, labels and the strategy only.", stacklevel=2)
    from kastor.runtime import context
    from kastor.session import current_core as _core

    core = _core(auto_init=True)
    job_id = core.current_job_id()
    task = context.current_task.get()
    pg_id = os.urandom(14) + job_id  # as Ray's: unique bytes, then the job's id
    spec = pb.PlacementGroupSpec(placement_group_id=pg_id, name=name, namespace=core.current_namespace(),
                                 bundles=[pb.Bundle(resources=b) for b in checked], strategy=strategy,
                                 detached=lifetime == "detached", job_id=job_id,
                                 creator_actor_id=task.actor_id if task else b"",
                                 bundle_labels=[pb.LabelSelector(match=s) for s in selectors])
    try:
        core.head_call("CreatePlacementGroup", spec)
    except grpc.RpcError as e:
        if e.code() == grpc.StatusCode.ALREADY_EXISTS:
            raise ValueError(e.details()) from None
        raise
    return PlacementGroup(PlacementGroupID(pg_id), checked)


def _check_bundles(bundles: Any) -> list[dict[str, float]]:
    if not isinstance(bundles, (list, tuple)) or not bundles:
        raise ValueError("The placement group `bundles` argument must be a non-empty list of dicts, e.g. "
                         "[{'CPU': 1}, {'CPU': 1}].")
    checked = []
    for i, bundle in enumerate(bundles):
        if not isinstance(bundle, Mapping) or not bundle:
            raise ValueError(f"Bundle {i} must be a non-empty dict of resource name -> amount, got {bundle!r}.")
        for key, amount in bundle.items():
            if not isinstance(key, str) or isinstance(amount, bool) or not isinstance(amount, (int, float)) \
                    or amount < 0:
                raise ValueError(f"Bundle {i} has an invalid resource {key!r}: {amount!r} (amounts are numbers >= 0).")
        if all(amount == 0 for amount in bundle.values()):
            raise ValueError(f"Bundle {i} requests no resources ({dict(bundle)}): every bundle needs at least one "
                             f"resource with an amount > 0.")
        checked.append({k: float(v) for k, v in bundle.items() if v})
    return checked


def remove_placement_group(placement_group: PlacementGroup) -> None:
    """Removes the group: its actors and tasks are killed and its resources freed."""
    from kastor.session import current_core as _core

    _check_group(placement_group)
    _core(auto_init=True).head_call("RemovePlacementGroup",
                                    pb.PlacementGroupRequest(placement_group_id=placement_group.id.binary()))


def get_placement_group(placement_group_name: str) -> PlacementGroup:
    """The group of that name in this namespace; ValueError if there is none (or it was removed)."""
    from kastor.session import current_core as _core

    core = _core(auto_init=True)
    reply = core.head_call("GetPlacementGroup", pb.PlacementGroupRequest(
        name=placement_group_name, namespace=core.current_namespace()))
    if not reply.found or reply.info.state == pb.PG_REMOVED:
        raise ValueError(f"Failed to look up placement group with name: {placement_group_name} (namespace "
                         f"{core.current_namespace()!r}): no live placement group has that name.")
    return PlacementGroup(PlacementGroupID(reply.info.spec.placement_group_id),
                          [dict(b.resources) for b in reply.info.spec.bundles])


def placement_group_table(placement_group: PlacementGroup | None = None) -> dict[str, Any]:
    """Ray's table: {id hex: row} for every group, or one group's row when one is given."""
    from kastor.session import current_core as _core

    if placement_group is not None:
        info = _get(placement_group.id.binary())
        return group_row(info) if info is not None else {}
    reply = _core(auto_init=True).head_call("ListPlacementGroups", pb.ListRequest())
    return {g.spec.placement_group_id.hex(): group_row(g) for g in reply.groups}


def get_current_placement_group() -> PlacementGroup | None:
    """The group the calling task or actor runs in, or None (always None in a driver)."""
    from kastor.runtime import placement_context

    ref = placement_context.current()
    if ref is None or not ref.placement_group_id:
        return None
    return PlacementGroup(PlacementGroupID(ref.placement_group_id))


def _get(pg_id: bytes, after_version: int = 0, timeout_s: float = 0.0) -> pb.PlacementGroupInfo | None:
    from kastor.session import current_core as _core

    reply = _core(auto_init=True).head_call(
        "GetPlacementGroup", pb.PlacementGroupRequest(placement_group_id=pg_id, after_version=after_version,
                                                      timeout_s=timeout_s), timeout=timeout_s + 60)
    return reply.info if reply.found else None


def _check_group(pg: Any) -> None:
    if not isinstance(pg, PlacementGroup):
        raise TypeError(f"Expected a PlacementGroup (from kastor.util.placement_group()), got {type(pg).__name__}.")


def resolve(options: Mapping[str, Any], inherited: pb.PlacementGroupRef | None) -> pb.PlacementGroupRef | None:
    """The group new work goes into, from its options (scheduling_strategy, or the legacy
    placement_group/placement_group_bundle_index keywords) or, as in Ray, the caller's group
    when that captures child tasks and the work names no strategy of its own."""
    from kastor.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    strategy = options.get("scheduling_strategy")
    if isinstance(strategy, PlacementGroupSchedulingStrategy):
        pg, index, capture = (strategy.placement_group, strategy.placement_group_bundle_index,
                              bool(strategy.placement_group_capture_child_tasks))
    elif options.get("placement_group") not in (None, "default"):
        pg, index, capture = (options["placement_group"], options.get("placement_group_bundle_index", -1),
                              bool(options.get("placement_group_capture_child_tasks")))
    elif strategy is None and options.get("placement_group", "default") == "default" and inherited is not None \
            and inherited.capture_child_tasks:
        return inherited
    else:
        return None
    if pg is None:
        return None
    _check_group(pg)
    if pg.is_empty:
        return None
    count = len(pg._bundles) if pg._bundles is not None else None
    if not isinstance(index, int) or isinstance(index, bool) or index < -1 or (count is not None and index >= count):
        raise ValueError(f"placement_group_bundle_index must be -1 (any bundle) or an index in [0, "
                         f"{'bundle_count' if count is None else count}), got {index!r}.")
    return pb.PlacementGroupRef(placement_group_id=pg.id.binary(), bundle_index=index, capture_child_tasks=capture)


def demand(resources: Mapping[str, float], ref: pb.PlacementGroupRef | None, what: str = "",
           bundles: list[dict[str, float]] | None = None) -> dict[str, float]:
    """`resources` as work in the group needs them (see runtime/placement.py), or unchanged.

    With the group's `bundles` known, work that no bundle (or not its bundle) can hold is refused
    at once, as Ray does, rather than left waiting for ever."""
    if ref is None:
        return dict(resources)
    if bundles:
        fitting = bundles if ref.bundle_index < 0 else [bundles[ref.bundle_index]]
        if not any(fits(b, resources) for b in fitting):
            where = "any of its bundles" if ref.bundle_index < 0 else f"bundle {ref.bundle_index}"
            raise ValueError(f"Cannot schedule {what or 'this work'} with the placement group because the resource "
                             f"request {dict(resources)} cannot fit into {where} of the placement group: "
                             f"{bundles}. Ask for less, or create the group with larger bundles.")
    return placement.group_demand(resources, ref.placement_group_id.hex(), ref.bundle_index)


def bundles_of(options: Mapping[str, Any]) -> list[dict[str, float]] | None:
    """The bundles of the group the options name, when the handle knows them (no call to the head)."""
    from kastor.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    strategy = options.get("scheduling_strategy")
    pg = strategy.placement_group if isinstance(strategy, PlacementGroupSchedulingStrategy) else \
        options.get("placement_group")
    return pg._bundles if isinstance(pg, PlacementGroup) else None
