"""Placement groups' resource arithmetic, shared by the head, the node agents and the callers.

As in Ray, a reserved bundle turns into resources of its own on the node that holds it: a
bundle {"CPU": 2} at index 1 of group G takes 2 CPUs out of the node's free pool and adds
`CPU_group_1_G` (this bundle) and `CPU_group_G` (any bundle of G), 2 each, to the node's
total and free pool, plus 1000 units of `bundle_group_1_G` and `bundle_group_G`. Work placed
into the group asks for the group's resources instead of the node's (`group_demand`), so the
ordinary lease queue and actor placement enforce the bundle's limits: nothing else can take a
bundle's CPUs, and work in a bundle cannot take more than the bundle holds. Every piece of
work also takes 0.001 of the `bundle_group_*` units, so work asking for nothing (num_cpus=0)
still lands on the bundle's node.

`plan` chooses nodes for a group's bundles per strategy: all of them at once or none.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Mapping, Sequence

from kastor.runtime.resources import fits

STRATEGIES = ("PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD")
BUNDLE_UNITS = 1000.0  # `bundle_group_*` units one reserved bundle adds
BUNDLE_SHARE = 0.001   # what each task or actor in a bundle takes of them
_GROUP_NAME = re.compile(r"^(?P<name>.+)_group_(?:(?P<index>\d+)_)?(?P<pg>[0-9a-f]{36})$")


def group_demand(required: Mapping[str, float], pg_hex: str, index: int) -> dict[str, float]:
    """What work needs once placed into group `pg_hex` (bundle `index`, or any bundle when -1)."""
    out: dict[str, float] = {}
    for name, amount in {**required, "bundle": BUNDLE_SHARE}.items():
        if not amount:
            continue
        out[f"{name}_group_{pg_hex}"] = float(amount)
        if index >= 0:  # the wildcard too: work in bundle i and work in "any bundle" share one count
            out[f"{name}_group_{index}_{pg_hex}"] = float(amount)
    return out


def bundle_resources(bundles: Mapping[int, Mapping[str, float]], pg_hex: str) -> dict[str, float]:
    """The resources a node adds to its pool for the bundles of group `pg_hex` it holds."""
    out: dict[str, float] = {}
    for index, bundle in bundles.items():
        for name, amount in {**bundle, "bundle": BUNDLE_UNITS}.items():
            if not amount:
                continue
            out[f"{name}_group_{index}_{pg_hex}"] = float(amount)
            wildcard = f"{name}_group_{pg_hex}"
            out[wildcard] = out.get(wildcard, 0.0) + float(amount)
    return out


def base_total(bundles: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """What a set of bundles takes out of a node's own resources."""
    out: dict[str, float] = {}
    for bundle in bundles:
        for name, amount in bundle.items():
            out[name] = out.get(name, 0.0) + float(amount)
    return out


def group_of(resource: str) -> str:
    """The placement group (hex) a resource name belongs to; "" for a node's own resources."""
    m = _GROUP_NAME.match(resource)
    return m.group("pg") if m else ""


def bundle_index(resource: str) -> int | None:
    """The bundle a node's `bundle_group_<i>_<pg>` resource stands for (None for any other name)."""
    m = _GROUP_NAME.match(resource)
    return int(m.group("index")) if m and m.group("name") == "bundle" and m.group("index") is not None else None


def in_group(required: Mapping[str, float]) -> bool:
    return any(group_of(name) for name in required)


def gpu_count(required: Mapping[str, float]) -> int:
    """GPUs work holds: its own "GPU", or its group's (the wildcard name, present for any bundle)."""
    n = required.get("GPU", 0.0)
    for name, amount in required.items():
        m = _GROUP_NAME.match(name)
        if m and m.group("name") == "GPU" and m.group("index") is None:
            n += amount
    return int(n)


def cpus(held: Mapping[str, float]) -> dict[str, float]:
    """The CPUs among what work holds (its node's, or its group's): what it lends back while blocked."""
    out = {}
    for name, amount in held.items():
        m = _GROUP_NAME.match(name)
        if name == "CPU" or (m and m.group("name") == "CPU"):
            out[name] = amount
    return out


def own_cpus(held: Mapping[str, float]) -> float:
    """The CPUs work asked for (its OMP_NUM_THREADS), whether on the node or in a group's bundle."""
    group = [amount for name, amount in held.items()
             if (m := _GROUP_NAME.match(name)) and m.group("name") == "CPU" and m.group("index") is None]
    return held.get("CPU", 0.0) + sum(group)


def plan(bundles: Sequence[Mapping[str, float]], strategy: str,
         nodes: Sequence[tuple[str, Mapping[str, float]]],
         allowed: Sequence[Collection[str] | None] | None = None) -> list[str] | None:
    """A node id per bundle, or None when the strategy cannot place every bundle now.

    `nodes` are (node id, free resources), best first. PACK puts every bundle on one node if
    one fits them all and otherwise packs greedily; STRICT_PACK needs one node for all;
    SPREAD puts each bundle on the node with the fewest of the group's bundles so far;
    STRICT_SPREAD needs a distinct node per bundle. `allowed` (one per bundle, None: any)
    keeps a bundle to the nodes its bundle_label_selector matches.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown placement strategy {strategy!r}")
    free = {node_id: dict(avail) for node_id, avail in nodes}
    order = [node_id for node_id, _ in nodes]
    limits = list(allowed) if allowed is not None else [None] * len(bundles)

    def may(i: int, node_id: str) -> bool:
        return limits[i] is None or node_id in limits[i]  # type: ignore[operator]

    if strategy in ("PACK", "STRICT_PACK"):
        whole = base_total(bundles)
        for node_id in order:
            if fits(free[node_id], whole) and all(may(i, node_id) for i in range(len(bundles))):
                return [node_id] * len(bundles)
        if strategy == "STRICT_PACK":
            return None
    if strategy == "STRICT_SPREAD":
        return _distinct(list(bundles), order, free, [], may)
    chosen: list[str] = []
    for i, bundle in enumerate(bundles):
        fitting = [n for n in order if fits(free[n], bundle) and may(i, n)]
        if not fitting:
            return None
        if strategy == "PACK":
            used = [n for n in fitting if n in chosen]
            node_id = used[0] if used else fitting[0]
        else:  # SPREAD: the fewest of this group's bundles so far, then the given order
            node_id = min(fitting, key=lambda n: (chosen.count(n), order.index(n)))
        _take(free[node_id], bundle)
        chosen.append(node_id)
    return chosen


def _distinct(bundles: list[Mapping[str, float]], order: list[str], free: dict[str, dict[str, float]],
              chosen: list[str], may: Callable[[int, str], bool]) -> list[str] | None:
    """STRICT_SPREAD by backtracking (groups are small): each bundle on a node no other one uses."""
    if len(chosen) == len(bundles):
        return chosen
    bundle = bundles[len(chosen)]
    for node_id in order:
        if node_id not in chosen and fits(free[node_id], bundle) and may(len(chosen), node_id):
            found = _distinct(bundles, order, free, [*chosen, node_id], may)
            if found is not None:
                return found
    return None


def _take(free: dict[str, float], bundle: Mapping[str, float]) -> None:
    for name, amount in bundle.items():
        free[name] = free.get(name, 0.0) - float(amount)
