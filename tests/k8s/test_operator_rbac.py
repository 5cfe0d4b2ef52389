"""The operator chart's RBAC on the real control plane (issue 12 defect 7): exactly least
privilege. The API server's own authorizer answers what the chart's ServiceAccount may do,
and the operator runs under that ServiceAccount's token through its whole flow (create,
suspend, delete) without a single 403.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import kubernetes
import pytest
import yaml
from kubernetes.client.rest import ApiException
from support import wait_until

from .helm import find_helm
from .test_real_apiserver import CONTROLLER_DEADLINE_S, GROUP, VERSION, api, custom_object  # noqa: F401

REPO = Path(__file__).resolve().parents[2]
NAMESPACE = "kastor-rbac"
HELM = find_helm()
pytestmark = pytest.mark.skipif(HELM is None, reason="no helm binary (see tests/k8s/helm.py)")

# (verb, resource, subresource) the operator calls, and some it must not be able to.
NEEDED = [("get", "actorclusters", ""), ("list", "actorclusters", ""), ("watch", "actorclusters", ""),
          ("patch", "actorclusters", ""), ("patch", "actorclusters", "status"),
          ("update", "actorclusters", "finalizers"), ("update", "detachedactors", "finalizers"),
          ("patch", "detachedactors", "status"), ("list", "pods", ""), ("watch", "pods", ""), ("create", "pods", ""),
          ("delete", "pods", ""), ("get", "services", ""), ("create", "services", ""),
          ("patch", "services", ""), ("get", "secrets", ""),
          ("create", "secrets", ""), ("create", "events", ""),
          ("get", "nodes", ""), ("get", "statefulsets", ""), ("create", "statefulsets", ""),
          ("patch", "statefulsets", ""),
          ("get", "poddisruptionbudgets", ""), ("create", "poddisruptionbudgets", ""),
          ("delete", "poddisruptionbudgets", ""),
          ("get", "actorworkergroups", ""), ("list", "actorworkergroups", ""), ("watch", "actorworkergroups", ""),
          ("create", "actorworkergroups", ""), ("patch", "actorworkergroups", ""),
          ("delete", "actorworkergroups", ""), ("patch", "actorworkergroups", "status")]
NOT_NEEDED = [("update", "actorclusters", ""), ("delete", "actorclusters", ""), ("get", "actorclusters", "status"),
              ("update", "actorclusters", "status"), ("list", "secrets", ""), ("watch", "secrets", ""),
              ("update", "secrets", ""), ("delete", "secrets", ""), ("get", "pods", ""), ("update", "pods", ""),
              ("patch", "pods", ""), ("delete", "services", ""), ("patch", "events", ""),
              ("create", "pods", "exec"), ("list", "nodes", ""), ("patch", "nodes", ""), ("delete", "nodes", ""),
              ("list", "statefulsets", ""), ("watch", "statefulsets", ""), ("update", "statefulsets", ""),
              ("delete", "statefulsets", ""),
              ("list", "poddisruptionbudgets", ""), ("watch", "poddisruptionbudgets", ""),
              ("update", "poddisruptionbudgets", ""), ("patch", "poddisruptionbudgets", ""),
              ("update", "actorworkergroups", ""), ("deletecollection", "actorworkergroups", ""),
              ("get", "actorworkergroups", "scale"), ("update", "actorworkergroups", "scale"),
              ("patch", "actorworkergroups", "scale"), ("update", "actorworkergroups", "status")]
API_GROUP = {"actorclusters": GROUP, "detachedactors": GROUP, "actorworkergroups": GROUP, "statefulsets": "apps",
             "poddisruptionbudgets": "policy"}


@pytest.fixture(scope="module")
def chart_account(api) -> Iterator[str]:  # noqa: F811 - the fixture imported above
    """Applies the operator chart's RBAC and ServiceAccount (namespaced mode); yields the account's name.

    The cluster-scoped objects go again afterwards: the control plane is the session's, and a later
    `helm install` of the chart cannot adopt ClusterRoles it did not create."""
    args = ["template", "rel", str(REPO / "charts" / "kastor-operator"), "--namespace", NAMESPACE,
            "--set", f"watchNamespaces={{{NAMESPACE}}}", "--set", "peering.enabled=false"]
    rendered = subprocess.run([HELM, *args], capture_output=True, text=True, timeout=60, check=True).stdout
    docs = [d for d in yaml.safe_load_all(rendered) if d]
    try:
        kubernetes.client.CoreV1Api(api).create_namespace({"metadata": {"name": NAMESPACE}})
    except ApiException as e:
        if e.status != 409:
            raise
    for doc in docs:
        if doc["kind"] in ("ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"):
            try:
                kubernetes.utils.create_from_dict(api, doc, namespace=NAMESPACE)
            except kubernetes.utils.FailToCreateError as e:
                if not all(getattr(x, "status", None) == 409 for x in e.api_exceptions):
                    raise
    yield next(d["metadata"]["name"] for d in docs if d["kind"] == "ServiceAccount")
    rbac = kubernetes.client.RbacAuthorizationV1Api(api)
    for doc in docs:
        delete = {"ClusterRole": rbac.delete_cluster_role, "ClusterRoleBinding": rbac.delete_cluster_role_binding}
        if doc["kind"] in delete:
            try:
                delete[doc["kind"]](doc["metadata"]["name"])
            except ApiException as e:
                if e.status != 404:
                    raise
    kubernetes.client.CoreV1Api(api).delete_namespace(NAMESPACE)


def allowed(api, account: str, verb: str, resource: str, subresource: str) -> bool:  # noqa: F811
    review = {"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
              "spec": {"user": f"system:serviceaccount:{NAMESPACE}:{account}",
                       "groups": ["system:serviceaccounts", f"system:serviceaccounts:{NAMESPACE}"],
                       "resourceAttributes": {"namespace": NAMESPACE, "verb": verb, "resource": resource,
                                              "subresource": subresource, "group": API_GROUP.get(resource, "")}}}
    reply = kubernetes.client.AuthorizationV1Api(api).create_subject_access_review(review)
    return bool(reply.status.allowed)


def test_the_chart_grants_what_the_operator_calls_and_nothing_else(api, chart_account):  # noqa: F811
    missing = [n for n in NEEDED if not allowed(api, chart_account, *n)]
    assert not missing, f"the chart does not grant: {missing}"
    extra = [n for n in NOT_NEEDED if allowed(api, chart_account, *n)]
    assert not extra, f"the chart grants what the operator never calls: {extra}"


def user_allowed(api, user: str, verb: str, resource: str, subresource: str) -> bool:  # noqa: F811
    review = {"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
              "spec": {"user": user, "resourceAttributes": {"namespace": NAMESPACE, "verb": verb, "group": GROUP,
                                                            "resource": resource, "subresource": subresource}}}
    return bool(kubernetes.client.AuthorizationV1Api(api).create_subject_access_review(review).status.allowed)


def test_kastor_edit_may_scale_a_worker_group_and_kastor_view_may_read_its_scale(api, chart_account):  # noqa: F811
    rbac = kubernetes.client.RbacAuthorizationV1Api(api)
    for role in ("kastor-edit", "kastor-view"):
        binding = {"metadata": {"name": f"test-{role}"}, "subjects": [
            {"kind": "User", "name": f"{role}-user", "apiGroup": "rbac.authorization.k8s.io"}],
            "roleRef": {"kind": "ClusterRole", "name": role, "apiGroup": "rbac.authorization.k8s.io"}}
        try:
            rbac.create_namespaced_role_binding(NAMESPACE, binding)
        except ApiException as e:
            if e.status != 409:
                raise
    for verb in ("get", "update", "patch"):
        assert user_allowed(api, "kastor-edit-user", verb, "actorworkergroups", "scale"), verb
    assert user_allowed(api, "kastor-view-user", "get", "actorworkergroups", "scale")
    assert user_allowed(api, "kastor-view-user", "list", "actorworkergroups", "")
    assert not user_allowed(api, "kastor-view-user", "update", "actorworkergroups", "scale")
    # the operator makes and deletes them: people only resize
    assert not user_allowed(api, "kastor-edit-user", "create", "actorworkergroups", "")
    assert not user_allowed(api, "kastor-edit-user", "delete", "actorworkergroups", "")


def test_the_operator_runs_under_the_charts_service_account(api, chart_account, real_k8s, tmp_path):  # noqa: F811
    token = kubernetes.client.CoreV1Api(api).create_namespaced_service_account_token(
        chart_account, NAMESPACE, {"spec": {"expirationSeconds": 3600}}).status.token
    kubeconfig = tmp_path / "operator.kubeconfig"
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "sa",
        "clusters": [{"name": "real", "cluster": {"server": real_k8s.server,
                                                  "certificate-authority": api.configuration.ssl_ca_cert}}],
        "users": [{"name": "sa", "user": {"token": token}}],
        "contexts": [{"name": "sa", "context": {"cluster": "real", "user": "sa", "namespace": NAMESPACE}}]}))
    log = tmp_path / "operator.log"
    env = {**os.environ, "KUBECONFIG": str(kubeconfig), "KASTOR_OPERATOR_RESYNC_S": "2", "KASTOR_OPERATOR_POLL_S": "2",
           "PYTHONUNBUFFERED": "1"}
    with open(log, "ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "kastor.operator", "--namespace", NAMESPACE, "--standalone",
                                 "--liveness", ""], env=env, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, cwd=tmp_path)
    objects = kubernetes.client.CustomObjectsApi(api)
    core = kubernetes.client.CoreV1Api(api)
    try:
        spec = {"image": "kastor:dev", "gcs": {"redis": {"managed": True}}, "workerGroups": [{"name": "cpu"}]}
        objects.create_namespaced_custom_object(GROUP, VERSION, NAMESPACE, "actorclusters",
                                                custom_object("actorclusters", "rbac", spec))
        objects.create_namespaced_custom_object(GROUP, VERSION, NAMESPACE, "detachedactors", custom_object(
            "detachedactors", "counter", {"clusterRef": "rbac", "actorClass": "m:C"}))

        def roles() -> set[str]:
            return {p.metadata.labels.get("kastor.dev/role") for p in core.list_namespaced_pod(NAMESPACE).items}

        # The worker group's ActorWorkerGroup (its scale subresource) is made under the chart's account.
        wait_until(lambda: objects.list_namespaced_custom_object(GROUP, VERSION, NAMESPACE, "actorworkergroups")[
                   "items"], f"the ActorWorkerGroup rbac-cpu created (log: {log})", CONTROLLER_DEADLINE_S)
        # No kubelet here: the head never gets ready, so workers and the actor's pod wait for it.
        wait_until(lambda: roles() == {"redis", "head"},
                   f"the Redis and head pods created under the chart's account (log: {log})", CONTROLLER_DEADLINE_S)
        policy = kubernetes.client.PolicyV1Api(api)
        wait_until(lambda: {b.metadata.name for b in policy.list_namespaced_pod_disruption_budget(NAMESPACE).items}
                   == {"rbac-head", "rbac-redis"},
                   f"the head's and Redis's PodDisruptionBudgets created under the chart's account (log: {log})",
                   CONTROLLER_DEADLINE_S)
        objects.patch_namespaced_custom_object(GROUP, VERSION, NAMESPACE, "actorclusters", "rbac",
                                               {"spec": {"suspend": True}})
        wait_until(lambda: not roles() & {"head", "worker", "actor"}, f"suspended: pods deleted (log: {log})",
                   CONTROLLER_DEADLINE_S)
        objects.delete_namespaced_custom_object(GROUP, VERSION, NAMESPACE, "detachedactors", "counter")

        def actor_gone() -> bool:
            try:
                objects.get_namespaced_custom_object(GROUP, VERSION, NAMESPACE, "detachedactors", "counter")
                return False
            except ApiException as e:
                return e.status == 404

        wait_until(actor_gone, f"the DetachedActor's finalizer removed (log: {log})", CONTROLLER_DEADLINE_S)
        assert proc.poll() is None, log.read_text()[-3000:]
        text = log.read_text()
        assert "Forbidden" not in text and " 403" not in text, text[-5000:]
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        objects.delete_namespaced_custom_object(GROUP, VERSION, NAMESPACE, "actorclusters", "rbac")
