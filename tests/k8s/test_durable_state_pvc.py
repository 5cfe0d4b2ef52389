"""DetachedActor.spec.state on a PersistentVolumeClaim, end to end on the real control plane.

The operator (`python -m kastor.operator`, a host process with the admin kubeconfig) creates
the actor's claim; the control plane's volume binder hands it to the harness's local-path
provisioner (`provisioner.py`), which makes a hostPath volume; the process kubelet mounts it
in the actor's pod. After `kubectl delete pod`, the new pod's actor keeps its balance from
the checkpoint on the volume. Deleting the DetachedActor deletes its claim (its owner, by
garbage collection), and with the StorageClass's reclaimPolicy Delete the volume and its data.
"""

from __future__ import annotations

import base64
import os
import pathlib
from collections.abc import Iterator
from typing import Any

import kubernetes
import pytest
import yaml

from .host_flows import run_driver, wait_explained
from .real_cluster import RealCluster, netns_problem
from .test_operator_real import running_operator
from .test_real_apiserver import api  # noqa: F401 - the fixture: crds/ applied

pytestmark = pytest.mark.skipif(netns_problem() is not None, reason=f"{netns_problem()}")
NS = "durable-pvc"
GROUP, VERSION = "kastor.dev", "v1alpha1"
DEADLINE_S = 240.0  # real processes in pods on a loaded, shared 2-core machine
POD_ENV = [{"name": "KASTOR_PRESTART_WORKERS", "value": "0"}]


@pytest.fixture(scope="module")
def cluster(real_k8s, api, tmp_path_factory) -> Iterator[RealCluster]:  # noqa: F811 - the fixture imported above
    c = RealCluster(real_k8s, tmp_path_factory.mktemp("durable-pvc"), nodes=("pvc-a",), storage=True).start()
    try:
        c.make_namespace(NS)
        with running_operator(real_k8s, c.workdir / "operator.log", namespace=NS, wrap=c.command):
            yield c
    finally:
        c.stop()


def create(c: RealCluster, plural: str, kind: str, name: str, spec: dict[str, Any]) -> None:
    c.custom.create_namespaced_custom_object(GROUP, VERSION, NS, plural, {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": kind, "metadata": {"name": name}, "spec": spec})


def status(c: RealCluster, plural: str, name: str) -> dict[str, Any]:
    try:
        return c.custom.get_namespaced_custom_object(GROUP, VERSION, NS, plural, name).get("status") or {}
    except kubernetes.client.ApiException as e:
        if e.status == 404:
            return {}
        raise


def wait(c: RealCluster, predicate, what: str) -> Any:
    """c.wait, and on timeout the objects, events and the operator's log tail."""
    return wait_explained(c, predicate, what, DEADLINE_S, NS, "pods,pvc,pv,actorclusters,detachedactors")


def driver(c: RealCluster, code: str) -> str:
    """A driver on the host, through the head's Service (its name resolves to the host-side address)."""
    token = base64.b64decode(c.core.read_namespaced_secret("vault-token", NS).data["token"]).decode()
    return run_driver(c, status(c, "actorclusters", "vault")["headAddress"], token, code)


def claim_volume(c: RealCluster, claim: str) -> Any:
    try:
        pvc = c.core.read_namespaced_persistent_volume_claim(claim, NS)
    except kubernetes.client.ApiException as e:
        if e.status == 404:
            return None
        raise
    return c.core.read_persistent_volume(pvc.spec.volume_name) if pvc.status.phase == "Bound" else None


def exists(read, *args: str) -> bool:
    try:
        read(*args)
        return True
    except kubernetes.client.ApiException as e:
        if e.status == 404:
            return False
        raise


DEPOSIT_3 = """
    account = kastor.get_actor("ada", namespace="durable-pvc")
    print(kastor.get([account.deposit.remote(1) for _ in range(3)])[-1])
"""
EXAMPLE = pathlib.Path(__file__).resolve().parents[2] / "examples" / "kubernetes" / "durable-account.yaml"


def the_examples_account(cluster_name: str) -> dict[str, Any]:
    """examples/kubernetes/durable-account.yaml (examples/durable_account.py's Account on a claim),
    pointed at this test's cluster."""
    manifest = yaml.safe_load(EXAMPLE.read_text())
    assert manifest["spec"]["state"]["store"] == "volume"
    manifest["spec"].update(clusterRef=cluster_name, env=POD_ENV)
    return manifest


def test_the_examples_durable_account_on_a_claim_keeps_its_balance_after_its_pod_is_deleted(cluster):
    template = {"spec": {"containers": [{"name": "kastor", "env": POD_ENV}]}}
    create(cluster, "actorclusters", "ActorCluster", "vault", {
        "image": "kastor:test", "head": {"template": template},
        "workerGroups": [{"name": "cpu", "replicas": 0, "template": template}]})
    wait(cluster, lambda: status(cluster, "actorclusters", "vault").get("phase") == "Ready", "ActorCluster vault Ready")
    account = the_examples_account("vault")
    cluster.custom.create_namespaced_custom_object(GROUP, VERSION, NS, "detachedactors", account)
    pv = wait(cluster, lambda: claim_volume(cluster, "ada-state"), "the operator's claim ada-state Bound")
    assert pv.spec.storage_class_name == "standard", "the default StorageClass"
    wait(cluster, lambda: status(cluster, "detachedactors", "ada").get("state") == "Alive", "ada Alive")
    assert driver(cluster, DEPOSIT_3).strip() == "103"
    directory = pv.spec.host_path.path
    assert os.listdir(directory), f"the checkpoint is on the volume ({directory})"

    first = status(cluster, "detachedactors", "ada")["podName"]
    cluster.kubectl("delete", "pod", first, "-n", NS, "--wait=false")  # the operator replaces it

    def replaced() -> bool:
        st = status(cluster, "detachedactors", "ada")
        return st.get("podName") not in (None, first) and st.get("state") == "Alive" and st.get("restarts") == 1

    wait(cluster, replaced, "ada restarted on a new pod")
    assert driver(cluster, DEPOSIT_3).strip() == "106", "restored from the checkpoint on the volume, not constructed"
    assert claim_volume(cluster, "ada-state").metadata.name == pv.metadata.name, "the same volume, mounted again"

    cluster.custom.delete_namespaced_custom_object(GROUP, VERSION, NS, "detachedactors", "ada")
    wait(cluster, lambda: not exists(cluster.core.read_namespaced_persistent_volume_claim, "ada-state", NS),
         "the claim deleted with its DetachedActor (garbage collection of its owner)")
    wait(cluster, lambda: not exists(cluster.core.read_persistent_volume, pv.metadata.name),
         "the volume deleted (StorageClass reclaimPolicy Delete)")
    assert not os.path.exists(directory), "and its data with it"
