"""Pure builders for an ActorCluster's children: token Secret, Redis, head pod and Service, workers.

Each takes the parsed spec and the owning custom resource and returns a plain dict, so
tests check (and validate against the Kubernetes schemas) exactly what the operator sends.
"""

from __future__ import annotations

import json
from typing import Any

from kastor.operator import rollout
from kastor.operator.build_common import (
    add_tls,
    add_token,
    container_security,
    kastor_env,
    number_arg,
    object_meta,
    pod_security,
    scratch_volumes,
    secret_env,
    tcp_probe,
)
from kastor.operator.overrides import apply_template
from kastor.operator.spec import ClusterSpec, WorkerGroup
from kastor.runtime import k8s_contract as contract
from kastor.runtime import settings


def _meta(cr: dict[str, Any]) -> tuple[str, str]:
    return cr["metadata"]["name"], cr["metadata"]["namespace"]


def token_secret_name(cr: dict[str, Any], spec: ClusterSpec) -> str:
    return contract.token_secret(cr["metadata"]["name"], {"secretName": spec.token_secret})


def token_secret(cr: dict[str, Any], spec: ClusterSpec, token: str, redis_password: str) -> dict[str, Any]:
    """The cluster token (and the managed Redis password), generated once by the operator."""
    name, ns = _meta(cr)
    return {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": object_meta(token_secret_name(cr, spec), ns, cr, contract.cluster_labels(name, "auth")),
            "stringData": {spec.token_key: token, contract.REDIS_PASSWORD_KEY: redis_password}}


def head_host(cr: dict[str, Any]) -> str:
    name, ns = _meta(cr)
    return contract.service_host(contract.head_service(name), ns)


def head_address(cr: dict[str, Any], spec: ClusterSpec) -> str:
    return f"{head_host(cr)}:{spec.head.ports.control}"


def client_address(cr: dict[str, Any], spec: ClusterSpec) -> str:
    return f"kastor://{head_host(cr)}:{spec.head.ports.client}"


def redis_address(cr: dict[str, Any], spec: ClusterSpec) -> str | None:
    if spec.redis.managed:
        name, ns = _meta(cr)
        return f"{contract.service_host(contract.redis_name(name), ns)}:{contract.REDIS_PORT}"
    return spec.redis.address


# The managed Redis's start: the password reaches redis-server as configuration on its stdin
# (`redis-server -`), from the Secret through the environment, never on a command line, where
# `ps` and /proc/<pid>/cmdline show it to every process on the node. The shell writes the
# here-document itself (no helper process sees the password); `exec` keeps redis-server the
# container's main process, so it gets SIGTERM and shuts down cleanly. The append-only file,
# fsynced on every write, goes to Redis's working directory, REDIS_DATA_DIR, the data volume:
# a Redis restart (of the container, or with a claim of the whole pod) loses nothing acknowledged.
REDIS_START = (f'exec redis-server - --port {contract.REDIS_PORT} --bind "${contract.POD_IP_ENV}" '
               f"--appendonly yes --appendfsync always --save '' <<EOF\n"
               f"requirepass $REDIS_PASSWORD\n"
               f"EOF\n")
REDIS_VOLUME = "data"


def redis_statefulset(cr: dict[str, Any], spec: ClusterSpec) -> dict[str, Any]:
    """The cluster's GCS store: a one-replica StatefulSet running Redis, governed by the Redis
    Service. With spec.gcs.redis.storage its data is on a PersistentVolumeClaim (a
    volumeClaimTemplate, kept when the pod goes: a deleted or evicted Redis pod comes back
    with its data, and so the head's tables); without it, on an emptyDir (kept across
    container restarts only). Its password comes from the token Secret through the
    environment (see REDIS_START); its resources from spec.gcs.redis.resources. Annotated
    with `rollout.redis_hash` (image, resources, auth): a change patches the template and
    the StatefulSet controller replaces the pod."""
    name, ns = _meta(cr)
    labels = contract.cluster_labels(name, "redis")
    container: dict[str, Any] = {
        "name": "redis", "image": spec.redis.image, "imagePullPolicy": "IfNotPresent",
        "command": ["sh", "-c", REDIS_START], "workingDir": contract.REDIS_DATA_DIR,
        "volumeMounts": [{"name": REDIS_VOLUME, "mountPath": contract.REDIS_DATA_DIR}],
        "env": [{"name": contract.POD_IP_ENV, "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                secret_env("REDIS_PASSWORD", token_secret_name(cr, spec), contract.REDIS_PASSWORD_KEY)],
        "ports": [{"name": "redis", "containerPort": contract.REDIS_PORT}],
        "readinessProbe": tcp_probe(contract.REDIS_PORT),
        "securityContext": container_security(),
    }
    if spec.redis.resources:
        container["resources"] = spec.redis.resources
    pod_spec: dict[str, Any] = {"restartPolicy": "Always", "securityContext": pod_security(999),
                                "terminationGracePeriodSeconds": 30, "containers": [container]}
    storage = spec.redis.storage
    claims: list[dict[str, Any]] = []
    if storage is None:
        pod_spec["volumes"] = [{"name": REDIS_VOLUME, "emptyDir": {}}]
    else:
        claim_spec: dict[str, Any] = {"accessModes": ["ReadWriteOnce"],
                                      "resources": {"requests": {"storage": storage.size}}}
        if storage.storage_class:
            claim_spec["storageClassName"] = storage.storage_class
        claims.append({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                       "metadata": {"name": REDIS_VOLUME, "labels": dict(labels)}, "spec": claim_spec})
    hash_annotation = {contract.ANNOTATION_SPEC_HASH: rollout.redis_hash(cr.get("spec") or {})}
    sts_spec: dict[str, Any] = {
        "replicas": 1, "serviceName": contract.redis_name(name),
        "selector": {"matchLabels": {contract.LABEL_CLUSTER: name, contract.LABEL_ROLE: "redis"}},
        # Parallel: the one pod is (re)created without waiting on an ordered start-up.
        "podManagementPolicy": "Parallel",
        "updateStrategy": {"type": "RollingUpdate"},
        "template": {"metadata": {"labels": dict(labels), "annotations": dict(hash_annotation)}, "spec": pod_spec},
    }
    if claims:
        sts_spec["volumeClaimTemplates"] = claims
        # The claim lives as long as the cluster: deleting the ActorCluster deletes the StatefulSet
        # and, with it, the claim (a namesake created later starts from an empty GCS, as with a
        # managed Redis on an emptyDir). Kubernetes before 1.27 ignores this policy and keeps it.
        sts_spec["persistentVolumeClaimRetentionPolicy"] = {"whenDeleted": "Delete", "whenScaled": "Retain"}
    return {"apiVersion": "apps/v1", "kind": "StatefulSet",
            "metadata": object_meta(contract.redis_statefulset(name), ns, cr, labels,
                                    {**hash_annotation, ANNOTATION_STORAGE: storage_key(spec)}),
            "spec": sts_spec}


# The storage the StatefulSet was made with: its volumeClaimTemplates cannot change, so a
# later spec.gcs.redis.storage that differs is reported, not applied.
ANNOTATION_STORAGE = "kastor.dev/redis-storage"


def storage_key(spec: ClusterSpec) -> str:
    storage = spec.redis.storage
    return "emptyDir" if storage is None else json.dumps({"size": storage.size, "class": storage.storage_class},
                                                         sort_keys=True)


def redis_service(cr: dict[str, Any]) -> dict[str, Any]:
    name, ns = _meta(cr)
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": object_meta(contract.redis_name(name), ns, cr, contract.cluster_labels(name, "redis")),
            "spec": {"selector": {contract.LABEL_CLUSTER: name, contract.LABEL_ROLE: "redis"},
                     "ports": [{"name": "redis", "port": contract.REDIS_PORT, "targetPort": contract.REDIS_PORT}]}}


def _redis_env(cr: dict[str, Any], spec: ClusterSpec) -> list[dict[str, Any]]:
    if spec.redis.managed:
        return [secret_env(settings.REDIS_PASSWORD.name, token_secret_name(cr, spec), contract.REDIS_PASSWORD_KEY)]
    if spec.redis.address and spec.redis.password_secret:
        return [secret_env(settings.REDIS_PASSWORD.name, spec.redis.password_secret, spec.redis.password_key)]
    return []


def _kastor_pod(cr: dict[str, Any], spec: ClusterSpec, meta: dict[str, Any], args: list[str],
                extra_env: list[dict[str, Any]], resources: dict[str, Any], ports: list[dict[str, Any]],
                probe: dict[str, Any] | None, template: dict[str, Any],
                object_store_bytes: int | None) -> dict[str, Any]:
    name, ns = _meta(cr)
    volumes, mounts = scratch_volumes(object_store_bytes)
    container: dict[str, Any] = {
        "name": contract.CONTAINER, "image": spec.image, "imagePullPolicy": spec.image_pull_policy,
        "command": ["kastor"], "args": args,
        "env": kastor_env(contract.cluster_id(ns, name)) + extra_env,
        "volumeMounts": mounts, "securityContext": container_security(),
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    if resources:
        container["resources"] = resources
    if ports:
        container["ports"] = ports
    if probe:
        container["readinessProbe"] = probe
    # Always: a crashed head or node agent is restarted in place by the kubelet (same pod, IP
    # and volumes), at once and with its back-off, instead of waiting for the operator to
    # notice and schedule a new pod. (A DetachedActor's pod stays Never: its exit code is a verdict.)
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": meta,
           "spec": {"restartPolicy": "Always", "securityContext": pod_security(), "volumes": volumes,
                    "terminationGracePeriodSeconds": 10, "containers": [container]}}
    add_token(pod["spec"], container, token_secret_name(cr, spec), spec.token_key)
    add_tls(pod["spec"], container, spec.tls_secret)
    return apply_template(pod, template)


def head_pod(cr: dict[str, Any], spec: ClusterSpec) -> dict[str, Any]:
    """The head (GCS) plus a node agent; ready once its control port accepts connections. It
    advertises the CPUs, GPUs and memory of `spec.advertised` (from its container's resources).
    Annotated with its template hash (`rollout.head_hash`): a spec change replaces it."""
    name, ns = _meta(cr)
    ports = spec.head.ports
    args = ["start", "--head", "--block", "--port", str(ports.control), "--client-port", str(ports.client),
            "--dashboard-port", str(ports.dashboard), "--cluster-id", contract.cluster_id(ns, name),
            "--num-cpus", number_arg(spec.head.num_cpus), "--num-gpus", number_arg(spec.head.num_gpus)]
    if spec.head.memory:
        args += ["--memory", str(spec.head.memory)]
    address = redis_address(cr, spec)
    if address:
        args += ["--redis-address", address]
    meta = object_meta(contract.head_pod_prefix(name), ns, cr, contract.cluster_labels(name, "head"),
                       {contract.ANNOTATION_SPEC_HASH: rollout.head_hash(cr.get("spec") or {})}, generate=True)
    container_ports = [{"name": "control", "containerPort": ports.control},
                       {"name": "client", "containerPort": ports.client},
                       {"name": "relay", "containerPort": ports.relay},
                       {"name": "dashboard", "containerPort": ports.dashboard}]
    # The frame relay on a fixed port the head Service carries too: the client port announces
    # it, and a notebook that reaches the Service reaches both (settings.FRAME_RELAY_PORT).
    relay_env = [{"name": settings.FRAME_RELAY_PORT.name, "value": str(ports.relay)}]
    return _kastor_pod(cr, spec, meta, args, _redis_env(cr, spec) + relay_env, spec.head.resources, container_ports,
                       tcp_probe(ports.control), spec.head.template, spec.head.object_store_bytes)


def head_service(cr: dict[str, Any], spec: ClusterSpec) -> dict[str, Any]:
    """Control (in-cluster drivers and nodes), client (`kastor.init("kastor://<service>:<client>")`
    from outside the cluster network: the head's gateway), relay (the client port's frame relay,
    on the same port number as in the pod, since the client port announces that number) and
    dashboard ports."""
    name, ns = _meta(cr)
    ports = spec.head.ports
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": object_meta(contract.head_service(name), ns, cr, contract.cluster_labels(name, "head")),
            "spec": {"type": spec.head.service_type,
                     "selector": {contract.LABEL_CLUSTER: name, contract.LABEL_ROLE: "head"},
                     "ports": [{"name": "control", "port": ports.control, "targetPort": "control"},
                               {"name": "client", "port": ports.client, "targetPort": "client",
                                **({"nodePort": ports.client_node_port}
                                   if ports.client_node_port and spec.head.service_type != "ClusterIP" else {})},
                               {"name": "relay", "port": ports.relay, "targetPort": "relay"},
                               {"name": "dashboard", "port": ports.dashboard, "targetPort": "dashboard"}]}}


def dashboard_service(cr: dict[str, Any], spec: ClusterSpec) -> dict[str, Any]:
    """The head's HTTP port (Prometheus /metrics, /api/*) alone, as KubeRay's dashboard port: what
    an Ingress, a ServiceMonitor or `kubectl port-forward svc/<cluster>-dashboard` targets
    without exposing the control and client ports. Its type is `spec.head.dashboardServiceType`
    (ClusterIP unless set: a NodePort or LoadBalancer exposes the dashboard alone, not the head);
    the port keeps its place on the head Service too."""
    name, ns = _meta(cr)
    labels = {**contract.cluster_labels(name, "head"), "app.kubernetes.io/component": "dashboard"}
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": object_meta(dashboard_service_name(name), ns, cr, labels),
            "spec": {"type": spec.head.dashboard_service_type,
                     "selector": {contract.LABEL_CLUSTER: name, contract.LABEL_ROLE: "head"},
                     "ports": [{"name": "dashboard", "port": spec.head.ports.dashboard, "targetPort": "dashboard"}]}}


def dashboard_service_name(cluster: str) -> str:
    """`<cluster>-dashboard`: at most 63 characters, as a cluster name has at most 53."""
    return f"{cluster}-dashboard"


def worker_pod(cr: dict[str, Any], spec: ClusterSpec, group: WorkerGroup) -> dict[str, Any]:
    """A node agent joining the head through its Service; named by the API server (generateName).
    It advertises the CPUs, GPUs and memory of `spec.advertised` (from its container's resources),
    and carries the group's `labels` plus `kastor.io/node-group: <group>` for label_selector=.
    Annotated with its template hash (`rollout.worker_hash`): a spec change replaces it."""
    name, ns = _meta(cr)
    args = ["start", "--address", head_address(cr, spec), "--block",
            "--num-cpus", number_arg(group.num_cpus), "--num-gpus", number_arg(group.num_gpus)]
    if group.memory:
        args += ["--memory", str(group.memory)]
    if group.custom_resources:
        args += ["--resources", json.dumps(group.custom_resources, sort_keys=True)]
    args += ["--labels", ",".join(f"{k}={v}" for k, v in sorted(group.node_labels.items()))]
    labels = {**contract.cluster_labels(name, "worker"), contract.LABEL_GROUP: group.name}
    meta = object_meta(contract.worker_prefix(name, group.name), ns, cr, labels,
                       {contract.ANNOTATION_SPEC_HASH: rollout.worker_hash(cr.get("spec") or {}, spec, group.name)},
                       generate=True)
    return _kastor_pod(cr, spec, meta, args, [], group.resources, [], None, group.template, group.object_store_bytes)
