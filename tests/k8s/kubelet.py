"""A kubelet for the emulated API server: each pod becomes local processes.

It watches pods through the API like a kubelet does, and for each new pod starts the
container's command and args (with `$(VAR)` expansion) and env (values, Secret keys and
the downward API), in its own process group, with its own loopback address as pod IP
(in the run's address block, see isolation.py: Linux routes all of 127/8 to lo, so every
pod can bind the same port). Services work as with kube-proxy: the emulated API server
assigns each a loopback ClusterIP (the block's other half), the harness listens on
ClusterIP:port and forwards each connection to a ready pod the Service selects (targetPort
by number or container port name), and the Service's DNS names (`svc.ns.svc[.cluster.local]`)
resolve to the ClusterIP through the run's own hosts file, which each pod's processes see
as their /etc/hosts (the machine's is never written). It reports phase, pod IP, readiness (TCP
readiness probes are run; without a probe a running container is ready), exit codes and
termination messages (FallbackToLogsOnError: the log's tail) back through the API, and
kills the pod's process group when the pod is deleted or its main process exits (a
container's processes die with its PID 1). restartPolicy Always restarts the container.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import datetime
import functools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from .isolation import PrivateHosts


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class PodProcess:
    namespace: str
    name: str
    uid: str
    ip: str
    pod: dict[str, Any]
    proc: subprocess.Popen | None = None
    log_path: Path | None = None
    ready: bool | None = None
    restarts: int = 0
    started_at: str = ""
    done: bool = False
    env: dict[str, str] = field(default_factory=dict)
    argv: list[str] = field(default_factory=list)


class Kubelet:
    """Runs the emulated cluster's pods. `images` maps an image to extra env (its "contents")."""

    def __init__(self, api_url: str, workdir: Path, hosts: PrivateHosts, pod_prefix: str,
                 images: dict[str, dict[str, str]] | None = None):
        self.api = api_url.rstrip("/")
        self.workdir = workdir
        self.hosts = hosts
        self.pod_prefix = pod_prefix  # "127.N": pod IPs are 127.N.x.y
        self.images = images or {}
        self.pods: dict[str, PodProcess] = {}   # by uid
        self.next_ip = 2
        self.session: aiohttp.ClientSession | None = None
        self.tasks: list[asyncio.Task] = []
        self.host_entries: dict[str, str] = {}
        self.services: dict[tuple[str, str], dict[str, Any]] = {}
        self.listeners: dict[tuple[str, int], asyncio.Server] = {}
        self.stopping: set[asyncio.Task] = set()
        self.connections: collections.Counter[tuple[str, str]] = collections.Counter()  # accepted, by Service

    # ---- lifecycle ----

    async def start(self) -> None:
        self.session = aiohttp.ClientSession()
        self.tasks = [asyncio.create_task(self._watch_pods()), asyncio.create_task(self._sync_loop())]

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, *self.stopping, return_exceptions=True)
        await asyncio.gather(*(asyncio.to_thread(self._kill, pp) for pp in list(self.pods.values())))
        for listener in self.listeners.values():
            listener.close()
        if self.session:
            await self.session.close()

    # ---- API ----

    async def _get(self, path: str) -> dict[str, Any] | None:
        async with self.session.get(self.api + path) as r:
            return await r.json() if r.status == 200 else None

    async def _patch_status(self, pp: PodProcess, status: dict[str, Any]) -> None:
        url = f"{self.api}/api/v1/namespaces/{pp.namespace}/pods/{pp.name}/status"
        async with self.session.patch(url, data=json.dumps({"status": status}),
                                      headers={"Content-Type": "application/merge-patch+json"}) as r:
            await r.read()

    async def _watch_pods(self) -> None:
        rv = "0"
        while True:
            try:
                async with self.session.get(f"{self.api}/api/v1/pods",
                                            params={"watch": "true", "resourceVersion": rv, "timeoutSeconds": "60"},
                                            timeout=aiohttp.ClientTimeout(total=None)) as r:
                    async for line in r.content:
                        if not line.strip():
                            continue
                        event = json.loads(line)
                        obj = event["object"]
                        try:
                            await self._on_pod_event(event["type"], obj)
                        except Exception as e:  # a kubelet keeps going; the pod is retried on its next event
                            self._log(f"pod event {event['type']} {obj['metadata'].get('name')}: {e!r}")
                        rv = obj["metadata"]["resourceVersion"]
            except (TimeoutError, aiohttp.ClientError) as e:
                self._log(f"pod watch: {e!r}; re-watching from {rv}")
                await asyncio.sleep(0.1)

    async def _on_pod_event(self, kind: str, pod: dict[str, Any]) -> None:
        uid = pod["metadata"]["uid"]
        if kind == "DELETED" or pod["metadata"].get("deletionTimestamp"):
            pp = self.pods.pop(uid, None)
            if pp is not None or kind != "DELETED":  # stop it in the background: other pods don't wait
                task = asyncio.create_task(self._stop_pod(pp, pod, graceful=kind != "DELETED"))
                self.stopping.add(task)
                task.add_done_callback(self.stopping.discard)
            return
        if uid not in self.pods and (pod.get("status") or {}).get("phase", "Pending") == "Pending":
            await self._run_pod(pod)

    async def _stop_pod(self, pp: PodProcess | None, pod: dict[str, Any], graceful: bool) -> None:
        if pp is not None:
            await asyncio.to_thread(self._kill, pp)
        url = f"{self.api}/api/v1/namespaces/{pod['metadata']['namespace']}/pods/{pod['metadata']['name']}"
        while graceful:  # graceful deletion: the containers are gone, now the pod object goes (retried)
            try:
                async with self.session.delete(url, params={"gracePeriodSeconds": "0"}) as r:
                    await r.read()
                    if r.status in (200, 404):
                        return
                    self._log(f"final delete of {url}: HTTP {r.status}")
            except aiohttp.ClientError as e:
                self._log(f"final delete of {url}: {e!r}")
            await asyncio.sleep(0.2)

    def _log(self, line: str) -> None:
        with open(self.workdir / "kubelet.log", "a") as f:
            f.write(f"{_now()} {line}\n")

    # ---- running a pod ----

    async def _secret_value(self, ns: str, ref: dict[str, Any]) -> str | None:
        secret = await self._get(f"/api/v1/namespaces/{ns}/secrets/{ref['name']}")
        if secret is None or ref["key"] not in (secret.get("data") or {}):
            return None
        return base64.b64decode(secret["data"][ref["key"]]).decode()

    async def _resolve_env(self, pp: PodProcess, container: dict[str, Any]) -> dict[str, str] | str:
        """The container's env in order (later entries may use earlier ones), or an error message."""
        env: dict[str, str] = {}
        meta = pp.pod["metadata"]
        for item in container.get("env") or []:
            if "value" in item:
                env[item["name"]] = _expand(item["value"], env)
                continue
            source = item.get("valueFrom") or {}
            if "secretKeyRef" in source:
                value = await self._secret_value(pp.namespace, source["secretKeyRef"])
                if value is None:
                    return f"secret {source['secretKeyRef']['name']!r} or its key {source['secretKeyRef']['key']!r} " \
                           f"not found"
                env[item["name"]] = value
            elif "fieldRef" in source:
                path = source["fieldRef"]["fieldPath"]
                env[item["name"]] = {"status.podIP": pp.ip, "metadata.name": meta["name"],
                                     "metadata.namespace": pp.namespace, "status.hostIP": "127.0.0.1",
                                     "spec.nodeName": "kubelet-harness"}.get(path, "")
        return env

    async def _run_pod(self, pod: dict[str, Any]) -> None:
        meta = pod["metadata"]
        ip = f"{self.pod_prefix}.{self.next_ip // 250}.{self.next_ip % 250 + 2}"
        self.next_ip += 1
        pp = PodProcess(meta["namespace"], meta["name"], meta["uid"], ip, pod)
        self.pods[pp.uid] = pp
        container = pod["spec"]["containers"][0]
        env = await self._resolve_env(pp, container)
        if isinstance(env, str):  # a real kubelet reports CreateContainerConfigError and waits
            await self._patch_status(pp, {"phase": "Pending", "podIP": ip, "containerStatuses": [{
                "name": container["name"], "ready": False, "restartCount": 0, "image": container["image"],
                "imageID": "", "state": {"waiting": {"reason": "CreateContainerConfigError", "message": env}}}]})
            self.pods.pop(pp.uid, None)  # retried on the next pod event
            return
        if self.pods.get(pp.uid) is not pp:  # deleted while its env was being resolved
            return
        mounts = await self._mount_secrets(pp, container)
        if isinstance(mounts, str):
            await self._patch_status(pp, {"phase": "Pending", "podIP": ip, "containerStatuses": [{
                "name": container["name"], "ready": False, "restartCount": 0, "image": container["image"],
                "imageID": "", "state": {"waiting": {"reason": "ContainerCreating", "message": mounts}}}]})
            self.pods.pop(pp.uid, None)
            return
        pp.env = {k: _remount(v, mounts) for k, v in env.items()}
        pp.argv = [_remount(_expand(a, env), mounts)
                   for a in (container.get("command") or []) + (container.get("args") or [])]
        pp.log_path = self.workdir / f"{pp.namespace}_{pp.name}_{pp.uid[:8]}.log"
        await self._start_container(pp, container)

    async def _mount_secrets(self, pp: PodProcess, container: dict[str, Any]) -> dict[str, str] | str:
        """Secret volumes become files in the pod's own directory. Processes share this host's
        filesystem, so a mount path is mapped to that directory wherever env or args name it."""
        volumes = {v["name"]: v for v in pp.pod["spec"].get("volumes") or []}
        mounts: dict[str, str] = {}
        for mount in container.get("volumeMounts") or []:
            source = volumes.get(mount["name"], {}).get("secret")
            if source is None:
                continue  # emptyDir and the like: the pod's own directories serve
            secret = await self._get(f"/api/v1/namespaces/{pp.namespace}/secrets/{source['secretName']}")
            if secret is None:
                return f"secret {source['secretName']!r} not found"
            target = self.workdir / "pods" / pp.uid / "mounts" / mount["name"]
            target.mkdir(parents=True, exist_ok=True)
            data = secret.get("data") or {}
            items = source.get("items") or [{"key": k, "path": k} for k in data]
            for item in items:
                if item["key"] not in data:
                    return f"secret {source['secretName']!r} has no key {item['key']!r}"
                (target / item["path"]).write_bytes(base64.b64decode(data[item["key"]]))
            mounts[mount["mountPath"].rstrip("/")] = str(target)
        return mounts

    async def _start_container(self, pp: PodProcess, container: dict[str, Any]) -> None:
        home = self.workdir / "pods" / pp.uid
        (home / "tmp").mkdir(parents=True, exist_ok=True)
        bindir = os.path.dirname(sys.executable)
        env = {"PATH": f"{bindir}:/usr/local/bin:/usr/bin:/bin", "HOME": str(home), "TMPDIR": str(home / "tmp"),
               "HOSTNAME": pp.name, "LANG": "C.UTF-8", "KASTOR_SESSION_ROOT": str(home / "sessions"),
               **self.images.get(container["image"], {}), **pp.env}
        argv = list(pp.argv)
        argv[0] = shutil.which(argv[0], path=env["PATH"]) or argv[0]
        argv = self.hosts.wrap(argv)  # the pod's own /etc/hosts: the run's Service names
        pp.started_at = _now()
        cwd = self._working_dir(pp, container, home)
        try:
            with open(pp.log_path, "ab") as log:
                pp.proc = subprocess.Popen(argv, env=env, cwd=str(cwd), stdin=subprocess.DEVNULL, stdout=log,
                                           stderr=subprocess.STDOUT, start_new_session=True)
        except OSError as e:
            await self._finish(pp, 128, "ContainerCannotRun", str(e))
            return
        pp.ready = None
        await self._patch_status(pp, self._running_status(pp, ready=False))

    @staticmethod
    def _working_dir(pp: PodProcess, container: dict[str, Any], home: Path) -> Path:
        """The container's workingDir if an emptyDir is mounted there (a directory of the pod's
        own, kept across container restarts: where Redis writes its data); else the pod's home."""
        workdir = (container.get("workingDir") or "").rstrip("/")
        empty = {v["name"] for v in pp.pod["spec"].get("volumes") or [] if "emptyDir" in v}
        for mount in container.get("volumeMounts") or []:
            if workdir and mount["mountPath"].rstrip("/") == workdir and mount["name"] in empty:
                path = home / "volumes" / mount["name"]
                path.mkdir(parents=True, exist_ok=True)
                return path
        return home

    def _running_status(self, pp: PodProcess, ready: bool) -> dict[str, Any]:
        container = pp.pod["spec"]["containers"][0]
        flag = "True" if ready else "False"
        return {
            "phase": "Running", "podIP": pp.ip, "podIPs": [{"ip": pp.ip}], "hostIP": "127.0.0.1",
            "startTime": pp.started_at,
            "conditions": [{"type": t, "status": s, "lastTransitionTime": _now()} for t, s in
                           (("PodScheduled", "True"), ("Initialized", "True"), ("ContainersReady", flag),
                            ("Ready", flag))],
            "containerStatuses": [{"name": container["name"], "image": container["image"], "imageID": "",
                                   "ready": ready, "started": True, "restartCount": pp.restarts,
                                   "state": {"running": {"startedAt": pp.started_at}}}],
        }

    async def _finish(self, pp: PodProcess, code: int, reason: str, message: str) -> None:
        pp.done = True
        container = pp.pod["spec"]["containers"][0]
        phase = "Succeeded" if code == 0 else "Failed"
        await self._patch_status(pp, {
            "phase": phase,
            "conditions": [{"type": t, "status": s, "lastTransitionTime": _now()} for t, s in
                           (("PodScheduled", "True"), ("Initialized", "True"), ("ContainersReady", "False"),
                            ("Ready", "False"))],
            "containerStatuses": [{"name": container["name"], "image": container["image"], "imageID": "",
                                   "ready": False, "started": False, "restartCount": pp.restarts,
                                   "state": {"terminated": {"exitCode": code, "reason": reason, "message": message,
                                                            "startedAt": pp.started_at, "finishedAt": _now()}}}]})

    def _termination_message(self, pp: PodProcess, code: int) -> str:
        container = pp.pod["spec"]["containers"][0]
        if code == 0 or container.get("terminationMessagePolicy") != "FallbackToLogsOnError" or pp.log_path is None:
            return ""
        data = pp.log_path.read_bytes()[-2048:].decode(errors="replace")
        return "\n".join(data.splitlines()[-80:])

    def _kill(self, pp: PodProcess) -> None:
        """The container runtime's kill: SIGTERM to the pod's process group, then SIGKILL."""
        if pp.proc is None:
            return
        try:
            os.killpg(pp.proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            pp.proc.wait(5)
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(pp.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        pp.proc.wait()

    # ---- the periodic loop: exits, probes, Service names ----

    async def _sync_loop(self) -> None:
        while True:
            try:
                await self._sync_once()
            except Exception as e:  # a kubelet's sync loop survives anything; the log says what
                self._log(f"sync: {e!r}")
            await asyncio.sleep(0.25)

    async def _sync_once(self) -> None:
        for pp in list(self.pods.values()):
            if pp.proc is None or pp.done:
                continue
            code = pp.proc.poll()
            if code is not None:
                try:  # the rest of the container goes with its main process
                    os.killpg(pp.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                code = code if code >= 0 else 128 - code
                if pp.pod["spec"].get("restartPolicy", "Always") == "Always" or \
                        (pp.pod["spec"].get("restartPolicy") == "OnFailure" and code != 0):
                    pp.restarts += 1
                    await self._start_container(pp, pp.pod["spec"]["containers"][0])
                    continue
                await self._finish(pp, code, "Completed" if code == 0 else "Error",
                                   self._termination_message(pp, code))
                continue
            ready = await self._probe(pp)
            if ready != pp.ready:
                pp.ready = ready
                await self._patch_status(pp, self._running_status(pp, ready))
        await self._sync_services()

    async def _probe(self, pp: PodProcess) -> bool:
        container = pp.pod["spec"]["containers"][0]
        probe = container.get("readinessProbe")
        if not probe:
            return True
        if "tcpSocket" not in probe:
            return True  # exec/http probes are not run by this harness: treated as passing
        port = probe["tcpSocket"]["port"]
        if isinstance(port, str):
            port = next((p["containerPort"] for p in container.get("ports") or [] if p.get("name") == port), 0)
        try:
            async with asyncio.timeout(1.0):  # not wait_for: on 3.11 it can swallow a cancellation
                _, writer = await asyncio.open_connection(pp.ip, int(port))
        except (TimeoutError, OSError):
            return False
        writer.close()
        return True

    async def _sync_services(self) -> None:
        """kube-proxy and cluster DNS: each Service's ClusterIP:port forwards to a ready pod it
        selects, and its DNS names resolve to the ClusterIP (stable across pod replacements)."""
        services = (await self._get("/api/v1/services") or {}).get("items", [])
        entries: dict[str, str] = {}
        wanted: set[tuple[str, int]] = set()
        for svc in services:
            ip, ns, name = svc["spec"].get("clusterIP"), svc["metadata"]["namespace"], svc["metadata"]["name"]
            if not ip or ip == "None":
                continue
            self.services[(ns, name)] = svc
            for host in (f"{name}.{ns}.svc", f"{name}.{ns}.svc.cluster.local", f"{name}.{ns}"):
                entries[host] = ip
            for port in svc["spec"].get("ports") or []:
                wanted.add((ip, port["port"]))
                if (ip, port["port"]) not in self.listeners:
                    handler = functools.partial(self._forward, ns, name, port)
                    self.listeners[(ip, port["port"])] = await asyncio.start_server(handler, ip, port["port"])
        for key in set(self.listeners) - wanted:
            self.listeners.pop(key).close()
        if entries != self.host_entries:
            self.host_entries = entries
            self.hosts.add(entries)

    def _endpoint(self, ns: str, service: str, port: dict[str, Any]) -> tuple[str, int] | None:
        """A ready pod the Service selects, and its target port (a number or a named container port)."""
        selector = (self.services.get((ns, service)) or {}).get("spec", {}).get("selector") or {}
        for pp in self.pods.values():
            labels = pp.pod["metadata"].get("labels") or {}
            if pp.namespace == ns and pp.ready and not pp.done and selector and \
                    all(labels.get(k) == v for k, v in selector.items()):
                target = port.get("targetPort", port["port"])
                if isinstance(target, str):
                    ports = [p for c in pp.pod["spec"]["containers"] for p in c.get("ports") or []]
                    target = next((p["containerPort"] for p in ports if p.get("name") == target), None)
                return (pp.ip, int(target)) if target else None
        return None

    async def _forward(self, ns: str, service: str, port: dict[str, Any], reader: asyncio.StreamReader,
                       writer: asyncio.StreamWriter) -> None:
        self.connections[(ns, service)] += 1
        target = self._endpoint(ns, service, port)
        if target is None:  # no ready endpoint: the connection is refused
            writer.close()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*target)
        except OSError:
            writer.close()
            return

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                dst.close()

        await asyncio.gather(pump(reader, up_writer), pump(up_reader, writer))

    # ---- for tests ----

    def process(self, namespace: str, name: str) -> subprocess.Popen | None:
        for pp in self.pods.values():
            if pp.namespace == namespace and pp.name == name and not pp.done:
                return pp.proc
        return None

    def service_connections(self, namespace: str, name: str) -> int:
        """How many connections the Service's ClusterIP has accepted so far."""
        return self.connections[(namespace, name)]

    def log(self, namespace: str, name: str) -> str:
        for pp in self.pods.values():
            if pp.namespace == namespace and pp.name == name and pp.log_path and pp.log_path.exists():
                return pp.log_path.read_text(errors="replace")
        return ""


def _expand(text: str, env: dict[str, str]) -> str:
    """Kubernetes' $(VAR) expansion: known variables are replaced, $$ escapes, unknown stay."""
    def sub(m: re.Match) -> str:
        if m.group(0) == "$$":
            return "$"
        return env.get(m.group(1), m.group(0))
    return re.sub(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)", sub, text)


def _remount(value: str, mounts: dict[str, str]) -> str:
    for mount_path, host_dir in mounts.items():
        if value == mount_path or value.startswith(mount_path + "/"):
            return host_dir + value[len(mount_path):]
    return value
