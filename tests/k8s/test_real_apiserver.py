"""What only a real API server checks, checked on one: the control plane built from
Kubernetes' own modules (`controlplane_fixture.py`).

Kastor's CRDs (`crds/`) are applied as they ship. Every CEL rule in them must reject the
resource it exists for with a 422 naming its message; unknown fields are pruned; names that
Kubernetes refuses are refused; RBAC denies a ServiceAccount without rights; the garbage
collector, the Deployment and ReplicaSet controllers and the scheduler do their part.
"""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes
import pytest
import yaml
from kubernetes.client.rest import ApiException
from support import wait_until

from .controlplane_fixture import ControlPlane

REPO = Path(__file__).resolve().parents[2]
GROUP, VERSION = "kastor.dev", "v1alpha1"
NAMESPACE = "kastor-real-api"
CONTROLLER_DEADLINE_S = 120.0  # controllers on a loaded, shared 2-core machine


def cel_rules(schema: dict[str, Any], path: str = "") -> Iterator[tuple[str, str, str]]:
    """(path, rule, message) of every x-kubernetes-validations entry under `schema`."""
    for rule in schema.get("x-kubernetes-validations", []):
        yield path or ".", rule["rule"], rule.get("message", rule["rule"])
    for name, sub in schema.get("properties", {}).items():
        yield from cel_rules(sub, f"{path}.{name}")
    if "items" in schema:
        yield from cel_rules(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from cel_rules(schema["additionalProperties"], f"{path}{{}}")


def crd_documents() -> list[dict[str, Any]]:
    return [yaml.safe_load(p.read_text()) for p in sorted((REPO / "crds").glob("*.yaml"))]


def all_cel_rules() -> dict[str, tuple[str, str, str]]:
    """message -> (plural, path, rule) for every CEL rule in crds/."""
    found = {}
    for crd in crd_documents():
        for version in crd["spec"]["versions"]:
            for path, rule, message in cel_rules(version["schema"]["openAPIV3Schema"]):
                found[message] = (crd["spec"]["names"]["plural"], path, rule)
    return found


# For each CEL rule (by its message): the plural, a spec the rule must reject, and the same
# spec corrected, which the server must accept (so the 422 is the rule's, nothing else's).
CEL_CASES: dict[str, tuple[str, dict[str, Any], dict[str, Any]]] = {
    "minReplicas must not exceed maxReplicas": (
        "actorclusters",
        {"image": "kastor:dev", "workerGroups": [{"name": "cpu", "minReplicas": 5, "maxReplicas": 2}]},
        {"image": "kastor:dev", "workerGroups": [{"name": "cpu", "minReplicas": 2, "maxReplicas": 5}]},
    ),
    "set either managed or address, not both": (
        "actorclusters",
        {"image": "kastor:dev", "gcs": {"redis": {"managed": True, "address": "redis.example:6379"}}},
        {"image": "kastor:dev", "gcs": {"redis": {"managed": False, "address": "redis.example:6379"}}},
    ),
}
# Transition rules (they see oldSelf, so only an update can break them): the plural, the spec
# created, an update the rule must reject, and an update it must let through.
STORAGE_MESSAGE = ("spec.gcs.redis.storage cannot change while the Redis is managed: the managed Redis's "
                   "StatefulSet keeps the volumeClaimTemplate it was created with. To change it, delete and "
                   "re-create the ActorCluster (its GCS data goes with it), or create a new cluster with the new "
                   "storage and migrate to it")
TRANSITION_CASES: dict[str, tuple[str, dict[str, Any], list[dict[str, Any]], list[dict[str, Any]]]] = {
    STORAGE_MESSAGE: (
        "actorclusters",
        {"image": "kastor:dev", "gcs": {"redis": {"managed": True, "storage": {"size": "1Gi"}}}},
        # a new size, a StorageClass set, the storage removed: each rejected
        [{"gcs": {"redis": {"storage": {"size": "2Gi"}}}},
         {"gcs": {"redis": {"storage": {"storageClassName": "fast"}}}},
         {"gcs": {"redis": {"storage": None}}}],
        # the rest of the Redis spec still changes; no longer managed, storage may go
        [{"gcs": {"redis": {"image": "redis:7.4-alpine"}}},
         {"gcs": {"redis": {"managed": False, "storage": None}}}],
    ),
    "spec.cluster and spec.group name the worker group this object sizes and cannot change": (
        "actorworkergroups",
        {"cluster": "demo", "group": "cpu", "replicas": 1},
        [{"cluster": "other"}, {"group": "gpu"}],
        [{"replicas": 3}],
    ),
}
# Rules on metadata.name (issue 12 defect 9): the plural, a name the rule must reject and a
# valid spec, which the server must accept under a good name.
NAME_CASES: dict[str, tuple[str, str, dict[str, Any]]] = {
    "an ActorCluster name must be at most 53 lowercase letters, digits or '-', start with a letter and end with a "
    "letter or digit (it names the cluster's Services)": ("actorclusters", "1st.cluster", {"image": "kastor:dev"}),
    "a DetachedActor name must be at most 63 characters (it is a label value on its pods)": (
        "detachedactors", "a" * 64, {"clusterRef": "demo", "actorClass": "m:C"}),
}
KINDS = {"actorclusters": "ActorCluster", "detachedactors": "DetachedActor", "actorworkergroups": "ActorWorkerGroup"}


def custom_object(plural: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": KINDS[plural], "metadata": {"name": name}, "spec": spec}


@pytest.fixture(scope="module")
def api(real_k8s: ControlPlane) -> kubernetes.client.ApiClient:
    """The admin client, with crds/ applied (and Established) and the test namespace made."""
    client = real_k8s.api_client
    ext = kubernetes.client.ApiextensionsV1Api(client)
    for crd in crd_documents():
        try:
            ext.create_custom_resource_definition(crd)
        except ApiException as e:
            if e.status != 409:
                raise
            crd["metadata"]["resourceVersion"] = ext.read_custom_resource_definition(
                crd["metadata"]["name"]
            ).metadata.resource_version
            ext.replace_custom_resource_definition(crd["metadata"]["name"], crd)

    def established(name: str) -> bool:
        conditions = ext.read_custom_resource_definition(name).status.conditions or []
        return any(c.type == "Established" and c.status == "True" for c in conditions)

    for name in (crd["metadata"]["name"] for crd in crd_documents()):
        wait_until(lambda name=name: established(name), f"CRD {name} Established", 60)
    core = kubernetes.client.CoreV1Api(client)
    try:
        core.create_namespace({"metadata": {"name": NAMESPACE}})
    except ApiException as e:
        if e.status != 409:
            raise
    return client


def listening_addresses(pid: int) -> list[str]:
    """host:port of every TCP socket that process `pid` listens on (from /proc)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    found = []
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state != "0A" or inode not in inodes:  # 0A: LISTEN
                continue
            address, port = local.split(":")
            if table == "tcp":
                host = str(ipaddress.IPv4Address(bytes.fromhex(address)[::-1]))
            else:
                words = [bytes.fromhex(address[i : i + 8])[::-1] for i in range(0, 32, 8)]
                host = f"[{ipaddress.IPv6Address(b''.join(words))}]"
            found.append(f"{host}:{int(port, 16)}")
    return found


def test_control_plane_listens_on_127_0_0_1_only(real_k8s):
    addresses = listening_addresses(real_k8s.pid)
    api_port = int(real_k8s.server.rsplit(":", 1)[1])
    assert f"127.0.0.1:{api_port}" in addresses, addresses
    assert len(addresses) >= 3, f"expected the apiserver and etcd's client and peer ports: {addresses}"
    assert all(a.startswith("127.0.0.1:") for a in addresses), addresses


def test_every_cel_rule_in_crds_has_a_case():
    rules = all_cel_rules()
    assert rules, "crds/ has no x-kubernetes-validations rule at all; the cases below would test nothing"
    missing = sorted(set(rules) - set(CEL_CASES) - set(NAME_CASES) - set(TRANSITION_CASES))
    assert not missing, f"CEL rules without a rejection case in CEL_CASES: {[(m, rules[m]) for m in missing]}"
    stale = sorted((set(CEL_CASES) | set(NAME_CASES) | set(TRANSITION_CASES)) - set(rules))
    assert not stale, f"CEL_CASES for rules no longer in crds/: {stale}"


@pytest.mark.parametrize("message", sorted(CEL_CASES))
def test_cel_rule_rejects_with_its_message(api, message):
    plural, bad, good = CEL_CASES[message]
    objects = kubernetes.client.CustomObjectsApi(api)
    name = "cel-" + str(sorted(CEL_CASES).index(message))
    with pytest.raises(ApiException) as rejected:
        objects.create_namespaced_custom_object(GROUP, VERSION, NAMESPACE, plural, custom_object(plural, name, bad))
    assert rejected.value.status == 422, rejected.value.body
    body = json.loads(rejected.value.body)
    assert body["reason"] == "Invalid"
    assert message in body["message"], body["message"]
    created = objects.create_namespaced_custom_object(
        GROUP, VERSION, NAMESPACE, plural, custom_object(plural, name, good)
    )
    assert created["metadata"]["name"] == name
    objects.delete_namespaced_custom_object(GROUP, VERSION, NAMESPACE, plural, name)


@pytest.mark.parametrize("message", sorted(TRANSITION_CASES))
def test_transition_rule_rejects_an_update_with_its_message(api, message):
    plural, created, rejected_updates, accepted_updates = TRANSITION_CASES[message]
    objects = kubernetes.client.CustomObjectsApi(api)
    name = "transition-" + str(sorted(TRANSITION_CASES).index(message))
    objects.create_namespaced_custom_object(GROUP, VERSION, NAMESPACE, plural, custom_object(plural, name, created))
    try:
        for update in rejected_updates:
            with pytest.raises(ApiException) as rejected:
                objects.patch_namespaced_custom_object(GROUP, VERSION, NAMESPACE, plural, name, {"spec": update})
            assert rejected.value.status == 422, (update, rejected.value.body)
            assert message in json.loads(rejected.value.body)["message"], rejected.value.body
        for update in accepted_updates:
            objects.patch_namespaced_custom_object(GROUP, VERSION, NAMESPACE, plural, name, {"spec": update})
    finally:
        objects.delete_namespaced_custom_object(GROUP, VERSION, NAMESPACE, plural, name)


@pytest.mark.parametrize("message", sorted(NAME_CASES))
def test_names_that_cannot_name_the_children_are_rejected_at_admission(api, message):
    plural, bad_name, spec = NAME_CASES[message]
    objects = kubernetes.client.CustomObjectsApi(api)
    with pytest.raises(ApiException) as rejected:
        objects.create_namespaced_custom_object(GROUP, VERSION, NAMESPACE, plural,
                                                custom_object(plural, bad_name, spec))
    assert rejected.value.status == 422, rejected.value.body
    assert message in json.loads(rejected.value.body)["message"]
    good = "name-" + str(sorted(NAME_CASES).index(message))
    assert objects.create_namespaced_custom_object(GROUP, VERSION, NAMESPACE, plural,
                                                   custom_object(plural, good, spec))["metadata"]["name"] == good
    objects.delete_namespaced_custom_object(GROUP, VERSION, NAMESPACE, plural, good)
    if plural == "actorclusters":  # the longest name the rule allows still forms every child's name
        longest = "c" + "x" * 52
        objects.create_namespaced_custom_object(GROUP, VERSION, NAMESPACE, plural, custom_object(plural, longest, spec))
        objects.delete_namespaced_custom_object(GROUP, VERSION, NAMESPACE, plural, longest)


def test_unknown_fields_are_pruned_and_preserved_ones_kept(api):
    objects = kubernetes.client.CustomObjectsApi(api)
    spec = {
        "image": "kastor:dev",
        "notAField": 1,
        "head": {"numCpus": 2, "alsoNotAField": "x", "template": {"metadata": {"labels": {"team": "a"}}}},
    }
    objects.create_namespaced_custom_object(
        GROUP, VERSION, NAMESPACE, "actorclusters", custom_object("actorclusters", "pruned", spec)
    )
    stored = objects.get_namespaced_custom_object(GROUP, VERSION, NAMESPACE, "actorclusters", "pruned")["spec"]
    assert "notAField" not in stored
    assert "alsoNotAField" not in stored["head"]
    assert stored["head"]["numCpus"] == 2
    # x-kubernetes-preserve-unknown-fields keeps the pod template overrides whole...
    assert stored["head"]["template"] == {"metadata": {"labels": {"team": "a"}}}
    # ...and the structural schema's defaults are applied.
    assert stored["imagePullPolicy"] == "IfNotPresent"
    assert stored["head"]["ports"]["control"] == 6380


def test_a_worker_groups_node_labels_are_kept_and_must_be_strings(api):
    objects = kubernetes.client.CustomObjectsApi(api)
    group = {"name": "gpu", "labels": {"region": "us-west", "ray.io/accelerator-type": "H100"}}
    objects.create_namespaced_custom_object(GROUP, VERSION, NAMESPACE, "actorclusters", custom_object(
        "actorclusters", "labelled", {"image": "kastor:dev", "workerGroups": [group]}))
    stored = objects.get_namespaced_custom_object(GROUP, VERSION, NAMESPACE, "actorclusters", "labelled")["spec"]
    assert stored["workerGroups"][0]["labels"] == group["labels"]
    with pytest.raises(kubernetes.client.ApiException) as e:
        objects.create_namespaced_custom_object(GROUP, VERSION, NAMESPACE, "actorclusters", custom_object(
            "actorclusters", "badlabels", {"image": "kastor:dev", "workerGroups": [{"name": "a", "labels": {"n": 5}}]}))
    assert e.value.status == 422 and "labels" in e.value.body


def test_service_name_that_is_not_a_dns_label_is_rejected(api):
    core = kubernetes.client.CoreV1Api(api)

    def service(name: str) -> dict[str, Any]:
        return {"metadata": {"name": name}, "spec": {"ports": [{"port": 6380}], "selector": {"app": "x"}}}

    with pytest.raises(ApiException) as rejected:
        core.create_namespaced_service(NAMESPACE, service("1.team-a-head"))
    assert rejected.value.status == 422, rejected.value.body
    message = json.loads(rejected.value.body)["message"]
    assert "1.team-a-head" in message and "DNS-1035" in message, message
    # The same Service under a valid name is accepted (dry run: no ClusterIP is kept).
    core.create_namespaced_service(NAMESPACE, service("team-a-head"), dry_run="All")


def test_rbac_denies_a_service_account_without_rights(api, real_k8s):
    core = kubernetes.client.CoreV1Api(api)
    core.create_namespaced_service_account(NAMESPACE, {"metadata": {"name": "no-rights"}})
    token = core.create_namespaced_service_account_token(
        "no-rights", NAMESPACE, {"spec": {"expirationSeconds": 600}}
    ).status.token
    with real_k8s.client_with_token(token) as as_sa:
        # Authenticated (this is a 403, not a 401): the server knows who is asking...
        review = kubernetes.client.AuthenticationV1Api(as_sa).create_self_subject_review(
            {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}
        )
        assert review.status.user_info.username == f"system:serviceaccount:{NAMESPACE}:no-rights"
        # ...and RBAC says no.
        sa_core = kubernetes.client.CoreV1Api(as_sa)
        with pytest.raises(ApiException) as denied:
            sa_core.list_namespaced_secret(NAMESPACE)
        assert denied.value.status == 403, denied.value.body
        assert "cannot list resource" in json.loads(denied.value.body)["message"]

        # Granting the right through RBAC is what lets the same token through.
        rbac = kubernetes.client.RbacAuthorizationV1Api(api)
        rbac.create_namespaced_role(
            NAMESPACE,
            {
                "metadata": {"name": "read-secrets"},
                "rules": [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["list"]}],
            },
        )
        rbac.create_namespaced_role_binding(
            NAMESPACE,
            {
                "metadata": {"name": "no-rights-reads-secrets"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "read-secrets"},
                "subjects": [{"kind": "ServiceAccount", "name": "no-rights", "namespace": NAMESPACE}],
            },
        )

        def allowed() -> bool:
            try:
                sa_core.list_namespaced_secret(NAMESPACE)
                return True
            except ApiException as e:
                if e.status != 403:
                    raise
                return False

        wait_until(allowed, "the RoleBinding to let the ServiceAccount list secrets", 30)


def test_garbage_collector_deletes_a_child_after_its_owner(api):
    core = kubernetes.client.CoreV1Api(api)
    owner = core.create_namespaced_config_map(NAMESPACE, {"metadata": {"name": "gc-owner"}})
    owner_ref = {"apiVersion": "v1", "kind": "ConfigMap", "name": "gc-owner", "uid": owner.metadata.uid}
    core.create_namespaced_config_map(NAMESPACE, {"metadata": {"name": "gc-child", "ownerReferences": [owner_ref]}})
    core.delete_namespaced_config_map("gc-owner", NAMESPACE, propagation_policy="Background")

    def child_gone() -> bool:
        try:
            core.read_namespaced_config_map("gc-child", NAMESPACE)
            return False
        except ApiException as e:
            if e.status != 404:
                raise
            return True

    wait_until(child_gone, "the garbage collector to delete gc-child after gc-owner", CONTROLLER_DEADLINE_S)


def test_deployment_makes_a_pod_the_scheduler_reports_unschedulable(api):
    """Deployment -> ReplicaSet -> Pod is the controller manager's work; with no node
    registered, the scheduler's answer is PodScheduled=False, reason Unschedulable."""
    apps = kubernetes.client.AppsV1Api(api)
    core = kubernetes.client.CoreV1Api(api)
    labels = {"app": "no-node"}
    apps.create_namespaced_deployment(
        NAMESPACE,
        {
            "metadata": {"name": "no-node"},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {"containers": [{"name": "c", "image": "kastor:dev"}]},
                },
            },
        },
    )

    def unschedulable() -> bool:
        for pod in core.list_namespaced_pod(NAMESPACE, label_selector="app=no-node").items:
            owner = (pod.metadata.owner_references or [None])[0]
            for c in (pod.status.conditions or []) if owner is not None and owner.kind == "ReplicaSet" else []:
                if c.type == "PodScheduled" and c.status == "False" and c.reason == "Unschedulable":
                    return True
        return False

    wait_until(unschedulable, "a ReplicaSet-owned pod marked Unschedulable by the scheduler", CONTROLLER_DEADLINE_S)


def test_the_documented_crd_upgrade_keeps_objects_and_serves_new_fields(api, real_k8s):
    """Helm installs crds/ once and never upgrades them (issue 12 defect 17). The upgrade path the
    operator docs give, `kubectl apply --server-side --force-conflicts -f crds/` before `helm
    upgrade`, is run here from an older ActorCluster CRD (today's without `upgradeStrategy` and
    `autoscaling`): an object stored under the old one is kept, and the new fields, pruned
    before, are kept after."""
    ext = kubernetes.client.ApiextensionsV1Api(api)
    objects = kubernetes.client.CustomObjectsApi(api)
    name = "actorclusters.kastor.dev"
    current = next(d for d in crd_documents() if d["metadata"]["name"] == name)
    older = json.loads(json.dumps(current))
    spec_props = older["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
    for field in ("upgradeStrategy", "autoscaling"):
        spec_props.pop(field)

    def established_with(has_field: bool) -> bool:
        crd = ext.read_custom_resource_definition(name)
        conditions = crd.status.conditions or []
        fields = crd.spec.versions[0].schema.open_apiv3_schema.properties["spec"].properties
        return any(c.type == "Established" and c.status == "True" for c in conditions) and \
            ("upgradeStrategy" in fields) == has_field

    def upgrade_strategy() -> Any:
        body = objects.get_namespaced_custom_object(GROUP, VERSION, NAMESPACE, "actorclusters", "upgraded")
        return body["spec"].get("upgradeStrategy")

    older["metadata"]["resourceVersion"] = ext.read_custom_resource_definition(name).metadata.resource_version
    ext.replace_custom_resource_definition(name, older)
    try:
        wait_until(lambda: established_with(False), "the older CRD served", 60)
        spec = {"image": "kastor:dev", "upgradeStrategy": {"type": "Recreate"}}
        objects.create_namespaced_custom_object(GROUP, VERSION, NAMESPACE, "actorclusters",
                                                custom_object("actorclusters", "upgraded", spec))
        assert upgrade_strategy() is None  # an unknown field: pruned by the older schema
        done = subprocess.run(["kubectl", "--kubeconfig", str(real_k8s.kubeconfig), "apply", "--server-side",
                               "--force-conflicts", "-f", str(REPO / "crds")], capture_output=True, text=True,
                              timeout=120)
        assert done.returncode == 0, done.stderr
        wait_until(lambda: established_with(True), "the upgraded CRD served", 60)
        # the object stored under the older CRD is still there, and takes the new field now
        objects.patch_namespaced_custom_object(GROUP, VERSION, NAMESPACE, "actorclusters", "upgraded",
                                               {"spec": {"upgradeStrategy": {"type": "Recreate"}}})
        assert upgrade_strategy() == {"type": "Recreate"}
    finally:
        try:
            objects.delete_namespaced_custom_object(GROUP, VERSION, NAMESPACE, "actorclusters", "upgraded")
        except ApiException as e:
            if e.status != 404:
                raise
        if not established_with(True):  # leave the session's control plane with today's CRD
            current["metadata"]["resourceVersion"] = ext.read_custom_resource_definition(name).metadata.resource_version
            ext.replace_custom_resource_definition(name, current)
            wait_until(lambda: established_with(True), "today's CRD served again", 60)
