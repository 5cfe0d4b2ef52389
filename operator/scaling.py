"""The ActorCluster reconcile's autoscaling step: from the head's demand to each worker group's
desired replicas, drains of idle workers, and what status says about it.

`autoscaling.decide` makes the decision from plain values; this module turns what the
reconcile observed (pods, the head's ClusterDemand) into those values and the decision into
actions (DrainWorker), Events and status. Pure, like the plans that call it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kastor.operator.actions import DrainWorker, Event, Plan
from kastor.operator.autoscaling import Decision, Demand, GroupState, Labelled, NodeState, decide
from kastor.operator.pods import finished, ready, terminating
from kastor.operator.spec import ClusterSpec
from kastor.runtime import k8s_contract as contract
from kastor.runtime.protocol import kastor_pb2 as pb


@dataclass(frozen=True)
class HeadAccess:
    """How the DrainWorker actions reach the head (its address, token and CA)."""
    address: str
    token: str
    ca: str | None = None


def _expand(entries: Any) -> list[dict[str, float]]:
    """Each waiting shape as often as it waits; one that needs node labels as a `Labelled` shape."""
    return [Labelled(e.shape, [dict(s.match) for s in e.labels]) if e.labels else dict(e.shape)
            for e in entries for _ in range(max(e.count, 1))]


def demand_of(reply: pb.ClusterDemand) -> Demand:
    return Demand(pending=_expand(reply.pending),
                  gangs=[(g.strategy, [dict(b.resources) for b in g.bundles]) for g in reply.placement_groups],
                  requested=_expand(reply.requested))


def _group_of(pod: dict[str, Any]) -> str:
    return pod["metadata"].get("labels", {}).get(contract.LABEL_GROUP, "")


def _previous_desired(body: dict[str, Any]) -> dict[str, int]:
    return {g["name"]: int(g.get("desired", 0)) for g in (body.get("status") or {}).get("workerGroups") or []
            if isinstance(g, dict) and "name" in g}


def _nodes_with_pods(demand: pb.ClusterDemand, live: list[dict[str, Any]]) -> list[tuple[pb.NodeUsage, dict]]:
    """The head's nodes matched to worker pods by IP. A drained node lingers in the head until it is
    declared dead, and its deleted pod's IP may already belong to a new pod: of two nodes on one IP the
    draining one is left out, and an IP that still names two nodes is left out altogether."""
    by_ip = {p.get("status", {}).get("podIP"): p for p in live if p.get("status", {}).get("podIP")}
    on_ip: dict[str, list[pb.NodeUsage]] = {}
    for n in demand.nodes:
        on_ip.setdefault(n.ip, []).append(n)
    out = []
    for ip, nodes in on_ip.items():
        if ip not in by_ip:
            continue
        if len(nodes) > 1:
            nodes = [n for n in nodes if not n.draining]
        if len(nodes) == 1:
            out.append((nodes[0], by_ip[ip]))
    return out


def plan_scaling(body: dict[str, Any], spec: ClusterSpec, workers: list[dict[str, Any]],
                 demand: pb.ClusterDemand | None, access: HeadAccess | None, now: str,
                 out: Plan) -> tuple[dict[str, int], set[str]]:
    """Each group's desired replicas and the pods being drained away (DrainWorker actions in `out`).

    Without autoscaling, the spec's replicas (within min/max), a scale-down draining idle
    workers through the head (`drain_scale_down`). With it, the last decision (or the spec's
    replicas at first) until the head answers, then `decide`'s.
    """
    if not spec.autoscaling.enabled:
        desired = {g.name: g.desired for g in spec.worker_groups}
        if demand is None or access is None:
            return desired, set()
        return drain_scale_down(spec, workers, desired, demand, access, out)
    previous = _previous_desired(body)
    live = [p for p in workers if not terminating(p) and not finished(p)]
    current = {g.name: max(sum(1 for p in live if _group_of(p) == g.name), previous.get(g.name, g.desired))
               for g in spec.worker_groups}
    if demand is None or access is None:
        return {g.name: max(g.min_replicas, min(current[g.name], g.max_replicas)) for g in spec.worker_groups}, set()
    nodes = [NodeState(n.node_id, _group_of(pod), pod["metadata"]["name"], dict(n.total), dict(n.available),
                       n.idle_s, n.draining)
             for n, pod in _nodes_with_pods(demand, live)]
    groups = [GroupState(g.name, g.shape, g.min_replicas, g.max_replicas, current[g.name], g.node_labels)
              for g in spec.worker_groups]
    decision = decide(groups, nodes, demand_of(demand), spec.autoscaling.idle_timeout_s)
    for node in decision.remove:
        out.actions.append(DrainWorker(access.address, access.token, node.node_id, node.pod,
                                       f"idle for {node.idle_s:.0f}s (idleTimeoutSeconds "
                                       f"{spec.autoscaling.idle_timeout_s:g})", access.ca))
    _note_decision(body, decision, current, now, out)
    return decision.desired, {n.pod for n in decision.remove}


def has_excess(spec: ClusterSpec, workers: list[dict[str, Any]]) -> bool:
    """Whether a group runs more live pods than its spec wants (a scale-down to carry out)."""
    live = [p for p in workers if not terminating(p) and not finished(p)]
    return any(sum(1 for p in live if _group_of(p) == g.name) > g.desired for g in spec.worker_groups)


def drain_scale_down(spec: ClusterSpec, workers: list[dict[str, Any]], desired: dict[str, int],
                     demand: pb.ClusterDemand, access: HeadAccess, out: Plan) -> tuple[dict[str, int], set[str]]:
    """A scale-down (spec.replicas lowered) that kills nothing busy (issue 12 defect 11).

    Pods that are not ready go first, as before (nothing runs on them). Of the ready ones, only
    workers the head reports idle are removed, longest idle first, each drained through the head
    before its pod is deleted (DrainWorker: the head refuses a node that runs anything). A busy
    worker stays until a later reconcile finds it idle. Returns the replicas each group keeps
    for now (plan_workers then deletes the not-ready excess only) and the pods being drained."""
    live = [p for p in workers if not terminating(p) and not finished(p)]
    usage = {pod["metadata"]["name"]: node for node, pod in _nodes_with_pods(demand, live)}
    keep: dict[str, int] = {}
    drained: set[str] = set()
    for g in spec.worker_groups:
        mine = [p for p in live if _group_of(p) == g.name]
        excess = len(mine) - desired[g.name]
        if excess <= 0:
            keep[g.name] = desired[g.name]
            continue
        not_ready = min(excess, sum(1 for p in mine if not ready(p)))
        idle = sorted((p for p in mine if ready(p) and p["metadata"]["name"] in usage
                       and usage[p["metadata"]["name"]].idle_s > 0 and not usage[p["metadata"]["name"]].draining),
                      key=lambda p: -usage[p["metadata"]["name"]].idle_s)
        for pod in idle[:excess - not_ready]:
            node = usage[pod["metadata"]["name"]]
            out.actions.append(DrainWorker(access.address, access.token, node.node_id, pod["metadata"]["name"],
                                           f"scale-down of group {g.name} to {desired[g.name]} (idle for "
                                           f"{node.idle_s:.0f}s)", access.ca))
            drained.add(pod["metadata"]["name"])
        keep[g.name] = len(mine) - not_ready - len(drained & {p["metadata"]["name"] for p in mine})
    return keep, drained


def _note_decision(body: dict[str, Any], decision: Decision, current: dict[str, int], now: str, out: Plan) -> None:
    """A decision that changes a group's size or names a problem goes to status.lastScaling and an Event."""
    changed = any(decision.desired[g] != n for g, n in current.items()) or decision.remove
    old = (body.get("status") or {}).get("lastScaling") or {}
    if not changed and not decision.infeasible:
        return
    if old.get("reason") == decision.summary and old.get("desired") == decision.desired:
        return  # the same decision as last time (say, a drain refused): no new Event
    out.status["lastScaling"] = {"time": now, "desired": dict(decision.desired), "reason": decision.summary}
    if any(decision.desired[g] > n for g, n in current.items()):
        out.events.append(Event("Normal", "ScaledUp", decision.summary))
    if decision.remove or any(decision.desired[g] < n for g, n in current.items()):
        out.events.append(Event("Normal", "ScaledDown", decision.summary))
    if not changed:
        out.events.append(Event("Warning", "UnschedulableDemand", decision.summary))


def group_status(spec: ClusterSpec, desired: dict[str, int], workers: list[dict[str, Any]],
                 registered: set[str] | None) -> list[dict[str, Any]]:
    """status.workerGroups: desired vs ready per group (ready: Ready and joined, when the head is known)."""
    rows = []
    for g in spec.worker_groups:
        mine = [p for p in workers if _group_of(p) == g.name and not terminating(p)]
        ready_n = sum(1 for p in mine if ready(p) and (registered is None
                                                       or p.get("status", {}).get("podIP") in registered))
        rows.append({"name": g.name, "desired": desired.get(g.name, 0), "ready": ready_n,
                     "minReplicas": g.min_replicas, "maxReplicas": g.max_replicas})
    return rows


# Past the idle timeout by this much when the reconcile asks again: the head's idle_s has crossed it.
IDLE_MARGIN_S = 1.0


def next_idle_deadline(spec: ClusterSpec, demand: pb.ClusterDemand | None) -> float | None:
    """Seconds until an idle node reaches idleTimeoutSeconds (autoscaling only; None: no node is
    on its way). No event says so (the node stays idle), so the operator reconciles then."""
    if not spec.autoscaling.enabled or demand is None:
        return None
    timeout = spec.autoscaling.idle_timeout_s
    waits = [timeout - n.idle_s for n in demand.nodes if 0 < n.idle_s < timeout and not n.draining]
    return min(waits) + IDLE_MARGIN_S if waits else None
