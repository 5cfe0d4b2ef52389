"""Bringing an ActorCluster's children in line with its spec, and its status in line with them.

Level-triggered: every call reads the pods that exist and fixes the difference, so the
same function serves creation, spec changes, pod failures and periodic resync. A spec it
cannot run ends in status (phase Failed, a condition with the reason) and one Event.
"""

from __future__ import annotations

import logging
import secrets
import threading
from collections import defaultdict
from typing import Any

import grpc
from kastor.operator import build_cluster as build
from kastor.operator import events
from kastor.operator.conditions import get_condition, same_ignoring_time, set_condition
from kastor.operator.head_client import HeadClient, head_ca
from kastor.operator.kube import Kube
from kastor.operator.pods import finished, plan_workers, ready, terminating, termination_message
from kastor.operator.spec import ClusterSpec, SpecError, parse_cluster
from kastor.runtime import k8s_contract as contract
from kastor.runtime import redis_cleanup

log = logging.getLogger("kastor.operator.cluster")

_locks: defaultdict[tuple[str, str], threading.Lock] = defaultdict(threading.Lock)


def reconcile(kube: Kube, body: dict[str, Any], gcs: HeadClient | None = None) -> dict[str, Any]:
    """Reconciles one ActorCluster, re-read under its lock (callers may hold a stale copy);
    returns the status it wrote."""
    meta = body["metadata"]
    with _locks[(meta["namespace"], meta["name"])]:
        fresh = kube.get_custom(contract.CLUSTER_PLURAL, meta["namespace"], meta["name"])
        if fresh is None or fresh["metadata"].get("deletionTimestamp"):
            return (fresh or body).get("status") or {}
        return _reconcile(kube, fresh, gcs)


def _reconcile(kube: Kube, body: dict[str, Any], gcs: HeadClient | None) -> dict[str, Any]:
    meta, old = body["metadata"], dict(body.get("status") or {})
    name, ns, generation = meta["name"], meta["namespace"], meta.get("generation")
    status: dict[str, Any] = {**old, "observedGeneration": generation}
    conditions = list(old.get("conditions") or [])
    try:
        spec = parse_cluster(body.get("spec") or {})
    except SpecError as e:
        status.update(phase="Failed", conditions=set_condition(conditions, "Ready", False, e.reason, e.message,
                                                               generation))
        return _write(kube, body, old, status)
    conditions = [c for c in conditions if not (c["type"] == "Ready" and c["reason"] == "InvalidSpec")]

    _ensure_secret(kube, body, spec)
    gcs_ok, gcs_reason, gcs_message = ensure_redis(kube, body, spec)
    kube.ensure_service(ns, build.head_service(body, spec))
    pods = kube.list_pods(ns, {contract.LABEL_CLUSTER: name})
    heads = [p for p in pods if p["metadata"]["labels"].get(contract.LABEL_ROLE) == "head"]
    workers = [p for p in pods if p["metadata"]["labels"].get(contract.LABEL_ROLE) == "worker"]

    if spec.suspend:
        for pod in heads + workers:
            if not terminating(pod):
                kube.delete_pod(ns, pod["metadata"]["name"])
        head_ok, head_reason, head_message = False, "Suspended", "spec.suspend is true: no pods run"
        ready_workers = 0
    else:
        head_ok, head_reason, head_message = _ensure_head(kube, body, spec, heads)
        registered = _registered_node_ips(kube, gcs, body, spec) if head_ok and gcs is not None else None
        if head_ok and gcs is not None:
            head_ip = next((p.get("status", {}).get("podIP") for p in heads if not terminating(p)), None)
            if registered is None:
                head_ok, head_reason, head_message = False, "HeadUnreachable", \
                    f"the head pod runs but does not answer at {build.head_address(body, spec)}"
            elif head_ip not in registered:
                head_ok, head_reason, head_message = False, "HeadStarting", "the head answers; its node has not joined"
        ready_workers = _ensure_workers(kube, body, spec, workers, registered if gcs is not None else None)

    desired = 0 if spec.suspend else spec.desired_workers
    workers_ok = ready_workers >= desired
    conditions = set_condition(conditions, "GcsReady", gcs_ok, gcs_reason, gcs_message, generation)
    conditions = set_condition(conditions, "HeadReady", head_ok, head_reason, head_message, generation)
    conditions = set_condition(conditions, "WorkersReady", workers_ok, "AllReady" if workers_ok else "Waiting",
                               f"{ready_workers}/{desired} worker pods ready", generation)
    if spec.suspend:
        phase = "Suspended"
    elif head_ok and workers_ok and gcs_ok:
        phase = "Ready"
    elif old.get("phase") in (None, "Pending", "Failed", "Suspended"):
        phase = "Pending"   # still coming up
    else:
        phase = "Degraded"  # it was Ready: something broke (a dead head shows here)
    all_ok = phase == "Ready"
    conditions = set_condition(conditions, "Ready", all_ok, phase, _summary(phase, head_message, ready_workers,
                                                                            desired), generation)
    status.update(phase=phase, conditions=conditions, readyWorkers=ready_workers, desiredWorkers=desired,
                  headAddress=build.head_address(body, spec), clientAddress=build.client_address(body, spec),
                  clusterId=contract.cluster_id(ns, name))
    return _write(kube, body, old, status)


def _summary(phase: str, head_message: str, ready_workers: int, desired: int) -> str:
    if phase == "Ready":
        return f"head ready, {ready_workers}/{desired} workers ready"
    return f"{head_message}; {ready_workers}/{desired} workers ready"


def _ensure_secret(kube: Kube, body: dict[str, Any], spec: ClusterSpec) -> None:
    ns = body["metadata"]["namespace"]
    if kube.get_secret(ns, build.token_secret_name(body, spec)) is None:
        kube.create_secret(ns, build.token_secret(body, spec, secrets.token_urlsafe(32), secrets.token_urlsafe(24)))
        events.post(body, "Normal", "TokenCreated", f"generated the cluster token in Secret "
                                                    f"{build.token_secret_name(body, spec)}")


def ensure_redis(kube: Kube, body: dict[str, Any], spec: ClusterSpec) -> tuple[bool, str, str]:
    ns = body["metadata"]["namespace"]
    if spec.redis.managed:
        kube.ensure_service(ns, build.redis_service(body))
        pods = kube.list_pods(ns, {contract.LABEL_CLUSTER: body["metadata"]["name"], contract.LABEL_ROLE: "redis"})
        live = [p for p in pods if not terminating(p)]
        for pod in live:
            if finished(pod):
                kube.delete_pod(ns, pod["metadata"]["name"])
        if not [p for p in live if not finished(p)]:
            kube.create_pod(ns, build.redis_pod(body, spec))
            return False, "RedisStarting", "the managed Redis pod is starting"
        if any(ready(p) for p in live):
            return True, "ManagedRedisReady", f"managed Redis at {build.redis_address(body, spec)}"
        return False, "RedisStarting", "the managed Redis pod is not ready yet"
    if spec.redis.address:
        if spec.redis.password_secret and kube.get_secret(ns, spec.redis.password_secret) is None:
            return False, "SecretNotFound", f"Secret {spec.redis.password_secret} (Redis password) does not exist"
        return True, "ExternalRedis", f"external Redis at {spec.redis.address}"
    return True, "InMemory", "no spec.gcs.redis: the head keeps its state in memory (lost if the head restarts)"


def _ensure_head(kube: Kube, body: dict[str, Any], spec: ClusterSpec,
                 heads: list[dict[str, Any]]) -> tuple[bool, str, str]:
    ns = body["metadata"]["namespace"]
    live = [p for p in heads if not terminating(p)]
    for pod in live:
        if finished(pod):
            message = f"head pod {pod['metadata']['name']} {pod['status'].get('phase', '').lower()}: " \
                      f"{termination_message(pod) or 'no message'}; replacing it"
            events.post(body, "Warning", "HeadPodFailed", message)
            kube.delete_pod(ns, pod["metadata"]["name"])
            return False, "HeadPodFailed", message
    if not live:
        if not heads:  # the previous one is gone: a new pod may take its name
            kube.create_pod(ns, build.head_pod(body, spec))
        return False, "HeadStarting", "the head pod is starting"
    if ready(live[0]):
        return True, "HeadRunning", f"head serving at {build.head_address(body, spec)}"
    return False, "HeadStarting", "the head pod is not ready yet"


def _registered_node_ips(kube: Kube, gcs: HeadClient, body: dict[str, Any], spec: ClusterSpec) -> set[str] | None:
    """The IPs of the nodes alive in the head (None if it does not answer): a pod is a ready
    worker only once its node agent has joined, so Ready means a driver can use the cluster."""
    secret = kube.get_secret(body["metadata"]["namespace"], build.token_secret_name(body, spec)) or {}
    try:
        ca = head_ca(kube, body["metadata"]["namespace"], spec)
        return {n.ip for n in gcs.list_nodes(build.head_address(body, spec), secret.get(spec.token_key, ""), ca)
                if n.alive}
    except grpc.RpcError as e:
        log.info("head of %s unreachable: %s", body["metadata"]["name"], e.code().name)
        return None


def _ensure_workers(kube: Kube, body: dict[str, Any], spec: ClusterSpec, workers: list[dict[str, Any]],
                    registered: set[str] | None = None) -> int:
    """Creates and removes worker pods; returns how many are ready (and joined, if `registered` is known)."""
    ns = body["metadata"]["namespace"]
    groups = {g.name: g for g in spec.worker_groups}
    ready_count = 0
    for pod in workers:  # pods of groups that left the spec
        if pod["metadata"]["labels"].get(contract.LABEL_GROUP) not in groups and not terminating(pod):
            kube.delete_pod(ns, pod["metadata"]["name"])
    for group in spec.worker_groups:
        mine = [p for p in workers if p["metadata"]["labels"].get(contract.LABEL_GROUP) == group.name]
        plan = plan_workers(mine, group.desired)
        for pod_name in plan.delete:
            kube.delete_pod(ns, pod_name)
        for _ in range(plan.create):
            kube.create_pod(ns, build.worker_pod(body, spec, group))
        ready_count += min(group.desired, sum(
            1 for p in mine if ready(p) and p["metadata"]["name"] not in plan.delete
            and (registered is None or p.get("status", {}).get("podIP") in registered)))
    return ready_count


def _write(kube: Kube, body: dict[str, Any], old: dict[str, Any], status: dict[str, Any]) -> dict[str, Any]:
    meta = body["metadata"]
    old_ready, new_ready = get_condition(old.get("conditions") or [], "Ready"), get_condition(status["conditions"],
                                                                                              "Ready")
    if new_ready and new_ready["status"] == "False" and new_ready["reason"] == "InvalidSpec" and \
            (old_ready is None or old_ready.get("message") != new_ready["message"]):
        events.post(body, "Warning", "InvalidSpec", new_ready["message"])
    if old.get("phase") != status.get("phase"):
        log.info("ActorCluster %s/%s: %s -> %s", meta["namespace"], meta["name"], old.get("phase"), status["phase"])
    if not same_ignoring_time(old, status):
        kube.patch_status(contract.CLUSTER_PLURAL, meta["namespace"], meta["name"], status)
    return status


class StillRunning(RuntimeError):
    """The cluster's pods are still stopping; try again shortly."""


def clean_external_redis(kube: Kube, body: dict[str, Any]) -> str:
    """Finalizer for a cluster on an external Redis: delete its keys (as `kastor redis-clean` does).

    A managed Redis goes with its pod; an external one outlives the cluster, and so would
    its state. Raises StillRunning while the head may still write, CleanupError (kopf retries)
    if the Redis cannot be cleaned.
    """
    meta = body["metadata"]
    spec = parse_cluster(body.get("spec") or {})
    if not spec.redis.address:
        return "no external Redis"
    # The head must be gone first, or it could write again after the cleanup.
    running = [p for p in kube.list_pods(meta["namespace"], {contract.LABEL_CLUSTER: meta["name"]})
               if p["metadata"]["labels"].get(contract.LABEL_ROLE) in ("head", "worker")]
    for pod in running:
        if not terminating(pod):
            kube.delete_pod(meta["namespace"], pod["metadata"]["name"])
    if running:
        raise StillRunning(f"waiting for {len(running)} head/worker pod(s) to stop before cleaning Redis")
    password = None
    if spec.redis.password_secret:
        password = (kube.get_secret(meta["namespace"], spec.redis.password_secret) or {}).get(spec.redis.password_key)
    cluster_id = contract.cluster_id(meta["namespace"], meta["name"])
    deleted = redis_cleanup.clean(spec.redis.address, cluster_id, password)
    return f"deleted {deleted} key(s) of cluster {cluster_id!r} from {spec.redis.address}"
