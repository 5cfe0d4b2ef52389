"""The operator's pure parts, without a cluster: spec parsing, builders, scale-down choice,
template overrides, and every built manifest validated against the real Kubernetes schemas
(kubernetes-validate --strict) and every sample custom resource against our CRD schemas."""

from __future__ import annotations

import copy
import glob
import subprocess
import sys
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml
from kastor.operator import build_actor, build_cluster, pods
from kastor.operator.conditions import set_condition
from kastor.operator.overrides import apply_template
from kastor.operator.spec import SpecError, cpu_quantity, parse_actor, parse_cluster
from kastor.runtime import k8s_contract as contract

REPO = Path(__file__).resolve().parents[2]
K8S_VERSION = "1.32.0"


def cr(kind: str, name: str, spec: dict) -> dict:
    return {"apiVersion": contract.API_VERSION, "kind": kind, "spec": spec,
            "metadata": {"name": name, "namespace": "team", "uid": "0f0e0d0c-0000-4000-8000-000000000001",
                         "generation": 1}}


CLUSTER = cr("ActorCluster", "demo", {
    "image": "ghcr.io/kastor/kastor:0.1.0",
    "head": {"numCpus": 2, "resources": {"requests": {"cpu": "1", "memory": "1Gi"}},
             "template": {"metadata": {"labels": {"team": "ml"}},
                          "spec": {"nodeSelector": {"pool": "cpu"},
                                   "containers": [{"name": "kastor", "env": [{"name": "EXTRA", "value": "1"}]}]}}},
    "workerGroups": [{"name": "gpu", "replicas": 2, "numCpus": 4, "numGpus": 1, "customResources": {"TPU": 2},
                      "resources": {"limits": {"nvidia.com/gpu": 1}}}],
    "gcs": {"redis": {"managed": True}},
})
ACTOR = cr("DetachedActor", "counter", {"clusterRef": "demo", "actorClass": "pkg.mod:Counter", "args": [1, "x"],
                                        "kwargs": {"step": 2}, "maxRestarts": 3,
                                        "resources": {"requests": {"cpu": "500m"}}})


def built_manifests() -> list[dict]:
    spec = parse_cluster(CLUSTER["spec"])
    actor = parse_actor(ACTOR["spec"], "counter", "team")
    stored = parse_cluster({**CLUSTER["spec"], "gcs": {"redis": {"managed": True, "storage": {
        "size": "2Gi", "storageClassName": "fast"}}}})
    return [build_cluster.token_secret(CLUSTER, spec, "t0ken", "pw"), build_cluster.redis_statefulset(CLUSTER, spec),
            build_cluster.redis_statefulset(CLUSTER, stored),
            build_cluster.redis_service(CLUSTER), build_cluster.head_pod(CLUSTER, spec),
            build_cluster.head_service(CLUSTER, spec), build_cluster.worker_pod(CLUSTER, spec, spec.worker_groups[0]),
            build_actor.actor_pod(ACTOR, actor, CLUSTER, spec, 1)]


def manifest_id(m: dict) -> str:
    return f"{m['kind']}-{m['metadata'].get('name') or m['metadata']['generateName']}"


@pytest.mark.parametrize("manifest", built_manifests(), ids=manifest_id)
def test_every_built_manifest_is_valid_kubernetes(manifest):
    manifest = copy.deepcopy(manifest)
    manifest["metadata"].setdefault("name", manifest["metadata"].get("generateName", "") + "x")
    kubernetes_validate.validate(manifest, K8S_VERSION, strict=True)  # raises ValidationError


def test_head_pod_runs_the_head_with_redis_and_the_token_secret():
    head = build_cluster.head_pod(CLUSTER, parse_cluster(CLUSTER["spec"]))
    container = head["spec"]["containers"][0]
    assert container["command"] == ["kastor"]
    assert container["args"][:4] == ["start", "--head", "--block", "--port"]
    assert container["args"][container["args"].index("--redis-address") + 1] == "demo-redis.team.svc:6379"
    assert container["args"][container["args"].index("--cluster-id") + 1] == "team.demo"
    env = {e["name"]: e for e in container["env"]}
    assert "KASTOR_TOKEN" not in env, "the token travels as a file, not in the environment"
    assert env["KASTOR_TOKEN_FILE"]["value"] == "/etc/kastor/token/token"
    assert {"name": "token", "secret": {"secretName": "demo-token", "defaultMode": 0o440,
                                        "items": [{"key": "token", "path": "token"}]}} in head["spec"]["volumes"]
    assert env["KASTOR_REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": "demo-token",
                                                                         "key": "redis-password"}
    assert env["EXTRA"]["value"] == "1"  # template override merged by name, built env kept
    assert head["spec"]["nodeSelector"] == {"pool": "cpu"}
    assert head["metadata"]["labels"]["team"] == "ml" and head["metadata"]["labels"][contract.LABEL_ROLE] == "head"
    assert head["metadata"]["ownerReferences"][0]["uid"] == CLUSTER["metadata"]["uid"]
    assert head["spec"]["securityContext"]["runAsNonRoot"] is True


def test_worker_pod_advertises_its_resources_and_joins_through_the_service():
    spec = parse_cluster(CLUSTER["spec"])
    args = build_cluster.worker_pod(CLUSTER, spec, spec.worker_groups[0])["spec"]["containers"][0]["args"]
    assert args[:3] == ["start", "--address", "demo-head.team.svc:6380"]
    assert args[args.index("--num-cpus") + 1] == "4" and args[args.index("--num-gpus") + 1] == "1"
    assert args[args.index("--resources") + 1] == '{"TPU": 2.0}'


def test_a_worker_group_labels_its_nodes_for_label_selector():
    spec = parse_cluster({**CLUSTER["spec"], "workerGroups": [{"name": "gpu", "labels": {"region": "us-west"}}]})
    args = build_cluster.worker_pod(CLUSTER, spec, spec.worker_groups[0])["spec"]["containers"][0]["args"]
    assert args[args.index("--labels") + 1] == "kastor.io/node-group=gpu,region=us-west"
    with pytest.raises(SpecError, match=r"spec.workerGroups\[0\].labels: invalid value `a b` for label `zone`"):
        parse_cluster({"image": "i", "workerGroups": [{"name": "a", "labels": {"zone": "a b"}}]})


def test_the_service_client_port_is_the_heads_client_port():
    spec = parse_cluster(CLUSTER["spec"])
    ports = {p["name"]: p for p in build_cluster.head_service(CLUSTER, spec)["spec"]["ports"]}
    assert (ports["client"]["port"], ports["client"]["targetPort"]) == (10001, "client")
    args = build_cluster.head_pod(CLUSTER, spec)["spec"]["containers"][0]["args"]
    assert args[args.index("--client-port") + 1] == "10001"
    assert args[args.index("--dashboard-port") + 1] == str(ports["dashboard"]["port"]) == "8265"


def test_the_service_carries_the_frame_relay_on_the_port_the_head_announces():
    """The client port announces its frame relay's port number, and a notebook dials that number
    on the Service's host: the Service port and the head's relay port must be the same."""
    for raw, want in ((CLUSTER["spec"], 10002), ({**CLUSTER["spec"], "head": {"ports": {"relay": 12000}}}, 12000)):
        spec = parse_cluster(raw)
        ports = {p["name"]: p for p in build_cluster.head_service(CLUSTER, spec)["spec"]["ports"]}
        assert (ports["relay"]["port"], ports["relay"]["targetPort"]) == (want, "relay")
        container = build_cluster.head_pod(CLUSTER, spec)["spec"]["containers"][0]
        assert {"name": "relay", "containerPort": want} in container["ports"]
        assert {"name": "KASTOR_FRAME_RELAY_PORT", "value": str(want)} in container["env"]


def test_actor_pod_creates_the_actor_with_its_own_resource():
    spec = parse_cluster(CLUSTER["spec"])
    actor = parse_actor(ACTOR["spec"], "counter", "team")
    pod = build_actor.actor_pod(ACTOR, actor, CLUSTER, spec, 3)
    args = pod["spec"]["containers"][0]["args"]
    assert pod["metadata"]["name"] == "counter-actor-3" and pod["spec"]["restartPolicy"] == "Never"
    assert args[0] == "actor-pod"
    assert dict(zip(args[1::2], args[2::2], strict=False))["--resource"] == "detachedactor/team/counter"
    assert args[args.index("--args-json") + 1] == '[1, "x"]'
    assert args[args.index("--num-cpus") + 1] == "1"  # 500m rounds up: an actor needs a whole CPU to be placed
    assert pod["metadata"]["annotations"][contract.ANNOTATION_SPEC_HASH] == build_actor.spec_hash(ACTOR["spec"])


def test_spec_defaults_and_the_actor_namespace():
    actor = parse_actor({"clusterRef": "c", "actorClass": "m:C"}, "meta-name", "k8s-ns")
    assert (actor.name, actor.namespace, actor.max_restarts, actor.max_concurrency) == ("meta-name", "k8s-ns", 0, 1)
    cluster = parse_cluster({"image": "i"})
    assert cluster.head.ports.control == 6380 and cluster.desired_workers == 0 and not cluster.redis.enabled


@pytest.mark.parametrize("spec, fragment", [
    ({}, "spec.image is required"),
    ({"image": "i", "workerGroups": [{"name": "a", "minReplicas": 3, "maxReplicas": 1}]}, "minReplicas"),
    ({"image": "i", "workerGroups": [{"name": "a"}, {"name": "a"}]}, "used by two"),
    ({"image": "i", "workerGroups": [{"name": "Bad_Name"}]}, "DNS label"),
    ({"image": "i", "gcs": {"redis": {"managed": True, "address": "r:6379"}}}, "either managed"),
])
def test_invalid_cluster_specs_say_why(spec, fragment):
    with pytest.raises(SpecError) as e:
        parse_cluster(spec)
    assert e.value.reason == "InvalidSpec" and fragment in e.value.message


def test_replicas_are_kept_within_min_and_max():
    group = parse_cluster({"image": "i", "workerGroups": [{"name": "a", "replicas": 9, "maxReplicas": 4}]})
    assert group.worker_groups[0].desired == 4


def pod(name: str, created: str, phase: str = "Running", is_ready: bool = True) -> dict:
    return {"metadata": {"name": name, "creationTimestamp": created},
            "status": {"phase": phase, "conditions": [{"type": "Ready", "status": "True" if is_ready else "False"}]}}


def test_scale_down_removes_unready_then_newest_pods():
    live = [pod("old", "2026-01-01T00:00:00Z"), pod("new", "2026-01-03T00:00:00Z"),
            pod("mid", "2026-01-02T00:00:00Z"), pod("unready", "2026-01-01T00:00:00Z", is_ready=False)]
    assert pods.plan_workers(live, 2).delete == ("unready", "new")
    assert pods.plan_workers(live, 4) == pods.WorkerPlan(0, ())


def test_failed_pods_are_replaced():
    plan = pods.plan_workers([pod("a", "t"), pod("dead", "t", phase="Failed", is_ready=False)], 2)
    assert plan == pods.WorkerPlan(1, ("dead",))


def test_cpu_quantities():
    assert cpu_quantity("250m") == 0.25 and cpu_quantity("2") == 2.0 and cpu_quantity(1.5) == 1.5


def test_operator_labels_win_over_template_labels():
    base = {"metadata": {"labels": {contract.LABEL_ROLE: "head"}}, "spec": {"containers": [{"name": "kastor"}]}}
    out = apply_template(base, {"metadata": {"labels": {contract.LABEL_ROLE: "evil", "x": "y"}}})
    assert out["metadata"]["labels"] == {contract.LABEL_ROLE: "head", "x": "y"}


def test_condition_time_moves_only_on_a_flip():
    first = set_condition([], "Ready", True, "Ok", "fine")
    same = set_condition([{**first[0], "lastTransitionTime": "2000-01-01T00:00:00Z"}], "Ready", True, "Ok", "still")
    assert same[0]["lastTransitionTime"] == "2000-01-01T00:00:00Z"
    flipped = set_condition(same, "Ready", False, "Bad", "broken")
    assert flipped[0]["lastTransitionTime"] != "2000-01-01T00:00:00Z"


# ---- CRDs and custom resources ----

def crd(kind: str) -> dict:
    return next(yaml.safe_load(Path(p).read_text()) for p in glob.glob(str(REPO / "crds" / "*.yaml"))
                if yaml.safe_load(Path(p).read_text())["spec"]["names"]["kind"] == kind)


@pytest.mark.parametrize("path", sorted(glob.glob(str(REPO / "crds" / "*.yaml"))), ids=lambda p: Path(p).name)
def test_crds_are_valid_kubernetes(path):
    kubernetes_validate.validate(yaml.safe_load(Path(path).read_text()), K8S_VERSION, strict=True)


def cr_schema(kind: str) -> dict:
    return crd(kind)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


SAMPLES = sorted(glob.glob(str(REPO / "charts" / "kastor-cluster" / "examples" / "*.yaml"))) + \
    sorted(glob.glob(str(REPO / "examples" / "kubernetes" / "*.yaml")))


@pytest.mark.parametrize("path", SAMPLES, ids=lambda p: Path(p).name)
def test_sample_custom_resources_match_the_crd_schema(path):
    for doc in yaml.safe_load_all(Path(path).read_text()):
        if doc and doc.get("apiVersion") == contract.API_VERSION:
            jsonschema.Draft7Validator(cr_schema(doc["kind"])).validate(doc)


def test_crd_schemas_reject_bad_resources():
    validator = jsonschema.Draft7Validator(cr_schema("DetachedActor"))
    good = {"apiVersion": contract.API_VERSION, "kind": "DetachedActor", "metadata": {"name": "a"},
            "spec": {"clusterRef": "c", "actorClass": "m:C"}}
    assert not list(validator.iter_errors(good))
    for bad in ({"clusterRef": "c"}, {"clusterRef": "c", "actorClass": "no-colon"},
                {"clusterRef": "c", "actorClass": "m:C", "maxRestarts": -2}):
        assert list(validator.iter_errors({**good, "spec": bad})), bad


def test_printer_columns_and_short_names():
    ac, da = crd("ActorCluster"), crd("DetachedActor")
    assert [c["name"] for c in ac["spec"]["versions"][0]["additionalPrinterColumns"]] == \
        ["Desired", "Ready", "State", "Head", "Age"]
    assert [c["name"] for c in da["spec"]["versions"][0]["additionalPrinterColumns"]] == \
        ["Cluster", "State", "Restarts", "Pod", "Age"]
    assert ac["spec"]["names"]["shortNames"] == ["ac"] and da["spec"]["names"]["shortNames"] == ["da"]
    assert ac["spec"]["versions"][0]["subresources"] == {"status": {}}


def test_operator_folder_never_shadows_the_stdlib_operator():
    out = subprocess.run([sys.executable, "-c", "import operator, kastor.operator; print(operator.__file__)"],
                         cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert "site-packages" in out or "lib/python" in out, out
    assert not out.strip().startswith(str(REPO / "operator"))


def test_a_node_port_service_exposes_the_client_port():
    body = copy.deepcopy(CLUSTER)
    body["spec"]["head"] = {"serviceType": "NodePort", "ports": {"clientNodePort": 30001}}
    service = build_cluster.head_service(body, parse_cluster(body["spec"]))
    kubernetes_validate.validate(service, K8S_VERSION, strict=True)
    client = next(p for p in service["spec"]["ports"] if p["name"] == "client")
    assert service["spec"]["type"] == "NodePort" and client["nodePort"] == 30001


def test_a_tls_cluster_mounts_its_secret_in_every_kastor_pod():
    tls_cluster = cr("ActorCluster", "demo", {**CLUSTER["spec"], "tls": {"secretName": "demo-tls"}})
    spec = parse_cluster(tls_cluster["spec"])
    actor = parse_actor(ACTOR["spec"], "counter", "team")
    pods_built = [build_cluster.head_pod(tls_cluster, spec),
                  build_cluster.worker_pod(tls_cluster, spec, spec.worker_groups[0]),
                  build_actor.actor_pod(ACTOR, actor, tls_cluster, spec, 1)]
    for pod in pods_built:
        kubernetes_validate.validate(pod, K8S_VERSION, strict=True)
        container = pod["spec"]["containers"][0]
        assert {"name": "tls", "secret": {"secretName": "demo-tls", "defaultMode": 0o440}} in pod["spec"]["volumes"]
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert env["KASTOR_TLS_CA"] == "/etc/kastor/tls/ca.crt" and env["KASTOR_TLS_KEY"] == "/etc/kastor/tls/tls.key"
    assert "tls" not in str(build_cluster.head_pod(CLUSTER, parse_cluster(CLUSTER["spec"]))["spec"]["volumes"])


def _as_stored(service: dict, node_ports: dict[str, int] | None = None) -> dict:
    """A built Service as the API server returns it: protocol defaulted, node ports allocated."""
    stored = copy.deepcopy(service)
    for port in stored["spec"]["ports"]:
        port["protocol"] = "TCP"
        if stored["spec"]["type"] != "ClusterIP":
            port.setdefault("nodePort", (node_ports or {}).get(port["name"], 31000))
    return stored


def test_a_service_is_patched_only_when_its_type_or_ports_changed():
    """Issue 12 defect 4: a spec change reaches the Service, server-filled fields are no change,
    and a node port the server allocated is kept (clients outside use it)."""
    from kastor.operator.services import service_patch

    spec = parse_cluster(CLUSTER["spec"])
    service = build_cluster.head_service(CLUSTER, spec)
    assert service_patch(service, _as_stored(service)) is None

    node_port = copy.deepcopy(CLUSTER)
    node_port["spec"]["head"]["serviceType"] = "NodePort"
    wanted = build_cluster.head_service(node_port, parse_cluster(node_port["spec"]))
    patch = service_patch(wanted, _as_stored(service))
    assert patch["spec"]["type"] == "NodePort" and patch["spec"]["ports"] == wanted["spec"]["ports"]
    stored = _as_stored(wanted, {"client": 31234})
    assert service_patch(wanted, stored) is None

    moved = copy.deepcopy(node_port)
    moved["spec"]["head"]["ports"] = {"control": 7000}
    patch = service_patch(build_cluster.head_service(moved, parse_cluster(moved["spec"])), stored)
    ports = {p["name"]: p for p in patch["spec"]["ports"]}
    assert ports["control"]["port"] == 7000 and ports["client"]["nodePort"] == 31234


def test_pods_carry_the_hash_of_the_spec_they_were_built_from():
    """Issue 12 defect 4: what shapes a pod changes its hash; the Service type and the group's size do not."""
    def hashes(spec: dict) -> tuple[str, str]:
        body = cr("ActorCluster", "demo", spec)
        parsed = parse_cluster(spec)
        return tuple(p["metadata"]["annotations"][contract.ANNOTATION_SPEC_HASH]
                     for p in (build_cluster.head_pod(body, parsed),
                               build_cluster.worker_pod(body, parsed, parsed.worker_groups[0])))

    base = copy.deepcopy(CLUSTER["spec"])
    head, worker = hashes(base)
    image = hashes({**base, "image": "ghcr.io/kastor/kastor:0.2.0"})
    assert image[0] != head and image[1] != worker
    resized = copy.deepcopy(base)
    resized["workerGroups"][0].update(replicas=7, maxReplicas=9)
    resized["head"]["serviceType"] = "NodePort"
    assert hashes(resized) == (head, worker)
    worker_resources = copy.deepcopy(base)
    worker_resources["workerGroups"][0]["resources"] = {"limits": {"cpu": "8"}}
    assert hashes(worker_resources) == (head, hashes(worker_resources)[1]) != (head, worker)
    control = copy.deepcopy(base)
    control["head"]["ports"] = {"control": 7000}
    assert hashes(control)[0] != head and hashes(control)[1] != worker, "workers join through the control port"


def _node(raw_group: dict) -> tuple[list[str], dict]:
    """A worker's args and its /dev/shm volume, built from one worker group entry."""
    body = cr("ActorCluster", "demo", {"image": "i", "workerGroups": [{"name": "g", **raw_group}]})
    spec = parse_cluster(body["spec"])
    pod = build_cluster.worker_pod(body, spec, spec.worker_groups[0])
    shm = next(v for v in pod["spec"]["volumes"] if v["name"] == "dshm")
    return pod["spec"]["containers"][0]["args"], shm["emptyDir"]


def _flag(args: list[str], name: str) -> str | None:
    return args[args.index(name) + 1] if name in args else None


def test_a_node_advertises_what_its_container_gets():
    """Issue 12 defect 14, as KubeRay: CPUs from the cpu limit (else request) rounded up, GPUs
    from nvidia.com/gpu, memory from the memory limit; /dev/shm sized to the object store,
    30% of that memory unless objectStoreMemory says otherwise; explicit numCpus/numGpus win."""
    args, shm = _node({"resources": {"limits": {"cpu": "1500m", "memory": "2Gi", "nvidia.com/gpu": 1},
                                     "requests": {"cpu": "1", "memory": "1Gi"}}})
    assert (_flag(args, "--num-cpus"), _flag(args, "--num-gpus"), _flag(args, "--memory")) == ("2", "1", str(2**31))
    assert shm == {"medium": "Memory", "sizeLimit": str(int(2**31 * 0.3))}

    args, shm = _node({"resources": {"requests": {"cpu": "250m", "memory": "512Mi"}}})
    assert (_flag(args, "--num-cpus"), _flag(args, "--num-gpus"), _flag(args, "--memory")) == ("1", "0", str(2**29))

    args, shm = _node({"numCpus": 8, "numGpus": 0, "objectStoreMemory": "1Gi",
                       "resources": {"limits": {"cpu": "2", "memory": "4G", "nvidia.com/gpu": "2"}}})
    assert (_flag(args, "--num-cpus"), _flag(args, "--num-gpus"), _flag(args, "--memory")) == ("8", "0", "4000000000")
    assert shm["sizeLimit"] == str(2**30)

    args, shm = _node({})  # nothing said: 1 CPU, no GPU, no memory, /dev/shm unbounded (as before)
    assert (_flag(args, "--num-cpus"), _flag(args, "--num-gpus"), _flag(args, "--memory")) == ("1", "0", None)
    assert shm == {"medium": "Memory"}

    head = build_cluster.head_pod(CLUSTER, parse_cluster(CLUSTER["spec"]))
    head_args = head["spec"]["containers"][0]["args"]
    assert _flag(head_args, "--num-cpus") == "2" and _flag(head_args, "--memory") == str(2**30), "explicit numCpus"
    assert next(v for v in head["spec"]["volumes"] if v["name"] == "dshm")["emptyDir"]["sizeLimit"] == \
        str(int(2**30 * 0.3))


@pytest.mark.parametrize("value, expected", [("512Mi", 2**29), ("2Gi", 2**31), ("1G", 10**9), ("129e6", 129e6),
                                             (1024, 1024), ("1.5Ki", 1536), ("100m", 0.1)])
def test_memory_quantities(value, expected):
    from kastor.operator.spec import memory_quantity
    assert memory_quantity(value) == expected


@pytest.mark.parametrize("group, fragment", [
    ({"objectStoreMemory": "4Gi", "resources": {"limits": {"memory": "2Gi"}}}, "exceeds the container's memory"),
    ({"objectStoreMemory": "lots"}, "not a memory quantity"),
])
def test_an_object_store_that_cannot_fit_is_refused(group, fragment):
    with pytest.raises(SpecError) as e:
        parse_cluster({"image": "i", "workerGroups": [{"name": "g", **group}]})
    assert fragment in e.value.message


def test_the_managed_redis_password_is_on_no_command_line():
    """Issue 12 defect 13: `--requirepass $(REDIS_PASSWORD)` put the password in the container's
    argv (ps, /proc/<pid>/cmdline). It now comes from the Secret through the environment, as
    configuration on redis-server's stdin; spec.gcs.redis.resources sizes the container."""
    body = cr("ActorCluster", "demo", {"image": "i", "gcs": {"redis": {
        "managed": True, "resources": {"limits": {"memory": "256Mi"}}}}})
    sts = build_cluster.redis_statefulset(body, parse_cluster(body["spec"]))
    container = sts["spec"]["template"]["spec"]["containers"][0]
    argv = container["command"] + container.get("args", [])
    assert not any("$(REDIS_PASSWORD)" in a or "--requirepass" in a for a in argv), argv
    assert "redis-server -" in argv[-1] and "requirepass $REDIS_PASSWORD" in argv[-1]
    env = {e["name"]: e for e in container["env"]}
    assert env["REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": "demo-token", "key": "redis-password"}
    assert container["resources"] == {"limits": {"memory": "256Mi"}}


def test_the_managed_redis_is_a_statefulset_with_its_data_on_a_claim():
    """Issue 12 defect 13: one replica, governed by the Redis Service, appendonly in the working
    directory, which is the data volume: a claim from spec.gcs.redis.storage, else an emptyDir."""
    body = cr("ActorCluster", "demo", {"image": "i", "gcs": {"redis": {
        "managed": True, "storage": {"size": "5Gi", "storageClassName": "fast"}}}})
    sts = build_cluster.redis_statefulset(body, parse_cluster(body["spec"]))
    assert sts["kind"] == "StatefulSet" and sts["metadata"]["name"] == "demo-redis"
    assert sts["metadata"]["ownerReferences"][0]["uid"] == body["metadata"]["uid"]
    spec = sts["spec"]
    assert spec["replicas"] == 1 and spec["serviceName"] == build_cluster.redis_service(body)["metadata"]["name"]
    assert spec["selector"]["matchLabels"].items() <= spec["template"]["metadata"]["labels"].items()
    assert build_cluster.redis_service(body)["spec"]["selector"] == spec["selector"]["matchLabels"]
    [claim] = spec["volumeClaimTemplates"]
    assert claim["spec"] == {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "5Gi"}},
                             "storageClassName": "fast"}
    assert spec["persistentVolumeClaimRetentionPolicy"]["whenDeleted"] == "Delete"
    pod_spec = spec["template"]["spec"]
    assert "volumes" not in pod_spec
    container = pod_spec["containers"][0]
    assert container["volumeMounts"] == [{"name": claim["metadata"]["name"], "mountPath": container["workingDir"]}]
    assert "--appendonly yes" in container["command"][-1] and "--appendfsync always" in container["command"][-1]

    plain = cr("ActorCluster", "demo", {"image": "i", "gcs": {"redis": {"managed": True}}})
    sts = build_cluster.redis_statefulset(plain, parse_cluster(plain["spec"]))
    assert "volumeClaimTemplates" not in sts["spec"]
    assert sts["spec"]["template"]["spec"]["volumes"] == [{"name": "data", "emptyDir": {}}]


def test_a_long_cluster_name_still_names_a_statefulset_whose_pods_can_be_labelled():
    """The controller-revision-hash label is `<statefulset>-<10 characters>`: at most 63."""
    longest = "c" + "x" * 52
    name = contract.redis_statefulset(longest)
    assert len(name) <= 52 and name != contract.redis_statefulset("c" + "x" * 51 + "y")
    assert contract.redis_statefulset("demo") == "demo-redis"
