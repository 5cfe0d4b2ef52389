"""A Kubernetes cluster for tests on the real control plane: nodes run by Kastor's process
kubelet (`nodekubelet.py`), a network namespace per pod (`podnet.py`) and a userspace
kube-proxy (`kubeproxy.py`).

The control plane (`controlplane_fixture.real_k8s`) is one per session; a `RealCluster` is
one per test module: its own nodes, pod CIDR, bridge and proxy, removed at its end (nodes
deleted, namespaces and links gone). The harness's asyncio parts share one event loop on a
background thread; tests use the synchronous `kubernetes` client, `kubectl` and `helm`
with the admin kubeconfig.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlparse

import kubernetes

from .controlplane_fixture import ControlPlane
from .isolation import AddressBlock, PrivateHosts
from .kubeapi import KubeApi
from .kubeproxy import KubeProxy
from .loop_thread import LoopThread
from .nodekubelet import Kubelet
from .podnet import PodNetwork
from .provisioner import LocalPathProvisioner, storage_class

REPO = Path(__file__).resolve().parents[2]
T = TypeVar("T")


def netns_problem() -> str | None:
    """None if this machine lets the harness make network namespaces, else why not."""
    if os.geteuid() != 0:
        return "the pod network needs root (ip netns, veth, bridge, mount --bind)"
    done = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True)
    if done.returncode != 0:
        return f"`ip netns list` failed: {done.stderr.strip()}"
    return None


async def _step(what: str, step: Coroutine[Any, Any, T], timeout: float = 60.0) -> T:
    try:
        async with asyncio.timeout(timeout):
            return await step
    except TimeoutError:
        raise TimeoutError(f"the harness's start: {what} took over {timeout:.0f}s") from None


class RealCluster:
    """Nodes, pod network and Services of one test module on the session's control plane."""

    def __init__(self, control_plane: ControlPlane, workdir: Path, nodes: tuple[str, ...] = ("node-a",),
                 backoff_s: float = 1.0, storage: bool = False):
        self.cp = control_plane
        self.workdir = workdir
        self.node_names = nodes
        self.backoff_s = backoff_s
        # `storage`: PersistentVolumeClaims work, as on kind: StorageClass `standard` (the default,
        # reclaimPolicy Delete) and `standard-retain` (Retain), served by a local-path provisioner.
        self.storage = storage
        self.provisioner: LocalPathProvisioner | None = None
        self.harness = LoopThread("k8s-real-harness")
        self.block: AddressBlock | None = None
        self.network: PodNetwork | None = None
        self.hosts = PrivateHosts(workdir / "hosts")
        self.kubelets: dict[str, Kubelet] = {}
        self.api_client: kubernetes.client.ApiClient = control_plane.api_client
        self.core = kubernetes.client.CoreV1Api(self.api_client)
        self.apps = kubernetes.client.AppsV1Api(self.api_client)
        self.custom = kubernetes.client.CustomObjectsApi(self.api_client)
        self.rbac = kubernetes.client.RbacAuthorizationV1Api(self.api_client)
        self.api_port = urlparse(control_plane.server).port or 443
        # What the harness's images "contain": this checkout's venv (PATH), examples/ and the test actors.
        self.images = {"*": {"PYTHONPATH": f"{REPO / 'tests' / 'k8s' / 'image'}:{REPO / 'examples'}"}}

    def _run(self, coro: Coroutine[Any, Any, T], timeout: float = 120.0) -> T:
        return self.harness.run(coro, timeout)

    # ---- start / stop ----

    def start(self) -> RealCluster:
        try:
            self.block = AddressBlock()
            self.network = PodNetwork(self.block.number).create()
            self.harness.start()
            self._run(self._start_async())
        except BaseException:
            self.stop()
            raise
        return self

    async def _start_async(self) -> None:
        """Each step has a deadline of its own, so a start that hangs says which step hung."""
        config = self.api_client.configuration
        self.api = KubeApi(self.cp.server, config.ssl_ca_cert, config.cert_file, config.key_file)
        await self.api.open()
        assert self.block is not None and self.network is not None
        self.proxy = KubeProxy(self.api, self.network, self.hosts, self.block.service_prefix, self.api_port)
        await _step("kube-proxy's first sync of the Services", self.proxy.start())
        if self.storage:
            self.provisioner = LocalPathProvisioner(self.api, self.workdir / "volumes", [
                storage_class("standard", "Delete", default=True), storage_class("standard-retain", "Retain")])
            await _step("the volume provisioner's start", self.provisioner.start())
        for name in self.node_names:
            await _step(f"registering node {name}", self.add_node_async(name))

    async def add_node_async(self, name: str) -> Kubelet:
        assert self.network is not None
        kubelet = Kubelet(self.api, name, self.network, self.workdir, self.images, self.api_port,
                          backoff_s=self.backoff_s)
        self.kubelets[name] = kubelet
        await kubelet.start()
        return kubelet

    def stop(self) -> None:
        """Stops every kubelet (their processes die), deletes the Nodes, removes the network."""
        try:
            if self.harness.alive():
                self._run(self._stop_async())
        finally:
            self.harness.stop()
            if self.network is not None:
                self.network.destroy()
            if self.block is not None:
                self.block.release()

    async def _stop_async(self) -> None:
        for kubelet in self.kubelets.values():
            await kubelet.stop()
        if hasattr(self, "proxy"):
            await self.proxy.stop()
        if self.provisioner is not None:
            await self.provisioner.stop()
        for name in self.kubelets:
            try:
                await self.api.request("DELETE", f"/api/v1/nodes/{name}", ok=(404,))
            except Exception:  # the control plane may be gone already; the network goes anyway
                pass
        if hasattr(self, "api"):
            await self.api.close()

    # ---- for tests ----

    def add_node(self, name: str) -> Kubelet:
        """Another Node (a kubelet of its own) on the same pod network."""
        return self._run(self.add_node_async(name))

    def cordon(self, name: str, unschedulable: bool = True) -> None:
        self.core.patch_node(name, {"spec": {"unschedulable": unschedulable}})

    def lose_node(self, name: str) -> None:
        """The node is lost: NotReady, its processes gone, its pods stuck Terminating once deleted."""
        self._run(self.kubelets[name].lose())

    def lost_nodes(self) -> set[str]:
        return {name for name, kubelet in self.kubelets.items() if kubelet.lost}

    def command(self, argv: list[str]) -> list[str]:
        """argv as a process on the host, outside the pod network, resolving the Services' names
        (`svc.ns.svc`, ...) to their host-side addresses."""
        return self.hosts.wrap(argv)

    def kubectl(self, *args: str, input: str | None = None, check: bool = True,
                timeout: float = 120) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(["kubectl", "--kubeconfig", str(self.cp.kubeconfig), *args], input=input, text=True,
                              capture_output=True, timeout=timeout)
        if check and done.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({done.returncode}):\n{done.stderr}{done.stdout}")
        return done

    def pod(self, name: str, ns: str) -> Any | None:
        try:
            return self.core.read_namespaced_pod(name, ns)
        except kubernetes.client.ApiException as e:
            if e.status == 404:
                return None
            raise

    def pod_log(self, name: str, ns: str, container: str | None = None) -> str:
        for kubelet in self.kubelets.values():
            text = kubelet.log(ns, name, container)
            if text:
                return text
        return ""

    def make_namespace(self, name: str) -> str:
        try:
            self.core.create_namespace({"metadata": {"name": name}})
        except kubernetes.client.ApiException as e:
            if e.status != 409:
                raise
        # the serviceaccount controller makes `default` and the root CA ConfigMap for pods' token volumes
        self.wait(lambda: self._exists(self.core.read_namespaced_service_account, "default", name),
                  f"ServiceAccount {name}/default", 60)
        self.wait(lambda: self._exists(self.core.read_namespaced_config_map, "kube-root-ca.crt", name),
                  f"ConfigMap {name}/kube-root-ca.crt", 60)
        return name

    @staticmethod
    def _exists(read: Callable[[str, str], Any], name: str, ns: str) -> bool:
        try:
            read(name, ns)
            return True
        except kubernetes.client.ApiException as e:
            if e.status == 404:
                return False
            raise

    def wait(self, predicate: Callable[[], T], what: str, timeout: float = 90.0) -> T:
        """Polls predicate() until truthy; the failure names `what` and shows the kubelets' log tails."""
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}\n{self.log_tails()}")
            time.sleep(0.1)

    def log_tails(self, lines: int = 20) -> str:
        parts = []
        if hasattr(self, "proxy") and self.proxy.problems:
            parts.append("--- kube-proxy could not serve:\n" + "\n".join(self.proxy.problems[-lines:]))
        for path in sorted(self.workdir.glob("kubelet-*.log")):
            parts.append(f"--- {path}:\n" + "\n".join(path.read_text(errors="replace").splitlines()[-lines:]))
        return "\n".join(parts)

    def service_host_address(self, name: str, ns: str) -> str | None:
        return self.proxy.host_address(ns, name)
