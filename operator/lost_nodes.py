"""Pods on lost nodes: when the operator stops waiting for them (pure functions).

A node that stops reporting goes NotReady (or Unknown), but its pods stay phase Running
in the API, often still Ready=True (the node lifecycle controller marks them NotReady when
it is the one that moves the node off Ready, or when a pod is updated later, not when the
kubelet reported NotReady first), and nothing deletes them until taint-based eviction (after a 300 s toleration by
default); even then they stay Terminating for ever, since no kubelet is left to finish
them. Counting such a pod as one of a group's replicas leaves the cluster short (or
headless) indefinitely.

The policy, as a ReplicaSet under the node lifecycle controller and KubeRay behave, with
a shorter, configurable wait (`KASTOR_OPERATOR_LOST_NODE_GRACE_S`, chart value
`lostNodeGraceSeconds`):

- a pod whose node has been NotReady/Unknown for longer than the grace is *lost*, unless
  it is *vouched for*: Ready and seen working by Kastor itself (a worker's or the head's
  node alive in the head, an actor ALIVE in the GCS), since a pod's Ready in the API goes
  stale with its node. A lost pod is deleted gracefully (so a kubelet that comes back
  after a partition stops it) and, being Terminating, no longer counts, so a replacement
  (pods have generated names) is created in the same reconcile;
- a pod is force-deleted (gracePeriodSeconds=0) only when nothing can still run it: its
  Node object is gone, or it is Terminating past its grace period on a node NotReady for
  longer than the grace. A NotReady node may only be partitioned, with the pod still
  running, so a pod is never force-deleted merely for being on a NotReady node.

Only the nodes of pods not vouched for (or Terminating) are read, so a healthy cluster
costs no Node reads. The grace counts from the node's Ready condition's
lastTransitionTime, as taint-based eviction counts from the taint: for a node that just
stops reporting, that is when the node lifecycle controller marks it Unknown,
node-monitor-grace-period (40-50 s) after its last report; a node that reported NotReady
and then went silent restarts the count at Unknown. Times are compared with the
operator's clock against the API server's timestamps: a skew between the two shifts the
wait by that much.
"""

from __future__ import annotations

import datetime
import logging
from dataclasses import dataclass
from typing import Any

from kastor.operator.actions import DeletePod, Event, Plan
from kastor.operator.kube import Kube
from kastor.operator.pod_events import role_of
from kastor.operator.pods import ready, terminating

log = logging.getLogger("kastor.operator.lost_nodes")

# The verdicts of `verdict`.
KEEP, LOST, FORCE = "keep", "lost", "force"


@dataclass(frozen=True)
class NodeHealth:
    """What a pod's fate needs to know of its node."""
    exists: bool
    ready: bool = True
    # When the node's Ready condition left True (epoch seconds); None if it is Ready or unknown.
    not_ready_since: float | None = None


def timestamp(text: str | None) -> float | None:
    """An API server timestamp (RFC 3339, as in metadata and conditions) in epoch seconds."""
    if not text:
        return None
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def node_health(node: dict[str, Any] | None) -> NodeHealth:
    """A Node object (None: it does not exist) as the lost-node policy sees it.

    Ready is the node's Ready condition; a node without one (just registered) counts as Ready,
    so that nothing is replaced on a guess."""
    if node is None:
        return NodeHealth(exists=False, ready=False)
    for condition in (node.get("status") or {}).get("conditions") or []:
        if condition.get("type") == "Ready":
            if condition.get("status") == "True":
                return NodeHealth(exists=True)
            return NodeHealth(exists=True, ready=False,
                              not_ready_since=timestamp(condition.get("lastTransitionTime")))
    return NodeHealth(exists=True)


def nodes_to_check(pods: list[dict[str, Any]], vouched: set[str]) -> set[str]:
    """The nodes whose health matters: those of pods that are Terminating or not vouched for
    (`vouched`: the names of pods Kastor itself sees working; see the module's docstring)."""
    return {p["spec"]["nodeName"] for p in pods
            if (p.get("spec") or {}).get("nodeName") and (terminating(p) or p["metadata"]["name"] not in vouched)}


def observe(kube: Kube, pods: list[dict[str, Any]], vouched: set[str]) -> dict[str, NodeHealth]:
    """Reads the nodes `nodes_to_check` names (the one impure function here). Without the right
    to read Nodes, it says so in the log and returns nothing: lost nodes then go unnoticed, as
    before, rather than failing every reconcile."""
    health: dict[str, NodeHealth] = {}
    for name in sorted(nodes_to_check(pods, vouched)):
        try:
            health[name] = node_health(kube.read_node(name))
        except PermissionError as e:
            log.warning("%s", e)
            return {}
    return health


def verdict(pod: dict[str, Any], nodes: dict[str, NodeHealth], now: float, grace_s: float,
            vouched: bool = False) -> str:
    """KEEP the pod, LOST (delete it gracefully and replace it) or FORCE (delete it with
    gracePeriodSeconds=0: nothing can still be running it). See the module's docstring."""
    node_name = (pod.get("spec") or {}).get("nodeName")
    health = nodes.get(node_name) if node_name else None
    if health is None or health.ready:
        return KEEP
    if not health.exists:
        return FORCE
    since = health.not_ready_since
    if since is None or now - since < grace_s:
        return KEEP
    if terminating(pod):
        deadline = timestamp(pod["metadata"].get("deletionTimestamp"))  # the delete's time + its grace period
        return FORCE if deadline is not None and now >= deadline else KEEP
    return KEEP if vouched and ready(pod) else LOST


def settle(pods: list[dict[str, Any]], nodes: dict[str, NodeHealth], now: float, grace_s: float,
           out: Plan, vouched: set[str]) -> list[dict[str, Any]]:
    """Pure: adds to `out` what `verdict` decides for each pod; returns the pods the rest of a
    plan must see.

    A LOST pod is deleted gracefully and returned as Terminating (deletionTimestamp: now), so
    the caller's plan replaces it in this same reconcile; a FORCE pod is force-deleted and left
    out. Each decision is a Warning Event, posted once: the next reconcile sees the pod
    Terminating (not LOST again), or gone."""
    kept: list[dict[str, Any]] = []
    deleting = datetime.datetime.fromtimestamp(now, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    for pod in pods:
        fate = verdict(pod, nodes, now, grace_s, pod["metadata"]["name"] in vouched)
        name, node = pod["metadata"]["name"], (pod.get("spec") or {}).get("nodeName")
        if fate == FORCE:
            why = "is gone" if not nodes[node].exists else \
                "is NotReady and the pod is Terminating past its grace period"
            out.actions.append(DeletePod(name, force=True, reason="NodeGone" if not nodes[node].exists else "NodeLost",
                                         why=f"its node {node} {why}", role=role_of(pod)))
            out.events.append(Event("Warning", "PodForceDeleted", f"pod {name}: its node {node} {why}; "
                                                                  f"force-deleted (gracePeriodSeconds=0)"))
            continue
        if fate == LOST:
            since = nodes[node].not_ready_since or now
            out.actions.append(DeletePod(name, reason="NodeLost", role=role_of(pod),
                                         why=f"its node {node} has been NotReady for {now - since:.0f} s"))
            out.events.append(Event("Warning", "NodeLost", f"pod {name}: its node {node} has been NotReady for "
                                                           f"{now - since:.0f} s (grace {grace_s:g} s); "
                                                           f"deleting and replacing it"))
            pod = {**pod, "metadata": {**pod["metadata"], "deletionTimestamp": deleting}}
        kept.append(pod)
    return kept


def next_deadline(pods: list[dict[str, Any]], nodes: dict[str, NodeHealth], now: float,
                  grace_s: float) -> float | None:
    """Seconds until `verdict` may change for one of the pods with no event to say so (a node
    NotReady reaching the grace, a Terminating pod reaching its deletion deadline); None if
    none is waiting. The operator reconciles then, instead of polling until it happens."""
    waits = []
    for pod in pods:
        health = nodes.get((pod.get("spec") or {}).get("nodeName") or "")
        if health is None or health.ready or not health.exists or health.not_ready_since is None:
            continue
        if now - health.not_ready_since < grace_s:
            waits.append(health.not_ready_since + grace_s - now)
        elif terminating(pod):
            deadline = timestamp(pod["metadata"].get("deletionTimestamp"))
            if deadline is not None and now < deadline:
                waits.append(deadline - now)
    return min(waits) if waits else None
