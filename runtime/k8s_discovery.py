"""Finding an ActorCluster from a notebook: `kastor.init(cluster="demo", k8s_namespace="ml")`.

Reads the cluster's client address and token through the Kubernetes API with the user's
kubeconfig, as dask-kubernetes' KubeCluster does, so nobody copies tokens around by hand.
If the head's Service is not reachable from here (the usual case outside the cluster), it
opens `kubectl port-forward` to it and connects through that.
"""

from __future__ import annotations

import base64
import re
import shutil
import socket
import subprocess
from dataclasses import dataclass

from kastor.runtime import k8s_contract as contract

_FORWARDING = re.compile(r"Forwarding from 127\.0\.0\.1:(\d+)")


@dataclass
class Found:
    address: str                                  # host:port of the client port, as reachable from here
    token: str
    port_forward: subprocess.Popen | None = None  # stopped by kastor.shutdown()


def find(cluster: str, namespace: str | None = None, kube_context: str | None = None) -> Found:
    try:
        from kubernetes import client, config
    except ImportError:
        raise ImportError("kastor.init(cluster=...) reads the Kubernetes API: pip install 'kastor[operator]' "
                          "(or the `kubernetes` package).") from None
    try:
        config.load_kube_config(context=kube_context)
        _, active = config.list_kube_config_contexts()
        namespace = namespace or (active or {}).get("context", {}).get("namespace") or "default"
    except config.ConfigException:
        config.load_incluster_config()
        namespace = namespace or "default"
    cr = _get_cluster(client, cluster, namespace)
    status = cr.get("status") or {}
    client_address = status.get("clientAddress", "")
    if not client_address:
        raise RuntimeError(f"ActorCluster {namespace}/{cluster} has no client address yet (phase "
                           f"{status.get('phase', 'unknown')}); wait until `kubectl get ac -n {namespace}` "
                           f"shows it Ready.")
    token = _read_token(client, cr, namespace)
    host, port = client_address.removeprefix("kastor://").rsplit(":", 1)
    if _reachable(host, int(port)):
        return Found(f"{host}:{port}", token)
    forward, local_port = _port_forward(contract.head_service(cluster), namespace, int(port), kube_context)
    return Found(f"127.0.0.1:{local_port}", token, forward)


def _get_cluster(client, cluster: str, namespace: str) -> dict:
    from kubernetes.client.rest import ApiException
    try:
        return client.CustomObjectsApi().get_namespaced_custom_object(
            contract.GROUP, contract.VERSION, namespace, contract.CLUSTER_PLURAL, cluster)
    except ApiException as e:
        if e.status == 404:
            raise ValueError(f"No ActorCluster {cluster!r} in namespace {namespace!r} "
                             f"(see `kubectl get actorclusters -n {namespace}`).") from None
        raise


def _read_token(client, cr: dict, namespace: str) -> str:
    auth = (cr.get("spec") or {}).get("auth") or {}
    secret_name = contract.token_secret(cr["metadata"]["name"], auth)
    key = contract.token_key(auth)
    secret = client.CoreV1Api().read_namespaced_secret(secret_name, namespace)
    data = (secret.data or {}).get(key)
    if not data:
        raise RuntimeError(f"Secret {namespace}/{secret_name} has no key {key!r} holding the cluster token.")
    return base64.b64decode(data).decode().strip()


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


def _port_forward(service: str, namespace: str, port: int, kube_context: str | None) -> tuple[subprocess.Popen, int]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        raise ConnectionError(f"The head Service {namespace}/{service} is not reachable from here and kubectl is "
                              f"not installed to port-forward to it.")
    cmd = [kubectl, "port-forward", "-n", namespace, f"svc/{service}", f":{port}"]
    if kube_context:
        cmd[1:1] = ["--context", kube_context]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    line = proc.stdout.readline()  # kubectl prints the local port first, or fails
    match = _FORWARDING.search(line)
    if match is None:
        proc.kill()
        raise ConnectionError(f"kubectl port-forward to {namespace}/{service} failed: {line.strip()}")
    return proc, int(match.group(1))
