"""An ActorCluster with `spec.tls.secretName`: every pod serves TLS from the mounted Secret,
the operator checks heads against its CA, and a driver trusting the CA runs work."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import textwrap

import pytest

from .cluster import NEEDS_PRIVATE_HOSTS, TEST_IMAGE, EmulatedCluster

pytest.importorskip("cryptography")
from certs import tls_material  # noqa: E402

pytestmark = NEEDS_PRIVATE_HOSTS

NS = "default"
POD_ENV = [{"name": "KASTOR_PRESTART_WORKERS", "value": "0"}]
TEMPLATE = {"spec": {"containers": [{"name": "kastor", "env": POD_ENV}]}}


def status(k8s: EmulatedCluster, plural: str, name: str) -> dict:
    return (k8s.get_custom(plural, name) or {}).get("status") or {}


def test_tls_cluster_end_to_end(k8s, tmp_path):
    material = tls_material()
    k8s.core.create_namespaced_secret(NS, {
        "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls", "metadata": {"name": "secure-tls"},
        "data": {k: base64.b64encode(v).decode() for k, v in material.items()}})
    k8s.custom.create_namespaced_custom_object("kastor.dev", "v1alpha1", NS, "actorclusters", {
        "apiVersion": "kastor.dev/v1alpha1", "kind": "ActorCluster", "metadata": {"name": "secure"},
        "spec": {"image": TEST_IMAGE, "tls": {"secretName": "secure-tls"}, "head": {"template": TEMPLATE},
                 "workerGroups": [{"name": "cpu", "replicas": 1, "template": TEMPLATE}]}})
    # Ready needs the operator to list the head's nodes: over TLS, checked against the CA.
    k8s.wait(lambda: status(k8s, "actorclusters", "secure").get("phase") == "Ready", "TLS ActorCluster Ready")
    k8s.custom.create_namespaced_custom_object("kastor.dev", "v1alpha1", NS, "detachedactors", {
        "apiVersion": "kastor.dev/v1alpha1", "kind": "DetachedActor", "metadata": {"name": "vault"},
        "spec": {"clusterRef": "secure", "actorClass": "sample_actors:Counter", "args": [40], "env": POD_ENV}})
    k8s.wait(lambda: status(k8s, "detachedactors", "vault").get("state") == "Alive", "the actor Alive (GCS over TLS)")

    ca = tmp_path / "ca.crt"
    ca.write_bytes(material["ca.crt"])
    token = base64.b64decode(k8s.core.read_namespaced_secret("secure-token", NS).data["token"]).decode()
    address = status(k8s, "actorclusters", "secure")["headAddress"]
    program = textwrap.dedent(f"""
        import kastor
        kastor.init(address={address!r})
        print(kastor.get(kastor.get_actor("vault", namespace="default").incr.remote()))
    """)
    trusted = subprocess.run(k8s.command([sys.executable, "-c", program]), capture_output=True, text=True, timeout=90,
                             env={**os.environ, "KASTOR_TOKEN": token, "KASTOR_TLS_CA": str(ca)})
    assert trusted.returncode == 0, trusted.stderr[-3000:]
    assert trusted.stdout.strip() == "41"
    plain = subprocess.run(k8s.command([sys.executable, "-c", program]), capture_output=True, text=True, timeout=90,
                           env={**{k: v for k, v in os.environ.items() if k != "KASTOR_TLS_CA"}, "KASTOR_TOKEN": token})
    assert plain.returncode != 0, "a plain-text driver must not get through"
