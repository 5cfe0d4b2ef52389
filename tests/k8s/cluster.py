"""An emulated Kubernetes cluster for tests: kmock-based API server, kubelet harness, operator.

The API server and the kubelet share one asyncio loop on a background thread; the
operator runs as its own process (`python -m kastor.operator`) against a kubeconfig, as
it would in a pod. Tests talk to the API with the `kubernetes` client and `kubectl`, and
start drivers through `command()`, so that they resolve this run's Service names. Each
cluster has its own loopback addresses and hosts file (isolation.py), so runs in parallel
on one machine do not meet.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import kmock
import kubernetes
import pytest
import yaml

from .apiserver import ApiServer
from .isolation import AddressBlock, PrivateHosts
from .kubelet import Kubelet
from .loop_thread import LoopThread
from .statefulsets import StatefulSetController

REPO = Path(__file__).resolve().parents[2]
TEST_IMAGE = "kastor:test"
PEERING = "kastor-operator"
PEERING_CRDS = REPO / "charts" / "kastor-operator" / "crds" / "kopf.dev_peerings.yaml"


def _private_hosts_problem() -> str | None:
    probe = Path(tempfile.mkdtemp(prefix="kastor-hosts-probe-")) / "hosts"
    try:
        return PrivateHosts(probe).works()
    finally:
        shutil.rmtree(probe.parent, ignore_errors=True)


# Every process of a run sees the run's hosts file as /etc/hosts: end-to-end modules skip where that cannot be.
_PRIVATE_HOSTS_PROBLEM = _private_hosts_problem()
NEEDS_PRIVATE_HOSTS = pytest.mark.skipif(
    _PRIVATE_HOSTS_PROBLEM is not None,
    reason=f"the kubelet harness gives each process of a run its own /etc/hosts: {_PRIVATE_HOSTS_PROBLEM} "
           f"(run as root, or where user namespaces are enabled)")


def live(url: str) -> bool:
    """Whether a liveness endpoint answers 200."""
    try:
        with urllib.request.urlopen(url, timeout=2) as reply:
            return reply.status == 200
    except (urllib.error.URLError, ConnectionError):
        return False


class EmulatedCluster:
    def __init__(self, workdir: Path, resync_s: float = 1.0):
        self.workdir = workdir
        self.resync_s = resync_s
        self.harness = LoopThread("k8s-emulator")
        self.block: AddressBlock | None = None
        self.hosts = PrivateHosts(workdir / "hosts")
        self.operator: subprocess.Popen | None = None
        self.operator_log = workdir / "operator.log"
        self.logs: list[Path] = [self.operator_log, workdir / "kubelet.log"]  # shown when a test fails
        self._marks: dict[Path, int] = {}

    # ---- start / stop ----

    def _run(self, coro) -> Any:
        return self.harness.run(coro, 60)

    def start(self) -> EmulatedCluster:
        self.block = AddressBlock()
        self.harness.start()
        self._run(self._start_async())
        self.kubeconfig = self.workdir / "kubeconfig"
        self.kubeconfig.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": "emulated",
            "clusters": [{"name": "emulated", "cluster": {"server": self.url}}],
            "users": [{"name": "tester", "user": {"token": "emulated-cluster-token"}}],
            "contexts": [{"name": "emulated", "context": {"cluster": "emulated", "user": "tester",
                                                          "namespace": "default"}}]}))
        config = kubernetes.client.Configuration()
        config.host = self.url
        self.api_client = kubernetes.client.ApiClient(config)
        self.core = kubernetes.client.CoreV1Api(self.api_client)
        self.custom = kubernetes.client.CustomObjectsApi(self.api_client)
        self.ext = kubernetes.client.ApiextensionsV1Api(self.api_client)
        for path in sorted(glob.glob(str(REPO / "crds" / "*.yaml"))) + [str(PEERING_CRDS)]:
            for crd in yaml.safe_load_all(Path(path).read_text()):
                self.ext.create_custom_resource_definition(crd)
        # what the operator chart installs for kopf's peering (its leader election)
        self.custom.create_cluster_custom_object("kopf.dev", "v1", "clusterkopfpeerings", {
            "apiVersion": "kopf.dev/v1", "kind": "ClusterKopfPeering", "metadata": {"name": PEERING}})
        return self

    async def _start_async(self) -> None:
        self.api = ApiServer(service_ip_prefix=self.block.service_prefix)
        await self.api.__aenter__()
        self.server = kmock.Server(self.api)
        await self.server.__aenter__()
        self.url = str(self.server.url).rstrip("/")
        # what the test image "contains": examples/ on PYTHONPATH (as the Dockerfile's demo target); tests add actors
        images = {TEST_IMAGE: {"PYTHONPATH": f"{REPO / 'tests' / 'k8s' / 'image'}:{REPO / 'examples'}"}}
        self.kubelet = Kubelet(self.url, self.workdir, self.hosts, self.block.pod_prefix, images)
        await self.kubelet.start()
        self.statefulsets = StatefulSetController(self.url, self.workdir / "kubelet.log")
        await self.statefulsets.start()

    def start_operator(self, priority: int | str = 100, log: Path | None = None) -> subprocess.Popen:
        """An operator process peering with any other (kopf's leader election), with a liveness endpoint.
        KASTOR_TEST_OPERATOR_VERBOSE=1 makes it log at DEBUG, kopf's reasoning included."""
        env = {**os.environ, "KUBECONFIG": str(self.kubeconfig), "KASTOR_OPERATOR_RESYNC_S": str(self.resync_s),
               "KASTOR_OPERATOR_POLL_S": str(self.resync_s),
               "PYTHONUNBUFFERED": "1"}
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        with open(log or self.operator_log, "ab") as out:
            proc = subprocess.Popen(self.command(
                [sys.executable, "-m", "kastor.operator", "--all-namespaces", "--peering", PEERING, "--priority",
                 str(priority), "--liveness", f"http://127.0.0.1:{port}/healthz",
                 *(["--verbose"] if os.environ.get("KASTOR_TEST_OPERATOR_VERBOSE") else [])]),
                env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        proc.liveness_url = f"http://127.0.0.1:{port}/healthz"  # type: ignore[attr-defined]
        if (log or self.operator_log) not in self.logs:
            self.logs.append(log)
        if log is None:
            self.operator = proc
        return proc

    def wait_for_operator(self, proc: subprocess.Popen | None = None, timeout: float = 300.0) -> None:
        """Until the operator's liveness endpoint answers: it has imported kopf and Kastor and runs
        (a new process took 12-80 s to get there on a loaded 2-core machine), so a test's own
        deadline then covers reconciling only, not the operator's start."""
        proc = proc or self.operator
        assert proc is not None
        self.wait(lambda: live(proc.liveness_url), "the operator's liveness endpoint to answer",  # type: ignore[attr-defined]
                  timeout=timeout)

    def stop(self) -> None:
        if self.operator is not None and self.operator.poll() is None:
            self.operator.terminate()
            try:
                self.operator.wait(10)
            except subprocess.TimeoutExpired:
                self.operator.kill()
                self.operator.wait()
        try:
            self._run(self._stop_async())
        finally:
            self.harness.stop()
            if self.block is not None:
                self.block.release()

    async def _stop_async(self) -> None:
        await self.statefulsets.stop()
        await self.kubelet.stop()
        await self.api.close_watches()
        await self.server.__aexit__(None, None, None)
        await self.api.__aexit__(None, None, None)

    # ---- helpers for tests ----

    def command(self, argv: list[str]) -> list[str]:
        """argv as a process of this cluster's network: it resolves the cluster's Service names."""
        return self.hosts.wrap(argv)

    def kubectl(self, *args: str, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(["kubectl", "--kubeconfig", str(self.kubeconfig), *args], input=input, text=True,
                              capture_output=True, check=check, timeout=60)

    def get_custom(self, plural: str, name: str, ns: str = "default") -> dict[str, Any] | None:
        try:
            return self.custom.get_namespaced_custom_object("kastor.dev", "v1alpha1", ns, plural, name)
        except kubernetes.client.ApiException as e:
            if e.status == 404:
                return None
            raise

    def pods(self, selector: str, ns: str = "default") -> list[Any]:
        return self.core.list_namespaced_pod(ns, label_selector=selector).items

    def events(self, name: str, ns: str = "default") -> list[Any]:
        return [e for e in self.core.list_namespaced_event(ns).items if e.involved_object.name == name]

    def wait(self, predicate: Callable[[], Any], what: str, timeout: float = 60.0) -> Any:
        """Polls until predicate() is truthy; the failure names what, and shows the operator's log tail."""
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if self.operator is not None and self.operator.poll() is not None:
                raise AssertionError(f"the operator exited ({self.operator.returncode}) while waiting for {what}:\n"
                                     f"{self.operator_log_tail()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout}s waiting for {what}\n--- operator log:\n"
                                     f"{self.operator_log_tail()}")
            time.sleep(0.1)

    def mark_logs(self) -> None:
        """Remembers where each log ends now: `logs_since_mark` shows what a test added."""
        self._marks = {path: path.stat().st_size for path in self._all_logs()}

    def _all_logs(self) -> list[Path]:
        """The operator's and kubelet's logs, then every pod's (head, workers, actors, drivers)."""
        pods = sorted(p for p in self.workdir.glob("*.log") if p not in self.logs)
        return [p for p in self.logs if p.exists()] + pods

    def logs_since_mark(self, max_lines: int = 300, max_pod_lines: int = 80) -> str:
        """What the operator, the kubelet and each pod logged since `mark_logs`, for a failed
        test's report: a pod that crashed or hung says so in its own log."""
        parts = []
        for path in self._all_logs():
            with open(path, "rb") as f:
                f.seek(self._marks.get(path, 0))
                lines = f.read().decode(errors="replace").splitlines()
            if not lines:
                continue
            keep = max_lines if path in self.logs else max_pod_lines
            cut = f"(first {len(lines) - keep} lines left out)\n" if len(lines) > keep else ""
            parts.append(f"--- {path} (kept), during this test:\n{cut}" + "\n".join(lines[-keep:]))
        return "\n".join(parts)

    def operator_log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.operator_log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def pod_process(self, name: str, ns: str = "default") -> subprocess.Popen | None:
        return self.kubelet.process(ns, name)

    def service_connections(self, name: str, ns: str = "default") -> int:
        """Connections accepted so far on the Service's ClusterIP (each new client connection counts)."""
        return self.kubelet.service_connections(ns, name)

    def pod_log(self, name: str, ns: str = "default") -> str:
        return self.kubelet.log(ns, name)
