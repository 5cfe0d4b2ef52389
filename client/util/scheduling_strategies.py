"""Where work runs, as `ray.util.scheduling_strategies` says it: "DEFAULT", "SPREAD", or one node.

`scheduling_strategy="SPREAD"` places actors on the node running the fewest actors and
sends task leases to the nodes in turn. `NodeAffinitySchedulingStrategy(node_id, soft)` pins
work to one node (`kastor.get_runtime_context().get_node_id()`, or `NodeID` in
`kastor.nodes()`); with `soft=True` it may run elsewhere when that node is gone or cannot fit
it, and without, an actor pinned to a node that is not alive dies and a task fails.
`PlacementGroupSchedulingStrategy(pg, placement_group_bundle_index=-1,
placement_group_capture_child_tasks=False)` runs work in a placement group's bundle (see
kastor.util.placement_group).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kastor.runtime.protocol import kastor_pb2 as pb


@dataclass(frozen=True)
class NodeAffinitySchedulingStrategy:
    """Run on the node `node_id`; with `soft=True`, elsewhere when that node is gone or cannot fit the work."""

    node_id: str
    soft: bool
    _spill_on_unavailable: bool = False
    _fail_on_unavailable: bool = False


@dataclass(frozen=True)
class PlacementGroupSchedulingStrategy:
    """Accepted for compatibility and ignored, with a warning: Kastor has no placement groups."""

    placement_group: Any
    placement_group_bundle_index: int = -1
    placement_group_capture_child_tasks: bool | None = None


def placement(strategy: Any) -> pb.Placement | None:
    """The wire form of a `scheduling_strategy` option; None for the default placement."""
    if strategy in (None, "DEFAULT") or isinstance(strategy, PlacementGroupSchedulingStrategy):
        return None
    if strategy == "SPREAD":
        return pb.Placement(spread=True)
    if isinstance(strategy, NodeAffinitySchedulingStrategy):
        if not isinstance(strategy.node_id, str) or not strategy.node_id:
            raise TypeError(f"NodeAffinitySchedulingStrategy needs a node id string, got {strategy.node_id!r}.")
        return pb.Placement(node_id=strategy.node_id, soft=bool(strategy.soft))
    raise ValueError(f"Invalid scheduling_strategy {strategy!r}: use 'DEFAULT', 'SPREAD' or "
                     f"NodeAffinitySchedulingStrategy(node_id, soft) from kastor.util.scheduling_strategies.")
