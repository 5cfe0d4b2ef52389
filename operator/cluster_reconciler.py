"""Bringing an ActorCluster's children in line with its spec, and its status in line with them.

Level-triggered: every call reads the pods that exist and fixes the difference, so the
same function serves creation, spec changes, pod failures and periodic resync. A spec it
cannot run ends in status (phase Failed, a condition with the reason) and one Event.
"""

from __future__ import annotations

import dataclasses
import logging
import secrets
import time
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import grpc
from kastor.operator import build_cluster as build
from kastor.operator import build_disruption, lost_nodes, pod_events, rollout, worker_groups
from kastor.operator import reconcile as skeleton
from kastor.operator.actions import (
    CreatePod,
    CreateSecret,
    DeletePod,
    EnsureService,
    EnsureStatefulSet,
    Event,
    Plan,
    SyncDisruptionBudget,
)
from kastor.operator.conditions import get_condition, set_condition
from kastor.operator.head_client import HeadClient, head_ca
from kastor.operator.head_watch import Target
from kastor.operator.kube import Kube
from kastor.operator.pod_events import role_of
from kastor.operator.pods import (
    controller_uid,
    finished,
    plan_workers,
    ready,
    restart_count,
    stuck_reason,
    terminating,
    termination_message,
)
from kastor.operator.scaling import HeadAccess, group_status, has_excess, next_idle_deadline, plan_scaling
from kastor.operator.spec import ClusterSpec, SpecError, parse_cluster
from kastor.runtime import k8s_contract as contract
from kastor.runtime import redis_cleanup, settings

log = logging.getLogger("kastor.operator.cluster")


@dataclass
class Observed:
    """What one reconcile of an ActorCluster saw: its body, its pods, its Secret, its head."""
    body: dict[str, Any]
    pods: list[dict[str, Any]] = field(default_factory=list)
    token_secret_exists: bool = True
    # The uid of the token Secret's controller: ours, None (a Secret the user made), or an
    # earlier ActorCluster's of the same name, which garbage collection is about to delete.
    token_secret_controller: str | None = None
    redis_password_secret_exists: bool = True
    # The managed Redis's StatefulSet as stored (None: absent, or no managed Redis).
    redis_set: dict[str, Any] | None = None
    # The IPs of the nodes alive in the head; None if it was not asked (no ready head pod, no
    # head client) or did not answer. `head_asked` tells the two apart.
    registered: set[str] | None = None
    head_asked: bool = False
    # Generated once per reconcile, used only if the token Secret must be created.
    new_token: str = ""
    new_redis_password: str = ""
    # spec.autoscaling: the head's ClusterDemand (None: not asked or no answer), how to reach
    # the head for drains, and the time of this reconcile (status.lastScaling.time).
    demand: Any = None
    head_access: HeadAccess | None = None
    scaled_at: str = ""
    # The health of the nodes of pods that are not Ready or are Terminating (`lost_nodes`),
    # when it was looked at, and how long a node may be NotReady before its pods are replaced.
    nodes: dict[str, lost_nodes.NodeHealth] = field(default_factory=dict)
    now: float = field(default_factory=time.time)
    lost_node_grace_s: float = 60.0
    # Each worker group's ActorWorkerGroup as stored (None: absent), by group name (worker_groups.py).
    worker_groups: dict[str, dict[str, Any] | None] = field(default_factory=dict)
    # The head to watch (`head_watch`): set while a head pod is ready and the cluster runs.
    watch: Target | None = None


def reconcile(kube: Kube, body: dict[str, Any], head: HeadClient | None = None,
              locks: skeleton.Locks | None = None) -> Plan | None:
    """Reconciles one ActorCluster (observe, plan, act, write status); returns the plan it carried
    out, its status as written (None if the cluster is gone or being deleted)."""
    return skeleton.run(kube, head, locks or skeleton.Locks(), contract.CLUSTER_PLURAL, body,
                        lambda fresh: plan(observe(kube, head, fresh)), "phase")


def due_in(done: Plan, watched: bool, poll_s: float) -> float | None:
    """Seconds until the cluster must be reconciled again with no event (None: the long resync).

    Suspended or Failed: only a spec change or a pod event changes it. Ready with its head
    watched (`head_watch`: the head says when its nodes, their idleness or its demand change):
    only at a deadline no event reports (`Plan.recheck_s`). Anything else is still settling
    (pods starting, a head not answering, a node going NotReady): in `poll_s`, or earlier."""
    phase = done.status.get("phase")
    if phase in ("Suspended", "Failed"):
        return None
    if phase == "Ready" and watched:
        return done.recheck_s
    return poll_s if done.recheck_s is None else min(poll_s, done.recheck_s)


def observe(kube: Kube, head: HeadClient | None, body: dict[str, Any]) -> Observed:
    """Reads what the plan needs; asks the head for its nodes only if a head pod is ready."""
    meta = body["metadata"]
    ns = meta["namespace"]
    seen = Observed(body, new_token=secrets.token_urlsafe(32), new_redis_password=secrets.token_urlsafe(24))
    try:
        spec = parse_cluster(body.get("spec") or {})
    except SpecError:
        return seen
    if contract.cluster_name_problem(meta["name"]):
        return seen
    seen.worker_groups = {g: kube.get_custom(contract.WORKER_GROUP_PLURAL, ns, contract.worker_group(meta["name"], g))
                          for g in worker_groups.names_to_read(body, spec)}
    spec = worker_groups.requested(body, spec, seen.worker_groups)
    if spec.redis.managed:
        seen.redis_set = kube.read_statefulset(ns, contract.redis_statefulset(meta["name"]))
    seen.pods = _ours(kube.list_pods(ns, {contract.LABEL_CLUSTER: meta["name"]}), meta.get("uid"),
                      _our_redis_set_uid(seen))
    stored = kube.read_secret(ns, build.token_secret_name(body, spec))
    seen.token_secret_exists = stored is not None
    seen.token_secret_controller = controller_uid(stored) if stored is not None else None
    secret = kube.secret_data(stored) if stored is not None else None
    if spec.redis.address and spec.redis.password_secret:
        seen.redis_password_secret_exists = kube.get_secret(ns, spec.redis.password_secret) is not None
    head_ready = any(ready(p) for p in _role(seen.pods, "head"))
    if head is not None and head_ready and not spec.suspend:
        seen.head_asked = True
        seen.watch = Target(build.head_address(body, spec), (secret or {}).get(spec.token_key, ""),
                            head_ca(kube, ns, spec))
        seen.registered = _registered_node_ips(kube, head, body, spec, (secret or {}).get(spec.token_key, ""))
        if (spec.autoscaling.enabled or has_excess(spec, _role(seen.pods, "worker"))) and seen.registered is not None:
            seen.demand, seen.head_access = _demand(kube, head, body, spec, (secret or {}).get(spec.token_key, ""))
    seen.scaled_at = datetime.now(UTC).isoformat(timespec="seconds")
    seen.nodes = lost_nodes.observe(kube, seen.pods, _vouched(seen))
    seen.lost_node_grace_s = settings.OPERATOR_LOST_NODE_GRACE_S.get()
    seen.now = time.time()
    return seen


def _demand(kube: Kube, head: HeadClient, body: dict[str, Any], spec: ClusterSpec,
            token: str) -> tuple[Any, HeadAccess | None]:
    """The head's ClusterDemand for the autoscaler, and how to reach it for drains (None if it does not answer)."""
    access = HeadAccess(build.head_address(body, spec), token, head_ca(kube, body["metadata"]["namespace"], spec))
    try:
        return head.cluster_demand(access.address, token, access.ca), access
    except grpc.RpcError as e:
        log.info("head of %s did not report its demand: %s", body["metadata"]["name"], e.code().name)
        return None, None


def _vouched(seen: Observed) -> set[str]:
    """The pods Kastor itself sees working: Ready, and their node alive in the head. A pod's
    Ready in the API goes stale when its node is lost; the head's view does not."""
    registered = seen.registered if seen.head_asked else None
    return {p["metadata"]["name"] for p in seen.pods
            if ready(p) and registered is not None and p.get("status", {}).get("podIP") in registered}


def _ours(pods: list[dict[str, Any]], uid: str | None, redis_set_uid: str | None = None) -> list[dict[str, Any]]:
    """The pods this very ActorCluster controls (not a deleted namesake's, still terminating),
    and, given its uid, the pods of its managed Redis StatefulSet."""
    return [p for p in pods if controller_uid(p) in (uid, redis_set_uid or uid)]


def _our_redis_set_uid(seen: Observed) -> str | None:
    """The uid of the managed Redis StatefulSet if this very ActorCluster controls it."""
    stored = seen.redis_set
    if stored is None or controller_uid(stored) != seen.body["metadata"].get("uid"):
        return None
    return stored["metadata"].get("uid")


def _role(pods: list[dict[str, Any]], role: str) -> list[dict[str, Any]]:
    return [p for p in pods if p["metadata"].get("labels", {}).get(contract.LABEL_ROLE) == role]


def _registered_node_ips(kube: Kube, head: HeadClient, body: dict[str, Any], spec: ClusterSpec,
                         token: str) -> set[str] | None:
    """The IPs of the nodes alive in the head (None if it does not answer): a pod is a ready
    worker only once its node agent has joined, so Ready means a driver can use the cluster."""
    try:
        ca = head_ca(kube, body["metadata"]["namespace"], spec)
        return {n.ip for n in head.list_nodes(build.head_address(body, spec), token, ca) if n.alive}
    except grpc.RpcError as e:
        log.info("head of %s unreachable: %s", body["metadata"]["name"], e.code().name)
        return None


def plan(seen: Observed) -> Plan:
    """Pure: the actions, status and Events that bring the cluster in line with its spec."""
    body = seen.body
    meta, old = body["metadata"], dict(body.get("status") or {})
    name, ns, generation = meta["name"], meta["namespace"], meta.get("generation")
    out = Plan(status={**old, "observedGeneration": generation})
    conditions = list(old.get("conditions") or [])
    try:
        problem = contract.cluster_name_problem(name)
        if problem:
            raise SpecError("InvalidName", problem)
        own_spec = parse_cluster(body.get("spec") or {})
    except SpecError as e:
        conditions = set_condition(conditions, "Ready", False, e.reason, e.message, generation)
        out.status.update(phase="Failed", conditions=conditions)
        old_ready = get_condition(old.get("conditions") or [], "Ready")
        if old_ready is None or old_ready.get("message") != e.message:
            out.events.append(Event("Warning", e.reason, e.message))
        return out
    conditions = [c for c in conditions if not (c["type"] == "Ready" and c["reason"] == "InvalidSpec")]
    spec = worker_groups.requested(body, own_spec, seen.worker_groups)  # sizes from the ActorWorkerGroups

    secret_name = build.token_secret_name(body, spec)
    if seen.token_secret_exists and seen.token_secret_controller not in (None, meta.get("uid")):
        message = f"Secret {secret_name} belongs to an earlier ActorCluster of this name and is being deleted; " \
                  f"waiting for it to go before generating this cluster's token"
        conditions = set_condition(conditions, "Ready", False, "WaitingForOldSecret", message, generation)
        out.status.update(phase="Pending", conditions=conditions)
        return out
    if not seen.token_secret_exists:
        out.actions.append(CreateSecret(build.token_secret(body, spec, seen.new_token, seen.new_redis_password)))
        out.events.append(Event("Normal", "TokenCreated", f"generated the cluster token in Secret "
                                                          f"{build.token_secret_name(body, spec)}"))
    seen = _settle_lost_pods(seen, out)
    gcs_ok, gcs_reason, gcs_message = ensure_redis(seen, spec, out)
    out.actions.append(EnsureService(build.head_service(body, spec)))
    out.actions.append(EnsureService(build.dashboard_service(body, spec)))
    out.actions += disruption_budgets(body, spec)
    pods = _ours(seen.pods, meta.get("uid"))
    heads, workers = _role(pods, "head"), _role(pods, "worker")
    observed = old.get("observedGeneration")
    roll = _Roll(spec.upgrade_strategy, observed is not None and generation != observed)

    group_desired, drained = plan_scaling(body, spec, workers, seen.demand if seen.head_asked else None,
                                          seen.head_access, seen.scaled_at, out) if not spec.suspend else ({}, set())
    if spec.suspend:
        out.actions += [DeletePod(p["metadata"]["name"], reason="Suspended", why="spec.suspend is true",
                                  role=role_of(p)) for p in heads + workers if not terminating(p)]
        head_ok, head_reason, head_message = False, "Suspended", "spec.suspend is true: no pods run"
        ready_workers = 0
    else:
        head_ok, head_reason, head_message = _ensure_head(body, spec, heads, out, roll)
        if head_ok and seen.head_asked:
            head_ip = next((p.get("status", {}).get("podIP") for p in heads if not terminating(p)), None)
            if seen.registered is None:
                head_ok, head_reason, head_message = False, "HeadUnreachable", \
                    f"the head pod runs but does not answer at {build.head_address(body, spec)}"
            elif head_ip not in seen.registered:
                head_ok, head_reason, head_message = False, "HeadStarting", "the head answers; its node has not joined"
        ready_workers = _ensure_workers(body, spec, [p for p in workers if p["metadata"]["name"] not in drained],
                                        seen.registered if seen.head_asked else None, out, create=head_ok,
                                        roll=roll, desired=group_desired)
    if roll.how != "None" and _runs_an_older_spec(body, spec, heads + workers, roll):
        # Not applied yet: observedGeneration says which spec every running pod was built from.
        out.status["observedGeneration"] = old.get("observedGeneration")

    desired = 0 if spec.suspend else sum(group_desired.values())
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
    conditions = set_condition(conditions, "Ready", phase == "Ready", phase,
                               _summary(phase, head_message, ready_workers, desired), generation)
    out.status.update(workerGroups=group_status(spec, group_desired, workers,
                                                seen.registered if seen.head_asked else None))
    worker_groups.plan(body, own_spec, seen.worker_groups, group_desired, workers,
                       seen.registered if seen.head_asked else None, out)
    out.status.update(phase=phase, conditions=conditions, readyWorkers=ready_workers, desiredWorkers=desired,
                      headAddress=build.head_address(body, spec), clientAddress=build.client_address(body, spec),
                      clusterId=contract.cluster_id(ns, name))
    out.watch = None if spec.suspend else seen.watch
    waits = [lost_nodes.next_deadline(seen.pods, seen.nodes, seen.now, seen.lost_node_grace_s),
             next_idle_deadline(spec, seen.demand if seen.head_asked else None)]
    out.recheck_s = min((w for w in waits if w is not None), default=None)
    return out


def disruption_budgets(body: dict[str, Any], spec: ClusterSpec) -> list[SyncDisruptionBudget]:
    """The head's and the managed Redis's PodDisruptionBudgets, or their removal (see build_disruption)."""
    name = body["metadata"]["name"]
    return [SyncDisruptionBudget(build_disruption.pdb_name(name, role),
                                 build_disruption.pod_disruption_budget(body, role)
                                 if spec.disruption_budgets and (role == "head" or spec.redis.managed) else None)
            for role in build_disruption.ROLES]


def _settle_lost_pods(seen: Observed, out: Plan) -> Observed:
    """Plans what `lost_nodes.settle` decides for the pods; returns what the rest of the plan sees
    (a lost pod Terminating, so the head, worker and Redis plans replace it in this reconcile)."""
    kept = lost_nodes.settle(seen.pods, seen.nodes, seen.now, seen.lost_node_grace_s, out, _vouched(seen))
    return dataclasses.replace(seen, pods=kept)


def _summary(phase: str, head_message: str, ready_workers: int, desired: int) -> str:
    if phase == "Ready":
        return f"head ready, {ready_workers}/{desired} workers ready"
    return f"{head_message}; {ready_workers}/{desired} workers ready"


def ensure_redis(seen: Observed, spec: ClusterSpec, out: Plan) -> tuple[bool, str, str]:
    """Plans the managed Redis (Service and StatefulSet) and says whether the GCS store is usable."""
    if spec.redis.managed:
        return _ensure_managed_redis(seen, spec, out)
    if spec.redis.address:
        if spec.redis.password_secret and not seen.redis_password_secret_exists:
            return False, "SecretNotFound", f"Secret {spec.redis.password_secret} (Redis password) does not exist"
        return True, "ExternalRedis", f"external Redis at {spec.redis.address}"
    return True, "InMemory", "no spec.gcs.redis: the head keeps its state in memory (lost if the head restarts)"


def _ensure_managed_redis(seen: Observed, spec: ClusterSpec, out: Plan) -> tuple[bool, str, str]:
    """The managed Redis is a StatefulSet the cluster controls; its pod (the StatefulSet's) says
    whether it is ready. A bare Redis pod the cluster itself controls was made by an operator
    from before StatefulSets: it goes (its emptyDir with it), so the Service selects one Redis."""
    body = seen.body
    uid = body["metadata"].get("uid")
    out.actions.append(EnsureService(build.redis_service(body)))
    redis_pods = _role(seen.pods, "redis")
    out.actions += [DeletePod(p["metadata"]["name"], reason="RedisPodReplaced", role="redis",
                              why="a bare Redis pod of an older operator: the managed Redis is a StatefulSet now")
                    for p in redis_pods if controller_uid(p) == uid and not terminating(p)]
    wanted = build.redis_statefulset(body, spec)
    set_name = wanted["metadata"]["name"]
    stored = seen.redis_set
    if stored is None:
        out.actions.append(EnsureStatefulSet(wanted))
        return False, "RedisStarting", f"creating the managed Redis StatefulSet {set_name}"
    if controller_uid(stored) != uid:
        return False, "WaitingForOldRedis", f"StatefulSet {set_name} belongs to an earlier ActorCluster of this " \
                                            f"name and is being deleted; waiting for it to go"
    annotations = stored["metadata"].get("annotations") or {}
    note = ""
    if annotations.get(build.ANNOTATION_STORAGE, build.storage_key(spec)) != build.storage_key(spec):
        note = f"; spec.gcs.redis.storage is not applied: StatefulSet {set_name} keeps the storage it was made " \
               f"with ({annotations[build.ANNOTATION_STORAGE]}), as volumeClaimTemplates cannot change (delete " \
               f"the StatefulSet, and its claim, to re-create it empty)"
    else:
        want_hash = wanted["metadata"]["annotations"][contract.ANNOTATION_SPEC_HASH]
        if annotations.get(contract.ANNOTATION_SPEC_HASH) != want_hash:
            out.actions.append(EnsureStatefulSet(wanted, {
                "metadata": {"annotations": {contract.ANNOTATION_SPEC_HASH: want_hash}},
                "spec": {"template": wanted["spec"]["template"]}}))
    live = [p for p in redis_pods if controller_uid(p) != uid and not terminating(p)]
    if any(ready(p) for p in live):
        return True, "ManagedRedisReady", f"managed Redis at {build.redis_address(body, spec)}{note}"
    if not live:
        return False, "RedisStarting", f"waiting for StatefulSet {set_name} to create the Redis pod{note}"
    stuck = stuck_reason(live[0])
    if stuck is not None:
        return False, stuck[0], f"the managed Redis pod {live[0]['metadata']['name']}: {stuck[1]}{note}"
    return False, "RedisStarting", f"the managed Redis pod {live[0]['metadata']['name']} is not ready yet{note}"


@dataclass(frozen=True)
class _Roll:
    """How spec changes reach running pods: the upgrade strategy, and whether the spec changed
    since the status last said every pod was built from it (for pods made before hashes)."""
    how: str
    spec_changed: bool


def _runs_an_older_spec(body: dict[str, Any], spec: ClusterSpec, pods: list[dict[str, Any]], roll: _Roll) -> bool:
    raw = body.get("spec") or {}
    head_hash = rollout.head_hash(raw)

    def want(pod: dict[str, Any]) -> str:
        labels = pod["metadata"].get("labels") or {}
        if labels.get(contract.LABEL_ROLE) == "head":
            return head_hash
        return rollout.worker_hash(raw, spec, labels.get(contract.LABEL_GROUP, ""))

    return rollout.any_outdated(((p, want(p)) for p in pods if not terminating(p)), roll.spec_changed)


def _ensure_head(body: dict[str, Any], spec: ClusterSpec, heads: list[dict[str, Any]],
                 out: Plan, roll: _Roll) -> tuple[bool, str, str]:
    live = [p for p in heads if not terminating(p)]
    for pod in live:
        if finished(pod):
            message = f"head pod {pod['metadata']['name']} {pod['status'].get('phase', '').lower()}: " \
                      f"{termination_message(pod) or 'no message'}; replacing it"
            out.events.append(Event("Warning", "HeadPodFailed", message))
            out.actions.append(DeletePod(pod["metadata"]["name"], reason="HeadPodFailed", why=message, role="head"))
            return False, "HeadPodFailed", message
    if live and roll.how != "None" and rollout.outdated(live[0], rollout.head_hash(body.get("spec") or {}),
                                                      roll.spec_changed):
        # One head per cluster: delete it, and the next reconcile creates it from the new spec.
        message = f"head pod {live[0]['metadata']['name']} was built from an older spec; recreating it"
        out.events.append(Event("Normal", "RollingUpdate", message))
        out.actions.append(DeletePod(live[0]["metadata"]["name"], reason="RollingUpdate", why=message, role="head"))
        return False, "HeadUpdating", message
    if not live:  # a head still terminating (say, on a lost node) does not hold back its replacement
        out.actions.append(CreatePod(build.head_pod(body, spec), "HeadMissing", "the cluster has no live head pod"))
        return False, "HeadStarting", "the head pod is starting"
    _note_head_restarts(body, live[0], out)
    if ready(live[0]):
        return True, "HeadRunning", f"head serving at {build.head_address(body, spec)}"
    stuck = stuck_reason(live[0])
    if stuck is not None:  # say why, in the condition and (once per reason) as a Warning Event
        reason, detail = stuck
        message = f"head pod {live[0]['metadata']['name']}: {reason}: {detail}"
        old = get_condition((body.get("status") or {}).get("conditions") or [], "HeadReady")
        if old is None or old.get("reason") != reason:
            out.events.append(Event("Warning", reason, message))
        return False, reason, message
    return False, "HeadStarting", "the head pod is not ready yet"


def _note_head_restarts(body: dict[str, Any], head: dict[str, Any], out: Plan) -> None:
    """The kubelet restarts a crashed head in place: say so (a Warning Event per restart seen),
    and keep the count in status.headRestarts (of the pod in status.headPod)."""
    old = body.get("status") or {}
    name, count = head["metadata"]["name"], restart_count(head)
    seen = int(old.get("headRestarts") or 0) if old.get("headPod") == name else 0
    if count > seen:
        out.events.append(Event("Warning", "HeadRestarted", f"head pod {name} restarted in place "
                                                            f"({count} restart(s) so far)"))
    out.status.update(headPod=name, headRestarts=count)


def _ensure_workers(body: dict[str, Any], spec: ClusterSpec, workers: list[dict[str, Any]],
                    registered: set[str] | None, out: Plan, create: bool, roll: _Roll,
                    desired: dict[str, int] | None = None) -> int:
    """Plans worker pods per group; returns how many are ready (and joined, if `registered` is known).

    New workers are created only once the head is ready (`create`): a worker started before
    has nothing to join, and on a real cluster (image pulls, scheduling, node scale-up) it
    would give up and fail, to be replaced at once, over and over."""
    groups = {g.name: g for g in spec.worker_groups}
    ready_count = 0
    out.actions += [DeletePod(p["metadata"]["name"], reason="GroupRemoved", role="worker",  # groups that left the spec
                              why=f"worker group {p['metadata']['labels'].get(contract.LABEL_GROUP)} is no "
                                  f"longer in the spec")
                    for p in workers
                    if p["metadata"]["labels"].get(contract.LABEL_GROUP) not in groups and not terminating(p)]
    for group in spec.worker_groups:
        mine = [p for p in workers if p["metadata"]["labels"].get(contract.LABEL_GROUP) == group.name]
        wanted = group.desired if desired is None else desired[group.name]
        group_plan = plan_workers(mine, wanted)
        done = {p["metadata"]["name"] for p in mine if finished(p)}
        out.actions += [DeletePod(pod_name, reason="PodFinished" if pod_name in done else "ScaleDown", role="worker",
                                  why="the pod will not run again" if pod_name in done else
                                  f"group {group.name} wants {wanted} worker pod(s)")
                        for pod_name in group_plan.delete]
        live = [p for p in mine if not terminating(p) and not finished(p)
                and p["metadata"]["name"] not in group_plan.delete]
        stale = rollout.workers_to_replace(live, rollout.worker_hash(body.get("spec") or {}, spec, group.name),
                                           roll.spec_changed, roll.how, can_roll=create and not group_plan.create)
        for pod_name in stale:  # their replacements are created by the next reconcile's plan_workers
            out.events.append(Event("Normal", "RollingUpdate", f"worker pod {pod_name} (group {group.name}) was "
                                                               f"built from an older spec; replacing it"))
            out.actions.append(DeletePod(pod_name, reason="RollingUpdate", role="worker",
                                         why="built from an older spec"))
        group_plan = replace(group_plan, delete=group_plan.delete + tuple(stale))
        out.actions += [CreatePod(build.worker_pod(body, spec, group), "BelowReplicas",
                                  f"group {group.name} has {len(live)} live worker pod(s) and wants {wanted}")
                        for _ in range(group_plan.create if create else 0)]
        ready_count += min(wanted, sum(
            1 for p in mine if ready(p) and p["metadata"]["name"] not in group_plan.delete
            and (registered is None or p.get("status", {}).get("podIP") in registered)))
    return ready_count


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
    running = [p for p in kube.list_pods(meta["namespace"], {contract.LABEL_CLUSTER: meta["name"]}, live=True)
               if p["metadata"]["labels"].get(contract.LABEL_ROLE) in ("head", "worker")]
    for pod in running:
        if not terminating(pod) and kube.delete_pod(meta["namespace"], pod["metadata"]["name"]):
            pod_events.deleted(kube, body, pod["metadata"]["name"], role_of(pod), "ClusterDeleted",
                               "the ActorCluster is being deleted: its head stops before its Redis keys go")
    if running:
        raise StillRunning(f"waiting for {len(running)} head/worker pod(s) to stop before cleaning Redis")
    password = None
    if spec.redis.password_secret:
        password = (kube.get_secret(meta["namespace"], spec.redis.password_secret) or {}).get(spec.redis.password_key)
    cluster_id = contract.cluster_id(meta["namespace"], meta["name"])
    deleted = redis_cleanup.clean(spec.redis.address, cluster_id, password)
    return f"deleted {deleted} key(s) of cluster {cluster_id!r} from {spec.redis.address}"
