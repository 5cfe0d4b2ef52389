"""Keeping a DetachedActor's pod running while its actor may restart, and mirroring the GCS.

The head owns the actor's lifecycle (restarts per max_restarts, same actor id); this
reconciler owns the pod: it replaces a failed pod while restarts remain, gives up (and
kills the GCS entry, so callers get ActorDiedError) once they are used up, rolls the actor
on a spec change, and copies the live GCS state into status. A spec that can never run
ends in state Dead with a condition and an Event, and no more pods.
"""

from __future__ import annotations

import logging
import threading
from collections import defaultdict
from typing import Any

import grpc
from kastor.operator import build_actor, build_cluster, events
from kastor.operator.conditions import get_condition, same_ignoring_time, set_condition
from kastor.operator.head_client import HeadClient, head_ca
from kastor.operator.kube import Kube
from kastor.operator.pods import attempt, exit_code, finished, phase, terminating, termination_message
from kastor.operator.spec import ActorSpec, ClusterSpec, SpecError, parse_actor, parse_cluster
from kastor.runtime import k8s_contract as contract
from kastor.runtime.protocol import kastor_pb2 as pb

log = logging.getLogger("kastor.operator.actor")

_locks: defaultdict[tuple[str, str], threading.Lock] = defaultdict(threading.Lock)
STATES = {pb.PENDING: "Pending", pb.ALIVE: "Alive", pb.RESTARTING: "Restarting", pb.DEAD: "Dead"}
# Pods that fail before their actor ever registered (head unreachable, image broken, ...)
# are replaced this many times before the operator gives up: a bounded retry, no crash loop.
MAX_EARLY_POD_FAILURES = 3


class _Cluster:
    def __init__(self, body: dict[str, Any], spec: ClusterSpec, token: str, ca: str | None):
        self.body, self.spec, self.token, self.ca = body, spec, token, ca
        self.address = build_cluster.head_address(body, spec)


def reconcile(kube: Kube, gcs: HeadClient, body: dict[str, Any]) -> dict[str, Any]:
    """Reconciles one DetachedActor, re-read under its lock (callers may hold a stale copy)."""
    meta = body["metadata"]
    with _locks[(meta["namespace"], meta["name"])]:
        fresh = kube.get_custom(contract.ACTOR_PLURAL, meta["namespace"], meta["name"])
        if fresh is None or fresh["metadata"].get("deletionTimestamp"):
            return (fresh or body).get("status") or {}
        return _reconcile(kube, gcs, fresh)


def _reconcile(kube: Kube, gcs: HeadClient, body: dict[str, Any]) -> dict[str, Any]:
    meta, old = body["metadata"], dict(body.get("status") or {})
    name, ns, generation = meta["name"], meta["namespace"], meta.get("generation")
    status: dict[str, Any] = {**old, "observedGeneration": generation}
    status.setdefault("restarts", 0)
    spec_hash = build_actor.spec_hash(body.get("spec") or {})

    def finish(state: str, ok: bool, reason: str, message: str) -> dict[str, Any]:
        status.update(state=state, message=message)
        status["conditions"] = set_condition(old.get("conditions") or [], "Ready", ok, reason, message, generation)
        return _write(kube, body, old, status)

    try:
        actor = parse_actor(body.get("spec") or {}, name, ns)
    except SpecError as e:
        status["specHash"] = spec_hash
        return finish("Dead", False, e.reason, e.message)

    pods = kube.list_pods(ns, {contract.LABEL_ACTOR: name})
    if old.get("specHash") and old["specHash"] != spec_hash:
        return _roll(kube, gcs, body, actor, pods, status, finish, spec_hash)
    status["specHash"] = spec_hash
    if old.get("state") == "Dead":
        return finish("Dead", False, get_condition(old.get("conditions") or [], "Ready")["reason"]
                      if get_condition(old.get("conditions") or [], "Ready") else "Dead", old.get("message", ""))

    cluster = _cluster(kube, ns, actor)
    if isinstance(cluster, tuple):
        reason, message = cluster
        return finish("Pending", False, reason, message)

    info = _lookup(gcs, cluster, actor, old)
    if info is not None:
        status["actorId"] = info.spec.actor_id.hex()
        status["restarts"] = info.num_restarts
        status["address"] = info.address
        if info.state == pb.DEAD:  # the head gave up (or someone killed it): terminal
            reason = death_reason(info, actor.max_restarts)
            message = f"the actor died: {info.death_cause}"
            events.post(body, "Warning", reason, message)
            return finish("Dead", False, reason, message)

    live = [p for p in pods if not terminating(p)]
    current = max(live, key=attempt) if live else None
    if current is None or finished(current):
        outcome = _replace_pod(kube, gcs, body, actor, cluster, current, info, status)
        if outcome is not None:
            return finish(*outcome)
    else:
        status["podName"] = current["metadata"]["name"]
    if info is None:
        return finish("Pending", False, "ActorStarting", f"pod {status.get('podName')} is starting the actor")
    state = STATES[info.state]
    message = f"actor {actor.name!r} in namespace {actor.namespace!r} is {state}" + \
        (f" at {info.address}" if info.address else "")
    return finish(state, info.state == pb.ALIVE, state, message)


def death_reason(info: pb.ActorInfo, max_restarts: int) -> str:
    """Why a DEAD actor died, as a condition and Event reason.

    Two observers see the same death: this reconciler (reading the GCS) and the actor's
    pod (which exits with its own reason as the termination message, see
    `kastor actor-pod`). Whichever is first writes the condition, so both must classify it
    alike: a constructor that raised (the GCS keeps its error) is ConstructorFailed, as the
    pod says; restarts used up is MaxRestartsExceeded; anything else (killed) ActorDied.
    """
    if info.death_error.data or info.death_error.location.path:
        return "ConstructorFailed"
    if max_restarts > 0 and info.num_restarts >= max_restarts and not info.killed:
        return "MaxRestartsExceeded"
    return "ActorDied"


def _cluster(kube: Kube, ns: str, actor: ActorSpec) -> _Cluster | tuple[str, str]:
    body = kube.get_custom(contract.CLUSTER_PLURAL, ns, actor.cluster)
    if body is None:
        return "ClusterNotFound", f"ActorCluster {actor.cluster!r} does not exist in namespace {ns!r}"
    try:
        spec = parse_cluster(body.get("spec") or {})
    except SpecError as e:
        return "ClusterInvalid", f"ActorCluster {actor.cluster!r} is invalid: {e.message}"
    if spec.suspend:
        return "ClusterSuspended", f"ActorCluster {actor.cluster!r} is suspended"
    secret = kube.get_secret(ns, build_cluster.token_secret_name(body, spec)) or {}
    token = secret.get(spec.token_key)
    if not token:
        return "WaitingForCluster", f"ActorCluster {actor.cluster!r} has no token yet"
    return _Cluster(body, spec, token, head_ca(kube, ns, spec))


def _lookup(gcs: HeadClient, cluster: _Cluster, actor: ActorSpec, old: dict[str, Any]) -> pb.ActorInfo | None:
    """The actor's record: by the id we saw before (it survives death), else by name."""
    try:
        if old.get("actorId"):
            info = gcs.get_actor(cluster.address, cluster.token, actor_id=bytes.fromhex(old["actorId"]), ca=cluster.ca)
            if info is not None:
                return info
        return gcs.get_actor(cluster.address, cluster.token, name=actor.name, namespace=actor.namespace, ca=cluster.ca)
    except grpc.RpcError as e:
        log.info("head %s unreachable for actor %s: %s", cluster.address, actor.name, e.code().name)
        return None


def _restarts_used(info: pb.ActorInfo) -> int:
    """Restarts consumed once the failed pod's loss is counted (the head may not have seen it yet)."""
    return info.num_restarts + (1 if info.state == pb.ALIVE else 0)


def _replace_pod(kube: Kube, gcs: HeadClient, body: dict[str, Any], actor: ActorSpec, cluster: _Cluster,
                 current: dict[str, Any] | None, info: pb.ActorInfo | None,
                 status: dict[str, Any]) -> tuple[str, bool, str, str] | None:
    """Creates the next pod, or returns the terminal (state, ok, reason, message) if it must not."""
    ns = body["metadata"]["namespace"]
    lost = current["metadata"]["name"] if current is not None else status.get("podName")
    if lost:  # a pod ran and is gone: failed (crash, eviction) or deleted
        last_words = termination_message(current) if current is not None else ""
        if current is None:
            why = "it was deleted"
        else:
            why = f"exit code {exit_code(current)}" + (f", last log line: {last_words}" if last_words else "")
        if current is not None and exit_code(current) in contract.TERMINAL_EXIT_CODES:
            reason = last_words.split(":", 1)[0] if ":" in last_words else "ActorDied"
            events.post(body, "Warning", reason, f"pod {lost}: {last_words}")
            return "Dead", False, reason, last_words or why
        events.post(body, "Warning", "PodFailed", f"pod {lost} {phase(current).lower() if current else 'gone'}: {why}")
        if info is None:
            failures = int(status.get("earlyPodFailures", 0)) + 1
            status["earlyPodFailures"] = failures
            if failures > MAX_EARLY_POD_FAILURES:
                return "Dead", False, "PodFailing", f"{failures} pods failed before the actor registered; " \
                                                    f"last: {why}"
        elif actor.max_restarts != -1 and _restarts_used(info) > actor.max_restarts:
            cause = f"its pod {lost} failed ({why}) and maxRestarts={actor.max_restarts} is used up"
            try:
                gcs.kill_actor(cluster.address, cluster.token, info.spec.actor_id, cause, ca=cluster.ca)
            except grpc.RpcError as e:
                log.warning("could not mark actor %s dead in the GCS: %s", actor.name, e.code().name)
            status["restarts"] = info.num_restarts
            events.post(body, "Warning", "MaxRestartsExceeded", cause)
            return "Dead", False, "MaxRestartsExceeded", cause
    next_attempt = (attempt(current) if current else int(status.get("attempt", 0))) + 1
    pod = build_actor.actor_pod(body, actor, cluster.body, cluster.spec, next_attempt)
    kube.create_pod(ns, pod)
    status["attempt"] = next_attempt
    status["podName"] = pod["metadata"]["name"]
    if current is not None:
        kube.delete_pod(ns, current["metadata"]["name"])  # keep one pod per actor; its failure is in the Event
    return None


def _roll(kube: Kube, gcs: HeadClient, body: dict[str, Any], actor: ActorSpec, pods: list[dict[str, Any]],
          status: dict[str, Any], finish, spec_hash: str) -> dict[str, Any]:
    """A changed spec replaces the actor: kill the old one, remove its pods, start afresh."""
    ns = body["metadata"]["namespace"]
    cluster = _cluster(kube, ns, actor)
    if status.get("actorId") and isinstance(cluster, _Cluster):
        try:
            gcs.kill_actor(cluster.address, cluster.token, bytes.fromhex(status["actorId"]), "its spec changed",
                           ca=cluster.ca)
        except grpc.RpcError as e:
            log.warning("could not kill actor %s for a spec change: %s", actor.name, e.code().name)
    for pod in pods:
        if not terminating(pod):
            kube.delete_pod(ns, pod["metadata"]["name"])
    status.update(specHash=spec_hash, restarts=0, earlyPodFailures=0, address="", podName="",
                  actorId=None)  # None: the merge patch removes the old actor's id
    events.post(body, "Normal", "Rolling", "spec changed: replacing the actor with a new one")
    return finish("Pending", False, "Rolling", "spec changed: replacing the actor")


def delete(kube: Kube, gcs: HeadClient, body: dict[str, Any]) -> None:
    """Finalizer: kill the actor in the GCS (if the cluster is still there) and remove its pods."""
    meta = body["metadata"]
    ns, name = meta["namespace"], meta["name"]
    try:
        actor = parse_actor(body.get("spec") or {}, name, ns)
    except SpecError:
        actor = None
    if actor is not None:
        cluster = _cluster(kube, ns, actor)
        if isinstance(cluster, _Cluster):
            info = _lookup(gcs, cluster, actor, body.get("status") or {})
            if info is not None and info.state != pb.DEAD:
                try:
                    gcs.kill_actor(cluster.address, cluster.token, info.spec.actor_id,
                                   f"DetachedActor {ns}/{name} was deleted", ca=cluster.ca)
                except grpc.RpcError as e:
                    log.warning("could not kill actor %s on deletion: %s", name, e.code().name)
    for pod in kube.list_pods(ns, {contract.LABEL_ACTOR: name}):
        kube.delete_pod(ns, pod["metadata"]["name"])


def _write(kube: Kube, body: dict[str, Any], old: dict[str, Any], status: dict[str, Any]) -> dict[str, Any]:
    meta = body["metadata"]
    old_ready = get_condition(old.get("conditions") or [], "Ready")
    new_ready = get_condition(status["conditions"], "Ready")
    if new_ready and new_ready["reason"] in ("InvalidSpec", "ClusterNotFound", "ClusterInvalid") and \
            (old_ready is None or old_ready.get("reason") != new_ready["reason"]):
        events.post(body, "Warning", new_ready["reason"], new_ready["message"])
    if old.get("state") != status.get("state"):
        log.info("DetachedActor %s/%s: %s -> %s (%s)", meta["namespace"], meta["name"], old.get("state"),
                 status.get("state"), status.get("message"))
    if not same_ignoring_time(old, status):
        kube.patch_status(contract.ACTOR_PLURAL, meta["namespace"], meta["name"], status)
    return status
