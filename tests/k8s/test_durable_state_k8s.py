"""DetachedActor.spec.state: parsed, built into the actor pod (flag, PVC, mount), accepted by the
CRD schema, and turned by `kastor actor-pod` into the actor's `state=Checkpoint(...)` option."""

from __future__ import annotations

import copy
import glob
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml
from kastor.kubernetes import actor_pod
from kastor.operator import build_actor
from kastor.operator.spec import SpecError, parse_actor, parse_cluster
from kastor.runtime import k8s_contract as names
from kastor.state import Checkpoint, FileStore, RedisStore

REPO = Path(__file__).resolve().parents[2]
K8S_VERSION = "1.32.0"
META = {"namespace": "team", "uid": "0f0e0d0c-0000-4000-8000-000000000002", "generation": 1}
CLUSTER = {"apiVersion": names.API_VERSION, "kind": "ActorCluster", "metadata": {"name": "demo", **META},
           "spec": {"image": "ghcr.io/kastor/kastor:0.1.0", "gcs": {"redis": {"managed": True}}}}


def actor_cr(state: dict | None) -> dict:
    spec = {"clusterRef": "demo", "actorClass": "durable_account:Account", "maxRestarts": -1}
    if state is not None:
        spec["state"] = state
    return {"apiVersion": names.API_VERSION, "kind": "DetachedActor", "metadata": {"name": "ada", **META},
            "spec": spec}


def built(state: dict | None) -> tuple[dict, dict, list[str]]:
    cr = actor_cr(state)
    actor = parse_actor(cr["spec"], "ada", "team")
    pod = build_actor.actor_pod(cr, actor, CLUSTER, parse_cluster(CLUSTER["spec"]), 1)
    return cr, pod, pod["spec"]["containers"][0]["args"]


def flag(args: list[str], name: str) -> str | None:
    return args[args.index(name) + 1] if name in args else None


def test_a_volume_store_gets_a_claim_mounted_in_the_pod_and_the_flag_names_its_directory():
    cr, pod, args = built({"store": "volume", "every": "call", "volume": {"size": "2Gi", "storageClassName": "ssd"}})
    claim = build_actor.state_claim(cr, parse_actor(cr["spec"], "ada", "team"))
    assert claim["spec"]["resources"]["requests"]["storage"] == "2Gi" and claim["spec"]["storageClassName"] == "ssd"
    assert claim["metadata"]["ownerReferences"][0]["uid"] == META["uid"], "deleted with its DetachedActor"
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert volumes["state"]["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]
    mounts = {m["name"]: m["mountPath"] for m in pod["spec"]["containers"][0]["volumeMounts"]}
    assert mounts["state"] == build_actor.STATE_DIR
    policy = actor_pod.parse_state(flag(args, "--state-json"))
    assert isinstance(policy.store, FileStore) and policy.store.directory == build_actor.STATE_DIR
    assert policy.every_calls == 1
    for manifest in (pod, claim):
        kubernetes_validate.validate(copy.deepcopy(manifest), K8S_VERSION, strict=True)


def test_the_redis_store_needs_no_volume_and_no_state_means_rays_behaviour():
    _, pod, args = built({"store": "redis", "every": "30s"})
    assert "state" not in {v["name"] for v in pod["spec"]["volumes"]}
    policy = actor_pod.parse_state(flag(args, "--state-json"))
    assert isinstance(policy, Checkpoint) and isinstance(policy.store, RedisStore) and policy.every_seconds == 30
    _, pod, args = built(None)
    assert flag(args, "--state-json") is None and actor_pod.parse_state(None) is None


def test_bad_state_specs_say_why():
    for state, fragment in (({"store": "s3"}, "spec.state.store"), ({"every": "often"}, "every="),
                            ({"onCorrupt": "ignore"}, "on_corrupt")):
        with pytest.raises(SpecError, match=fragment):
            parse_actor(actor_cr(state)["spec"], "ada", "team")
    with pytest.raises(actor_pod.BadSpec, match="InvalidState"):
        actor_pod.parse_state('{"store": "volume"}')  # no directory


def cr_schema() -> dict:
    [path] = [p for p in glob.glob(str(REPO / "crds" / "*.yaml")) if "detachedactors" in p]
    return yaml.safe_load(Path(path).read_text())["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def test_the_crd_schema_takes_state_and_rejects_unknown_stores():
    validator = jsonschema.Draft7Validator(cr_schema())
    assert not list(validator.iter_errors(actor_cr({"store": "volume", "every": 10, "volume": {"size": "1Gi"}})))
    assert list(validator.iter_errors(actor_cr({"store": "s3"})))
    assert (REPO / "crds" / "kastor.dev_detachedactors.yaml").read_text() == \
        (REPO / "charts" / "kastor-operator" / "crds" / "kastor.dev_detachedactors.yaml").read_text()
