"""`kubectl scale` of a worker group on the real control plane with the process kubelet
(`real_cluster.py`): the operator installed by its chart (in a pod, under its ServiceAccount),
an ActorCluster, and its ActorWorkerGroup (operator/worker_groups.py). `kubectl get` shows
the group's columns, `kubectl scale` changes its worker pods, `kubectl get --subresource=scale`
answers (what an HPA reads), and a later edit of the cluster's replicas wins in turn.

The tests of this module run in order and share one cluster.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from kastor.runtime import k8s_contract as contract

from .helm_operator import GROUP, OPERATOR_NS, VERSION, custom, operator_installed_by_helm
from .real_cluster import RealCluster, netns_problem
from .test_real_user_flow import DEADLINE_S

pytestmark = pytest.mark.skipif(netns_problem() is not None, reason=f"{netns_problem()}")
NS = "default"
NAME = "sized"
SCALE_TARGET = f"actorworkergroup/{NAME}-cpu"

CLUSTER = {
    "apiVersion": f"{GROUP}/{VERSION}", "kind": "ActorCluster", "metadata": {"name": NAME, "namespace": NS},
    "spec": {"image": "kastor:dev", "imagePullPolicy": "Never", "head": {"numCpus": 1},
             "workerGroups": [{"name": "cpu", "replicas": 1, "minReplicas": 0, "maxReplicas": 3, "numCpus": 1}]}}


@pytest.fixture(scope="module")
def flow(real_k8s, tmp_path_factory):
    nodes = ("awg-1", "awg-2")
    with operator_installed_by_helm(real_k8s, tmp_path_factory.mktemp("worker-groups"), nodes, (NS, NAME)) as c:
        yield c


def cluster_status(flow: RealCluster) -> dict[str, Any]:
    return custom(flow, "actorclusters", NAME).get("status") or {}


def worker_group(flow: RealCluster) -> dict[str, Any]:
    return custom(flow, contract.WORKER_GROUP_PLURAL, f"{NAME}-cpu")


def workers(flow: RealCluster) -> list[Any]:
    selector = f"{contract.LABEL_CLUSTER}={NAME},{contract.LABEL_ROLE}=worker"
    return [p for p in flow.core.list_namespaced_pod(NS, label_selector=selector).items
            if p.metadata.deletion_timestamp is None]


def debug(flow: RealCluster) -> str:
    state = flow.kubectl("get", "pods,actorclusters,actorworkergroups", "-A", "-o", "wide", check=False)
    events = "\n".join(f"{e.reason}: {e.message}" for e in flow.core.list_namespaced_event(NS).items
                       if e.involved_object.name == NAME)
    operator = "\n".join(flow.pod_log(p.metadata.name, OPERATOR_NS)[-6000:]
                         for p in flow.core.list_namespaced_pod(OPERATOR_NS).items)
    return (f"--- objects:\n{state.stdout}\n--- status: {cluster_status(flow)}\n--- group: {worker_group(flow)}\n"
            f"--- events:\n{events}\n--- operator log:\n{operator}")


def wait(flow: RealCluster, predicate, what: str):
    try:
        return flow.wait(predicate, what, DEADLINE_S)
    except AssertionError as e:
        raise AssertionError(f"{e}\n{debug(flow)}") from None


def ready_workers(flow: RealCluster, n: int) -> bool:
    st = cluster_status(flow)
    return len(workers(flow)) == n and st.get("readyWorkers") == n and st.get("phase") == "Ready" and \
        (worker_group(flow).get("status") or {}).get("readyReplicas") == n


def test_the_cluster_makes_its_worker_groups_object_and_kubectl_get_shows_it(flow):
    flow.custom.create_namespaced_custom_object(GROUP, VERSION, NS, "actorclusters", CLUSTER)
    wait(flow, lambda: ready_workers(flow, 1), f"ActorCluster {NAME} Ready with 1 worker, its group's status too")
    awg = worker_group(flow)
    owner = awg["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["name"], owner["controller"]) == ("ActorCluster", NAME, True)
    got = flow.kubectl("get", "actorworkergroups", "-n", NS).stdout.splitlines()
    assert got[0].split() == ["NAME", "CLUSTER", "GROUP", "REPLICAS", "DESIRED", "CURRENT", "READY", "AGE"], got
    assert got[1].split()[:-1] == [f"{NAME}-cpu", NAME, "cpu", "1", "1", "1", "1"], got
    assert f"actorworkergroup.kastor.dev/{NAME}-cpu" in flow.kubectl("get", "kastor", "-n", NS).stdout


def test_kubectl_scale_changes_the_worker_pods(flow):
    flow.kubectl("scale", SCALE_TARGET, "-n", NS, "--replicas=2")
    wait(flow, lambda: ready_workers(flow, 2), "2 ready workers after kubectl scale --replicas=2")
    scale = json.loads(flow.kubectl("get", SCALE_TARGET, "-n", NS, "--subresource=scale", "-o", "json").stdout)
    assert scale["kind"] == "Scale" and scale["spec"]["replicas"] == 2 and scale["status"]["replicas"] == 2, scale
    selector = scale["status"]["selector"]
    assert {p.metadata.name for p in workers(flow)} == {
        p.metadata.name for p in flow.core.list_namespaced_pod(NS, label_selector=selector).items
        if p.metadata.deletion_timestamp is None}, selector  # the selector an HPA reads finds exactly the group
    assert custom(flow, "actorclusters", NAME)["spec"]["workerGroups"][0]["replicas"] == 1  # the user's spec
    # beyond maxReplicas (3): kept within the bounds
    flow.kubectl("scale", SCALE_TARGET, "-n", NS, "--replicas=7")
    wait(flow, lambda: (worker_group(flow).get("status") or {}).get("desiredReplicas") == 3 and
         ready_workers(flow, 3), "3 workers (maxReplicas) after kubectl scale --replicas=7")


def test_a_later_edit_of_the_clusters_replicas_wins(flow):
    group = custom(flow, "actorclusters", NAME)["spec"]["workerGroups"][0]
    assert group["replicas"] == 1  # unchanged since the cluster was made: the scale to 7 (3) stands
    flow.custom.patch_namespaced_custom_object(GROUP, VERSION, NS, "actorclusters", NAME,
                                               {"spec": {"workerGroups": [{**group, "replicas": 2}]}})
    wait(flow, lambda: worker_group(flow)["spec"]["replicas"] == 2 and ready_workers(flow, 2),
         "the group down to the cluster's new replicas 2, copied into its ActorWorkerGroup")


def test_a_group_removed_from_the_spec_loses_its_object(flow):
    spec = custom(flow, "actorclusters", NAME)["spec"]
    flow.custom.patch_namespaced_custom_object(GROUP, VERSION, NS, "actorclusters", NAME, {"spec": {
        "workerGroups": [*spec["workerGroups"], {"name": "extra", "replicas": 0}]}})
    wait(flow, lambda: custom(flow, contract.WORKER_GROUP_PLURAL, f"{NAME}-extra"), "ActorWorkerGroup sized-extra")
    flow.custom.patch_namespaced_custom_object(GROUP, VERSION, NS, "actorclusters", NAME, {"spec": {
        "workerGroups": spec["workerGroups"]}})
    wait(flow, lambda: not custom(flow, contract.WORKER_GROUP_PLURAL, f"{NAME}-extra"),
         "ActorWorkerGroup sized-extra deleted with its group")
