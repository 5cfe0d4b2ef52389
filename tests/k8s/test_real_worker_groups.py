"""`kubectl scale` of a worker group on the real control plane with the process kubelet
(`real_cluster.py`): the operator installed by its chart (in a pod, under its ServiceAccount),
an ActorCluster, and its ActorWorkerGroup (operator/worker_groups.py). `kubectl get` shows
the group's columns, `kubectl scale` changes its worker pods, `kubectl get --subresource=scale`
answers (what an HPA reads), a later edit of the cluster's replicas wins in turn, and an
HPA (the real kube-controller-manager's) sizes the group through its scale subresource, on
its bounds and on an External metric the test serves (`external_metrics.py`).

The tests of this module run in order and share one cluster.
"""

from __future__ import annotations

import json
from typing import Any

import kubernetes
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


HPA = "sized-cpu"


def hpas(flow: RealCluster) -> kubernetes.client.AutoscalingV2Api:
    return kubernetes.client.AutoscalingV2Api(flow.api_client)


def hpa(flow: RealCluster) -> dict[str, Any]:
    """The HorizontalPodAutoscaler as the API server has it ({} if absent)."""
    try:
        return flow.api_client.sanitize_for_serialization(hpas(flow).read_namespaced_horizontal_pod_autoscaler(HPA, NS))
    except kubernetes.client.ApiException as e:
        if e.status == 404:
            return {}
        raise


def hpa_condition(flow: RealCluster, kind: str) -> dict[str, Any]:
    return next((x for x in (hpa(flow).get("status") or {}).get("conditions") or [] if x["type"] == kind), {})


def set_hpa(flow: RealCluster, min_replicas: int, max_replicas: int) -> None:
    """Creates the HPA on the group's ActorWorkerGroup (no metrics given: autoscaling/v2 defaults
    to 80 % CPU utilisation) or changes its bounds."""
    body = {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": {"name": HPA},
            "spec": {"scaleTargetRef": {"apiVersion": f"{GROUP}/{VERSION}", "kind": contract.WORKER_GROUP_KIND,
                                        "name": f"{NAME}-cpu"},
                     "minReplicas": min_replicas, "maxReplicas": max_replicas}}
    if hpa(flow):
        hpas(flow).patch_namespaced_horizontal_pod_autoscaler(HPA, NS, {"spec": body["spec"]})
    else:
        hpas(flow).create_namespaced_horizontal_pod_autoscaler(NS, body)


def test_an_hpa_sizes_the_group_through_its_scale_subresource(flow):
    """A HorizontalPodAutoscaler (autoscaling/v2) on the group's ActorWorkerGroup, driven by the
    real kube-controller-manager's HPA controller (the control plane runs every controller).

    What this proves: the HPA controller reads the group's scale (AbleToScale=True,
    SucceededGetScale; status.currentReplicas is the group's spec.replicas), parses the
    selector the scale carries from `status.selector` (labelSelectorPath: an unusable one would
    be ScalingActive=False, InvalidSelector; that selector lists exactly the group's worker
    pods), and writes the scale: minReplicas above the group's size raises it, maxReplicas below
    lowers it, and the operator starts and stops the worker pods to match. The HPA controller
    does both without reading a metric (pkg/controller/podautoscaler/horizontal.go: a size
    outside minReplicas..maxReplicas is corrected before any metric is computed).

    Within the bounds it needs a metric: this HPA has none given, so autoscaling/v2's default
    (80 % CPU utilisation), and the control plane has no metrics server (resource metrics), so
    it reports ScalingActive=False, FailedGetResourceMetric, and keeps the size, which this test
    asserts too. Scaling on a metric is the next test's (an External one); a CPU or memory
    target is not tested."""
    assert worker_group(flow)["spec"]["replicas"] == 2 and ready_workers(flow, 2)
    set_hpa(flow, 3, 3)
    wait(flow, lambda: hpa_condition(flow, "AbleToScale").get("reason") in ("SucceededGetScale", "SucceededRescale"),
         "the HPA controller reads (or writes) the group's scale")
    wait(flow, lambda: worker_group(flow)["spec"]["replicas"] == 3 and ready_workers(flow, 3),
         "the HPA raises the group to its minReplicas 3, and the operator starts the third worker")
    wait(flow, lambda: "SuccessfulRescale" in {e.reason for e in flow.core.list_namespaced_event(NS).items
                                               if e.involved_object.kind == "HorizontalPodAutoscaler"},
         "the HPA's SuccessfulRescale Event")
    wait(flow, lambda: hpa_condition(flow, "AbleToScale").get("reason") == "SucceededGetScale" and
         (hpa(flow).get("status") or {}).get("currentReplicas") == 3,
         "the HPA reads the group's scale at 3 on its next sync")
    active = wait(flow, lambda: hpa_condition(flow, "ScalingActive") or None, "the HPA's ScalingActive condition")
    assert (active["status"], active["reason"]) == ("False", "FailedGetResourceMetric"), active  # no metrics server
    scale = json.loads(flow.kubectl("get", SCALE_TARGET, "-n", NS, "--subresource=scale", "-o", "json").stdout)
    assert {p.metadata.name for p in workers(flow)} == {
        p.metadata.name for p in flow.core.list_namespaced_pod(NS, label_selector=scale["status"]["selector"]).items
        if p.metadata.deletion_timestamp is None}, scale
    set_hpa(flow, 1, 2)
    wait(flow, lambda: worker_group(flow)["spec"]["replicas"] == 2 and ready_workers(flow, 2),
         "the HPA lowers the group to its maxReplicas 2, and the operator stops a worker")
    hpas(flow).delete_namespaced_horizontal_pod_autoscaler(HPA, NS)
    wait(flow, lambda: not hpa(flow), "the HPA gone")


def test_an_hpa_scales_the_group_on_an_external_metric(flow, tmp_path):
    """An HPA scaling the group on a metric, within its bounds: an External metric (AverageValue
    1 per worker) from an external metrics API the test serves itself (`external_metrics.py`,
    behind the real aggregator). A backlog of 3 takes the group from 2 workers to 3, one of 1
    back to 1 (no scale-down stabilisation window, so the test need not wait 5 minutes)."""
    from .external_metrics import ExternalMetrics

    assert worker_group(flow)["spec"]["replicas"] == 2 and ready_workers(flow, 2)
    metrics = ExternalMetrics(tmp_path)
    try:
        metrics.values["kastor_backlog"] = "3"
        metrics.register(flow.api_client, NS, DEADLINE_S)
        hpas(flow).create_namespaced_horizontal_pod_autoscaler(NS, {
            "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": {"name": HPA},
            "spec": {"scaleTargetRef": {"apiVersion": f"{GROUP}/{VERSION}", "kind": contract.WORKER_GROUP_KIND,
                                        "name": f"{NAME}-cpu"},
                     "minReplicas": 1, "maxReplicas": 3,
                     "metrics": [{"type": "External", "external": {
                         "metric": {"name": "kastor_backlog", "selector": {"matchLabels": {"queue": "jobs"}}},
                         "target": {"type": "AverageValue", "averageValue": "1"}}}],
                     "behavior": {"scaleDown": {"stabilizationWindowSeconds": 0}}}})
        wait(flow, lambda: worker_group(flow)["spec"]["replicas"] == 3 and ready_workers(flow, 3),
             "the HPA scales the group to 3 on a backlog of 3, and the operator starts the third worker")
        active = wait(flow, lambda: hpa_condition(flow, "ScalingActive") or None, "the HPA's ScalingActive")
        assert (active["status"], active["reason"]) == ("True", "ValidMetricFound"), active
        assert ("kastor_backlog", "queue=jobs") in metrics.asked, metrics.asked
        metrics.values["kastor_backlog"] = "1"
        wait(flow, lambda: worker_group(flow)["spec"]["replicas"] == 1 and ready_workers(flow, 1),
             "the HPA scales the group down to 1 on a backlog of 1, and the operator drains two workers")
    finally:
        try:
            hpas(flow).delete_namespaced_horizontal_pod_autoscaler(HPA, NS)
        except kubernetes.client.ApiException as e:
            if e.status != 404:
                raise
        metrics.unregister(flow.api_client, NS)
        metrics.stop()


def test_a_group_removed_from_the_spec_loses_its_object(flow):
    spec = custom(flow, "actorclusters", NAME)["spec"]
    flow.custom.patch_namespaced_custom_object(GROUP, VERSION, NS, "actorclusters", NAME, {"spec": {
        "workerGroups": [*spec["workerGroups"], {"name": "extra", "replicas": 0}]}})
    wait(flow, lambda: custom(flow, contract.WORKER_GROUP_PLURAL, f"{NAME}-extra"), "ActorWorkerGroup sized-extra")
    flow.custom.patch_namespaced_custom_object(GROUP, VERSION, NS, "actorclusters", NAME, {"spec": {
        "workerGroups": spec["workerGroups"]}})
    wait(flow, lambda: not custom(flow, contract.WORKER_GROUP_PLURAL, f"{NAME}-extra"),
         "ActorWorkerGroup sized-extra deleted with its group")
