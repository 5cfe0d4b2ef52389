"""The autoscaler's decision (`kastor.operator.autoscaling.decide`) and the ActorCluster plan
that acts on it, in-process: plain values in, desired replicas, drains, status and Events out.
The head's side is proven by tests/test_autoscaler_head.py, the whole loop by
tests/k8s/test_real_autoscaling.py."""

from __future__ import annotations

from kastor.operator import cluster_reconciler as clusters
from kastor.operator.actions import CreatePod, DeletePod, DrainWorker
from kastor.operator.autoscaling import Demand, GroupState, Labelled, NodeState, decide
from kastor.operator.scaling import HeadAccess
from kastor.runtime import k8s_contract as contract
from kastor.runtime.protocol import kastor_pb2 as pb

from .test_plans import cr, pod

CPU = GroupState("cpu", {"CPU": 2.0}, min_replicas=0, max_replicas=5, current=1)
GPU = GroupState("gpu", {"CPU": 4.0, "GPU": 1.0}, min_replicas=0, max_replicas=2, current=0)


def node(node_id: str, group: str = "cpu", *, free: dict | None = None, total: dict | None = None,
         idle_s: float = 0.0, draining: bool = False) -> NodeState:
    total = total or {"CPU": 2.0}
    return NodeState(node_id, group, f"pod-{node_id}", total, free if free is not None else dict(total), idle_s,
                     draining)


def test_pending_work_that_fits_the_free_resources_adds_nothing():
    d = decide([CPU, GPU], [node("a")], Demand(pending=[{"CPU": 1.0}, {"CPU": 1.0}]), 60)
    assert d.desired == {"cpu": 1, "gpu": 0} and not d.remove and d.summary == "no change"


def test_a_shape_only_one_group_fits_scales_that_group():
    d = decide([CPU, GPU], [node("a", free={})], Demand(pending=[{"GPU": 1.0}]), 60)
    assert d.desired == {"cpu": 1, "gpu": 1}
    assert "gpu: +1" in d.summary


def test_work_that_does_not_fit_the_free_resources_adds_the_least_wasteful_group():
    d = decide([CPU, GPU], [node("a", free={})], Demand(pending=[{"CPU": 1.0}] * 3), 60)
    assert d.desired == {"cpu": 3, "gpu": 0}  # 3 one-CPU tasks: two more 2-CPU workers, not a GPU one


def test_starting_pods_count_as_empty_nodes_so_a_scale_up_is_not_repeated():
    starting = GroupState("gpu", {"CPU": 4.0, "GPU": 1.0}, 0, 2, current=1)  # created, not joined yet
    d = decide([CPU, starting], [node("a", free={})], Demand(pending=[{"GPU": 1.0}]), 60)
    assert d.desired == {"cpu": 1, "gpu": 1}


def test_max_replicas_caps_a_scale_up_and_says_so():
    d = decide([CPU, GPU], [node("a", free={})], Demand(pending=[{"GPU": 1.0}] * 3), 60)
    assert d.desired["gpu"] == 2
    assert "1 x {GPU: 1} waits: every group that fits is at maxReplicas" in d.summary


def test_a_shape_no_group_fits_is_reported_not_scaled_for():
    d = decide([CPU, GPU], [node("a")], Demand(pending=[{"TPU": 1.0}]), 60)
    assert d.desired == {"cpu": 1, "gpu": 0}
    assert d.infeasible == ({"TPU": 1.0},) and "{TPU: 1} fits no worker group" in d.summary


def test_min_replicas_is_kept():
    group = GroupState("cpu", {"CPU": 2.0}, min_replicas=2, max_replicas=5, current=0)
    assert decide([group], [], Demand(), 60).desired == {"cpu": 2}


def test_idle_nodes_past_the_timeout_go_longest_idle_first_down_to_min_replicas():
    group = GroupState("cpu", {"CPU": 2.0}, min_replicas=2, max_replicas=5, current=4)
    nodes = [node("a", idle_s=100), node("b", idle_s=300), node("c", idle_s=30), node("d", idle_s=200)]
    d = decide([group], nodes, Demand(), 60)
    assert [n.node_id for n in d.remove] == ["b", "d"]  # c is not idle long enough; a is kept for minReplicas
    assert d.desired == {"cpu": 2} and "pod-b, pod-d" in d.summary


def test_a_busy_node_is_never_removed():
    group = GroupState("cpu", {"CPU": 2.0}, 0, 5, current=2)
    nodes = [node("busy", free={"CPU": 1.0}, idle_s=0.0), node("idle", idle_s=120)]
    d = decide([group], nodes, Demand(), 60)
    assert [n.node_id for n in d.remove] == ["idle"] and d.desired == {"cpu": 1}


def test_an_idle_node_that_pending_work_fits_stays():
    group = GroupState("cpu", {"CPU": 2.0}, 0, 5, current=1)
    d = decide([group], [node("a", idle_s=600)], Demand(pending=[{"CPU": 2.0}]), 60)
    assert not d.remove and d.desired == {"cpu": 1}


def test_requested_resources_count_total_capacity_not_free():
    group = GroupState("cpu", {"CPU": 2.0}, 0, 5, current=1)
    busy = node("a", free={}, idle_s=0)
    assert decide([group], [busy], Demand(requested=[{"CPU": 1.0}] * 2), 60).desired == {"cpu": 1}
    assert decide([group], [busy], Demand(requested=[{"CPU": 1.0}] * 5), 60).desired == {"cpu": 3}


def test_requested_resources_keep_idle_nodes():
    group = GroupState("cpu", {"CPU": 2.0}, 0, 5, current=2)
    nodes = [node("a", idle_s=600), node("b", idle_s=600)]
    d = decide([group], nodes, Demand(requested=[{"CPU": 2.0}]), 60)
    assert len(d.remove) == 1 and d.desired == {"cpu": 1}


def test_strict_spread_bundles_need_a_node_each():
    group = GroupState("cpu", {"CPU": 2.0}, 0, 5, current=1)
    d = decide([group], [node("a")], Demand(gangs=[("STRICT_SPREAD", [{"CPU": 1.0}] * 3)]), 60)
    assert d.desired == {"cpu": 3}


def test_strict_pack_bundles_need_one_node_for_all():
    big = GroupState("big", {"CPU": 8.0}, 0, 1, current=0)
    d = decide([CPU, big], [node("a")], Demand(gangs=[("STRICT_PACK", [{"CPU": 2.0}] * 3)]), 60)
    assert d.desired == {"cpu": 1, "big": 1}


def test_a_drained_node_takes_no_demand_and_is_removed():
    group = GroupState("cpu", {"CPU": 2.0}, 0, 5, current=1)
    d = decide([group], [node("a", draining=True)], Demand(pending=[{"CPU": 1.0}]), 60)
    assert d.desired == {"cpu": 1}  # a new worker in place of the drained one
    assert [n.node_id for n in d.remove] == ["a"]


# ---- the ActorCluster plan with spec.autoscaling ----

SCALING_SPEC = {"image": "kastor:dev", "autoscaling": {"enabled": True, "idleTimeoutSeconds": 30},
                "workerGroups": [{"name": "cpu", "replicas": 1, "minReplicas": 0, "maxReplicas": 3},
                                 {"name": "special", "replicas": 0, "maxReplicas": 2,
                                  "customResources": {"special": 1}}]}
ACCESS = HeadAccess("demo-head.team.svc:6380", "token")


def scaling_plan(demand: pb.ClusterDemand, status: dict | None = None, extra_pods: tuple = ()):
    body = cr("ActorCluster", "demo", SCALING_SPEC, status or {"phase": "Ready"})
    pods = [pod("demo-head", "head", ip="10.0.0.1"), pod("w1", "worker", group="cpu", ip="10.0.0.2"), *extra_pods]
    registered = {"10.0.0.1", "10.0.0.2"} | {p["status"]["podIP"] for p in extra_pods}
    return clusters.plan(clusters.Observed(body, pods, registered=registered, head_asked=True, demand=demand,
                                           head_access=ACCESS, scaled_at="2026-11-30T00:00:00+00:00"))


def usage(node_id: str, ip: str, total: dict, idle_s: float = 0.0, free: dict | None = None) -> pb.NodeUsage:
    return pb.NodeUsage(node_id=node_id, ip=ip, total=total, available=total if free is None else free, idle_s=idle_s)


def test_a_pending_actor_only_a_group_fits_creates_a_pod_of_that_group():
    demand = pb.ClusterDemand(pending=[pb.ResourceDemand(shape={"CPU": 1.0, "special": 1.0}, kind="actor", count=1)],
                              nodes=[usage("w1", "10.0.0.2", {"CPU": 1.0}, free={})])
    out = scaling_plan(demand)
    made = [a.pod["metadata"]["labels"][contract.LABEL_GROUP] for a in out.actions if isinstance(a, CreatePod)]
    assert made == ["special"]
    assert {g["name"]: g["desired"] for g in out.status["workerGroups"]} == {"cpu": 1, "special": 1}
    assert out.status["lastScaling"]["desired"] == {"cpu": 1, "special": 1}
    assert "special: +1" in out.status["lastScaling"]["reason"]
    assert [e.reason for e in out.events] == ["ScaledUp"]
    again = scaling_plan(demand, {**out.status, "phase": "Ready"})
    assert [e.reason for e in again.events] == []  # the pod not created yet: the decision stands, no new Event


def test_an_idle_worker_past_the_timeout_is_drained_not_deleted_directly():
    demand = pb.ClusterDemand(nodes=[usage("n-w1", "10.0.0.2", {"CPU": 1.0}, idle_s=45)])
    out = scaling_plan(demand)
    assert [a for a in out.actions if isinstance(a, DrainWorker)] == \
        [DrainWorker(ACCESS.address, "token", "n-w1", "w1", "idle for 45s (idleTimeoutSeconds 30)")]
    assert not [a for a in out.actions if isinstance(a, DeletePod)]  # the drain's executor deletes it, if accepted
    assert out.status["desiredWorkers"] == 0 and [e.reason for e in out.events] == ["ScaledDown"]


def test_a_busy_worker_is_kept_and_a_shape_no_group_fits_is_a_warning():
    demand = pb.ClusterDemand(pending=[pb.ResourceDemand(shape={"TPU": 1.0}, kind="task", count=1)],
                              nodes=[usage("n-w1", "10.0.0.2", {"CPU": 1.0}, idle_s=0.0, free={})])
    out = scaling_plan(demand)
    assert not [a for a in out.actions if isinstance(a, (DrainWorker, DeletePod, CreatePod))]
    assert [e.reason for e in out.events] == ["UnschedulableDemand"]
    assert "{TPU: 1} fits no worker group" in out.status["lastScaling"]["reason"]


def test_without_an_answer_from_the_head_the_last_decision_stands():
    body = cr("ActorCluster", "demo", SCALING_SPEC,
              {"phase": "Ready", "workerGroups": [{"name": "cpu", "desired": 2}, {"name": "special", "desired": 1}]})
    pods = [pod("demo-head", "head", ip="10.0.0.1"), pod("w1", "worker", group="cpu", ip="10.0.0.2")]
    out = clusters.plan(clusters.Observed(body, pods, registered={"10.0.0.1", "10.0.0.2"}, head_asked=True))
    made = sorted(a.pod["metadata"]["labels"][contract.LABEL_GROUP] for a in out.actions if isinstance(a, CreatePod))
    assert made == ["cpu", "special"] and out.status["desiredWorkers"] == 3


def test_a_drained_nodes_old_ip_on_a_new_pod_is_not_mistaken_for_it():
    demand = pb.ClusterDemand(nodes=[pb.NodeUsage(node_id="old", ip="10.0.0.2", total={"CPU": 1.0}, idle_s=90,
                                                  draining=True),
                                     usage("new", "10.0.0.2", {"CPU": 1.0}, idle_s=0.0, free={})])
    out = scaling_plan(demand)
    assert not [a for a in out.actions if isinstance(a, (DrainWorker, DeletePod))]


def test_one_decision_that_adds_and_removes_posts_both_events():
    demand = pb.ClusterDemand(pending=[pb.ResourceDemand(shape={"special": 1.0}, kind="actor", count=1)],
                              nodes=[usage("n-w1", "10.0.0.2", {"CPU": 1.0}, idle_s=45)])
    out = scaling_plan(demand)
    assert [e.reason for e in out.events] == ["ScaledUp", "ScaledDown"]
    assert [type(a).__name__ for a in out.actions if isinstance(a, (CreatePod, DrainWorker))] == \
        ["DrainWorker", "CreatePod"]


# ---- a manual scale-down (spec.replicas lowered, no autoscaling) kills nothing busy ----

MANUAL_SPEC = {"image": "kastor:dev", "workerGroups": [{"name": "cpu", "replicas": 1}]}


def manual_plan(demand: pb.ClusterDemand | None, worker_pods: list[dict]):
    body = cr("ActorCluster", "demo", MANUAL_SPEC, {"phase": "Ready"})
    pods = [pod("demo-head", "head", ip="10.0.0.1"), *worker_pods]
    registered = {"10.0.0.1"} | {p["status"]["podIP"] for p in worker_pods if p["status"].get("podIP")}
    return clusters.plan(clusters.Observed(body, pods, registered=registered, head_asked=True, demand=demand,
                                           head_access=ACCESS if demand is not None else None))


def test_a_scale_down_drains_the_idle_worker_and_keeps_the_busy_one():
    workers = [pod("busy", "worker", group="cpu", ip="10.0.0.2"), pod("idle", "worker", group="cpu", ip="10.0.0.3")]
    demand = pb.ClusterDemand(nodes=[usage("n-busy", "10.0.0.2", {"CPU": 1.0}, idle_s=0.0, free={}),
                                     usage("n-idle", "10.0.0.3", {"CPU": 1.0}, idle_s=12)])
    out = manual_plan(demand, workers)
    assert [a.pod for a in out.actions if isinstance(a, DrainWorker)] == ["idle"]
    assert not [a for a in out.actions if isinstance(a, DeletePod)]  # the busy worker is not killed


def test_a_scale_down_waits_while_every_extra_worker_is_busy():
    workers = [pod("a", "worker", group="cpu", ip="10.0.0.2"), pod("b", "worker", group="cpu", ip="10.0.0.3")]
    demand = pb.ClusterDemand(nodes=[usage("n-a", "10.0.0.2", {"CPU": 1.0}, idle_s=0.0, free={}),
                                     usage("n-b", "10.0.0.3", {"CPU": 1.0}, idle_s=0.0, free={})])
    out = manual_plan(demand, workers)
    assert not [a for a in out.actions if isinstance(a, (DrainWorker, DeletePod, CreatePod))]
    # once one is idle, it goes
    idle_b = pb.ClusterDemand(nodes=[usage("n-a", "10.0.0.2", {"CPU": 1.0}, idle_s=0.0, free={}),
                                     usage("n-b", "10.0.0.3", {"CPU": 1.0}, idle_s=3)])
    assert [a.pod for a in manual_plan(idle_b, workers).actions if isinstance(a, DrainWorker)] == ["b"]


def test_a_scale_down_removes_a_worker_that_is_not_ready_first_and_without_the_head_deletes_as_before():
    starting = pod("starting", "worker", group="cpu", ip="10.0.0.4", ready=False)
    workers = [pod("a", "worker", group="cpu", ip="10.0.0.2"), starting]
    demand = pb.ClusterDemand(nodes=[usage("n-a", "10.0.0.2", {"CPU": 1.0}, idle_s=0.0, free={})])
    out = manual_plan(demand, workers)
    assert [a.name for a in out.actions if isinstance(a, DeletePod)] == ["starting"]
    assert not [a for a in out.actions if isinstance(a, DrainWorker)]
    two_ready = [pod("a", "worker", group="cpu", ip="10.0.0.2"), pod("b", "worker", group="cpu", ip="10.0.0.3")]
    assert len([a for a in manual_plan(None, two_ready).actions if isinstance(a, DeletePod)]) == 1


# ---- work with a label_selector (runtime/node_labels.py) ----

WEST = GroupState("west", {"CPU": 2.0}, 0, 3, current=0, labels={"region": "us-west", "kastor.io/node-group": "west"})
EAST = GroupState("east", {"CPU": 4.0}, 0, 3, current=0, labels={"region": "us-east", "kastor.io/node-group": "east"})


def test_labelled_work_scales_the_group_whose_labels_match_not_the_least_wasteful():
    east = Labelled({"CPU": 1.0}, [{"region": "us-east"}])
    d = decide([WEST, EAST], [node("a", "west")], Demand(pending=[east]), 60)
    assert d.desired == {"west": 0, "east": 1}  # the free west node does not take it, nor does a west worker
    assert decide([WEST, EAST], [], Demand(pending=[{"CPU": 1.0}]), 60).desired == {"west": 1, "east": 0}


def test_fallbacks_pick_the_first_selector_a_group_matches():
    work = Labelled({"CPU": 1.0}, [{"region": "eu"}, {"kastor.io/node-group": "!west"}, {"region": "us-west"}])
    assert decide([WEST, EAST], [], Demand(pending=[work]), 60).desired == {"west": 0, "east": 1}
    ray_key = Labelled({"CPU": 1.0}, [{"ray.io/node-group": "west"}])
    assert decide([WEST, EAST], [], Demand(pending=[ray_key]), 60).desired == {"west": 1, "east": 0}


def test_labelled_work_no_group_matches_is_reported_not_scaled_for():
    d = decide([WEST, EAST], [], Demand(pending=[Labelled({"CPU": 1.0}, [{"accel": "H100"}])]), 60)
    assert d.desired == {"west": 0, "east": 0} and d.infeasible == ({"CPU": 1.0},)
    assert "{CPU: 1} with label_selector {'accel': 'H100'} matches no worker group's labels" in d.summary


def test_a_pending_actors_label_selector_picks_the_group_to_scale():
    spec = {**SCALING_SPEC, "workerGroups": [*SCALING_SPEC["workerGroups"],
                                             {"name": "west", "replicas": 0, "maxReplicas": 2,
                                              "labels": {"region": "us-west"}}]}
    body = cr("ActorCluster", "demo", spec, {"phase": "Ready"})
    selector = pb.LabelSelector(match={"region": "us-west"})
    demand = pb.ClusterDemand(pending=[pb.ResourceDemand(shape={"CPU": 1.0}, kind="actor", count=1,
                                                         labels=[selector])],
                              nodes=[usage("w1", "10.0.0.2", {"CPU": 1.0})])  # free, but not us-west
    pods = [pod("demo-head", "head", ip="10.0.0.1"), pod("w1", "worker", group="cpu", ip="10.0.0.2")]
    out = clusters.plan(clusters.Observed(body, pods, registered={"10.0.0.1", "10.0.0.2"}, head_asked=True,
                                          demand=demand, head_access=ACCESS, scaled_at="2026-11-30T00:00:00+00:00"))
    made = [a.pod for a in out.actions if isinstance(a, CreatePod)]
    assert [p["metadata"]["labels"][contract.LABEL_GROUP] for p in made] == ["west"]
    args = made[0]["spec"]["containers"][0]["args"]
    assert args[args.index("--labels") + 1] == "kastor.io/node-group=west,region=us-west"
