"""`kastor.init(cluster=..., k8s_namespace=...)` from a notebook: the client address and token
come from the Kubernetes API (an emulated API server and kubelet, see cluster.py)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

from .cluster import NEEDS_PRIVATE_HOSTS, TEST_IMAGE, EmulatedCluster

pytestmark = NEEDS_PRIVATE_HOSTS

POD_ENV = [{"name": "KASTOR_PRESTART_WORKERS", "value": "0"}]
TEMPLATE = {"spec": {"containers": [{"name": "kastor", "env": POD_ENV}]}}


def notebook(k8s: EmulatedCluster, code: str) -> subprocess.CompletedProcess:
    """A driver that knows only its kubeconfig: no address, no token."""
    env = {**os.environ, "KUBECONFIG": str(k8s.kubeconfig)}
    for name in ("KASTOR_TOKEN", "KASTOR_TOKEN_FILE", "KASTOR_ADDRESS"):
        env.pop(name, None)
    return subprocess.run(k8s.command([sys.executable, "-c", textwrap.dedent(code)]), env=env, capture_output=True,
                          text=True, timeout=120)


def test_init_finds_the_cluster_by_name(k8s):
    k8s.custom.create_namespaced_custom_object("kastor.dev", "v1alpha1", "default", "actorclusters", {
        "apiVersion": "kastor.dev/v1alpha1", "kind": "ActorCluster", "metadata": {"name": "lab"},
        "spec": {"image": TEST_IMAGE, "head": {"template": TEMPLATE},
                 "workerGroups": [{"name": "cpu", "replicas": 1, "template": TEMPLATE}]}})
    k8s.wait(lambda: ((k8s.get_custom("actorclusters", "lab") or {}).get("status") or {}).get("phase") == "Ready",
             "ActorCluster lab Ready")
    done = notebook(k8s, """
        import kastor
        info = kastor.init(cluster="lab", k8s_namespace="default")
        @kastor.remote
        def square(x):
            return x * x
        print(kastor.get([square.remote(i) for i in range(4)]))
    """)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == "[0, 1, 4, 9]"


def test_unknown_cluster_is_a_clear_error(k8s):
    done = notebook(k8s, """
        import kastor
        kastor.init(cluster="nope", k8s_namespace="default")
    """)
    assert done.returncode != 0
    assert "No ActorCluster 'nope' in namespace 'default'" in done.stderr
