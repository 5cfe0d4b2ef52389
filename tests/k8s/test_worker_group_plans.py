"""The ActorWorkerGroup decisions (operator/worker_groups.py), in-process as test_plans.py: what
the reconcile creates, patches and deletes, and which size wins, `kubectl scale`'s or the
cluster's field, from plain dicts of what it observed."""

from __future__ import annotations

import copy

from kastor.operator import cluster_reconciler as clusters
from kastor.operator import worker_groups
from kastor.operator.actions import CreatePod, DeleteWorkerGroup, SyncWorkerGroup
from kastor.operator.spec import parse_cluster
from kastor.runtime import k8s_contract as contract

from .test_plans import UID, cr, pod

SPEC = {"image": "kastor:dev", "workerGroups": [{"name": "cpu", "replicas": 2, "maxReplicas": 6}]}
HEAD = pod("demo-head", "head", ip="10.0.0.1")


def stored(body: dict, replicas: int, seeded: int, status: dict | None = None, owner: str = UID,
           group: str = "cpu") -> dict:
    """An ActorWorkerGroup as the API server stores it: `replicas` (what kubectl scale set), the
    cluster's replicas it was last seeded from, and a status."""
    spec = parse_cluster(body["spec"])
    awg = worker_groups.build(body, next(g for g in spec.worker_groups if g.name == group), replicas)
    awg["metadata"]["annotations"][worker_groups.ANNOTATION_CLUSTER_REPLICAS] = str(seeded)
    awg["metadata"]["ownerReferences"][0]["uid"] = owner
    awg["metadata"]["generation"] = 2
    awg["spec"]["replicas"] = replicas
    if status is not None:
        awg["status"] = status
    return awg


def workers(n: int, group: str = "cpu") -> list[dict]:
    return [pod(f"w{i}", "worker", group=group, ip=f"10.0.1.{i}") for i in range(n)]


def plan(body: dict, pods: list[dict], groups: dict) -> object:
    ips = {p["status"]["podIP"] for p in pods}
    return clusters.plan(clusters.Observed(body, pods, registered=ips, head_asked=True, worker_groups=groups))


def syncs(out) -> dict[str, SyncWorkerGroup]:
    return {a.name: a for a in out.actions if isinstance(a, SyncWorkerGroup)}


def created_workers(out) -> int:
    return sum(1 for a in out.actions if isinstance(a, CreatePod)
               and a.pod["metadata"]["labels"][contract.LABEL_ROLE] == "worker")


def test_each_group_gets_an_actor_worker_group_seeded_from_the_cluster():
    body = cr("ActorCluster", "demo", {**SPEC, "workerGroups": [*SPEC["workerGroups"], {"name": "gpu"}]})
    out = plan(body, [HEAD], {})
    made = {name: a.create for name, a in syncs(out).items()}
    assert set(made) == {"demo-cpu", "demo-gpu"}
    cpu = made["demo-cpu"]
    assert cpu["kind"] == "ActorWorkerGroup" and cpu["spec"] == {"cluster": "demo", "group": "cpu", "replicas": 2}
    assert cpu["metadata"]["annotations"] == {worker_groups.ANNOTATION_CLUSTER_REPLICAS: "2"}
    owner = cpu["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["uid"], owner["controller"]) == ("ActorCluster", UID, True)
    assert created_workers(out) == 3  # the cluster's own sizes until the objects exist


def test_kubectl_scale_sizes_the_group_and_status_shows_it():
    body = cr("ActorCluster", "demo", SPEC)
    out = plan(body, [HEAD, *workers(2)], {"cpu": stored(body, 4, seeded=2)})
    assert created_workers(out) == 2 and out.status["desiredWorkers"] == 4
    sync = syncs(out)["demo-cpu"]
    assert sync.patch is None  # the scale stands: the cluster's field did not change since it was copied
    assert sync.status == {"replicas": 2, "readyReplicas": 2, "desiredReplicas": 4, "minReplicas": 0,
                           "maxReplicas": 6, "autoscaling": False, "observedGeneration": 2,
                           "selector": "kastor.dev/cluster=demo,kastor.dev/role=worker,kastor.dev/worker-group=cpu"}
    # and down: the excess goes (not-ready first, idle ones drained through the head)
    down = plan(body, [HEAD, *workers(4)], {"cpu": stored(body, 1, seeded=2)})
    assert down.status["desiredWorkers"] == 1


def test_an_edit_of_the_clusters_replicas_wins_over_an_earlier_scale():
    body = cr("ActorCluster", "demo", {**SPEC, "workerGroups": [{"name": "cpu", "replicas": 1, "maxReplicas": 6}]})
    out = plan(body, [HEAD, *workers(4)], {"cpu": stored(body, 4, seeded=2)})
    assert syncs(out)["demo-cpu"].patch == {
        "spec": {"replicas": 1}, "metadata": {"annotations": {worker_groups.ANNOTATION_CLUSTER_REPLICAS: "1"}}}
    assert out.status["desiredWorkers"] == 1
    # re-applying the cluster unchanged does not undo a later scale
    again = plan(body, [HEAD, *workers(1)], {"cpu": stored(body, 3, seeded=1)})
    assert syncs(again)["demo-cpu"].patch is None and again.status["desiredWorkers"] == 3


def test_a_scale_beyond_max_replicas_is_kept_within_the_bounds():
    body = cr("ActorCluster", "demo", SPEC)
    out = plan(body, [HEAD, *workers(6)], {"cpu": stored(body, 50, seeded=2)})
    assert out.status["desiredWorkers"] == 6 and created_workers(out) == 0
    assert syncs(out)["demo-cpu"].status["desiredReplicas"] == 6


def test_with_autoscaling_the_autoscaler_owns_replicas_and_a_scale_is_overwritten():
    spec = {**SPEC, "autoscaling": {"enabled": True}}
    body = cr("ActorCluster", "demo", spec, {"workerGroups": [{"name": "cpu", "desired": 2}]})
    last = {"desiredReplicas": 2, "replicas": 2}
    out = plan(body, [HEAD, *workers(2)], {"cpu": stored(body, 5, seeded=2, status=last)})
    assert syncs(out)["demo-cpu"].patch == {"spec": {"replicas": 2}}  # the head did not answer: the last decision
    assert out.status["desiredWorkers"] == 2 and created_workers(out) == 0
    warning = next(e for e in out.events if e.reason == "ScaleOverridden")
    assert warning.type == "Warning" and "the autoscaler owns the replicas of group cpu" in warning.message
    # the operator's own write of the decision is no override: no Event
    quiet = plan(body, [HEAD, *workers(2)], {"cpu": stored(body, 3, seeded=2, status={"desiredReplicas": 3})})
    assert syncs(quiet)["demo-cpu"].patch == {"spec": {"replicas": 2}}
    assert [e for e in quiet.events if e.reason == "ScaleOverridden"] == []


def test_a_group_that_left_the_spec_loses_its_object_and_a_namesakes_is_not_touched():
    body = cr("ActorCluster", "demo", SPEC, {"workerGroups": [{"name": "cpu"}, {"name": "old"}]})
    two_groups = {**SPEC, "workerGroups": [*SPEC["workerGroups"], {"name": "old"}]}
    assert worker_groups.names_to_read(body, parse_cluster(SPEC)) == ["cpu", "old"]
    old = stored(cr("ActorCluster", "demo", two_groups), 1, seeded=1, group="old")
    out = plan(body, [HEAD], {"cpu": stored(body, 2, seeded=2), "old": old})
    assert [a.name for a in out.actions if isinstance(a, DeleteWorkerGroup)] == ["demo-old"]
    # an object of that name that another ActorCluster controls is neither deleted nor obeyed
    foreign = {"cpu": stored(body, 5, seeded=2, owner="another-uid"), "old": copy.deepcopy(old)}
    foreign["old"]["metadata"]["ownerReferences"][0]["uid"] = "another-uid"
    out = plan(body, [HEAD], foreign)
    assert not [a for a in out.actions if isinstance(a, (DeleteWorkerGroup, SyncWorkerGroup))]
    assert out.status["desiredWorkers"] == 2
