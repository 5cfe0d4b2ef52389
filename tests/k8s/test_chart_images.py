"""Which image each role runs (issue 12 defect 18): the operator chart's Deployment runs the
operator image (the Dockerfile's `operator` target), an ActorCluster from the cluster chart
names the runtime image (`runtime` target), as KubeRay's operator image is apart from the Ray
image of a RayCluster; the quick start and the kind e2e build and load both targets."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml

from .helm import find_helm

REPO = Path(__file__).resolve().parents[2]
HELM = find_helm()
needs_helm = pytest.mark.skipif(HELM is None, reason="no helm binary (see tests/k8s/helm.py)")


def rendered(chart: str) -> list[dict]:
    done = subprocess.run([HELM, "template", "rel", str(REPO / "charts" / chart)], capture_output=True, text=True,
                          timeout=60, check=True)
    return [d for d in yaml.safe_load_all(done.stdout) if d]


@needs_helm
def test_the_operator_chart_runs_the_operator_image():
    deployment = next(d for d in rendered("kastor-operator") if d["kind"] == "Deployment")
    images = [c["image"] for c in deployment["spec"]["template"]["spec"]["containers"]]
    assert len(images) == 1 and images[0].split(":")[0] == "ghcr.io/kastor-dev/kastor-operator", images


@needs_helm
def test_an_actorcluster_of_the_cluster_chart_runs_the_runtime_image():
    cluster = next(d for d in rendered("kastor-cluster") if d["kind"] == "ActorCluster")
    assert cluster["spec"]["image"].split(":")[0] == "ghcr.io/kastor-dev/kastor", cluster["spec"]["image"]


def _targets(text: str) -> set[str]:
    return set(re.findall(r"docker build --target (\w+)", text)) | set(re.findall(r'"--target", "(\w+)"', text))


def test_the_quick_start_and_the_kind_e2e_build_the_operator_and_cluster_targets():
    for path in (REPO / "docs" / "kubernetes" / "operator.md", REPO / "tests" / "e2e" / "test_kind.py",
                 REPO / "Makefile"):
        targets = _targets(path.read_text())
        assert "operator" in targets and targets & {"runtime", "demo"}, f"{path.name} builds {targets}"
