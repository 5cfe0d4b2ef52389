"""Keeping a DetachedActor's pod running while its actor may restart, and mirroring the GCS.

The head owns the actor's lifecycle (restarts per max_restarts, same actor id); this
reconciler owns the pod: it replaces a failed pod while restarts remain, gives up (and
kills the GCS entry, so callers get ActorDiedError) once they are used up, rolls the actor
on a spec change, and copies the live GCS state into status. A spec that can never run
ends in state Dead with a condition and an Event, and no more pods.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

import grpc
from kastor.operator import build_actor, build_cluster, lost_nodes, pod_events, state_status
from kastor.operator import reconcile as skeleton
from kastor.operator.actions import CreatePod, DeletePod, EnsureClaim, Event, KillActor, Plan
from kastor.operator.conditions import get_condition, set_condition
from kastor.operator.head_client import HeadClient, head_ca
from kastor.operator.kube import Kube
from kastor.operator.pods import (
    attempt,
    controller_uid,
    exit_code,
    finished,
    phase,
    ready,
    terminating,
    termination_message,
)
from kastor.operator.spec import ActorSpec, ClusterSpec, SpecError, parse_actor, parse_cluster
from kastor.runtime import k8s_contract as contract
from kastor.runtime import settings
from kastor.runtime.protocol import kastor_pb2 as pb

log = logging.getLogger("kastor.operator.actor")

STATES = {pb.PENDING: "Pending", pb.ALIVE: "Alive", pb.RESTARTING: "Restarting", pb.DEAD: "Dead"}
# Pods that fail before their actor ever registered (head unreachable, image broken, ...)
# are replaced this many times before the operator gives up: a bounded retry, no crash loop.
MAX_EARLY_POD_FAILURES = 3
# A failed pod is replaced at once the first time, then after an exponential back-off
# (like the kubelet's CrashLoopBackOff) while pods keep failing without the actor coming up.
BACKOFF_FIRST_S, BACKOFF_MAX_S = 5.0, 300.0


def backoff_s(failures_in_a_row: int) -> float:
    """Seconds to wait before the next pod after this many failures in a row: 0, 5, 10, 20, ... 300."""
    if failures_in_a_row <= 1:
        return 0.0
    return min(BACKOFF_FIRST_S * 2 ** (failures_in_a_row - 2), BACKOFF_MAX_S)
# The actor's cluster is deleted or suspended: its pods are stopped (and started again with it).
_CLUSTER_GONE = ("ClusterNotFound", "ClusterSuspended")
# Ready-condition reasons that are also posted as a Warning Event when they first appear.
_WARN_ON = ("InvalidSpec", "InvalidName", "ClusterNotFound", "ClusterInvalid")


@dataclass
class Cluster:
    """The ActorCluster an actor runs on, as far as its pods and the head need it."""
    body: dict[str, Any]
    spec: ClusterSpec
    token: str = field(repr=False)
    ca: str | None = field(default=None, repr=False)

    @property
    def address(self) -> str:
        return build_cluster.head_address(self.body, self.spec)


@dataclass
class Observed:
    """What one reconcile of a DetachedActor saw: its pods, its cluster, its GCS record."""
    body: dict[str, Any]
    pods: list[dict[str, Any]] = field(default_factory=list)
    cluster: Cluster | tuple[str, str] = ("WaitingForCluster", "not looked up")  # or (reason, message)
    info: pb.ActorInfo | None = None
    head_reachable: bool = True  # False: the head did not answer (a pod failing now is not the actor's fault)
    now: float = 0.0  # when it was observed (epoch seconds): the plan stays a pure function of what it is given
    checkpoint: dict[str, Any] = field(default_factory=dict)  # spec.state on Redis: last checkpoint's time, size
    # The health of the nodes of its pods that are not Ready or are Terminating (`lost_nodes`).
    nodes: dict[str, lost_nodes.NodeHealth] = field(default_factory=dict)
    lost_node_grace_s: float = 60.0


def reconcile(kube: Kube, head: HeadClient, body: dict[str, Any],
              locks: skeleton.Locks | None = None) -> Plan | None:
    """Reconciles one DetachedActor (observe, plan, act, write status); returns the plan it carried
    out, its status as written (None if it is gone or being deleted)."""
    return skeleton.run(kube, head, locks or skeleton.Locks(), contract.ACTOR_PLURAL, body,
                        lambda fresh: plan(observe(kube, head, fresh)), "state")


def due_in(status: dict[str, Any], watched: bool, poll_s: float, checkpoints: bool = False) -> float | None:
    """Seconds until the actor must be reconciled again with no event (None: the long resync).

    Dead: only a spec change changes it. Alive, with its cluster's head watched (`head_watch`:
    the head says when the actor's record changes): nothing to poll either, unless its status
    mirrors checkpoints (`checkpoints`), which the actor writes to Redis behind the head's back
    and no `checkpoint_watch` reads for it.
    Anything else (starting, restarting, a back-off) is settling: in `poll_s`."""
    state = status.get("state")
    if state == "Dead":
        return None
    if state == "Alive" and watched and not checkpoints:
        return None
    return poll_s


def observe(kube: Kube, head: HeadClient, body: dict[str, Any]) -> Observed:
    """Reads the pods, the cluster and (if the cluster is usable) the actor's GCS record."""
    meta, old = body["metadata"], body.get("status") or {}
    seen = Observed(body, now=time.time())
    try:
        actor = parse_actor(body.get("spec") or {}, meta["name"], meta["namespace"])
    except SpecError:
        return seen
    if len(meta["name"]) > contract.ACTOR_NAME_MAX:
        return seen
    # Only this very DetachedActor's pods, not those of a deleted namesake still terminating.
    seen.pods = [p for p in kube.list_pods(meta["namespace"], {contract.LABEL_ACTOR: meta["name"]})
                 if controller_uid(p) == meta.get("uid")]
    seen.lost_node_grace_s = settings.OPERATOR_LOST_NODE_GRACE_S.get()
    rolling = _changed(old, body.get("spec") or {})
    if old.get("state") == "Dead" and not rolling:
        return seen  # terminal: nothing more to read
    seen.cluster = find_cluster(kube, meta["namespace"], actor)
    if isinstance(seen.cluster, Cluster) and not rolling:
        seen.info, seen.head_reachable = _lookup(head, seen.cluster, actor, old)
        if seen.info is not None:
            c = seen.cluster
            seen.checkpoint = state_status.checkpoint_status(head, c.address, c.token, c.ca, actor)
    seen.nodes = lost_nodes.observe(kube, seen.pods, _vouched(seen))
    return seen


def _vouched(seen: Observed) -> set[str]:
    """The pods Kastor itself sees working: Ready while the GCS has the actor ALIVE (a pod's
    Ready in the API goes stale when its node is lost; the head notices the node's death)."""
    if seen.info is None or seen.info.state != pb.ALIVE:
        return set()
    return {p["metadata"]["name"] for p in seen.pods if ready(p)}


def plan(seen: Observed) -> Plan:
    """Pure: the actions, status and Events that keep the actor's pod in line with its spec and the GCS."""
    body = seen.body
    meta, old = body["metadata"], dict(body.get("status") or {})
    name, ns, generation = meta["name"], meta["namespace"], meta.get("generation")
    out = Plan(status={**old, "observedGeneration": generation})
    out.status.setdefault("restarts", 0)
    spec_hash = build_actor.spec_hash(body.get("spec") or {})

    def finish(state: str, ok: bool, reason: str, message: str) -> Plan:
        out.status.update(state=state, message=message)
        out.status["conditions"] = set_condition(old.get("conditions") or [], "Ready", ok, reason, message,
                                                 generation)
        old_ready = get_condition(old.get("conditions") or [], "Ready")
        if reason in _WARN_ON and (old_ready is None or old_ready.get("reason") != reason):
            out.events.append(Event("Warning", reason, message))
        return out

    try:
        if len(name) > contract.ACTOR_NAME_MAX:
            raise SpecError("InvalidName", f"DetachedActor name {name!r} is longer than {contract.ACTOR_NAME_MAX} "
                                           f"characters: it cannot label the actor's pods")
        actor = parse_actor(body.get("spec") or {}, name, ns)
    except SpecError as e:
        out.status["specHash"] = spec_hash
        return finish("Dead", False, e.reason, e.message)

    if _changed(old, body.get("spec") or {}):
        return _roll(seen, out, finish, spec_hash)
    out.status["specHash"] = spec_hash
    if old.get("state") == "Dead":
        ready_condition = get_condition(old.get("conditions") or [], "Ready")
        return finish("Dead", False, ready_condition["reason"] if ready_condition else "Dead", old.get("message", ""))

    cluster = seen.cluster
    if not isinstance(cluster, Cluster):
        reason, message = cluster
        if reason in _CLUSTER_GONE:
            # Without a head its pod can do nothing: stop it now instead of when its node agent gives up.
            out.actions += [DeletePod(p["metadata"]["name"], reason=reason, why=message, role="actor")
                            for p in seen.pods if not terminating(p)]
            out.status["podName"] = ""  # stopped on purpose: the next pod is no replacement for a failed one
        return finish("Pending", False, reason, message)

    info = seen.info
    if info is not None:
        out.status["actorId"] = info.spec.actor_id.hex()
        out.status["restarts"] = info.num_restarts
        out.status["address"] = info.address
        out.status.update(seen.checkpoint)
        if info.state == pb.DEAD:  # the head gave up (or someone killed it): terminal
            reason = death_reason(info, actor.max_restarts)
            message = f"the actor died: {info.death_cause}"
            out.events.append(Event("Warning", reason, message))
            return finish("Dead", False, reason, message)

    # A pod on a lost node is deleted (or force-deleted) and counts as gone: it is replaced below.
    pods = lost_nodes.settle(seen.pods, seen.nodes, seen.now, seen.lost_node_grace_s, out, _vouched(seen))
    live = [p for p in pods if not terminating(p)]
    current = max(live, key=attempt) if live else None
    if current is None or finished(current):
        outcome = _replace_pod(body, actor, cluster, current, info, out, seen.head_reachable, seen.now)
        if outcome is not None:
            return finish(*outcome)
    else:
        out.status["podName"] = current["metadata"]["name"]
        if info is not None and info.state == pb.ALIVE and out.status.get("podFailuresInARow"):
            out.status["podFailuresInARow"] = 0  # it came up: the next failure is replaced at once again
    if info is None:
        return finish("Pending", False, "ActorStarting", f"pod {out.status.get('podName')} is starting the actor")
    state = STATES[info.state]
    message = f"actor {actor.name!r} in namespace {actor.namespace!r} is {state}" + \
        (f" at {info.address}" if info.address else "")
    return finish(state, info.state == pb.ALIVE, state, message)


def _changed(status: dict[str, Any], spec: dict[str, Any]) -> bool:
    """Whether the spec differs from the one the actor runs (status.specHash, either scheme)."""
    old = status.get("specHash")
    return bool(old) and old not in (build_actor.spec_hash(spec), build_actor.legacy_spec_hash(spec))


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


def find_cluster(kube: Kube, ns: str, actor: ActorSpec) -> Cluster | tuple[str, str]:
    """The actor's cluster with its token, or (reason, message) why it cannot be used now."""
    body = kube.get_custom(contract.CLUSTER_PLURAL, ns, actor.cluster)
    if body is None:
        return "ClusterNotFound", f"ActorCluster {actor.cluster!r} does not exist in namespace {ns!r}"
    try:
        spec = parse_cluster(body.get("spec") or {})
    except SpecError as e:
        return "ClusterInvalid", f"ActorCluster {actor.cluster!r} is invalid: {e.message}"
    if spec.suspend:
        return "ClusterSuspended", f"ActorCluster {actor.cluster!r} is suspended"
    waiting = waiting_for_head(body)
    if waiting:
        return "WaitingForHead", waiting
    secret = kube.get_secret(ns, build_cluster.token_secret_name(body, spec)) or {}
    token = secret.get(spec.token_key)
    if not token:
        return "WaitingForCluster", f"ActorCluster {actor.cluster!r} has no token yet"
    return Cluster(body, spec, token, head_ca(kube, ns, spec))


def waiting_for_head(cluster_body: dict[str, Any]) -> str | None:
    """Why an actor pod must not start yet (its cluster's HeadReady is not True), or None.

    A pod started before the head answers has nothing to join: on a real cluster (image
    pulls, scheduling, node scale-up) it would fail and count against the actor."""
    head_ready = get_condition((cluster_body.get("status") or {}).get("conditions") or [], "HeadReady")
    if head_ready and head_ready.get("status") == "True":
        return None
    why = head_ready.get("message") if head_ready else "the cluster has no status yet"
    return f"ActorCluster {cluster_body['metadata']['name']!r}'s head is not ready: {why}"


def _lookup(head: HeadClient, cluster: Cluster, actor: ActorSpec,
            old: dict[str, Any]) -> tuple[pb.ActorInfo | None, bool]:
    """The actor's record (by the id we saw before, which survives death, else by name) and
    whether the head answered at all."""
    try:
        if old.get("actorId"):
            info = head.get_actor(cluster.address, cluster.token, actor_id=bytes.fromhex(old["actorId"]),
                                  ca=cluster.ca)
            if info is not None:
                return info, True
        return head.get_actor(cluster.address, cluster.token, name=actor.name, namespace=actor.namespace,
                              ca=cluster.ca), True
    except grpc.RpcError as e:
        log.info("head %s unreachable for actor %s: %s", cluster.address, actor.name, e.code().name)
        return None, False


def _restarts_used(info: pb.ActorInfo) -> int:
    """Restarts consumed once the failed pod's loss is counted (the head may not have seen it yet)."""
    return info.num_restarts + (1 if info.state == pb.ALIVE else 0)


def _replace_pod(body: dict[str, Any], actor: ActorSpec, cluster: Cluster, current: dict[str, Any] | None,
                 info: pb.ActorInfo | None, out: Plan, head_reachable: bool = True,
                 now: float = 0.0) -> tuple[str, bool, str, str] | None:
    """Plans the next pod, or returns the (state, ok, reason, message) to finish with instead:
    terminal (Dead), or Pending in BackOff until status.nextPodAfter."""
    status = out.status
    lost = current["metadata"]["name"] if current is not None else status.get("podName")
    if lost:  # a pod ran and is gone: failed (crash, eviction) or deleted
        last_words = termination_message(current) if current is not None else ""
        if current is None:
            why = "it was deleted"
        else:
            why = f"exit code {exit_code(current)}" + (f", last log line: {last_words}" if last_words else "")
        if current is not None and exit_code(current) in contract.TERMINAL_EXIT_CODES:
            reason = last_words.split(":", 1)[0] if ":" in last_words else "ActorDied"
            out.events.append(Event("Warning", reason, f"pod {lost}: {last_words}"))
            return "Dead", False, reason, last_words or why
        out.events.append(Event("Warning", "PodFailed",
                                f"pod {lost} {phase(current).lower() if current else 'gone'}: {why}"))
        if info is None and not head_reachable:
            pass  # the head did not answer: the pod's failure says nothing about the actor
        elif info is None:
            failures = int(status.get("earlyPodFailures", 0)) + 1
            status["earlyPodFailures"] = failures
            if failures > MAX_EARLY_POD_FAILURES:
                return "Dead", False, "PodFailing", f"{failures} pods failed before the actor registered; " \
                                                    f"last: {why}"
        elif actor.max_restarts != -1 and _restarts_used(info) > actor.max_restarts:
            cause = f"its pod {lost} failed ({why}) and maxRestarts={actor.max_restarts} is used up"
            out.actions.append(KillActor(cluster.address, cluster.token, info.spec.actor_id, cause, cluster.ca))
            status["restarts"] = info.num_restarts
            out.events.append(Event("Warning", "MaxRestartsExceeded", cause))
            return "Dead", False, "MaxRestartsExceeded", cause
        in_a_row = int(status.get("podFailuresInARow", 0)) + 1
        status["podFailuresInARow"] = in_a_row
        delay = backoff_s(in_a_row)
        if delay:
            status.update(nextPodAfter=int(now + delay), podName="", attempt=attempt(current) if current else
                          int(status.get("attempt", 0)))
            if current is not None:
                out.actions.append(DeletePod(current["metadata"]["name"], reason="PodFailed", role="actor",
                                             why=f"failed ({why}); the next pod starts after a back-off"))
            return "Pending", False, "BackOff", f"pod {lost} failed ({why}), {in_a_row} in a row: the next " \
                                                f"starts in {delay:.0f} s"
    elif now < float(status.get("nextPodAfter") or 0):
        wait = float(status["nextPodAfter"]) - now
        return "Pending", False, "BackOff", f"{status.get('podFailuresInARow', 0)} pods failed in a row: the " \
                                            f"next starts in {wait:.0f} s"
    next_attempt = (attempt(current) if current else int(status.get("attempt", 0))) + 1
    pod = build_actor.actor_pod(body, actor, cluster.body, cluster.spec, next_attempt)
    if actor.state is not None and actor.state.store == "volume":  # durable state on a volume: its claim first
        out.actions.append(EnsureClaim(build_actor.state_claim(body, actor)))
    out.actions.append(CreatePod(pod, "ReplacingPod" if current is not None else "ActorPodMissing",
                                 f"attempt {next_attempt}" + (f", replacing pod {current['metadata']['name']}"
                                                              if current is not None else "")))
    status["attempt"] = next_attempt
    status["podName"] = pod["metadata"]["name"]
    if current is not None:  # keep one pod per actor; its failure is in the Event
        out.actions.append(DeletePod(current["metadata"]["name"], reason="Replaced", role="actor",
                                     why=f"attempt {next_attempt} replaces it"))
    return None


def _roll(seen: Observed, out: Plan, finish, spec_hash: str) -> Plan:
    """A changed spec replaces the actor: kill the old one, remove its pods, start afresh."""
    cluster, status = seen.cluster, out.status
    if status.get("actorId") and isinstance(cluster, Cluster):
        out.actions.append(KillActor(cluster.address, cluster.token, bytes.fromhex(status["actorId"]),
                                     "its spec changed", cluster.ca))
    out.actions += [DeletePod(p["metadata"]["name"], reason="SpecChanged", role="actor",
                              why="the spec changed: the actor is replaced") for p in seen.pods if not terminating(p)]
    status.update(specHash=spec_hash, restarts=0, earlyPodFailures=0, address="", podName="",
                  actorId=None)  # None: the merge patch removes the old actor's id
    out.events.append(Event("Normal", "Rolling", "spec changed: replacing the actor with a new one"))
    return finish("Pending", False, "Rolling", "spec changed: replacing the actor")


def delete(kube: Kube, head: HeadClient, body: dict[str, Any]) -> None:
    """Finalizer: kill the actor in the GCS (if the cluster is still there) and remove its pods."""
    meta = body["metadata"]
    ns, name = meta["namespace"], meta["name"]
    try:
        actor = parse_actor(body.get("spec") or {}, name, ns)
    except SpecError:
        actor = None
    if actor is not None:
        cluster = find_cluster(kube, ns, actor)
        if isinstance(cluster, Cluster):
            info, _ = _lookup(head, cluster, actor, body.get("status") or {})
            if info is not None and info.state != pb.DEAD:
                try:
                    head.kill_actor(cluster.address, cluster.token, info.spec.actor_id,
                                    f"DetachedActor {ns}/{name} was deleted", ca=cluster.ca)
                except grpc.RpcError as e:
                    log.warning("could not kill actor %s on deletion: %s", name, e.code().name)
    for pod in kube.list_pods(ns, {contract.LABEL_ACTOR: name}, live=True):
        if kube.delete_pod(ns, pod["metadata"]["name"]):
            pod_events.deleted(kube, body, pod["metadata"]["name"], "actor", "ActorDeleted",
                               "the DetachedActor was deleted")
