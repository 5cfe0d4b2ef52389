"""The autoscaler's decision, as a pure function: how many workers each group needs, and which
idle ones to remove.

It follows Ray's autoscaler v2 (ResourceDemandScheduler) in a small form:

1. The pending work (actors, tasks, placement-group bundles) is first fitted onto the free
   resources of the nodes that exist or are starting (worker pods not joined yet count as
   empty nodes of their group, so a scale-up is not repeated while its pods start).
2. What does not fit adds nodes: for each shape, the group whose worker fits it with the least
   left over, below its maxReplicas. A shape no group can hold is reported, not scaled for.
   Work with a label_selector (a `Labelled` shape) goes only on nodes of the groups whose
   labels match the first of its selectors that any group able to hold it matches, as the
   head places it (runtime/node_labels.py); none matching is reported like a shape no group holds.
3. `request_resources()` bundles are fitted onto the nodes' *total* resources (they are a floor
   for the cluster's size, whatever runs), adding nodes the same way.
4. Every group gets at least minReplicas.
5. A node that has run nothing for idleTimeoutSeconds, that steps 1-3 did not use, in a group
   above its minReplicas, is removed (the operator drains it through the head first, so a node
   that got work meanwhile stays). A node drained already is removed too.

Nothing here talks to the API server or the head: tests call `decide` with plain values.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from kastor.runtime import node_labels
from kastor.runtime.resources import fits

Shape = Mapping[str, float]


class Labelled(dict):
    """A pending shape that needs nodes whose labels match `selectors` (its label_selector, then
    its fallback_strategy's), tried in order."""

    def __init__(self, shape: Shape, selectors: Sequence[Mapping[str, str]]):
        super().__init__(shape)
        self.selectors = tuple(dict(s) for s in selectors)


@dataclass(frozen=True)
class GroupState:
    """A worker group as the autoscaler sees it: the resources each worker advertises, its bounds,
    and how many worker pods it has now (joined or still starting)."""
    name: str
    shape: Shape
    min_replicas: int
    max_replicas: int
    current: int
    labels: Mapping[str, str] = field(default_factory=dict)  # each worker's node labels


@dataclass(frozen=True)
class NodeState:
    """A worker node that joined the head: its group, resources and how long it has been idle."""
    node_id: str
    group: str
    pod: str
    total: Shape
    available: Shape
    idle_s: float = 0.0
    draining: bool = False


@dataclass(frozen=True)
class Demand:
    """What waits (`pending` shapes, `gangs` of placement-group bundles with their strategy) and the
    standing request_resources() bundles (`requested`)."""
    pending: Sequence[Shape] = ()
    gangs: Sequence[tuple[str, Sequence[Shape]]] = ()
    requested: Sequence[Shape] = ()


@dataclass(frozen=True)
class Decision:
    desired: dict[str, int]
    remove: tuple[NodeState, ...] = ()
    infeasible: tuple[dict[str, float], ...] = ()
    reasons: tuple[str, ...] = field(default=())

    @property
    def summary(self) -> str:
        return "; ".join(self.reasons) if self.reasons else "no change"


@dataclass
class _Slot:
    group: str
    free: dict[str, float]
    total: dict[str, float]
    node: NodeState | None = None  # None: a starting pod or a node this decision adds
    used: bool = False


def _describe(shape: Shape) -> str:
    return "{" + ", ".join(f"{k}: {v:g}" for k, v in sorted(shape.items()) if v) + "}"


def _take(slot: _Slot, shape: Shape, pool: str) -> None:
    for name, amount in shape.items():
        getattr(slot, pool)[name] = getattr(slot, pool).get(name, 0.0) - float(amount)
    slot.used = True


def decide(groups: Sequence[GroupState], nodes: Sequence[NodeState], demand: Demand,
           idle_timeout_s: float) -> Decision:
    """Each group's desired replicas and the idle nodes to remove (see the module docstring)."""
    by_name = {g.name: g for g in groups}
    count = {g.name: g.current for g in groups}
    added = dict.fromkeys(by_name, 0)
    slots: list[_Slot] = []
    joined: dict[str, int] = dict.fromkeys(by_name, 0)
    drained: list[NodeState] = []  # drained already (say, by an operator that stopped before deleting it)
    for n in nodes:
        if n.group not in by_name:
            continue
        joined[n.group] += 1
        if n.draining:
            drained.append(n)
            count[n.group] -= 1
        else:
            slots.append(_Slot(n.group, dict(n.available), dict(n.total), n))
    for g in groups:  # pods that have not joined yet: empty nodes of their group, soon
        slots += [_Slot(g.name, dict(g.shape), dict(g.shape)) for _ in range(max(0, g.current - joined[g.name]))]
    infeasible: list[dict[str, float]] = []
    unmet: dict[str, int] = {}
    unlabelled: dict[str, dict[str, float]] = {}  # work whose selectors no group's labels match

    def eligible(shape: Shape) -> set[str] | None:
        """The groups whose nodes labelled work may use (None: any)."""
        selectors = getattr(shape, "selectors", ())
        if not selectors:
            return None
        holding = [g for g in groups if fits(g.shape, shape)]
        return {g.name for g in node_labels.choose(selectors, holding, lambda g: g.labels)[1]}

    def add_node(shape: Shape, allowed: set[str] | None) -> _Slot | None:
        fitting = [g for g in groups if fits(g.shape, shape) and count[g.name] < g.max_replicas
                   and (allowed is None or g.name in allowed)]
        if not fitting:
            return None
        best = min(fitting, key=lambda g: (sum(g.shape.values()) - sum(shape.values()), g.name))
        slot = _Slot(best.name, dict(best.shape), dict(best.shape))
        slots.append(slot)
        count[best.name] += 1
        added[best.name] += 1
        return slot

    def place(shape: Shape, pool: str, exclude: set[int] | None = None) -> int | None:
        exclude = exclude if exclude is not None else set()
        allowed = eligible(shape)
        for i, slot in enumerate(slots):
            if i not in exclude and (allowed is None or slot.group in allowed) and fits(getattr(slot, pool), shape):
                _take(slot, shape, pool)
                return i
        slot = add_node(shape, allowed)
        if slot is None:
            if allowed is not None and not allowed and any(fits(g.shape, shape) for g in groups):
                selectors = node_labels.describe(getattr(shape, "selectors", ()))
                unlabelled.setdefault(f"{_describe(shape)} with label_selector {selectors}", dict(shape))
            elif not any(fits(g.shape, shape) for g in groups):
                if dict(shape) not in infeasible:
                    infeasible.append(dict(shape))
            else:
                key = _describe(shape)
                unmet[key] = unmet.get(key, 0) + 1
            return None
        _take(slot, shape, pool)
        return len(slots) - 1

    work = sorted(demand.pending, key=lambda s: -sum(s.values()))
    for shape in work:
        place(shape, "free")
    for strategy, bundles in demand.gangs:
        if strategy == "STRICT_PACK":
            merged: dict[str, float] = {}
            for b in bundles:
                for k, v in b.items():
                    merged[k] = merged.get(k, 0.0) + float(v)
            place(merged, "free")
        else:
            used: set[int] = set()
            for b in bundles:
                i = place(b, "free", used if strategy == "STRICT_SPREAD" else None)
                if i is not None and strategy == "STRICT_SPREAD":
                    used.add(i)
    for shape in sorted(demand.requested, key=lambda s: -sum(s.values())):
        place(shape, "total")

    reasons = [f"{g}: +{n} worker(s) for pending work or requested resources" for g, n in added.items() if n]
    for g in groups:
        if count[g.name] < g.min_replicas:
            reasons.append(f"{g.name}: up to minReplicas {g.min_replicas}")
            count[g.name] = g.min_replicas
    remove: list[NodeState] = list(drained)
    idle = sorted((s for s in slots if s.node is not None and not s.used and s.node.idle_s >= idle_timeout_s),
                  key=lambda s: -s.node.idle_s)
    for slot in idle:
        g = by_name[slot.group]
        if count[g.name] > g.min_replicas and not added[g.name]:
            count[g.name] -= 1
            remove.append(slot.node)
    for g in groups:
        gone = [n.pod for n in remove if n.group == g.name]
        if gone:
            reasons.append(f"{g.name}: -{len(gone)} worker(s) idle for {idle_timeout_s:g}s or more "
                           f"({', '.join(gone)})")
        if count[g.name] > g.max_replicas:
            reasons.append(f"{g.name}: down to maxReplicas {g.max_replicas}")
            count[g.name] = g.max_replicas
    for key, n in unmet.items():
        reasons.append(f"{n} x {key} waits: every group that fits is at maxReplicas")
    for shape in infeasible:
        reasons.append(f"{_describe(shape)} fits no worker group: change a group's resources to run it")
    for what in unlabelled:
        reasons.append(f"{what} matches no worker group's labels: add matching `labels` to a group to run it")
    return Decision(desired=count, remove=tuple(remove), infeasible=(*infeasible, *unlabelled.values()),
                    reasons=tuple(reasons))
