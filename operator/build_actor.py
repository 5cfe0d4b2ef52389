"""Pure builder for a DetachedActor's pod: a node agent that only this actor fits on.

The pod runs `kastor actor-pod`, which joins the cluster advertising a resource unique to
this DetachedActor and (if the GCS has no live actor by that name) creates the actor
detached, requiring that resource: the head places it on this pod, and after a pod dies,
re-places the same actor (same id, so existing handles keep working) on its replacement.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from kastor.operator.build_cluster import head_address, token_secret_name
from kastor.operator.build_common import (
    add_tls,
    add_token,
    container_security,
    kastor_env,
    number_arg,
    object_meta,
    pod_security,
    scratch_volumes,
)
from kastor.operator.spec import ActorSpec, ClusterSpec, StateSpec, canonical_json
from kastor.runtime import k8s_contract as contract

STATE_DIR = "/var/lib/kastor/state"  # where a "volume" state store's claim is mounted in the actor pod
# The defaults crds/kastor.dev_detachedactors.yaml gives spec fields (a test keeps them equal).
SPEC_DEFAULTS: dict[str, Any] = {"args": [], "kwargs": {}, "maxRestarts": 0, "maxTaskRetries": 0, "maxConcurrency": 1}


def spec_hash(actor_spec: dict[str, Any]) -> str:
    """Identifies what an actor pod was built from; a different hash means roll the actor.

    Fields at their CRD default are left out: the API server writes a new defaulted field
    into every stored spec, and that must not restart every DetachedActor.
    """
    meaningful = {k: v for k, v in actor_spec.items() if k not in SPEC_DEFAULTS or v != SPEC_DEFAULTS[k]}
    return hashlib.sha256(canonical_json(meaningful).encode()).hexdigest()[:16]


def legacy_spec_hash(actor_spec: dict[str, Any]) -> str:
    """The hash operators before 0.2 wrote (over the whole defaulted spec): an actor whose status
    still carries it is up to date, not changed, and takes the new hash without a restart."""
    return hashlib.sha256(canonical_json(actor_spec).encode()).hexdigest()[:16]


def actor_command(cr: dict[str, Any], actor: ActorSpec, cluster_cr: dict[str, Any], cluster: ClusterSpec) -> list[str]:
    args = ["actor-pod", "--address", head_address(cluster_cr, cluster), "--class", actor.actor_class,
            "--name", actor.name, "--namespace", actor.namespace,
            "--args-json", json.dumps(actor.args), "--kwargs-json", json.dumps(actor.kwargs),
            "--max-restarts", str(actor.max_restarts), "--max-task-retries", str(actor.max_task_retries),
            "--max-concurrency", str(actor.max_concurrency), "--num-cpus", number_arg(actor.num_cpus),
            "--resource", contract.actor_resource(cr["metadata"]["namespace"], cr["metadata"]["name"])]
    if actor.num_gpus:
        args += ["--num-gpus", number_arg(actor.num_gpus)]
    if actor.state is not None:
        args += ["--state-json", state_json(actor.state)]
    return args


def state_json(state: StateSpec) -> str:
    """`spec.state` as `kastor actor-pod --state-json` reads it (client/kubernetes/actor_pod.py)."""
    return json.dumps({"store": state.store, "every": state.every, "maxBytes": state.max_bytes,
                       "onCorrupt": state.on_corrupt, **({"directory": STATE_DIR} if state.store == "volume" else {})})


def state_claim_name(cr: dict[str, Any]) -> str:
    return f"{cr['metadata']['name']}-state"


def state_claim(cr: dict[str, Any], actor: ActorSpec) -> dict[str, Any]:
    """The PersistentVolumeClaim of a "volume" state store: one per DetachedActor, owned by it
    (deleted with it), mounted by each of its pods in turn (ReadWriteOnce: one pod at a time)."""
    state = actor.state
    spec: dict[str, Any] = {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": state.size}}}
    if state.storage_class:
        spec["storageClassName"] = state.storage_class
    labels = {**contract.cluster_labels(actor.cluster, "actor"), contract.LABEL_ACTOR: cr["metadata"]["name"]}
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": object_meta(state_claim_name(cr), cr["metadata"]["namespace"], cr, labels, {}),
            "spec": spec}


def actor_pod(cr: dict[str, Any], actor: ActorSpec, cluster_cr: dict[str, Any], cluster: ClusterSpec,
              attempt: int) -> dict[str, Any]:
    name, ns = cr["metadata"]["name"], cr["metadata"]["namespace"]
    labels = {**contract.cluster_labels(actor.cluster, "actor"), contract.LABEL_ACTOR: name}
    annotations = {contract.ANNOTATION_SPEC_HASH: spec_hash(cr.get("spec") or {}),
                   contract.ANNOTATION_ATTEMPT: str(attempt)}
    volumes, mounts = scratch_volumes()
    env = kastor_env(contract.cluster_id(ns, actor.cluster)) + list(actor.env)
    container: dict[str, Any] = {
        "name": contract.CONTAINER, "image": actor.image or cluster.image, "imagePullPolicy": cluster.image_pull_policy,
        "command": ["kastor"], "args": actor_command(cr, actor, cluster_cr, cluster), "env": env,
        "volumeMounts": mounts, "securityContext": container_security(),
        # The entrypoint's last line says why it exited; the kubelet copies it into the pod status.
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    if actor.resources:
        container["resources"] = actor.resources
    pod = {"apiVersion": "v1", "kind": "Pod",
           "metadata": object_meta(contract.actor_pod(name, attempt), ns, cr, labels, annotations),
           "spec": {"restartPolicy": "Never", "securityContext": pod_security(), "volumes": volumes,
                    "terminationGracePeriodSeconds": 10, "containers": [container]}}
    add_token(pod["spec"], container, token_secret_name(cluster_cr, cluster), cluster.token_key)
    add_tls(pod["spec"], container, cluster.tls_secret)
    if actor.state is not None and actor.state.store == "volume":
        volumes.append({"name": "state", "persistentVolumeClaim": {"claimName": state_claim_name(cr)}})
        mounts.append({"name": "state", "mountPath": STATE_DIR})
    return pod
