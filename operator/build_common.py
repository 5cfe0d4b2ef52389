"""Pieces every Kastor pod shares: owner references, env, security context, /dev/shm."""

from __future__ import annotations

from typing import Any

from kastor.runtime import k8s_contract as contract
from kastor.runtime import settings


def owner_reference(owner: dict[str, Any]) -> dict[str, Any]:
    """Makes the child garbage-collected with its custom resource."""
    meta = owner["metadata"]
    return {"apiVersion": owner.get("apiVersion", contract.API_VERSION), "kind": owner["kind"], "name": meta["name"],
            "uid": meta["uid"], "controller": True, "blockOwnerDeletion": True}


def object_meta(name: str, namespace: str, owner: dict[str, Any], labels: dict[str, str],
                annotations: dict[str, str] | None = None, generate: bool = False) -> dict[str, Any]:
    meta: dict[str, Any] = {"namespace": namespace, "labels": dict(labels), "ownerReferences": [owner_reference(owner)]}
    meta["generateName" if generate else "name"] = name
    if annotations:
        meta["annotations"] = dict(annotations)
    return meta


def secret_env(name: str, secret: str, key: str) -> dict[str, Any]:
    return {"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}


def kastor_env(cluster_id: str) -> list[dict[str, Any]]:
    """The pod IP becomes the node IP other processes reach."""
    return [
        {"name": contract.POD_IP_ENV, "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
        {"name": settings.NODE_IP.name, "value": f"$({contract.POD_IP_ENV})"},
        {"name": settings.CLUSTER_ID.name, "value": cluster_id},
        {"name": "PYTHONUNBUFFERED", "value": "1"},
    ]


TOKEN_DIR = "/etc/kastor/token"


def add_token(pod_spec: dict[str, Any], container: dict[str, Any], secret: str, key: str) -> None:
    """The cluster token arrives as a file from its Secret (only that key), not as an environment
    variable: the environment leaks into crash reports, child processes and `ps e`."""
    pod_spec["volumes"].append({"name": "token", "secret": {"secretName": secret, "defaultMode": 0o440,
                                                            "items": [{"key": key, "path": "token"}]}})
    container["volumeMounts"].append({"name": "token", "mountPath": TOKEN_DIR, "readOnly": True})
    container["env"].append({"name": settings.TOKEN_FILE.name, "value": f"{TOKEN_DIR}/token"})


TLS_DIR = "/etc/kastor/tls"


def add_tls(pod_spec: dict[str, Any], container: dict[str, Any], secret: str | None) -> None:
    """Mounts the cluster's TLS Secret (tls.crt, tls.key, ca.crt, as cert-manager writes them) and
    points Kastor at it: every port then serves TLS and every connection checks the CA."""
    if not secret:
        return
    pod_spec["volumes"].append({"name": "tls", "secret": {"secretName": secret, "defaultMode": 0o440}})
    container["volumeMounts"].append({"name": "tls", "mountPath": TLS_DIR, "readOnly": True})
    container["env"] += [{"name": settings.TLS_CERT.name, "value": f"{TLS_DIR}/tls.crt"},
                         {"name": settings.TLS_KEY.name, "value": f"{TLS_DIR}/tls.key"},
                         {"name": settings.TLS_CA.name, "value": f"{TLS_DIR}/ca.crt"}]


def container_security() -> dict[str, Any]:
    """Nothing in the image is written at run time: Kastor writes only to the scratch volumes."""
    return {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}, "readOnlyRootFilesystem": True}


def pod_security(run_as_user: int = 1000) -> dict[str, Any]:
    return {"runAsNonRoot": True, "runAsUser": run_as_user, "runAsGroup": run_as_user, "fsGroup": run_as_user,
            "seccompProfile": {"type": "RuntimeDefault"}}


def scratch_volumes(object_store_bytes: int | None = None) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Where a Kastor pod writes, its root filesystem being read-only: the object store in
    /dev/shm (a container's default 64 MiB is too small) and session files and logs in /tmp.

    The object store is as large as its filesystem, so `object_store_bytes` becomes the
    /dev/shm emptyDir's sizeLimit: the kubelet sizes the tmpfs to it, and what is written
    there counts against the container's memory, which must leave room for it."""
    shm: dict[str, Any] = {"medium": "Memory"}
    if object_store_bytes:
        shm["sizeLimit"] = str(int(object_store_bytes))
    return ([{"name": "dshm", "emptyDir": shm}, {"name": "tmp", "emptyDir": {}}],
            [{"name": "dshm", "mountPath": "/dev/shm"}, {"name": "tmp", "mountPath": "/tmp"}])


def tcp_probe(port: int | str, period: int = 2, failures: int = 3) -> dict[str, Any]:
    return {"tcpSocket": {"port": port}, "periodSeconds": period, "failureThreshold": failures, "timeoutSeconds": 1}


def number_arg(value: float) -> str:
    """1.0 -> '1', 0.5 -> '0.5': what a human would type on the command line."""
    return f"{value:g}"
