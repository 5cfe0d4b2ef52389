"""Autoscaling end to end on the real control plane with the process kubelet (`real_cluster.py`):
the operator installed by its chart (in a pod, under its ServiceAccount), an ActorCluster with
`spec.autoscaling`, and driver pods. An actor that needs a resource no worker has scales a group
up; an idle worker goes after idleTimeoutSeconds; a busy one stays (its actor keeps its state),
and goes once idle.

The tests of this module run in order and share one cluster.
"""

from __future__ import annotations

import datetime
import textwrap
from typing import Any

import kubernetes
import pytest
from kastor.runtime import k8s_contract as contract

from .helm_operator import GROUP, OPERATOR_NS, VERSION, operator_installed_by_helm
from .real_cluster import RealCluster, netns_problem
from .test_real_user_flow import DEADLINE_S

pytestmark = pytest.mark.skipif(netns_problem() is not None, reason=f"{netns_problem()}")
NS = "default"
NAME = "scaler"
IDLE_TIMEOUT_S = 5

CLUSTER = {
    "apiVersion": f"{GROUP}/{VERSION}", "kind": "ActorCluster", "metadata": {"name": NAME, "namespace": NS},
    "spec": {"image": "kastor:dev", "imagePullPolicy": "Never", "head": {"numCpus": 1},
             "autoscaling": {"enabled": True, "idleTimeoutSeconds": IDLE_TIMEOUT_S},
             "workerGroups": [
                 {"name": "cpu", "replicas": 1, "minReplicas": 0, "maxReplicas": 2, "numCpus": 1},
                 {"name": "special", "replicas": 0, "minReplicas": 0, "maxReplicas": 1, "numCpus": 1,
                  "customResources": {"special": 1}}]}}


@pytest.fixture(scope="module")
def flow(real_k8s, tmp_path_factory):
    nodes = ("scale-1", "scale-2")
    with operator_installed_by_helm(real_k8s, tmp_path_factory.mktemp("autoscaling"), nodes, (NS, NAME)) as c:
        yield c


def status(flow: RealCluster) -> dict[str, Any]:
    try:
        cr = flow.custom.get_namespaced_custom_object(GROUP, VERSION, NS, "actorclusters", NAME)
    except kubernetes.client.ApiException as e:
        if e.status == 404:
            return {}
        raise
    return cr.get("status") or {}


def group(flow: RealCluster, name: str) -> dict[str, Any]:
    return next((g for g in status(flow).get("workerGroups") or [] if g["name"] == name), {})


def pods(flow: RealCluster, group_name: str) -> list[Any]:
    selector = f"{contract.LABEL_CLUSTER}={NAME},{contract.LABEL_GROUP}={group_name}"
    return [p for p in flow.core.list_namespaced_pod(NS, label_selector=selector).items
            if p.metadata.deletion_timestamp is None]


def events(flow: RealCluster) -> str:
    return "\n".join(f"{e.reason}: {e.message}" for e in flow.core.list_namespaced_event(NS).items
                     if e.involved_object.name == NAME)


def debug(flow: RealCluster) -> str:
    """What a failure report shows: the pods, the cluster's status and Events, the operator's log."""
    state = flow.kubectl("get", "pods,actorclusters", "-A", "-o", "wide", check=False)
    operator = "\n".join(flow.pod_log(p.metadata.name, OPERATOR_NS)[-6000:]
                         for p in flow.core.list_namespaced_pod(OPERATOR_NS).items)
    return (f"--- objects:\n{state.stdout}\n--- status: {status(flow)}\n--- events:\n{events(flow)}\n"
            f"--- operator log:\n{operator}")


def wait(flow: RealCluster, predicate, what: str):
    try:
        return flow.wait(predicate, what, DEADLINE_S)
    except AssertionError as e:
        raise AssertionError(f"{e}\n{debug(flow)}") from None


DRIVER = """
    import sys
    import kastor
    from sample_actors import Counter
    kastor.init(address="scaler-head.default.svc:6380")
    if sys.argv[1] == "create":
        actor = kastor.remote(Counter).options(name="busy", namespace="scaling", lifetime="detached",
                                               resources={"special": 1}).remote()
    else:
        actor = kastor.get_actor("busy", namespace="scaling")
    if sys.argv[1] == "kill":
        kastor.kill(actor)
    else:
        print("INCR", kastor.get(actor.incr.remote()), flush=True)
    print("DONE", flush=True)
"""


def run_driver(flow: RealCluster, name: str, command: str) -> str:
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": {
        "restartPolicy": "Never", "containers": [{
            "name": "driver", "image": "kastor:dev", "command": ["python", "-u", "-c", textwrap.dedent(DRIVER)],
            "args": [command], "env": [{"name": "KASTOR_TOKEN", "valueFrom": {"secretKeyRef": {
                "name": f"{NAME}-token", "key": "token"}}}]}]}}
    flow.core.create_namespaced_pod(NS, pod)
    phase = wait(flow, lambda: (p := flow.pod(name, NS)) and p.status.phase in ("Succeeded", "Failed") and
                 p.status.phase, f"driver pod {name} to finish")
    log = flow.pod_log(name, NS)
    flow.core.delete_namespaced_pod(name, NS)
    assert phase == "Succeeded" and "DONE" in log, log[-3000:]
    return log


def test_an_actor_needing_a_resource_no_worker_has_scales_its_group_up(flow):
    flow.custom.create_namespaced_custom_object(GROUP, VERSION, NS, "actorclusters", CLUSTER)
    wait(flow, lambda: status(flow).get("phase") == "Ready", f"ActorCluster {NAME} Ready")
    assert group(flow, "special").get("desired") == 0 and not pods(flow, "special")
    log = run_driver(flow, "scale-driver-1", "create")  # waits until a special worker joins and runs it
    assert "INCR 1" in log, log[-3000:]
    wait(flow, lambda: group(flow, "special").get("ready") == 1, "the special group's worker ready in status")
    assert group(flow, "special")["desired"] == 1
    assert status(flow)["lastScaling"]["desired"]["special"] == 1
    assert "ScaledUp: special: +1 worker(s) for pending work" in events(flow)  # (the idle cpu worker may go too)


def _ready_for(pod: Any) -> float:
    """Seconds since the pod became Ready (0 if it is not)."""
    cond = next((c for c in pod.status.conditions or [] if c.type == "Ready" and c.status == "True"), None)
    if cond is None or cond.last_transition_time is None:
        return 0.0
    return (datetime.datetime.now(datetime.UTC) - cond.last_transition_time).total_seconds()


def test_idle_workers_go_after_the_timeout_and_a_busy_one_stays(flow):
    wait(flow, lambda: not pods(flow, "cpu") and group(flow, "cpu").get("desired") == 0,
         "the idle cpu worker removed after idleTimeoutSeconds")
    assert "ScaledDown" in events(flow)
    busy = pods(flow, "special")
    assert len(busy) == 1, debug(flow)
    # Well past its idle timeout (several resyncs later), the worker that runs the actor is still there.
    wait(flow, lambda: _ready_for(flow.pod(busy[0].metadata.name, NS)) > 4 * IDLE_TIMEOUT_S + 10,
         "the special worker ready for several idle timeouts")
    assert [p.metadata.name for p in pods(flow, "special")] == [busy[0].metadata.name], debug(flow)
    log = run_driver(flow, "scale-driver-2", "incr")
    assert "INCR 2" in log, log[-3000:]  # the same actor, never restarted: its state is intact
    run_driver(flow, "scale-driver-3", "kill")
    wait(flow, lambda: not pods(flow, "special") and group(flow, "special").get("desired") == 0,
         "the special worker removed once its actor is gone and it idled")
