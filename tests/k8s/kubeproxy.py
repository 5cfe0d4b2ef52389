"""kube-proxy and cluster DNS for the real-control-plane harness, in userspace.

There is no iptables or nft on the CI machines, so Services are served by TCP forwarders:

- inside the run's proxy namespace (`podnet.PodNetwork.proxy_netns`), which owns every
  ClusterIP the real apiserver allocated, one listener per ClusterIP:port; each accepted
  connection goes to one ready endpoint of the Service's EndpointSlices (made by the real
  controller manager), round robin. The `kubernetes` Service goes to the apiserver itself,
  on the host's 127.0.0.1 (the apiserver's endpoint reconciler is off);
- on the host, one loopback address per Service (from the run's `AddressBlock`, stable for
  the Service's name, like a NodePort), so a client outside the pod network, started
  through `PrivateHosts.wrap`, reaches `svc.ns.svc` as well;
- DNS without a DNS server: every pod's /etc/hosts lists each Service's names
  (`svc.ns.svc.cluster.local`, `svc.ns.svc`, `svc.ns`, and `svc` for its own namespace),
  rewritten when Services change; headless Services name their ready endpoints.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import socket
from collections import Counter
from typing import Any

from .isolation import PrivateHosts
from .kubeapi import KubeApi
from .podnet import PodNetwork, in_netns

Key = tuple[str, str]  # (namespace, name)


def _listen(ip: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((ip, port))
    sock.listen(128)
    sock.setblocking(False)
    return sock


class KubeProxy:
    """Serves the run's Services to its pods and to the host (see the module docstring)."""

    def __init__(self, api: KubeApi, network: PodNetwork, hosts: PrivateHosts, host_prefix: str, api_port: int):
        self.api = api
        self.network = network
        self.hosts = hosts
        self.host_prefix = host_prefix  # "127.N": the host-side Service addresses are 127.N.x.y
        self.api_port = api_port
        self.services: dict[Key, dict[str, Any]] = {}
        self.slices: dict[Key, dict[str, Any]] = {}  # by the slice's own (namespace, name)
        # (ClusterIP, port) -> its listener in the proxy namespace and its listener on the host
        self.listeners: dict[tuple[str, int], tuple[asyncio.Server, asyncio.Server]] = {}
        self.host_ips: dict[Key, str] = {}
        self._host_counter = itertools.count(2)
        self._rr: Counter[tuple[str, str, int]] = Counter()
        self.connections: Counter[Key] = Counter()
        self.tasks: list[asyncio.Task[None]] = []
        self._forwarding: set[asyncio.Task[Any]] = set()  # open connections, cancelled at stop()
        self._synced = asyncio.Event()
        self.problems: list[str] = []  # Service ports it could not serve, and why (shown by failed tests)

    async def start(self) -> None:
        """Returns once every Service that exists is served; a watch that dies before that
        raises its error here instead of leaving the caller waiting for a sync that never comes."""
        self.tasks = [asyncio.create_task(self._watch_services()), asyncio.create_task(self._watch_slices())]
        synced = asyncio.create_task(self._synced.wait())
        await asyncio.wait([synced, *self.tasks], return_when=asyncio.FIRST_COMPLETED)
        if not synced.done():
            synced.cancel()
            failed = next(t for t in self.tasks if t.done())
            error = None if failed.cancelled() else failed.exception()
            raise RuntimeError(f"kube-proxy: a watch ended before the first sync of Services: {error!r}")

    async def stop(self) -> None:
        for servers in self.listeners.values():
            for server in servers:
                server.close()
        for task in [*self.tasks, *self._forwarding]:
            task.cancel()
        await asyncio.gather(*self.tasks, *self._forwarding, return_exceptions=True)

    # ---- watches ----

    async def _watch_services(self) -> None:
        async for kind, svc in self.api.watch("/api/v1/services", on_problem=self.problems.append):
            if kind == "SYNCED":
                await self._sync()
                self._synced.set()
                continue
            key = (svc["metadata"]["namespace"], svc["metadata"]["name"])
            if kind == "DELETED":
                self.services.pop(key, None)
            else:
                self.services[key] = svc
            await self._sync()

    async def _watch_slices(self) -> None:
        async for kind, es in self.api.watch("/apis/discovery.k8s.io/v1/endpointslices",
                                             on_problem=self.problems.append):
            if kind == "SYNCED":
                continue
            key = (es["metadata"]["namespace"], es["metadata"]["name"])
            if kind == "DELETED":
                self.slices.pop(key, None)
            else:
                self.slices[key] = es
            self._write_names()

    # ---- listeners and names ----

    async def _sync(self) -> None:
        wanted: dict[tuple[str, int], tuple[Key, dict[str, Any]]] = {}
        for key, svc in self.services.items():
            ip = svc["spec"].get("clusterIP")
            if not ip or ip == "None":
                continue
            for port in svc["spec"].get("ports") or []:
                if port.get("protocol", "TCP") == "TCP":
                    wanted[(ip, port["port"])] = (key, port)
            if key not in self.host_ips:
                n = next(self._host_counter)
                self.host_ips[key] = f"{self.host_prefix}.{n // 250}.{n % 250 + 2}"
        for address in set(self.listeners) - set(wanted):
            for server in self.listeners.pop(address):
                server.close()
        for ip in set(self.network.cluster_ips) - {a[0] for a in wanted}:
            await asyncio.to_thread(self.network.remove_cluster_ip, ip)
        for (ip, port), (key, spec) in wanted.items():
            if (ip, port) in self.listeners:
                continue
            try:
                self.listeners[(ip, port)] = await self._serve(ip, port, key, spec)
            except Exception as e:  # one Service port that cannot be served must not stop the others
                self.problems.append(f"Service {key[0]}/{key[1]} {ip}:{port}: {e!r}")
        self._write_names()

    async def _serve(self, ip: str, port: int, key: Key, spec: dict[str, Any]) -> tuple[asyncio.Server, asyncio.Server]:
        """Listeners for one ClusterIP:port, in the proxy namespace and on the Service's host address."""
        await asyncio.to_thread(self.network.add_cluster_ip, ip)
        sock = await asyncio.to_thread(in_netns, self.network.proxy_netns, functools.partial(_listen, ip, port))
        handler = functools.partial(self._forward, key, spec)
        inside = await asyncio.start_server(handler, sock=sock)
        try:
            return inside, await asyncio.start_server(handler, self.host_ips[key], port)
        except OSError:
            inside.close()
            raise

    def _endpoints(self, key: Key, port_name: str | None) -> list[tuple[str, int]]:
        """Ready (address, port) of the Service's EndpointSlices for the Service port `port_name`."""
        found = []
        for es in self.slices.values():
            labels = es["metadata"].get("labels") or {}
            if es["metadata"]["namespace"] != key[0] or labels.get("kubernetes.io/service-name") != key[1]:
                continue
            port = next((p["port"] for p in es.get("ports") or [] if p.get("name", "") == (port_name or "")), None)
            if port is None:
                continue
            for endpoint in es.get("endpoints") or []:
                if (endpoint.get("conditions") or {}).get("ready", True):
                    found.extend((address, port) for address in endpoint.get("addresses") or [])
        return sorted(found)

    def _write_names(self) -> None:
        by_namespace: dict[str, list[tuple[str, str]]] = {}  # ns -> [(ip, name)]
        host_entries: dict[str, str] = {}
        for (ns, name), svc in self.services.items():
            ip = svc["spec"].get("clusterIP")
            ips = [ip] if ip and ip != "None" else sorted({a for a, _ in self._all_ready((ns, name))})
            for address in ips:
                by_namespace.setdefault(ns, []).append((address, name))
            if ip and ip != "None" and (ns, name) in self.host_ips:
                for host in (f"{name}.{ns}.svc.cluster.local", f"{name}.{ns}.svc", f"{name}.{ns}"):
                    host_entries[host] = self.host_ips[(ns, name)]
        self.network.set_names(by_namespace)
        self.hosts.add(host_entries)

    def _all_ready(self, key: Key) -> list[tuple[str, int]]:
        found = []
        for es in self.slices.values():
            labels = es["metadata"].get("labels") or {}
            if es["metadata"]["namespace"] == key[0] and labels.get("kubernetes.io/service-name") == key[1]:
                for endpoint in es.get("endpoints") or []:
                    if (endpoint.get("conditions") or {}).get("ready", True):
                        found.extend((a, 0) for a in endpoint.get("addresses") or [])
        return found

    # ---- forwarding ----

    async def _forward(self, key: Key, port: dict[str, Any], reader: asyncio.StreamReader,
                       writer: asyncio.StreamWriter) -> None:
        self.connections[key] += 1
        task = asyncio.current_task()
        if task is not None:
            self._forwarding.add(task)
            task.add_done_callback(self._forwarding.discard)
        if key == ("default", "kubernetes"):
            targets = [("127.0.0.1", self.api_port)]
        else:
            targets = self._endpoints(key, port.get("name"))
        if not targets:  # no ready endpoint: refused, as kube-proxy's REJECT rule does
            writer.close()
            return
        n = self._rr[(*key, port["port"])]
        self._rr[(*key, port["port"])] += 1
        try:
            up_reader, up_writer = await asyncio.open_connection(*targets[n % len(targets)])
        except OSError:
            writer.close()
            return

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(262144):
                    dst.write(data)
                    await dst.drain()
                if dst.can_write_eof():
                    dst.write_eof()
            except (ConnectionError, OSError):
                pass

        try:
            await asyncio.gather(pump(reader, up_writer), pump(up_reader, writer))
        finally:
            writer.close()
            up_writer.close()

    # ---- for tests ----

    def host_address(self, namespace: str, name: str) -> str | None:
        """The host-side loopback address of a Service (what its names resolve to outside the pods)."""
        return self.host_ips.get((namespace, name))
