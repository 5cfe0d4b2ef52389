"""The reconcile plans, in-process: plain dicts of what was observed in, actions out.

No API server and no head: each case builds what `observe` would have seen and checks
the decision (`plan(observed) -> actions, status, events`), as KubeRay tests its
reconcilers against a fake client. The real-control-plane suites (test_real_*.py,
test_operator_real.py) prove the executor and the wiring; these prove the decisions, fast.
"""

from __future__ import annotations

import copy
import datetime

import pytest
from kastor.operator import actor_reconciler as actors
from kastor.operator import build_actor, build_cluster, lost_nodes, rollout, worker_groups
from kastor.operator import cluster_reconciler as clusters
from kastor.operator.actions import (
    CreatePod,
    CreateSecret,
    DeletePod,
    EnsureService,
    EnsureStatefulSet,
    KillActor,
    SyncDisruptionBudget,
)
from kastor.operator.conditions import get_condition
from kastor.operator.spec import SpecError, parse_cluster
from kastor.runtime import k8s_contract as contract
from kastor.runtime.protocol import kastor_pb2 as pb

UID = "0f0e0d0c-0000-4000-8000-000000000001"


def cr(kind: str, name: str, spec: dict, status: dict | None = None) -> dict:
    body = {"apiVersion": contract.API_VERSION, "kind": kind, "spec": spec,
            "metadata": {"name": name, "namespace": "team", "uid": UID, "generation": 1}}
    if status is not None:
        body["status"] = status
    return body


def pod(name: str, role: str, *, phase: str = "Running", ready: bool = True, ip: str = "", group: str = "",
        actor: str = "", attempt: int = 0, exit_code: int | None = None, message: str = "", created: str = "",
        deleting: bool = False, owner: str = UID) -> dict:
    labels = {**contract.cluster_labels("demo", role)}
    if group:
        labels[contract.LABEL_GROUP] = group
    if actor:
        labels[contract.LABEL_ACTOR] = actor
    meta = {"name": name, "labels": labels, "annotations": {contract.ANNOTATION_ATTEMPT: str(attempt)},
            "creationTimestamp": created or "2026-01-01T00:00:00Z",
            "ownerReferences": [{"apiVersion": contract.API_VERSION, "kind": "ActorCluster", "name": "demo",
                                 "uid": owner, "controller": True, "blockOwnerDeletion": True}]}
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T00:01:00Z"
    status: dict = {"phase": phase, "podIP": ip,
                    "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}
    if exit_code is not None:
        status["containerStatuses"] = [{"name": contract.CONTAINER, "state": {
            "terminated": {"exitCode": exit_code, "message": message}}}]
    return {"metadata": meta, "spec": {"containers": [{"name": contract.CONTAINER}]}, "status": status}


def kinds(plan) -> list[str]:
    return [type(a).__name__ for a in plan.actions]


def created_pods(plan) -> list[dict]:
    return [a.pod for a in plan.actions if isinstance(a, CreatePod)]


def deleted(plan) -> list[str]:
    return [a.name for a in plan.actions if isinstance(a, DeletePod)]


def reasons(plan) -> list[str]:
    return [e.reason for e in plan.events]


# The head and dashboard Services, and the head's and Redis's disruption budgets (or their removal).
EVERY_RECONCILE = ["EnsureService", "EnsureService", "SyncDisruptionBudget", "SyncDisruptionBudget"]
CLUSTER_SPEC = {"image": "kastor:dev", "workerGroups": [{"name": "cpu", "replicas": 2}]}


# ---- ActorCluster ----

def test_a_new_cluster_gets_its_secret_service_head_and_workers():
    body = cr("ActorCluster", "demo", CLUSTER_SPEC)
    out = clusters.plan(clusters.Observed(body, token_secret_exists=False, new_token="t", new_redis_password="p"))
    # each group's ActorWorkerGroup (its scale subresource) is created with the cluster
    assert kinds(out) == ["CreateSecret", *EVERY_RECONCILE, "CreatePod", "SyncWorkerGroup"]
    secret = next(a.secret for a in out.actions if isinstance(a, CreateSecret))
    assert secret["stringData"] == {contract.TOKEN_KEY: "t", contract.REDIS_PASSWORD_KEY: "p"}
    roles = [p["metadata"]["labels"][contract.LABEL_ROLE] for p in created_pods(out)]
    assert roles == ["head"]  # workers wait for the head (issue 12 defect 3)
    assert reasons(out) == ["TokenCreated"]
    assert out.status["phase"] == "Pending" and out.status["desiredWorkers"] == 2


def test_an_invalid_cluster_spec_fails_with_one_event_per_new_message():
    body = cr("ActorCluster", "demo", {"workerGroups": []})
    first = clusters.plan(clusters.Observed(body))
    assert first.actions == [] and first.status["phase"] == "Failed" and reasons(first) == ["InvalidSpec"]
    again = clusters.plan(clusters.Observed({**body, "status": first.status}))
    assert again.events == [] and again.status["phase"] == "Failed"


def test_a_ready_cluster_needs_nothing():
    body = cr("ActorCluster", "demo", CLUSTER_SPEC, {"phase": "Ready"})
    pods = [pod("demo-head", "head", ip="10.0.0.1"),
            pod("w1", "worker", group="cpu", ip="10.0.0.2"), pod("w2", "worker", group="cpu", ip="10.0.0.3")]
    group = worker_groups.build(body, parse_cluster(CLUSTER_SPEC).worker_groups[0], 2)
    group["metadata"]["generation"] = 1
    group["status"] = {"replicas": 2, "readyReplicas": 2, "desiredReplicas": 2, "minReplicas": 0,
                       "maxReplicas": 1000, "autoscaling": False, "observedGeneration": 1,
                       "selector": "kastor.dev/cluster=demo,kastor.dev/role=worker,kastor.dev/worker-group=cpu"}
    out = clusters.plan(clusters.Observed(body, pods, registered={"10.0.0.1", "10.0.0.2", "10.0.0.3"},
                                          head_asked=True, worker_groups={"cpu": group}))
    assert kinds(out) == EVERY_RECONCILE and out.events == []
    assert out.status["phase"] == "Ready" and out.status["readyWorkers"] == 2


def test_a_worker_counts_as_ready_only_once_its_node_joined():
    body = cr("ActorCluster", "demo", CLUSTER_SPEC, {"phase": "Pending"})
    pods = [pod("demo-head", "head", ip="10.0.0.1"),
            pod("w1", "worker", group="cpu", ip="10.0.0.2"), pod("w2", "worker", group="cpu", ip="10.0.0.3")]
    out = clusters.plan(clusters.Observed(body, pods, registered={"10.0.0.1", "10.0.0.2"}, head_asked=True))
    assert out.status["readyWorkers"] == 1 and out.status["phase"] == "Pending"


def test_a_head_that_does_not_answer_degrades_a_ready_cluster():
    body = cr("ActorCluster", "demo", CLUSTER_SPEC, {"phase": "Ready"})
    pods = [pod("demo-head", "head", ip="10.0.0.1")]
    out = clusters.plan(clusters.Observed(body, pods, registered=None, head_asked=True))
    assert get_condition(out.status["conditions"], "HeadReady")["reason"] == "HeadUnreachable"
    assert out.status["phase"] == "Degraded"


def test_a_failed_head_is_deleted_then_recreated():
    body = cr("ActorCluster", "demo", {"image": "kastor:dev"}, {"phase": "Ready"})
    failed = pod("demo-head", "head", phase="Failed", ready=False, exit_code=1, message="boom")
    out = clusters.plan(clusters.Observed(body, [failed]))
    assert deleted(out) == ["demo-head"] and created_pods(out) == [] and reasons(out) == ["HeadPodFailed"]
    assert "boom" in out.events[0].message
    gone = clusters.plan(clusters.Observed(body, []))
    assert [p["metadata"]["labels"][contract.LABEL_ROLE] for p in created_pods(gone)] == ["head"]


def test_suspending_deletes_every_head_and_worker_pod():
    body = cr("ActorCluster", "demo", {**CLUSTER_SPEC, "suspend": True}, {"phase": "Ready"})
    pods = [pod("demo-head", "head"), pod("w1", "worker", group="cpu"), pod("w2", "worker", group="cpu", deleting=True)]
    out = clusters.plan(clusters.Observed(body, pods))
    assert sorted(deleted(out)) == ["demo-head", "w1"] and created_pods(out) == []
    assert out.status["phase"] == "Suspended" and out.status["desiredWorkers"] == 0


def test_scale_down_removes_not_ready_then_newest_workers():
    body = cr("ActorCluster", "demo", {"image": "kastor:dev", "workerGroups": [{"name": "cpu", "replicas": 1}]})
    pods = [pod("demo-head", "head"), pod("old", "worker", group="cpu", created="2026-01-01T00:00:00Z"),
            pod("new", "worker", group="cpu", created="2026-01-02T00:00:00Z"),
            pod("sick", "worker", group="cpu", ready=False, created="2025-12-01T00:00:00Z"),
            pod("orphan", "worker", group="gone")]
    out = clusters.plan(clusters.Observed(body, pods))
    assert sorted(deleted(out)) == ["new", "orphan", "sick"] and created_pods(out) == []


def test_a_managed_redis_is_planned_before_the_head():
    body = cr("ActorCluster", "demo", {"image": "kastor:dev", "gcs": {"redis": {"managed": True}}})
    out = clusters.plan(clusters.Observed(body))
    services = [a.service["metadata"]["name"] for a in out.actions if isinstance(a, EnsureService)]
    assert services == ["demo-redis", "demo-head", "demo-dashboard"]
    assert kinds(out).index("EnsureStatefulSet") < kinds(out).index("CreatePod")
    assert [p["metadata"]["labels"][contract.LABEL_ROLE] for p in created_pods(out)] == ["head"]
    assert get_condition(out.status["conditions"], "GcsReady")["reason"] == "RedisStarting"


# ---- issue 12 defect 13: the managed Redis is a StatefulSet ----

REDIS_SPEC = {"image": "kastor:dev", "gcs": {"redis": {"managed": True, "storage": {"size": "2Gi"}}}}
SET_UID = "5e7a0000-0000-4000-8000-000000000005"


def stored_set(spec: dict, owner: str = UID, **annotations: str) -> dict:
    """The StatefulSet as the API server would return it after the operator created it for `spec`."""
    built = build_cluster.redis_statefulset(cr("ActorCluster", "demo", spec), parse_cluster(spec))
    stored = copy.deepcopy(built)
    stored["metadata"]["uid"] = SET_UID
    stored["metadata"]["ownerReferences"][0]["uid"] = owner
    stored["metadata"]["annotations"].update(annotations)
    return stored


def set_pod(name: str = "demo-redis-0", **kw) -> dict:
    """A pod of the Redis StatefulSet: controlled by the StatefulSet, not the cluster."""
    p = pod(name, "redis", **kw)
    p["metadata"]["ownerReferences"] = [{"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "demo-redis",
                                         "uid": SET_UID, "controller": True}]
    return p


def statefulsets(plan) -> list[EnsureStatefulSet]:
    return [a for a in plan.actions if isinstance(a, EnsureStatefulSet)]


def test_the_redis_statefulset_is_created_once_and_its_ready_pod_makes_the_gcs_ready():
    body = cr("ActorCluster", "demo", REDIS_SPEC)
    first = clusters.plan(clusters.Observed(body))
    assert [a.patch for a in statefulsets(first)] == [None]
    seen = clusters.Observed(body, [set_pod()], redis_set=stored_set(REDIS_SPEC))
    out = clusters.plan(seen)
    assert statefulsets(out) == [] and deleted(out) == []
    gcs = get_condition(out.status["conditions"], "GcsReady")
    assert (gcs["status"], gcs["reason"]) == ("True", "ManagedRedisReady")


def test_a_redis_pod_that_is_not_ready_says_why():
    body = cr("ActorCluster", "demo", REDIS_SPEC)
    stuck = set_pod(phase="Pending", ready=False)
    stuck["status"]["containerStatuses"] = [{"name": "redis", "state": {"waiting": {
        "reason": "ImagePullBackOff", "message": "Back-off pulling image"}}}]
    out = clusters.plan(clusters.Observed(body, [stuck], redis_set=stored_set(REDIS_SPEC)))
    gcs = get_condition(out.status["conditions"], "GcsReady")
    assert gcs["status"] == "False" and gcs["reason"] == "ImagePullBackOff" and "demo-redis-0" in gcs["message"]


def test_a_changed_redis_image_patches_the_statefulsets_template():
    body = cr("ActorCluster", "demo", {**REDIS_SPEC, "gcs": {"redis": {**REDIS_SPEC["gcs"]["redis"],
                                                                         "image": "redis:7.4"}}})
    out = clusters.plan(clusters.Observed(body, [set_pod()], redis_set=stored_set(REDIS_SPEC)))
    [action] = statefulsets(out)
    assert action.patch["spec"]["template"]["spec"]["containers"][0]["image"] == "redis:7.4"
    assert action.patch["metadata"]["annotations"][contract.ANNOTATION_SPEC_HASH] == \
        action.statefulset["metadata"]["annotations"][contract.ANNOTATION_SPEC_HASH]


def test_a_changed_storage_is_reported_not_applied():
    """volumeClaimTemplates cannot change: the StatefulSet keeps what it was made with."""
    body = cr("ActorCluster", "demo", {**REDIS_SPEC, "gcs": {"redis": {"managed": True, "storage": {"size": "9Gi"}}}})
    out = clusters.plan(clusters.Observed(body, [set_pod()], redis_set=stored_set(REDIS_SPEC)))
    assert statefulsets(out) == []
    gcs = get_condition(out.status["conditions"], "GcsReady")
    assert gcs["status"] == "True" and "storage is not applied" in gcs["message"] and "2Gi" in gcs["message"]


def test_an_earlier_clusters_redis_statefulset_is_not_adopted():
    body = cr("ActorCluster", "demo", REDIS_SPEC)
    out = clusters.plan(clusters.Observed(body, [], redis_set=stored_set(REDIS_SPEC, owner="an-earlier-uid")))
    assert statefulsets(out) == []
    assert get_condition(out.status["conditions"], "GcsReady")["reason"] == "WaitingForOldRedis"


def test_a_bare_redis_pod_of_an_older_operator_goes_when_the_statefulset_takes_over():
    """Else the Redis Service would select two Redis servers."""
    body = cr("ActorCluster", "demo", REDIS_SPEC)
    out = clusters.plan(clusters.Observed(body, [pod("demo-redis-q2b9z", "redis"), set_pod()],
                                          redis_set=stored_set(REDIS_SPEC)))
    assert deleted(out) == ["demo-redis-q2b9z"]


def test_an_external_redis_without_its_password_secret_is_not_ready():
    spec = {"image": "kastor:dev", "gcs": {"redis": {"address": "r:6379", "passwordSecret": {"name": "pw"}}}}
    out = clusters.plan(clusters.Observed(cr("ActorCluster", "demo", spec), redis_password_secret_exists=False))
    assert get_condition(out.status["conditions"], "GcsReady")["reason"] == "SecretNotFound"


# ---- spec changes roll pods (issue 12 defect 4) ----

ROLL_SPEC = {"image": "kastor:1", "workerGroups": [{"name": "cpu", "replicas": 2}]}


def built_from(spec: dict, p: dict) -> dict:
    """`p` stamped with the template hash the operator would have given it for `spec`."""
    body = cr("ActorCluster", "demo", spec)
    role = p["metadata"]["labels"][contract.LABEL_ROLE]
    fresh = build_cluster.head_pod(body, parse_cluster(spec)) if role == "head" else \
        build_cluster.worker_pod(body, parse_cluster(spec), parse_cluster(spec).worker_groups[0])
    p["metadata"]["annotations"][contract.ANNOTATION_SPEC_HASH] = \
        fresh["metadata"]["annotations"][contract.ANNOTATION_SPEC_HASH]
    return p


def changed(spec: dict, observed: int = 1) -> dict:
    body = cr("ActorCluster", "demo", spec, {"phase": "Ready", "observedGeneration": observed})
    body["metadata"]["generation"] = 2
    return body


def running_cluster(spec: dict, **worker_kw) -> list[dict]:
    return [built_from(spec, pod("demo-head", "head")),
            built_from(spec, pod("w1", "worker", group="cpu", created="2026-01-01T00:00:00Z", **worker_kw)),
            built_from(spec, pod("w2", "worker", group="cpu", created="2026-01-02T00:00:00Z", **worker_kw))]


def test_a_new_image_recreates_the_head_and_observed_generation_waits_for_it():
    new = {**ROLL_SPEC, "image": "kastor:2"}
    out = clusters.plan(clusters.Observed(changed(new), running_cluster(ROLL_SPEC)))
    assert deleted(out) == ["demo-head"] and created_pods(out) == [] and "RollingUpdate" in reasons(out)
    assert out.status["observedGeneration"] == 1, "the running pods still run generation 1"
    assert get_condition(out.status["conditions"], "HeadReady")["reason"] == "HeadUpdating"
    # The old head terminating: its replacement is built from the new spec.
    pods = [pod("demo-head", "head", deleting=True)] + running_cluster(ROLL_SPEC)[1:]
    out = clusters.plan(clusters.Observed(changed(new), pods))
    head = created_pods(out)[0]
    assert head["spec"]["containers"][0]["image"] == "kastor:2"
    assert head["metadata"]["annotations"][contract.ANNOTATION_SPEC_HASH] == \
        built_from(new, pod("x", "head"))["metadata"]["annotations"][contract.ANNOTATION_SPEC_HASH]


def test_workers_roll_one_at_a_time_each_once_the_rest_of_their_group_is_ready():
    new = {**ROLL_SPEC, "image": "kastor:2"}
    head = built_from(new, pod("demo-head", "head"))
    old_workers = running_cluster(ROLL_SPEC)[1:]
    out = clusters.plan(clusters.Observed(changed(new), [head, *old_workers]))
    assert deleted(out) == ["w1"], "the oldest outdated worker first, and only one"
    assert out.status["observedGeneration"] == 1
    # w1 going, its replacement not ready yet: w2 waits.
    replacement = built_from(new, pod("w3", "worker", group="cpu", ready=False))
    pods = [head, {**old_workers[0], "metadata": {**old_workers[0]["metadata"], "deletionTimestamp": "t"}},
            old_workers[1], replacement]
    out = clusters.plan(clusters.Observed(changed(new), pods))
    assert deleted(out) == [] and created_pods(out) == []
    # The replacement ready: now w2.
    pods[3] = built_from(new, pod("w3", "worker", group="cpu"))
    out = clusters.plan(clusters.Observed(changed(new), pods))
    assert deleted(out) == ["w2"]
    # Every running pod from the new spec: the generation is applied.
    done = [head, pods[3], built_from(new, pod("w4", "worker", group="cpu"))]
    out = clusters.plan(clusters.Observed(changed(new), done))
    assert deleted(out) == [] and out.status["observedGeneration"] == 2


def test_recreate_replaces_every_outdated_worker_at_once_and_none_replaces_nothing():
    spec = {**ROLL_SPEC, "workerGroups": [{"name": "cpu", "replicas": 2, "numCpus": 4}]}
    head = built_from(spec, pod("demo-head", "head"))
    recreate = {**spec, "upgradeStrategy": {"type": "Recreate"}}
    out = clusters.plan(clusters.Observed(changed(recreate), [head, *running_cluster(ROLL_SPEC)[1:]]))
    assert sorted(deleted(out)) == ["w1", "w2"]
    untouched = {**spec, "upgradeStrategy": {"type": "None"}}
    out = clusters.plan(clusters.Observed(changed(untouched), running_cluster(ROLL_SPEC)))
    assert deleted(out) == [] and out.status["observedGeneration"] == 2
    bad = clusters.plan(clusters.Observed(changed({**spec, "upgradeStrategy": {"type": "Sometimes"}})))
    assert bad.status["phase"] == "Failed" and "upgradeStrategy" in bad.events[0].message


def test_changes_that_do_not_shape_the_pods_restart_nothing():
    """The Service type, a client node port and the group's size are not in the pods' hashes."""
    spec = {**ROLL_SPEC, "head": {"serviceType": "NodePort", "ports": {"clientNodePort": 30001}},
            "workerGroups": [{"name": "cpu", "replicas": 2, "maxReplicas": 5}]}
    out = clusters.plan(clusters.Observed(changed(spec), running_cluster(ROLL_SPEC)))
    assert deleted(out) == [] and created_pods(out) == [] and out.status["observedGeneration"] == 2
    service = next(a.service for a in out.actions if isinstance(a, EnsureService))
    assert service["spec"]["type"] == "NodePort"


def test_pods_from_before_hashes_roll_only_once_the_spec_changes():
    legacy = [pod("demo-head", "head"), pod("w1", "worker", group="cpu"), pod("w2", "worker", group="cpu")]
    same = cr("ActorCluster", "demo", ROLL_SPEC, {"phase": "Ready", "observedGeneration": 1})
    assert deleted(clusters.plan(clusters.Observed(same, legacy))) == []
    assert deleted(clusters.plan(clusters.Observed(changed(ROLL_SPEC), legacy))) == ["demo-head"]


# ---- DetachedActor ----

ACTOR_SPEC = {"clusterRef": "demo", "actorClass": "pkg.mod:Counter", "maxRestarts": 1}


def cluster_view() -> actors.Cluster:
    body = cr("ActorCluster", "demo", {"image": "kastor:dev"})
    return actors.Cluster(body, parse_cluster(body["spec"]), "tok")


def actor_body(status: dict | None = None, spec: dict | None = None) -> dict:
    spec = spec or ACTOR_SPEC
    status = {"specHash": build_actor.spec_hash(spec), **(status or {})}
    return cr("DetachedActor", "counter", spec, status)


def info(state: int, restarts: int = 0, **fields) -> pb.ActorInfo:
    return pb.ActorInfo(spec=pb.ActorSpec(actor_id=b"\x01" * 16), state=state, num_restarts=restarts, **fields)


def test_a_new_actor_gets_its_first_pod():
    out = actors.plan(actors.Observed(actor_body(), [], cluster_view()))
    assert kinds(out) == ["CreatePod"] and created_pods(out)[0]["metadata"]["name"] == "counter-actor-1"
    assert out.status["state"] == "Pending" and out.status["attempt"] == 1


def test_an_alive_actor_mirrors_the_gcs():
    running = pod("counter-actor-1", "actor", actor="counter", attempt=1)
    out = actors.plan(actors.Observed(actor_body({"podName": "counter-actor-1"}), [running], cluster_view(),
                                      info(pb.ALIVE, address="10.0.0.5:1")))
    assert out.actions == [] and out.status["state"] == "Alive" and out.status["address"] == "10.0.0.5:1"
    assert out.status["actorId"] == (b"\x01" * 16).hex()


def test_a_usage_error_exit_replaces_the_pod_but_a_bad_spec_exit_ends_the_actor():
    """Exit 2 (argparse) is an ordinary pod failure; only the contract's terminal codes end the actor."""
    status = {"podName": "counter-actor-1", "attempt": 1}
    usage = pod("counter-actor-1", "actor", actor="counter", attempt=1, phase="Failed", exit_code=2,
                message="kastor: error: unrecognized arguments")
    out = actors.plan(actors.Observed(actor_body(status), [usage], cluster_view()))
    assert [p["metadata"]["name"] for p in created_pods(out)] == ["counter-actor-2"]
    assert deleted(out) == ["counter-actor-1"] and reasons(out) == ["PodFailed"]
    assert out.status["state"] == "Pending" and out.status["earlyPodFailures"] == 1

    bad = pod("counter-actor-1", "actor", actor="counter", attempt=1, phase="Failed",
              exit_code=contract.EXIT_BAD_SPEC, message="actor-pod: ClassNotImportable: cannot import 'pkg.mod'")
    out = actors.plan(actors.Observed(actor_body(status), [bad], cluster_view()))
    assert out.actions == [] and out.status["state"] == "Dead"
    assert get_condition(out.status["conditions"], "Ready")["reason"] == "ClassNotImportable"


def test_early_pod_failures_are_bounded():
    status = {"podName": "counter-actor-4", "attempt": 4, "earlyPodFailures": actors.MAX_EARLY_POD_FAILURES}
    failed = pod("counter-actor-4", "actor", actor="counter", attempt=4, phase="Failed", exit_code=1)
    out = actors.plan(actors.Observed(actor_body(status), [failed], cluster_view()))
    assert created_pods(out) == [] and out.status["state"] == "Dead"
    assert get_condition(out.status["conditions"], "Ready")["reason"] == "PodFailing"


def test_a_pod_failure_past_max_restarts_kills_the_actor_in_the_gcs():
    status = {"podName": "counter-actor-2", "attempt": 2}
    failed = pod("counter-actor-2", "actor", actor="counter", attempt=2, phase="Failed", exit_code=1)
    out = actors.plan(actors.Observed(actor_body(status), [failed], cluster_view(), info(pb.ALIVE, restarts=1)))
    assert kinds(out) == ["KillActor"] and out.status["state"] == "Dead"
    kill = out.actions[0]
    assert isinstance(kill, KillActor) and kill.actor_id == b"\x01" * 16 and "maxRestarts=1" in kill.reason
    assert "MaxRestartsExceeded" in reasons(out)


def test_a_spec_change_rolls_the_actor():
    old_spec = dict(ACTOR_SPEC)
    new_spec = {**ACTOR_SPEC, "args": [5]}
    body = cr("DetachedActor", "counter", new_spec,
              {"specHash": build_actor.spec_hash(old_spec), "actorId": "01" * 16, "state": "Alive"})
    running = pod("counter-actor-1", "actor", actor="counter", attempt=1)
    out = actors.plan(actors.Observed(body, [running], cluster_view()))
    assert kinds(out) == ["KillActor", "DeletePod"] and out.status["actorId"] is None
    assert out.status["specHash"] == build_actor.spec_hash(new_spec) and reasons(out) == ["Rolling"]


def test_a_dead_actor_in_the_gcs_is_dead_with_its_reason():
    running = pod("counter-actor-1", "actor", actor="counter", attempt=1)
    dead = info(pb.DEAD, death_cause="boom", death_error=pb.Value(data=b"x"))
    out = actors.plan(actors.Observed(actor_body({"podName": "counter-actor-1"}), [running], cluster_view(), dead))
    assert out.actions == [] and out.status["state"] == "Dead" and reasons(out) == ["ConstructorFailed"]


def test_a_missing_cluster_is_pending_with_one_warning():
    seen = actors.Observed(actor_body(), [], ("ClusterNotFound", "ActorCluster 'demo' does not exist"))
    first = actors.plan(seen)
    assert first.actions == [] and first.status["state"] == "Pending" and reasons(first) == ["ClusterNotFound"]
    again = actors.plan(actors.Observed(actor_body(copy.deepcopy(first.status)), [], seen.cluster))
    assert again.events == []


def test_a_cluster_name_that_cannot_name_a_service_fails_once_not_for_ever():
    """Admitted before the CRD's name rule existed (or by a server without CEL): a condition
    and one Event, no actions (creating its Services would fail on every reconcile)."""
    body = cr("ActorCluster", "1st.cluster", CLUSTER_SPEC)
    out = clusters.plan(clusters.Observed(body))
    assert out.actions == [] and out.status["phase"] == "Failed" and reasons(out) == ["InvalidName"]
    assert "cannot name its Services" in get_condition(out.status["conditions"], "Ready")["message"]
    assert clusters.plan(clusters.Observed({**body, "status": out.status})).events == []
    longest = cr("ActorCluster", "c" + "x" * (contract.CLUSTER_NAME_MAX - 1), CLUSTER_SPEC)
    assert clusters.plan(clusters.Observed(longest)).actions


def test_an_actor_name_that_cannot_label_its_pods_is_dead_at_once():
    body = cr("DetachedActor", "a" * (contract.ACTOR_NAME_MAX + 1), ACTOR_SPEC)
    out = actors.plan(actors.Observed(body, [], cluster_view()))
    assert out.actions == [] and out.status["state"] == "Dead" and reasons(out) == ["InvalidName"]


def test_the_crds_name_rules_are_the_contracts():
    from pathlib import Path
    crds = Path(__file__).resolve().parents[2] / "crds"
    clusters_crd = (crds / "kastor.dev_actorclusters.yaml").read_text()
    assert f"self.metadata.name.matches('{contract.CLUSTER_NAME_PATTERN}')" in clusters_crd
    assert f"size(self.metadata.name) <= {contract.CLUSTER_NAME_MAX}" in clusters_crd
    actors_crd = (crds / "kastor.dev_detachedactors.yaml").read_text()
    assert f"size(self.metadata.name) <= {contract.ACTOR_NAME_MAX}" in actors_crd


# ---- issue 12 defect 2: generated names, adoption by the controller's uid ----

def roles_created(plan) -> list[str]:
    return [p["metadata"]["labels"][contract.LABEL_ROLE] for p in created_pods(plan)]


def test_a_head_stuck_terminating_on_a_lost_node_is_replaced_at_once():
    """Its name no longer blocks the replacement: head pods get generated names."""
    body = cr("ActorCluster", "demo", {"image": "kastor:dev"}, {"phase": "Ready"})
    out = clusters.plan(clusters.Observed(body, [pod("demo-head-x7k2p", "head", deleting=True)]))
    assert roles_created(out) == ["head"]
    new = created_pods(out)[0]["metadata"]
    assert new["generateName"] == "demo-head-" and "name" not in new


def test_a_managed_redis_pod_stuck_terminating_waits_for_its_statefulset():
    """The StatefulSet makes `demo-redis-0` again once the old one is gone (the lost-node
    handling force-deletes it); the operator makes no Redis pod of its own."""
    body = cr("ActorCluster", "demo", {"image": "kastor:dev", "gcs": {"redis": {"managed": True}}})
    spec = body["spec"]
    out = clusters.plan(clusters.Observed(body, [set_pod(deleting=True)], redis_set=stored_set(spec)))
    assert roles_created(out) == ["head"] and statefulsets(out) == []
    assert get_condition(out.status["conditions"], "GcsReady")["reason"] == "RedisStarting"


def test_pods_of_an_earlier_cluster_of_the_same_name_are_not_adopted():
    """A cluster deleted and re-created under its name: the dying head (another owner uid) is
    not this cluster's head, and garbage collection, not the operator, removes it."""
    body = cr("ActorCluster", "demo", CLUSTER_SPEC)
    old = [pod("demo-head-old", "head", ip="10.0.0.9", owner="an-earlier-uid"),
           pod("w-old", "worker", group="cpu", owner="an-earlier-uid")]
    out = clusters.plan(clusters.Observed(body, old, registered={"10.0.0.9"}, head_asked=True))
    assert roles_created(out) == ["head"] and deleted(out) == []
    assert get_condition(out.status["conditions"], "HeadReady")["status"] == "False"


def test_a_token_secret_of_an_earlier_cluster_is_waited_out_not_adopted():
    """Garbage collection is about to delete it: pods mounting it would get a token that
    changes under them. Nothing starts until the new cluster's own Secret exists."""
    body = cr("ActorCluster", "demo", CLUSTER_SPEC)
    out = clusters.plan(clusters.Observed(body, token_secret_controller="an-earlier-uid"))
    assert created_pods(out) == [] and not [a for a in out.actions if isinstance(a, CreateSecret)]
    ready = get_condition(out.status["conditions"], "Ready")
    assert ready["status"] == "False" and "an earlier ActorCluster" in ready["message"]
    ours = clusters.plan(clusters.Observed(body, token_secret_controller=UID))
    assert roles_created(ours) == ["head"]
    users = clusters.plan(clusters.Observed(body, token_secret_controller=None))  # a user's own Secret
    assert roles_created(users) == ["head"]


# ---- issue 12 defect 10: why a head is stuck ----

def waiting(pod_: dict, reason: str, message: str) -> dict:
    pod_["status"]["phase"] = "Pending"
    pod_["status"]["conditions"] = []
    pod_["status"]["containerStatuses"] = [{"name": contract.CONTAINER,
                                            "state": {"waiting": {"reason": reason, "message": message}}}]
    return pod_


def test_a_head_stuck_pulling_its_image_says_so_once():
    body = cr("ActorCluster", "demo", {"image": "kastor:typo"})
    stuck = waiting(pod("demo-head-a", "head", ready=False), "ImagePullBackOff",
                    'Back-off pulling image "kastor:typo"')
    out = clusters.plan(clusters.Observed(body, [stuck]))
    head = get_condition(out.status["conditions"], "HeadReady")
    assert head["reason"] == "ImagePullBackOff" and 'pulling image "kastor:typo"' in head["message"]
    assert reasons(out) == ["ImagePullBackOff"] and out.events[0].type == "Warning"
    again = clusters.plan(clusters.Observed({**body, "status": out.status}, [stuck]))
    assert again.events == []


def test_an_unschedulable_head_shows_the_schedulers_message():
    body = cr("ActorCluster", "demo", {"image": "kastor:dev"})
    pending = pod("demo-head-a", "head", phase="Pending", ready=False)
    pending["status"]["conditions"] = [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                                        "message": "0/3 nodes are available: 3 Insufficient cpu."}]
    out = clusters.plan(clusters.Observed(body, [pending]))
    head = get_condition(out.status["conditions"], "HeadReady")
    assert head["reason"] == "Unschedulable" and "Insufficient cpu" in head["message"]


def test_a_head_that_is_only_starting_is_not_reported_as_stuck():
    body = cr("ActorCluster", "demo", {"image": "kastor:dev"})
    starting = waiting(pod("demo-head-a", "head", ready=False), "ContainerCreating", "")
    out = clusters.plan(clusters.Observed(body, [starting]))
    assert get_condition(out.status["conditions"], "HeadReady")["reason"] == "HeadStarting" and out.events == []


# ---- issue 12 defect 16: a new defaulted CRD field restarts nothing ----

def test_fields_at_their_crd_default_do_not_change_the_spec_hash():
    """The API server writes every default into the stored spec: a new defaulted field appears
    in every DetachedActor at once, and must not roll them all."""
    bare = {"clusterRef": "demo", "actorClass": "pkg.mod:Counter"}
    assert build_actor.spec_hash(bare) == build_actor.spec_hash({**bare, **build_actor.SPEC_DEFAULTS})
    assert build_actor.spec_hash(bare) != build_actor.spec_hash({**bare, "maxRestarts": 2})


def test_an_actor_with_an_old_operators_hash_is_not_rolled():
    spec = {**ACTOR_SPEC, **build_actor.SPEC_DEFAULTS, "maxRestarts": 1}
    body = cr("DetachedActor", "counter", spec, {"specHash": build_actor.legacy_spec_hash(spec), "state": "Alive",
                                                 "podName": "counter-actor-1"})
    running = pod("counter-actor-1", "actor", actor="counter", attempt=1)
    out = actors.plan(actors.Observed(body, [running], cluster_view(), info(pb.ALIVE)))
    assert out.actions == [] and "Rolling" not in reasons(out) and out.status["state"] == "Alive"
    assert out.status["specHash"] == build_actor.spec_hash(spec)


def test_spec_defaults_are_the_crds():
    from pathlib import Path

    import yaml
    crd = yaml.safe_load((Path(__file__).resolve().parents[2] / "crds" / "kastor.dev_detachedactors.yaml").read_text())
    props = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
    assert {k: v["default"] for k, v in props.items() if "default" in v} == build_actor.SPEC_DEFAULTS


# ---- issue 12 defect 8: an actor's pods stop with its cluster ----

def test_an_actors_pod_stops_when_its_cluster_is_suspended_or_deleted():
    running = pod("counter-actor-1", "actor", actor="counter", attempt=1)
    status = {"podName": "counter-actor-1", "attempt": 1, "state": "Alive"}
    for reason in ("ClusterSuspended", "ClusterNotFound"):
        out = actors.plan(actors.Observed(actor_body(status), [running], (reason, "the cluster is away")))
        assert deleted(out) == ["counter-actor-1"] and created_pods(out) == []
        assert out.status["state"] == "Pending" and out.status["podName"] == ""


def test_an_actor_stopped_with_its_cluster_starts_again_without_counting_a_failure():
    status = {"podName": "", "attempt": 1, "state": "Pending"}
    out = actors.plan(actors.Observed(actor_body(status), [], cluster_view()))
    assert [p["metadata"]["name"] for p in created_pods(out)] == ["counter-actor-2"]
    assert "PodFailed" not in reasons(out) and "earlyPodFailures" not in out.status


# ---- issue 12 defect 3: nothing starts before the head, nothing counts while it is away ----

def test_workers_are_created_only_once_the_head_is_ready():
    body = cr("ActorCluster", "demo", CLUSTER_SPEC)
    starting = clusters.plan(clusters.Observed(body, [pod("demo-head-a", "head", ready=False)]))
    assert created_pods(starting) == []
    unreachable = clusters.plan(clusters.Observed(body, [pod("demo-head-a", "head", ip="10.0.0.1")],
                                                  registered=None, head_asked=True))
    assert created_pods(unreachable) == []
    up = clusters.plan(clusters.Observed(body, [pod("demo-head-a", "head", ip="10.0.0.1")],
                                         registered={"10.0.0.1"}, head_asked=True))
    assert roles_created(up) == ["worker", "worker"]


def test_an_actor_pod_waits_for_its_clusters_head():
    cluster = cr("ActorCluster", "demo", {"image": "kastor:dev"})
    assert "no status yet" in actors.waiting_for_head(cluster)
    plan_ = clusters.plan(clusters.Observed(cluster, [pod("demo-head-a", "head", ready=False)]))
    assert "not ready yet" in actors.waiting_for_head({**cluster, "status": plan_.status})
    up = clusters.plan(clusters.Observed(cluster, [pod("demo-head-a", "head", ip="10.0.0.1")],
                                         registered={"10.0.0.1"}, head_asked=True))
    assert actors.waiting_for_head({**cluster, "status": up.status}) is None
    out = actors.plan(actors.Observed(actor_body(), [], ("WaitingForHead", "the head is not ready")))
    assert out.actions == [] and out.status["state"] == "Pending"


def test_a_pod_failing_while_the_head_does_not_answer_counts_nothing():
    status = {"podName": "counter-actor-1", "attempt": 1, "earlyPodFailures": actors.MAX_EARLY_POD_FAILURES}
    failed = pod("counter-actor-1", "actor", actor="counter", attempt=1, phase="Failed", exit_code=1)
    out = actors.plan(actors.Observed(actor_body(status), [failed], cluster_view(), None, head_reachable=False))
    assert [p["metadata"]["name"] for p in created_pods(out)] == ["counter-actor-2"]
    assert out.status["earlyPodFailures"] == actors.MAX_EARLY_POD_FAILURES and out.status["state"] == "Pending"


# ---- issue 12 defect 12: head and workers restart in place ----

def test_head_and_worker_pods_restart_in_place_but_actor_pods_do_not():
    body = cr("ActorCluster", "demo", CLUSTER_SPEC)
    spec = parse_cluster(body["spec"])
    from kastor.operator import build_cluster
    assert build_cluster.head_pod(body, spec)["spec"]["restartPolicy"] == "Always"
    assert build_cluster.worker_pod(body, spec, spec.worker_groups[0])["spec"]["restartPolicy"] == "Always"
    out = actors.plan(actors.Observed(actor_body(), [], cluster_view()))
    assert created_pods(out)[0]["spec"]["restartPolicy"] == "Never"  # its exit code is the operator's verdict


def test_a_head_restarted_in_place_is_reported_once_per_restart():
    body = cr("ActorCluster", "demo", {"image": "kastor:dev"}, {"phase": "Ready"})
    head = pod("demo-head-a", "head", ip="10.0.0.1")
    head["status"]["containerStatuses"] = [{"name": contract.CONTAINER, "restartCount": 1, "state": {"running": {}}}]
    out = clusters.plan(clusters.Observed(body, [head], registered={"10.0.0.1"}, head_asked=True))
    assert reasons(out) == ["HeadRestarted"] and out.status["headRestarts"] == 1
    again = clusters.plan(clusters.Observed({**body, "status": out.status}, [head], registered={"10.0.0.1"},
                                            head_asked=True))
    assert again.events == []


# ---- issue 12 defect 3: failed actor pods are replaced with an exponential back-off ----

def test_back_off_grows_exponentially_to_a_cap():
    assert [actors.backoff_s(n) for n in range(1, 6)] == [0.0, 5.0, 10.0, 20.0, 40.0]
    assert actors.backoff_s(50) == actors.BACKOFF_MAX_S


def test_a_second_failure_in_a_row_waits_before_the_next_pod():
    status = {"podName": "counter-actor-2", "attempt": 2, "podFailuresInARow": 1}
    failed = pod("counter-actor-2", "actor", actor="counter", attempt=2, phase="Failed", exit_code=1)
    out = actors.plan(actors.Observed(actor_body(status), [failed], cluster_view(), None, now=1000.0))
    assert created_pods(out) == [] and deleted(out) == ["counter-actor-2"] and reasons(out) == ["PodFailed"]
    assert out.status["state"] == "Pending" and out.status["nextPodAfter"] == 1005
    assert get_condition(out.status["conditions"], "Ready")["reason"] == "BackOff"

    waiting = actors.plan(actors.Observed(actor_body(dict(out.status)), [], cluster_view(), None, now=1002.0))
    assert waiting.actions == [] and waiting.events == [] and waiting.status["earlyPodFailures"] == 1
    assert "next starts in 3 s" in waiting.status["message"]

    later = actors.plan(actors.Observed(actor_body(dict(out.status)), [], cluster_view(), None, now=1006.0))
    assert [p["metadata"]["name"] for p in created_pods(later)] == ["counter-actor-3"] and later.events == []


def test_an_actor_that_came_up_is_replaced_at_once_again():
    running = pod("counter-actor-3", "actor", actor="counter", attempt=3)
    status = {"podName": "counter-actor-3", "attempt": 3, "podFailuresInARow": 2}
    out = actors.plan(actors.Observed(actor_body(status), [running], cluster_view(), info(pb.ALIVE)))
    assert out.status["podFailuresInARow"] == 0


# ---- issue 12 defect 2: pods on a lost node ----

T0 = 1_800_000_000.0  # when the node went NotReady (epoch seconds)
GRACE = 60.0


def iso(t: float) -> str:
    return datetime.datetime.fromtimestamp(t, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def on(node: str, p: dict, deleting_at: float | None = None) -> dict:
    """The pod bound to `node` (and Terminating until `deleting_at`, its deletionTimestamp)."""
    p["spec"]["nodeName"] = node
    if deleting_at is not None:
        p["metadata"]["deletionTimestamp"] = iso(deleting_at)
    return p


NOT_READY = {"n-lost": lost_nodes.NodeHealth(exists=True, ready=False, not_ready_since=T0)}
GONE = {"n-lost": lost_nodes.NodeHealth(exists=False, ready=False)}


def lost_cluster(pods: list[dict], nodes: dict, now: float, registered: frozenset = frozenset()):
    body = cr("ActorCluster", "demo", CLUSTER_SPEC, {"phase": "Ready"})
    head = on("n-1", pod("demo-head-a", "head", ip="10.0.0.1"))
    ok = on("n-1", pod("w-ok", "worker", group="cpu", ip="10.0.0.2"))
    return clusters.plan(clusters.Observed(body, [head, ok, *pods], registered={"10.0.0.1", "10.0.0.2", *registered},
                                           head_asked=True, nodes=nodes, now=now, lost_node_grace_s=GRACE))


def test_a_worker_on_a_node_not_ready_past_the_grace_is_deleted_and_replaced():
    lost = on("n-lost", pod("w-lost", "worker", group="cpu", ip="10.0.0.3", ready=False))
    out = lost_cluster([lost], NOT_READY, T0 + GRACE + 1)
    assert [a for a in out.actions if isinstance(a, DeletePod)] == [DeletePod("w-lost")]  # graceful, not forced
    assert roles_created(out) == ["worker"]
    assert reasons(out) == ["NodeLost"] and "n-lost" in out.events[0].message
    assert out.status["readyWorkers"] == 1


def test_a_worker_still_ready_in_the_api_but_gone_from_the_head_is_lost_too():
    """A lost node's pods often stay Ready=True in the API (nobody is left to update them): the
    head's view of its nodes, not the stale condition, says whether the pod still works."""
    stale = on("n-lost", pod("w-lost", "worker", group="cpu", ip="10.0.0.3"))
    out = lost_cluster([stale], NOT_READY, T0 + GRACE + 1)
    assert deleted(out) == ["w-lost"] and roles_created(out) == ["worker"]


def test_a_pod_on_a_node_not_ready_within_the_grace_or_still_working_is_kept():
    """NotReady may be a passing kubelet problem or a partition from the control plane only:
    nothing happens before the grace, nor to a Ready pod whose node the head still sees alive."""
    lost = on("n-lost", pod("w-lost", "worker", group="cpu", ip="10.0.0.3", ready=False))
    early = lost_cluster([lost], NOT_READY, T0 + GRACE - 1)
    assert deleted(early) == [] and created_pods(early) == [] and early.events == []
    working = on("n-lost", pod("w-lost", "worker", group="cpu", ip="10.0.0.3"))
    late = lost_cluster([working], NOT_READY, T0 + 10 * GRACE, registered=frozenset({"10.0.0.3"}))
    assert deleted(late) == [] and created_pods(late) == []


def test_a_head_on_a_lost_node_is_deleted_and_replaced():
    body = cr("ActorCluster", "demo", {"image": "kastor:dev"}, {"phase": "Ready"})
    head = on("n-lost", pod("demo-head-a", "head", ip="10.0.0.1", ready=False))
    out = clusters.plan(clusters.Observed(body, [head], nodes=NOT_READY, now=T0 + GRACE + 1,
                                          lost_node_grace_s=GRACE))
    assert [a for a in out.actions if isinstance(a, DeletePod)] == [DeletePod("demo-head-a")]
    assert roles_created(out) == ["head"] and reasons(out) == ["NodeLost"]
    assert get_condition(out.status["conditions"], "HeadReady")["reason"] == "HeadStarting"


def test_a_pod_terminating_on_a_lost_node_is_force_deleted_only_past_its_grace_period():
    now = T0 + GRACE + 1
    stuck = on("n-lost", pod("w-stuck", "worker", group="cpu", ready=False), deleting_at=now - 1)
    out = lost_cluster([stuck], NOT_READY, now)
    assert [a for a in out.actions if isinstance(a, DeletePod)] == [DeletePod("w-stuck", force=True)]
    assert reasons(out) == ["PodForceDeleted"] and "Terminating past its grace period" in out.events[0].message
    assert roles_created(out) == ["worker"]  # a Terminating pod never counted
    waiting = on("n-lost", pod("w-stuck", "worker", group="cpu", ready=False), deleting_at=now + 5)
    assert deleted(lost_cluster([waiting], NOT_READY, now)) == []  # its kubelet may still be stopping it


def test_a_pod_whose_node_object_is_gone_is_force_deleted_at_once():
    gone = on("n-lost", pod("w-gone", "worker", group="cpu", ip="10.0.0.3"))
    out = lost_cluster([gone], GONE, T0)
    assert [a for a in out.actions if isinstance(a, DeletePod)] == [DeletePod("w-gone", force=True)]
    assert roles_created(out) == ["worker"] and "is gone" in out.events[0].message


def test_only_nodes_of_pods_not_vouched_for_or_terminating_are_read():
    pods = [on("n-1", pod("a", "worker")), on("n-2", pod("b", "worker")),
            on("n-3", pod("c", "worker"), deleting_at=T0), pod("d", "worker", phase="Pending", ready=False)]
    assert lost_nodes.nodes_to_check(pods, vouched={"a", "c"}) == {"n-2", "n-3"}


def test_node_health_reads_the_ready_condition():
    def node(status: str) -> dict:
        return {"status": {"conditions": [{"type": "MemoryPressure", "status": "False"},
                                          {"type": "Ready", "status": status, "lastTransitionTime": iso(T0)}]}}

    assert lost_nodes.node_health(node("True")) == lost_nodes.NodeHealth(exists=True)
    assert lost_nodes.node_health(node("Unknown")) == lost_nodes.NodeHealth(True, False, T0)
    assert lost_nodes.node_health(node("False")) == lost_nodes.NodeHealth(True, False, T0)
    assert lost_nodes.node_health({"status": {}}) == lost_nodes.NodeHealth(exists=True)  # not reported yet
    assert lost_nodes.node_health(None) == lost_nodes.NodeHealth(exists=False, ready=False)


def test_a_detached_actors_pod_on_a_lost_node_is_replaced_and_counts_as_a_restart():
    lost = on("n-lost", pod("counter-actor-1", "actor", actor="counter", attempt=1, ready=False))
    seen = actors.Observed(actor_body({"podName": "counter-actor-1", "attempt": 1}), [lost], cluster_view(),
                           info(pb.ALIVE), now=T0 + GRACE + 1, nodes=NOT_READY, lost_node_grace_s=GRACE)
    out = actors.plan(seen)
    assert [a for a in out.actions if isinstance(a, DeletePod)] == [DeletePod("counter-actor-1")]
    assert [p["metadata"]["name"] for p in created_pods(out)] == ["counter-actor-2"]
    assert reasons(out)[0] == "NodeLost"
    early = actors.plan(actors.Observed(seen.body, [lost], cluster_view(), info(pb.ALIVE), now=T0 + 1,
                                        nodes=NOT_READY, lost_node_grace_s=GRACE))
    assert early.actions == []


def test_a_detached_actors_pod_is_kept_while_the_gcs_has_its_actor_alive():
    """Its Ready may be stale, but an actor ALIVE in the GCS means its node agent still beats."""
    body = actor_body({"podName": "counter-actor-1", "attempt": 1})
    stale = on("n-lost", pod("counter-actor-1", "actor", actor="counter", attempt=1))
    kept = actors.plan(actors.Observed(body, [stale], cluster_view(), info(pb.ALIVE), now=T0 + GRACE + 1,
                                       nodes=NOT_READY, lost_node_grace_s=GRACE))
    assert kept.actions == []
    restarting = actors.plan(actors.Observed(body, [stale], cluster_view(), info(pb.RESTARTING),
                                             now=T0 + GRACE + 1, nodes=NOT_READY, lost_node_grace_s=GRACE))
    assert deleted(restarting) == ["counter-actor-1"] and reasons(restarting)[0] == "NodeLost"


# ---- PodDisruptionBudgets, the dashboard Service, and why each pod is created or deleted ----

def budgets(plan) -> dict:
    return {a.name: a.budget for a in plan.actions if isinstance(a, SyncDisruptionBudget)}


def test_the_head_and_the_managed_redis_get_disruption_budgets():
    body = cr("ActorCluster", "demo", {"image": "kastor:dev", "gcs": {"redis": {"managed": True}}})
    wanted = budgets(clusters.plan(clusters.Observed(body)))
    assert set(wanted) == {"demo-head", "demo-redis"}
    for role in ("head", "redis"):
        budget = wanted[f"demo-{role}"]
        assert budget["spec"] == {"minAvailable": 1, "unhealthyPodEvictionPolicy": "AlwaysAllow",
                                  "selector": {"matchLabels": {contract.LABEL_CLUSTER: "demo",
                                                               contract.LABEL_ROLE: role}}}
        assert budget["metadata"]["ownerReferences"][0]["uid"] == UID
    # no managed Redis: no Redis budget (one made earlier goes); switched off: neither
    assert budgets(clusters.plan(clusters.Observed(cr("ActorCluster", "demo", {"image": "kastor:dev"}))))[
        "demo-redis"] is None
    off = {"image": "kastor:dev", "gcs": {"redis": {"managed": True}}, "disruptionBudget": {"enabled": False}}
    assert budgets(clusters.plan(clusters.Observed(cr("ActorCluster", "demo", off)))) == {
        "demo-head": None, "demo-redis": None}


def test_the_dashboard_port_has_a_service_of_its_own():
    body = cr("ActorCluster", "demo", {"image": "kastor:dev", "head": {"ports": {"dashboard": 9000}}})
    service = next(a.service for a in clusters.plan(clusters.Observed(body)).actions
                   if isinstance(a, EnsureService) and a.service["metadata"]["name"] == "demo-dashboard")
    assert service["spec"] == {"type": "ClusterIP",
                               "selector": {contract.LABEL_CLUSTER: "demo", contract.LABEL_ROLE: "head"},
                               "ports": [{"name": "dashboard", "port": 9000, "targetPort": "dashboard"}]}


def test_the_dashboard_service_type_is_the_specs_and_restarts_nothing():
    spec = {"image": "kastor:dev", "head": {"dashboardServiceType": "LoadBalancer"}}
    body = cr("ActorCluster", "demo", spec)
    services = {a.service["metadata"]["name"]: a.service for a in clusters.plan(clusters.Observed(body)).actions
                if isinstance(a, EnsureService)}
    assert services["demo-dashboard"]["spec"]["type"] == "LoadBalancer"
    assert services["demo-head"]["spec"]["type"] == "ClusterIP"  # the head's own type is serviceType's
    # only a Service changes: the head's template hash (what rolls the head) is the same
    assert rollout.head_hash(spec) == rollout.head_hash({"image": "kastor:dev", "head": {}})
    with pytest.raises(SpecError, match="dashboardServiceType must be one of ClusterIP, NodePort, LoadBalancer"):
        parse_cluster({"image": "kastor:dev", "head": {"dashboardServiceType": "External"}})


def test_every_pod_created_or_deleted_says_why():
    """The reason and sentence each CreatePod/DeletePod carries become its pod's Event."""
    spec = {"image": "kastor:dev", "workerGroups": [{"name": "cpu", "replicas": 1}]}
    body = cr("ActorCluster", "demo", spec, {"phase": "Ready"})
    pods = [pod("demo-head", "head", ip="10.0.0.1"), pod("w1", "worker", group="cpu", ip="10.0.0.2"),
            pod("w2", "worker", group="cpu", ip="10.0.0.3", created="2026-01-02T00:00:00Z"),
            pod("w3", "worker", group="gone", ip="10.0.0.4"),
            pod("w4", "worker", group="cpu", phase="Failed", ready=False)]
    out = clusters.plan(clusters.Observed(body, pods, registered={"10.0.0.1", "10.0.0.2", "10.0.0.3"},
                                          head_asked=True))
    why = {a.name: (a.reason, a.role) for a in out.actions if isinstance(a, DeletePod)}
    assert why == {"w2": ("ScaleDown", "worker"), "w3": ("GroupRemoved", "worker"), "w4": ("PodFinished", "worker")}
    suspended = clusters.plan(clusters.Observed(cr("ActorCluster", "demo", {**spec, "suspend": True}), pods[:2]))
    assert {a.name: a.reason for a in suspended.actions if isinstance(a, DeletePod)} == {
        "demo-head": "Suspended", "w1": "Suspended"}
    fresh = clusters.plan(clusters.Observed(cr("ActorCluster", "demo", spec)))
    assert [(a.reason, bool(a.why)) for a in fresh.actions if isinstance(a, CreatePod)] == [("HeadMissing", True)]
    scale_up = clusters.plan(clusters.Observed(body, pods[:1], registered={"10.0.0.1"}, head_asked=True))
    creates = [a for a in scale_up.actions if isinstance(a, CreatePod)]
    assert [a.reason for a in creates] == ["BelowReplicas"] and "wants 1" in creates[0].why


def test_every_detached_actor_pod_created_or_deleted_says_why():
    first = actors.plan(actors.Observed(actor_body(), [], cluster_view()))
    assert [(a.reason, a.why) for a in first.actions if isinstance(a, CreatePod)] == [("ActorPodMissing", "attempt 1")]

    status = {"podName": "counter-actor-1", "attempt": 1}
    usage = pod("counter-actor-1", "actor", actor="counter", attempt=1, phase="Failed", exit_code=2)
    out = actors.plan(actors.Observed(actor_body(status), [usage], cluster_view()))
    assert [a.reason for a in out.actions if isinstance(a, CreatePod)] == ["ReplacingPod"]
    assert [(a.reason, a.role) for a in out.actions if isinstance(a, DeletePod)] == [("Replaced", "actor")]

    running = pod("counter-actor-1", "actor", actor="counter", attempt=1)
    alive = {**status, "state": "Alive"}
    away = actors.plan(actors.Observed(actor_body(alive), [running], ("ClusterSuspended", "the cluster is suspended")))
    assert [(a.reason, a.why) for a in away.actions if isinstance(a, DeletePod)] == [
        ("ClusterSuspended", "the cluster is suspended")]

    body = cr("DetachedActor", "counter", {**ACTOR_SPEC, "args": [5]},
              {"specHash": build_actor.spec_hash(dict(ACTOR_SPEC)), "actorId": "01" * 16, "state": "Alive"})
    rolled = actors.plan(actors.Observed(body, [running], cluster_view()))
    assert [a.reason for a in rolled.actions if isinstance(a, DeletePod)] == ["SpecChanged"]
