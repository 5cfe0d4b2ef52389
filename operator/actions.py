"""What a reconcile plan asks for, and the one executor that does it against the API.

Plans (`cluster_reconciler.plan`, `actor_reconciler.plan`) are pure functions of what was
observed: they return these plain values, so tests check a decision by comparing lists,
without an API server or a head. `apply` is the only place that turns them into calls.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import grpc
from kastor.operator import events, pod_events, services
from kastor.operator.head_client import HeadClient
from kastor.operator.head_watch import Target
from kastor.operator.kube import Kube
from kastor.operator.pods import controller_uid
from kastor.runtime import k8s_contract as contract

log = logging.getLogger("kastor.operator")


@dataclass(frozen=True)
class CreatePod:
    """Create the pod. `reason` (CamelCase, e.g. ScaleUp) and `why` (a sentence) say why: they
    become the `CreatedPod` Event on the resource and the metrics' reason label. They take no
    part in equality, so plans compare by what they do."""
    pod: dict[str, Any]
    reason: str = field(default="", compare=False)
    why: str = field(default="", compare=False)


@dataclass(frozen=True)
class DeletePod:
    """Delete the pod gracefully; `force` deletes it with gracePeriodSeconds=0, which only a pod
    nothing can still be running may get (its node is gone: see `lost_nodes`). `reason`, `why`
    and `role` (head, worker, redis, actor) make the `DeletedPod` Event, as for CreatePod."""
    name: str
    force: bool = False
    reason: str = field(default="", compare=False)
    why: str = field(default="", compare=False)
    role: str = field(default="", compare=False)


@dataclass(frozen=True)
class EnsureService:
    """Create the Service, or patch the one of that name if its type or ports differ."""
    service: dict[str, Any]


@dataclass(frozen=True)
class EnsureStatefulSet:
    """Create the StatefulSet, or, if `patch` is set, merge-patch the existing one of that name
    with it (its pod template after a spec change: the StatefulSet controller rolls the pod)."""
    statefulset: dict[str, Any]
    patch: dict[str, Any] | None = None


@dataclass(frozen=True)
class CreateSecret:
    """Create the Secret unless one of that name exists (the token is generated only once)."""
    secret: dict[str, Any]


@dataclass(frozen=True)
class EnsureClaim:
    """Create the PersistentVolumeClaim unless it exists (a DetachedActor's durable-state volume)."""
    claim: dict[str, Any]


@dataclass(frozen=True)
class SyncDisruptionBudget:
    """Make the PodDisruptionBudget `name` exist as `budget`, or (budget None) delete the one of
    that name if this resource controls it. An existing budget is left as it is."""
    name: str
    budget: dict[str, Any] | None


@dataclass(frozen=True)
class SyncWorkerGroup:
    """An ActorWorkerGroup (operator/worker_groups.py): create it (`create`, unless it exists),
    or merge-patch its object (`patch`: spec.replicas, annotations) and then its status."""
    name: str
    create: dict[str, Any] | None = None
    patch: dict[str, Any] | None = None
    status: dict[str, Any] | None = None


@dataclass(frozen=True)
class DeleteWorkerGroup:
    """Delete the ActorWorkerGroup of a group that left the cluster's spec."""
    name: str


@dataclass(frozen=True)
class KillActor:
    """Mark the actor dead in its cluster's GCS (no restart), so callers get ActorDiedError."""
    address: str
    token: str = field(repr=False)
    actor_id: bytes
    reason: str
    ca: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class DrainWorker:
    """Scale-down of one idle worker: drain its node through the head, then delete its pod. The head
    refuses a node that runs anything; the pod then stays (the next reconcile decides again)."""
    address: str
    token: str = field(repr=False)
    node_id: str
    pod: str
    reason: str
    ca: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class Event:
    """A Kubernetes Event on the reconciled resource: what a user must see."""
    type: str
    reason: str
    message: str


Action = (CreatePod | DeletePod | EnsureService | EnsureStatefulSet | CreateSecret | EnsureClaim
          | SyncDisruptionBudget | KillActor | DrainWorker | SyncWorkerGroup | DeleteWorkerGroup)


@dataclass
class Plan:
    """A plan's whole answer: the actions in order, the status to write, the Events to post;
    and for the work queue, the head to watch (`watch`) and the seconds until something is due
    that no event will report (`recheck_s`: a lost node's grace ending, an idle timeout)."""
    actions: list[Action] = field(default_factory=list)
    status: dict[str, Any] = field(default_factory=dict)
    events: list[Event] = field(default_factory=list)
    watch: Target | None = None
    recheck_s: float | None = None


def apply(kube: Kube, head: HeadClient | None, body: dict[str, Any], plan: Plan) -> None:
    """Carries out the plan's actions in order and posts its Events on `body`.

    A GCS kill that fails is logged, not raised: the actor's pods go anyway, and the head
    declares it dead when they do. API errors other than 404/409 propagate (kopf retries).
    """
    ns = body["metadata"]["namespace"]
    for action in plan.actions:
        if isinstance(action, CreatePod):
            _create_pod(kube, body, action)
        elif isinstance(action, DeletePod):
            if kube.delete_pod(ns, action.name, 0 if action.force else None):
                pod_events.deleted(kube, body, action.name, action.role, action.reason, action.why, action.force)
        elif isinstance(action, EnsureService):
            existing = kube.ensure_service(ns, action.service)
            patch = services.service_patch(action.service, existing) if existing is not None else None
            if patch is not None:
                log.info("patching Service %s/%s to %s", ns, action.service["metadata"]["name"], patch["spec"])
                kube.patch_service(ns, action.service["metadata"]["name"], patch)
        elif isinstance(action, EnsureStatefulSet):
            name = action.statefulset["metadata"]["name"]
            if action.patch is None:
                kube.create_statefulset(ns, action.statefulset)
                # Its pod is the StatefulSet controller's to create, so the Event is for the set.
                events.post(kube, body, "Normal", "CreatedStatefulSet",
                            f"Created StatefulSet {name} (RedisMissing: the cluster's managed Redis; "
                            f"its controller creates the pod {name}-0)")
            else:
                log.info("patching StatefulSet %s/%s: its pod template changed", ns, name)
                kube.patch_statefulset(ns, name, action.patch)
        elif isinstance(action, CreateSecret):
            kube.create_secret(ns, action.secret)
        elif isinstance(action, EnsureClaim):
            kube.ensure_claim(ns, action.claim)
        elif isinstance(action, SyncDisruptionBudget):
            _sync_disruption_budget(kube, body, action)
        elif isinstance(action, KillActor):
            if head is None:
                log.warning("no head client: cannot mark actor %s dead", action.actor_id.hex())
                continue
            try:
                head.kill_actor(action.address, action.token, action.actor_id, action.reason, ca=action.ca)
            except grpc.RpcError as e:
                log.warning("could not mark actor %s dead in the GCS at %s: %s", action.actor_id.hex(),
                            action.address, e.code().name)
        elif isinstance(action, DrainWorker):
            _drain_worker(kube, head, body, action)
        elif isinstance(action, SyncWorkerGroup):
            _sync_worker_group(kube, ns, action)
        elif isinstance(action, DeleteWorkerGroup):
            log.info("deleting ActorWorkerGroup %s/%s: its group left the cluster's spec", ns, action.name)
            kube.delete_custom(contract.WORKER_GROUP_PLURAL, ns, action.name)
        else:  # pragma: no cover - a new action type without an executor branch
            raise TypeError(f"no executor for action {action!r}")
    for event in plan.events:
        events.post(kube, body, event.type, event.reason, event.message)


def _drain_worker(kube: Kube, head: HeadClient | None, body: dict[str, Any], action: DrainWorker) -> None:
    """Deletes the worker's pod only once the head accepted the drain (it ran nothing, and takes nothing new)."""
    if head is None:
        log.warning("no head client: not removing worker %s", action.pod)
        return
    try:
        reply = head.drain_node(action.address, action.token, action.node_id, action.reason, ca=action.ca)
    except grpc.RpcError as e:
        log.warning("could not drain worker %s through the head at %s: %s; keeping it", action.pod,
                    action.address, e.code().name)
        return
    if not reply.accepted:
        log.info("not removing worker %s: %s", action.pod, reply.message)
        return
    log.info("removing drained worker %s (%s)", action.pod, action.reason)
    if kube.delete_pod(body["metadata"]["namespace"], action.pod):
        pod_events.deleted(kube, body, action.pod, "worker", "IdleScaleDown", action.reason)


def _sync_worker_group(kube: Kube, ns: str, action: SyncWorkerGroup) -> None:
    if action.create is not None:
        kube.create_custom(contract.WORKER_GROUP_PLURAL, ns, action.create)
        return
    if action.patch is not None:
        log.info("patching ActorWorkerGroup %s/%s: %s", ns, action.name, action.patch)
        kube.patch_custom(contract.WORKER_GROUP_PLURAL, ns, action.name, action.patch)
    if action.status is not None:
        kube.patch_status(contract.WORKER_GROUP_PLURAL, ns, action.name, action.status)


def _sync_disruption_budget(kube: Kube, body: dict[str, Any], action: SyncDisruptionBudget) -> None:
    """One read; a create or a delete only when something is to change."""
    ns = body["metadata"]["namespace"]
    existing = kube.read_pdb(ns, action.name)
    if action.budget is not None and existing is None:
        kube.create_pdb(ns, action.budget)
    elif action.budget is None and existing is not None and controller_uid(existing) == body["metadata"].get("uid"):
        log.info("deleting PodDisruptionBudget %s/%s (spec.disruptionBudget.enabled is false)", ns, action.name)
        kube.delete_pdb(ns, action.name)


def _create_pod(kube: Kube, body: dict[str, Any], action: CreatePod) -> None:
    """Creates the pod and says so; a refused create is a Warning Event (then raised: kopf retries)."""
    try:
        created = kube.create_pod(body["metadata"]["namespace"], action.pod)
    except Exception as e:
        pod_events.failed_create(kube, body, action.pod, action.reason, e)
        raise
    if created is not None:
        pod_events.created(kube, body, created, action.reason, action.why)
