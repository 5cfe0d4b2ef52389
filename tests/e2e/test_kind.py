"""The real thing: kind, Docker, the image, both Helm charts, an ActorCluster with a managed
Redis, a DetachedActor, a driver running in the cluster, and a killed actor pod.

Needs `kind`, `docker` (with a running daemon) and `kubectl`; otherwise every test here
skips with the reason. Run with `make e2e` (or `python -m pytest -q -m e2e tests/e2e`).
Set KASTOR_E2E_KEEP=1 to keep the kind cluster afterwards.
"""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests"))
from k8s.helm import find_helm  # noqa: E402

CLUSTER = os.environ.get("KASTOR_E2E_CLUSTER", "kastor-e2e")
IMAGE = "kastor:dev"                    # the Dockerfile's `demo` target: the runtime + examples/*.py (bank:Account)
OPERATOR_IMAGE = "kastor-operator:dev"  # its `operator` target
CONTEXT = f"kind-{CLUSTER}"


def _missing() -> str | None:
    for tool in ("kind", "docker", "kubectl"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    if subprocess.run(["docker", "info"], capture_output=True, timeout=30).returncode != 0:
        return "no Docker daemon is reachable (docker info failed)"
    if find_helm() is None:
        return "no helm binary"
    return None


pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1800), pytest.mark.skipif(_missing() is not None,
                                                                              reason=_missing() or "")]


def sh(*args: str, input: str | None = None, timeout: float = 600) -> str:
    result = subprocess.run(args, input=input, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def kubectl(*args: str, **kw) -> str:
    return sh("kubectl", "--context", CONTEXT, *args, **kw)


def wait_jsonpath(resource: str, path: str, value: str, timeout: int = 300) -> None:
    kubectl("wait", resource, f"--for=jsonpath={{{path}}}={value}", f"--timeout={timeout}s", timeout=timeout + 30)


@pytest.fixture(scope="module")
def kind_cluster():
    if CLUSTER not in sh("kind", "get", "clusters"):
        sh("kind", "create", "cluster", "--name", CLUSTER, "--config", str(REPO / "kind-config.yaml"), timeout=900)
    try:
        sh("docker", "build", "--target", "demo", "-t", IMAGE, str(REPO), timeout=1200)
        sh("docker", "build", "--target", "operator", "-t", OPERATOR_IMAGE, str(REPO), timeout=1200)
        sh("kind", "load", "docker-image", IMAGE, OPERATOR_IMAGE, "--name", CLUSTER, timeout=600)
        helm = find_helm()
        sh(helm, "upgrade", "--install", "kastor-operator", str(REPO / "charts" / "kastor-operator"),
           "--kube-context", CONTEXT, "--namespace", "kastor-system", "--create-namespace",
           "--set", f"image.repository={OPERATOR_IMAGE.split(':')[0]}",
           "--set", f"image.tag={OPERATOR_IMAGE.split(':')[1]}",
           "--set", "image.pullPolicy=Never", "--wait", "--timeout", "5m")
        yield
    finally:
        if not os.environ.get("KASTOR_E2E_KEEP"):
            subprocess.run(["kind", "delete", "cluster", "--name", CLUSTER], capture_output=True, timeout=300)


def test_cluster_actor_and_restart_on_kind(kind_cluster):
    kubectl("apply", "-f", str(REPO / "charts" / "kastor-cluster" / "examples" / "actorcluster.yaml"))
    wait_jsonpath("actorcluster/demo", ".status.phase", "Ready", timeout=600)
    print(kubectl("get", "actorclusters,pods", "-o", "wide"))

    kubectl("apply", "-f", str(REPO / "charts" / "kastor-cluster" / "examples" / "detachedactor.yaml"))
    wait_jsonpath("detachedactor/alice", ".status.state", "Alive")

    token = base64.b64decode(kubectl("get", "secret", "demo-token", "-o", "jsonpath={.data.token}")).decode()
    program = textwrap.dedent("""
        import kastor
        kastor.init(address="demo-head.default.svc:6380")
        @kastor.remote
        def square(x):
            return x * x
        print("squares", kastor.get([square.remote(i) for i in range(4)]))
        alice = kastor.get_actor("alice", namespace="default")
        print("balance", kastor.get(alice.deposit.remote(5)))
    """)
    kubectl("run", "driver", "--image", IMAGE, "--image-pull-policy", "Never", "--restart", "Never",
            "--env", f"KASTOR_TOKEN={token}", "--command", "--", "python", "-c", program)
    wait_jsonpath("pod/driver", ".status.phase", "Succeeded")
    logs = kubectl("logs", "driver")
    assert "squares [0, 1, 4, 9]" in logs and "balance 105" in logs, logs
    kubectl("delete", "pod", "driver", "--wait=false")

    # from this machine, through kind's port mapping to the head's client port (NodePort 30001)
    outside = subprocess.run([sys.executable, "-c", textwrap.dedent("""
        import kastor
        kastor.init("kastor://127.0.0.1:10001")
        print("outside", kastor.get(kastor.get_actor("alice", namespace="default").balance.remote()))
    """)], env={**os.environ, "KASTOR_TOKEN": token}, capture_output=True, text=True, timeout=120)
    assert "outside 105" in outside.stdout, outside.stdout + outside.stderr

    kubectl("delete", "pod", "alice-actor-1", "--wait=false")  # the actor's pod dies
    wait_jsonpath("detachedactor/alice", ".status.restarts", "1")
    wait_jsonpath("detachedactor/alice", ".status.state", "Alive")
    print(kubectl("get", "detachedactors"))

    kubectl("delete", "detachedactor", "alice", "--timeout=120s")
    deadline = time.monotonic() + 120
    while kubectl("get", "pods", "-l", "kastor.dev/detached-actor=alice", "-o", "name").strip():
        assert time.monotonic() < deadline, "the actor's pod outlived its DetachedActor"
        time.sleep(2)
    kubectl("delete", "actorcluster", "demo", "--timeout=180s")
