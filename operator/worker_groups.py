"""ActorWorkerGroup: each worker group's size as an object of its own, so `kubectl scale` and a
HorizontalPodAutoscaler can set it (pure: what to create, patch and delete).

Why an object per group: a CRD's `scale` subresource names one field of the object
(`specReplicasPath`), and an ActorCluster's groups are elements of the list
`spec.workerGroups`, which a scale subresource cannot point into. So the operator keeps one
ActorWorkerGroup per group, `<cluster>-<group>` in the cluster's namespace, controlled by the
ActorCluster (garbage-collected with it, deleted when its group leaves the spec), with
`spec.replicas` behind the scale subresource and `status.selector` (the group's worker pods)
for an HPA. It is the operator's: the cluster's spec stays the user's, and nothing writes it back.

Which write wins: the last one. The ActorWorkerGroup is created with the cluster's
`workerGroups[i].replicas` and remembers it in the annotation `kastor.dev/cluster-replicas`;
while that field keeps its value, the group's size is the ActorWorkerGroup's `spec.replicas`
(a `kubectl scale` or an HPA moves it). An edit of the cluster's field (a `kubectl apply` of
the cluster with a new replicas) differs from the annotation, so it is copied into the
ActorWorkerGroup and wins in turn. Re-applying the cluster unchanged does not undo a scale.
Either way the operator keeps the size within the group's minReplicas..maxReplicas
(`status.desiredReplicas` shows what it works toward).

With the cluster's `spec.autoscaling` enabled the autoscaler owns replicas, as in KubeRay:
`spec.replicas` follows its decisions, and a `kubectl scale` or an HPA is overwritten at the
next reconcile (with a Warning Event `ScaleOverridden`): size such a group with minReplicas
and maxReplicas or `kastor.autoscaler.request_resources()`, or turn autoscaling off.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from typing import Any

from kastor.operator.actions import DeleteWorkerGroup, Event, Plan, SyncWorkerGroup
from kastor.operator.build_common import object_meta
from kastor.operator.pods import controller_uid, finished, ready, terminating
from kastor.operator.spec import ClusterSpec, WorkerGroup
from kastor.runtime import k8s_contract as contract

log = logging.getLogger("kastor.operator.cluster")

# The cluster's workerGroups[i].replicas when it was last copied into the ActorWorkerGroup.
ANNOTATION_CLUSTER_REPLICAS = "kastor.dev/cluster-replicas"

Stored = Mapping[str, "dict[str, Any] | None"]  # group name -> its ActorWorkerGroup as stored (None: absent)


def selector(cluster: str, group: str) -> str:
    """The label selector of the group's worker pods (status.selector, what an HPA reads)."""
    labels = {contract.LABEL_CLUSTER: cluster, contract.LABEL_ROLE: "worker", contract.LABEL_GROUP: group}
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()))


def build(body: dict[str, Any], group: WorkerGroup, replicas: int) -> dict[str, Any]:
    """The ActorWorkerGroup to create for `group`, seeded with `replicas`."""
    cluster, ns = body["metadata"]["name"], body["metadata"]["namespace"]
    labels = {**contract.cluster_labels(cluster, "worker"), contract.LABEL_GROUP: group.name}
    return {"apiVersion": contract.API_VERSION, "kind": contract.WORKER_GROUP_KIND,
            "metadata": object_meta(contract.worker_group(cluster, group.name), ns, body, labels,
                                    {ANNOTATION_CLUSTER_REPLICAS: str(group.replicas)}),
            "spec": {"cluster": cluster, "group": group.name, "replicas": replicas}}


def _ours(body: dict[str, Any], stored: dict[str, Any] | None) -> bool:
    return stored is not None and controller_uid(stored) == body["metadata"].get("uid")


def _cluster_field_changed(stored: dict[str, Any], group: WorkerGroup) -> bool:
    """Whether the cluster's workerGroups[i].replicas was edited since it was last copied over."""
    seeded = (stored["metadata"].get("annotations") or {}).get(ANNOTATION_CLUSTER_REPLICAS)
    return seeded != str(group.replicas)


def requested(body: dict[str, Any], spec: ClusterSpec, stored: Stored) -> ClusterSpec:
    """The spec with each group's replicas as asked for now: its ActorWorkerGroup's `spec.replicas`,
    unless the cluster's own field was edited since (it wins), the object is not there yet or is
    not this cluster's, or the autoscaler owns replicas (the cluster's field is then the initial size)."""
    if spec.autoscaling.enabled:
        return spec
    groups = []
    for g in spec.worker_groups:
        awg = stored.get(g.name)
        if _ours(body, awg) and not _cluster_field_changed(awg, g):
            g = dataclasses.replace(g, replicas=int(awg["spec"].get("replicas", g.replicas)))
        groups.append(g)
    return dataclasses.replace(spec, worker_groups=tuple(groups))


def plan(body: dict[str, Any], spec: ClusterSpec, stored: Stored, desired: Mapping[str, int],
         workers: list[dict[str, Any]], registered: set[str] | None, out: Plan) -> None:
    """Creates, patches (spec.replicas, the seed annotation, status) and deletes the cluster's
    ActorWorkerGroups. `spec` is the cluster's own spec (not `requested`'s); `desired` each
    group's size as the reconcile decided it (the autoscaler's with spec.autoscaling)."""
    cluster = body["metadata"]["name"]
    asked = {g.name: g.desired for g in requested(body, spec, stored).worker_groups}
    for g in spec.worker_groups:
        name = contract.worker_group(cluster, g.name)
        awg = stored.get(g.name)
        target = 0 if spec.suspend else desired.get(g.name, g.desired) if spec.autoscaling.enabled else asked[g.name]
        if awg is None:
            out.actions.append(SyncWorkerGroup(name, create=build(
                body, g, desired.get(g.name, g.replicas) if spec.autoscaling.enabled else g.replicas)))
            continue
        if not _ours(body, awg):
            log.warning("ActorWorkerGroup %s is not ActorCluster %s's (a namesake's, being deleted, or another "
                        "cluster's whose name and group name join the same way); group %s keeps the cluster's "
                        "replicas", name, cluster, g.name)
            continue
        spec_patch: dict[str, Any] = {}
        have = awg["spec"].get("replicas")
        old_status = awg.get("status") or {}
        if spec.autoscaling.enabled:
            if not spec.suspend and have != target:
                spec_patch["spec"] = {"replicas": target}
                if "desiredReplicas" in old_status and have != old_status["desiredReplicas"]:
                    out.events.append(Event("Warning", "ScaleOverridden", (
                        f"ActorWorkerGroup {name} was scaled to {have}, but spec.autoscaling is enabled: the "
                        f"autoscaler owns the replicas of group {g.name} ({target} now). Size it with minReplicas "
                        f"and maxReplicas or request_resources(), or turn autoscaling off")))
        elif _cluster_field_changed(awg, g) and have != g.replicas:
            spec_patch["spec"] = {"replicas": g.replicas}  # the cluster's field was edited last: it wins
        if _cluster_field_changed(awg, g):
            spec_patch["metadata"] = {"annotations": {ANNOTATION_CLUSTER_REPLICAS: str(g.replicas)}}
        status = _status(cluster, spec, g, target, workers, registered, awg)
        if spec_patch or any(old_status.get(k) != v for k, v in status.items()):
            out.actions.append(SyncWorkerGroup(name, patch=spec_patch or None,
                                               status=None if status.items() <= old_status.items() else status))
    in_spec = {g.name for g in spec.worker_groups}
    out.actions += [DeleteWorkerGroup(contract.worker_group(cluster, group))
                    for group, awg in sorted(stored.items()) if group not in in_spec and _ours(body, awg)]


def _status(cluster: str, spec: ClusterSpec, g: WorkerGroup, target: int, workers: list[dict[str, Any]],
            registered: set[str] | None, awg: dict[str, Any]) -> dict[str, Any]:
    mine = [p for p in workers if (p["metadata"].get("labels") or {}).get(contract.LABEL_GROUP) == g.name
            and not terminating(p) and not finished(p)]
    ready_n = sum(1 for p in mine if ready(p) and (registered is None
                                                   or p.get("status", {}).get("podIP") in registered))
    return {"replicas": len(mine), "readyReplicas": ready_n, "desiredReplicas": target,
            "minReplicas": g.min_replicas, "maxReplicas": g.max_replicas, "autoscaling": spec.autoscaling.enabled,
            "selector": selector(cluster, g.name), "observedGeneration": awg["metadata"].get("generation")}


def names_to_read(body: dict[str, Any], spec: ClusterSpec) -> list[str]:
    """The groups whose ActorWorkerGroups a reconcile reads: the spec's, and those the last status
    listed (a group that left the spec: its object is deleted)."""
    listed = [g.get("name") for g in (body.get("status") or {}).get("workerGroups") or [] if isinstance(g, dict)]
    names = [g.name for g in spec.worker_groups]
    return names + [n for n in listed if isinstance(n, str) and n not in names]
