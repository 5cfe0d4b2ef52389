"""Kastor's process kubelet for the real control plane: one Node, its pods as processes.

It does what a kubelet does, with processes instead of containers:

- registers a Node (Ready, with capacity, its InternalIP on the run's bridge) and keeps
  its Lease in kube-node-lease and its Ready condition fresh, so the node lifecycle
  controller keeps it Ready and untainted;
- list-watches the pods the scheduler bound to it (fieldSelector spec.nodeName);
- gives each pod a network namespace (`podnet.PodNetwork`) and runs its init containers
  in order, then every container, each as a process group started through
  `ip netns exec` with the pod's volumes bind-mounted at their mountPaths: Secret,
  ConfigMap, emptyDir, downwardAPI, projected and persistentVolumeClaim volumes (the bound
  PersistentVolume's hostPath or local directory), including the ServiceAccount
  token volume the apiserver's admission adds (a token from the TokenRequest API, bound
  to the pod), so in-pod clients authenticate to the real API server with in-cluster
  config (KUBERNETES_SERVICE_HOST/PORT point at the `kubernetes` Service's ClusterIP);
- reports status as a kubelet does: phase, conditions (PodScheduled, Initialized,
  ContainersReady, Ready), podIP(s), hostIP, init and container statuses with
  restartCount, started/ready, waiting (PodInitializing, ContainerCreating,
  CreateContainerConfigError, CrashLoopBackOff), running and terminated (Completed,
  Error, with exit code and termination message) states and lastState;
- restarts containers per restartPolicy with the kubelet's crash-loop backoff (doubling
  from `backoff_s`, capped at `backoff_cap_s`, reset after a container ran 10 minutes);
- runs readiness and liveness probes (tcpSocket, httpGet, exec) with their
  initialDelaySeconds, periodSeconds, timeoutSeconds and thresholds; a failed liveness
  probe restarts the container;
- on deletion, stops the containers with SIGTERM, waits for the pod's grace period
  (deletionGracePeriodSeconds, i.e. terminationGracePeriodSeconds unless the delete said
  otherwise), SIGKILLs what is left, and deletes the pod object with grace 0 (with the
  pod's uid as precondition), which is the kubelet's part of graceful deletion.

`lose()` plays a lost node: the kubelet reports NotReady and stops (no heartbeat, no
status, no final deletes), and its processes are killed, so deleted pods stay Terminating.

Not done (say so, rather than pretend): resource limits, securityContext (processes run as
this user), image pulls (an image maps to environment through `images`), startup probes
(treated as passed), hostNetwork, and token rotation (tokens last an hour; tests are shorter).
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import functools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from .kubeapi import KubeApi
from .podnet import PodNetwork

KUBERNETES_SERVICE_IP = "10.96.0.1"
SA_MOUNT = "/var/run/secrets/kubernetes.io/serviceaccount"
RESET_BACKOFF_AFTER_S = 600.0
STOP_TASK_WAIT_S = 10.0  # how long a deleted pod waits for its task to end before its containers are killed
# A PersistentVolume's spec fields that are not its volume source.
PV_COMMON_FIELDS = {"capacity", "accessModes", "claimRef", "persistentVolumeReclaimPolicy", "storageClassName",
                    "volumeMode", "nodeAffinity", "mountOptions", "volumeAttributesClassName"}


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _micro_now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def expand(text: str, env: dict[str, str]) -> str:
    """Kubernetes' $(VAR) expansion: known variables are replaced, $$ escapes, unknown stay."""

    def sub(m: re.Match[str]) -> str:
        return "$" if m.group(0) == "$$" else env.get(m.group(1), m.group(0))

    return re.sub(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)", sub, text)


class ConfigError(Exception):
    """A container cannot be configured yet (a missing Secret key, say): CreateContainerConfigError."""


@dataclass
class Container:
    """One container of a pod and its process."""

    spec: dict[str, Any]
    init: bool = False
    proc: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    state: dict[str, Any] = field(default_factory=lambda: {"waiting": {"reason": "ContainerCreating"}})
    last_state: dict[str, Any] = field(default_factory=dict)
    ready: bool = False
    started_mono: float = 0.0
    backoff_s: float = 0.0
    next_start: float = 0.0
    probe_due: dict[str, float] = field(default_factory=dict)
    probe_counts: dict[str, list[int]] = field(default_factory=dict)  # kind -> [successes, failures] in a row
    liveness_killed: bool = False

    @property
    def name(self) -> str:
        return self.spec["name"]

    def status(self) -> dict[str, Any]:
        running = "running" in self.state
        status = {"name": self.name, "image": self.spec.get("image", ""), "imageID": "",
                  "ready": self.ready, "restartCount": self.restarts, "state": self.state,
                  "lastState": self.last_state}
        if running:
            status["containerID"] = f"process://{self.proc.pid if self.proc else 0}"
        if not self.init:
            status["started"] = running
        return status


class PodRun:
    """A pod on this node: its namespace, volumes and containers, run by `Kubelet._run`."""

    def __init__(self, pod: dict[str, Any]):
        self.pod = pod
        self.uid: str = pod["metadata"]["uid"]
        self.namespace: str = pod["metadata"]["namespace"]
        self.name: str = pod["metadata"]["name"]
        self.netns = ""
        self.ip = ""
        self.started_at = ""
        self.home = Path()
        self.inits = [Container(c, init=True) for c in pod["spec"].get("initContainers") or []]
        self.containers = [Container(c) for c in pod["spec"]["containers"]]
        self.initialized = not self.inits
        self.phase = "Pending"
        self.message = ""
        self.reason = ""
        self.task: asyncio.Task[None] | None = None
        self.stopping = False
        self.mounts: dict[str, str] = {}  # volume name -> host directory
        self.last_status: str = ""
        self.transitions: dict[str, tuple[str, str]] = {}

    def processes(self) -> list[subprocess.Popen[bytes]]:
        return [c.proc for c in self.inits + self.containers if c.proc is not None and c.proc.poll() is None]


class Kubelet:
    """One Node of the run (see the module docstring)."""

    def __init__(self, api: KubeApi, node_name: str, network: PodNetwork, workdir: Path,
                 images: dict[str, dict[str, str]], api_port: int, labels: dict[str, str] | None = None,
                 backoff_s: float = 10.0, backoff_cap_s: float = 300.0, heartbeat_s: float = 5.0):
        self.api = api
        self.node = node_name
        self.network = network
        self.workdir = workdir
        self.images = images
        self.api_port = api_port
        self.labels = labels or {}
        self.backoff_s = backoff_s
        self.backoff_cap_s = backoff_cap_s
        self.heartbeat_s = heartbeat_s
        self.pods: dict[str, PodRun] = {}
        self.tasks: list[asyncio.Task[None]] = []
        self.terminating: set[asyncio.Task[None]] = set()  # pods being stopped; stop() waits for them
        self.lost = False
        self.log_path = workdir / f"kubelet-{node_name}.log"

    # ---- lifecycle ----

    async def start(self) -> None:
        await self._register()
        self.tasks = [asyncio.create_task(self._heartbeat()), asyncio.create_task(self._watch())]
        for task in self.tasks:
            task.add_done_callback(self._loop_done)

    async def stop(self) -> None:
        """The test run's end: every pod's processes killed, every pod namespace removed."""
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        for task in self.terminating:
            task.cancel()
        await asyncio.gather(*self.terminating, return_exceptions=True)
        runs = list(self.pods.values())
        for run in runs:
            if run.task is not None:
                run.task.cancel()
        await asyncio.gather(*(r.task for r in runs if r.task is not None), return_exceptions=True)
        for run in runs:
            await asyncio.to_thread(self._kill_all, run, 0.0)
            if run.netns:
                await asyncio.to_thread(self.network.remove_pod, run.netns)
        self.pods.clear()

    async def lose(self) -> None:
        """The node is lost: it reports NotReady one last time, then nothing more; its
        processes die; pods deleted from now on stay Terminating."""
        await self._post_node_status(ready=False, reason="KubeletNotReady", message="node lost (by the test)")
        self.lost = True
        for task in self.tasks:
            task.cancel()
        for run in list(self.pods.values()):
            if run.task is not None:
                run.task.cancel()
            await asyncio.to_thread(self._kill_all, run, 0.0)

    def _task_done(self, run: PodRun, task: asyncio.Task[None]) -> None:
        """A pod's task that failed says why in the kubelet's log (the pod then stays as it was)."""
        if not task.cancelled() and task.exception() is not None:
            self._log(f"pod {run.namespace}/{run.name}: {task.exception()!r}")

    def _loop_done(self, task: asyncio.Task[None]) -> None:
        """The heartbeat or the pod watch ended: say why (a kubelet that stopped watching leaves
        its pods as they are while the node stays Ready, which a test would otherwise only see as
        a pod Terminating for ever)."""
        if not task.cancelled() and task.exception() is not None:
            self._log(f"{task.get_coro().__qualname__} ended: {task.exception()!r}")

    def _log(self, line: str) -> None:
        with open(self.log_path, "a") as f:
            f.write(f"{_now()} {line}\n")

    # ---- the Node ----

    async def _register(self) -> None:
        node = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": self.node, "labels": {
            "kubernetes.io/hostname": self.node, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64",
            **self.labels}}, "spec": {}}
        await self.api.request("POST", "/api/v1/nodes", node, ok=(409,))
        await self._post_node_status(ready=True, reason="KubeletReady", message="kubelet is posting ready status")
        lease = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                 "metadata": {"name": self.node, "namespace": "kube-node-lease"},
                 "spec": {"holderIdentity": self.node, "leaseDurationSeconds": 40, "renewTime": _micro_now()}}
        await self.api.request("POST", "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases", lease,
                               ok=(409,))

    async def _post_node_status(self, ready: bool, reason: str, message: str) -> None:
        now = _now()
        resources = {"cpu": "16", "memory": "64Gi", "pods": "110", "ephemeral-storage": "100Gi"}
        conditions = [{"type": t, "status": "False", "reason": f"KubeletHasSufficient{t[:-8]}" if t != "PIDPressure"
                       else "KubeletHasSufficientPID", "message": "ok", "lastHeartbeatTime": now,
                       "lastTransitionTime": now} for t in ("MemoryPressure", "DiskPressure", "PIDPressure")]
        conditions.append({"type": "Ready", "status": "True" if ready else "False", "reason": reason,
                           "message": message, "lastHeartbeatTime": now, "lastTransitionTime": now})
        status = {"capacity": resources, "allocatable": resources, "conditions": conditions,
                  "addresses": [{"type": "InternalIP", "address": self.network.gateway},
                                {"type": "Hostname", "address": self.node}],
                  "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
                  "nodeInfo": {"machineID": self.node, "systemUUID": self.node, "bootID": self.node,
                               "kernelVersion": os.uname().release, "osImage": "kastor process kubelet",
                               "containerRuntimeVersion": "process://1", "kubeletVersion": "v1.34.0",
                               "kubeProxyVersion": "v1.34.0", "operatingSystem": "linux", "architecture": "amd64"}}
        await self.api.request("PATCH", f"/api/v1/nodes/{self.node}/status", {"status": status},
                               content_type="application/strategic-merge-patch+json")

    async def _heartbeat(self) -> None:
        path = f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{self.node}"
        while True:
            await asyncio.sleep(self.heartbeat_s)
            try:
                await self.api.merge_patch(path, {"spec": {"renewTime": _micro_now()}})
                await self._post_node_status(ready=True, reason="KubeletReady",
                                             message="kubelet is posting ready status")
            except Exception as e:  # a heartbeat that stops makes the node NotReady: keep beating
                self._log(f"heartbeat: {e!r}")

    # ---- pods ----

    async def _watch(self) -> None:
        async for kind, pod in self.api.watch("/api/v1/pods", on_problem=self._log,
                                              fieldSelector=f"spec.nodeName={self.node}"):
            if kind == "SYNCED":
                continue
            try:
                self._on_pod(kind, pod)
            except Exception as e:  # a kubelet keeps going
                self._log(f"pod event {kind} {pod['metadata'].get('name')}: {e!r}")

    def _on_pod(self, kind: str, pod: dict[str, Any]) -> None:
        uid = pod["metadata"]["uid"]
        run = self.pods.get(uid)
        if kind == "DELETED":
            if run is not None and not run.stopping:
                run.stopping = True
                self._start_terminating(run, 0.0, delete=False)
            return
        if run is None:
            if (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
                return  # finished before this kubelet saw it
            run = self.pods[uid] = PodRun(pod)
            if pod["metadata"].get("deletionTimestamp"):
                run.stopping = True
                self._start_terminating(run, 0.0, delete=True)
                return
            run.task = asyncio.create_task(self._run(run))
            run.task.add_done_callback(functools.partial(self._task_done, run))
            return
        run.pod = pod
        if pod["metadata"].get("deletionTimestamp") and not run.stopping:
            run.stopping = True
            grace = pod["metadata"].get("deletionGracePeriodSeconds")
            if grace is None:
                grace = pod["spec"].get("terminationGracePeriodSeconds", 30)
            self._start_terminating(run, float(grace), delete=True)

    def _start_terminating(self, run: PodRun, grace: float, delete: bool) -> None:
        task = asyncio.create_task(self._terminate(run, grace, delete))
        self.terminating.add(task)
        task.add_done_callback(self.terminating.discard)
        task.add_done_callback(functools.partial(self._task_done, run))

    async def _terminate(self, run: PodRun, grace: float, delete: bool) -> None:
        if run.task is not None:
            run.task.cancel()
            # Bounded: a pod task that does not end on cancel must not keep its pod Terminating for good
            # (the processes are killed below either way, as a real kubelet kills containers).
            done, _ = await asyncio.wait([run.task], timeout=STOP_TASK_WAIT_S)
            if not done:
                self._log(f"pod {run.namespace}/{run.name}: its task did not end {STOP_TASK_WAIT_S:g}s after "
                          f"cancel; stopping its containers anyway")
        codes = await asyncio.to_thread(self._kill_all, run, grace)
        if run.netns:
            try:
                await asyncio.to_thread(self.network.remove_pod, run.netns)
            except Exception as e:  # the pod's deletion still completes; the network is swept at stop
                self._log(f"pod {run.namespace}/{run.name}: removing its network namespace: {e!r}")
        try:
            if delete and not self.lost:
                await self._finish_deletion(run, codes)
        finally:  # only now: events until here find the pod already stopping
            self.pods.pop(run.uid, None)

    async def _finish_deletion(self, run: PodRun, codes: dict[str, int]) -> None:
        """The kubelet's part of graceful deletion: the containers' final states, then the
        object's removal with grace 0 (the pod's uid as precondition)."""
        for c in run.containers:
            if "running" in c.state:
                code = codes.get(c.name, 137)
                c.state = {"terminated": {"exitCode": code, "reason": "Completed" if code == 0 else "Error",
                                          "startedAt": c.state["running"]["startedAt"], "finishedAt": _now()}}
            c.ready = False
        if run.started_at:  # a pod deleted before it ever ran has no status to finish
            try:
                await self._report(run)
            except Exception as e:  # e.g. a TimeoutError of a loaded API server: the deletion goes on
                self._log(f"final status of {run.name}: {e!r}")
        path = f"/api/v1/namespaces/{run.namespace}/pods/{run.name}"
        while not self.lost:
            try:
                await self.api.request("DELETE", path, {"kind": "DeleteOptions", "apiVersion": "v1",
                                                        "gracePeriodSeconds": 0,
                                                        "preconditions": {"uid": run.uid}}, ok=(404, 409))
                return
            except Exception as e:  # never give up on it: a pod left Terminating blocks its owner for good
                self._log(f"final delete of {path}: {e!r}")
                await asyncio.sleep(0.5)

    def _kill_all(self, run: PodRun, grace: float) -> dict[str, int]:
        """SIGTERM to each container's process group, up to `grace` seconds for them to exit,
        then SIGKILL. Returns each container's exit code."""
        procs = {c.name: c.proc for c in run.inits + run.containers if c.proc is not None}
        for proc in procs.values():
            _signal_group(proc, signal.SIGTERM if grace > 0 else signal.SIGKILL)
        deadline = time.monotonic() + grace
        for proc in procs.values():
            try:
                proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            _signal_group(proc, signal.SIGKILL)
            proc.wait()
        return {name: _exit_code(proc.returncode) for name, proc in procs.items()}

    # ---- running a pod ----

    async def _run(self, run: PodRun) -> None:
        """The pod's whole life on this node, until it finishes or the task is cancelled."""
        run.home = self.workdir / "pods" / f"{run.namespace}_{run.name}_{run.uid[:8]}"
        (run.home / "tmp").mkdir(parents=True, exist_ok=True)
        run.netns, run.ip = await asyncio.to_thread(self.network.add_pod, run.name, run.namespace)
        run.started_at = _now()
        await self._report(run)
        while True:
            try:
                await self._prepare_volumes(run)
                break
            except ConfigError as e:
                for c in run.inits + run.containers:
                    c.state = {"waiting": {"reason": "ContainerCreating", "message": str(e)}}
                await self._report(run)
                await asyncio.sleep(1.0)
        policy = run.pod["spec"].get("restartPolicy", "Always")
        for c in run.inits:
            c.state = {"waiting": {"reason": "PodInitializing"}}
        for c in run.containers:
            c.state = {"waiting": {"reason": "PodInitializing" if run.inits else "ContainerCreating"}}
        for init in run.inits:
            while True:
                code = await self._run_to_end(run, init)
                if code == 0:
                    break
                if policy == "Never":
                    run.phase = "Failed"
                    for c in run.containers:
                        c.state = {"waiting": {"reason": "PodInitializing"}}
                    await self._report(run)
                    return
                await self._back_off(run, init)
        run.initialized = True
        while True:
            for c in run.containers:
                await self._step(run, c, policy)
            if all("terminated" in c.state and not c.next_start for c in run.containers):
                codes = [c.state["terminated"]["exitCode"] for c in run.containers]
                run.phase = "Succeeded" if all(code == 0 for code in codes) else "Failed"
                await self._report(run)
                return
            run.phase = "Running"
            await self._report(run)
            await asyncio.sleep(0.2)

    async def _run_to_end(self, run: PodRun, c: Container) -> int:
        await self._start(run, c)
        await self._report(run)
        while c.proc is not None and c.proc.poll() is None:
            await asyncio.sleep(0.2)
        return self._exited(run, c)

    async def _back_off(self, run: PodRun, c: Container) -> None:
        """The crash-loop backoff before the next start: waiting CrashLoopBackOff until then."""
        ran_s = time.monotonic() - c.started_mono
        c.backoff_s = self.backoff_s if (not c.backoff_s or ran_s > RESET_BACKOFF_AFTER_S) else \
            min(c.backoff_s * 2, self.backoff_cap_s)
        c.restarts += 1
        c.state = {"waiting": {"reason": "CrashLoopBackOff", "message": f"back-off {c.backoff_s:g}s restarting "
                               f"failed container={c.name} pod={run.name}_{run.namespace}({run.uid})"}}
        await self._report(run)
        await asyncio.sleep(c.backoff_s)

    async def _step(self, run: PodRun, c: Container, policy: str) -> None:
        """One look at a regular container: start it when due, notice its exit, probe it."""
        now = time.monotonic()
        if c.next_start:
            if now >= c.next_start:
                if c.proc is not None:
                    c.restarts += 1
                c.next_start = 0.0
                await self._start(run, c)
            return
        if c.proc is None:
            await self._start(run, c)
            return
        if c.proc.poll() is not None:
            if "terminated" in c.state or "waiting" in c.state:
                return
            code = self._exited(run, c)
            if policy == "Always" or (policy == "OnFailure" and code != 0):
                ran_s = now - c.started_mono
                c.backoff_s = self.backoff_s if (not c.backoff_s or ran_s > RESET_BACKOFF_AFTER_S) else \
                    min(c.backoff_s * 2, self.backoff_cap_s)
                c.last_state, c.state = c.state, {"waiting": {
                    "reason": "CrashLoopBackOff",
                    "message": f"back-off {c.backoff_s:g}s restarting failed container={c.name} "
                               f"pod={run.name}_{run.namespace}({run.uid})"}}
                c.next_start = now + c.backoff_s
            return
        await self._probe(run, c)

    def _exited(self, run: PodRun, c: Container) -> int:
        """Records a container's exit as its terminated state; kills what is left of its group."""
        assert c.proc is not None
        _signal_group(c.proc, signal.SIGKILL)  # a container's processes die with its main process
        code = _exit_code(c.proc.returncode)
        message = ""
        if code != 0 and c.spec.get("terminationMessagePolicy") == "FallbackToLogsOnError":
            message = "\n".join(self._log_file(run, c).read_bytes()[-2048:].decode(errors="replace")
                                .splitlines()[-80:])
        reason = "Completed" if code == 0 else "Error"
        if c.liveness_killed:
            reason, c.liveness_killed = "Error", False
        c.state = {"terminated": {"exitCode": code, "reason": reason, "message": message,
                                  "startedAt": c.state.get("running", {}).get("startedAt", _now()),
                                  "finishedAt": _now(), "containerID": f"process://{c.proc.pid}"}}
        c.ready = False
        return code

    def _log_file(self, run: PodRun, c: Container) -> Path:
        return run.home / f"{c.name}.log"

    async def _start(self, run: PodRun, c: Container) -> None:
        image_env = self.images.get(c.spec.get("image", ""), self.images.get("*"))
        if image_env is None:
            c.state = {"waiting": {"reason": "ErrImagePull", "message": f"image {c.spec.get('image')!r} is not one "
                                   f"of the harness's images {sorted(self.images)}"}}
            c.next_start = time.monotonic() + self.backoff_s
            await self._report(run)
            return
        try:
            env = await self._env(run, c)
        except ConfigError as e:
            c.state = {"waiting": {"reason": "CreateContainerConfigError", "message": str(e)}}
            c.next_start = time.monotonic() + 1.0
            await self._report(run)
            return
        bindir = os.path.dirname(sys.executable)
        full_env = {"PATH": f"{bindir}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                    "HOME": str(run.home), "TMPDIR": str(run.home / "tmp"), "HOSTNAME": run.name,
                    "LANG": "C.UTF-8", "KASTOR_SESSION_ROOT": str(run.home / "sessions"), **image_env, **env}
        argv = [expand(a, env) for a in (c.spec.get("command") or []) + (c.spec.get("args") or [])]
        if not argv:
            c.state = {"waiting": {"reason": "CreateContainerError", "message": "no command: the harness's images "
                                   "have no entrypoint, so every container must name its command"}}
            c.next_start = time.monotonic() + self.backoff_s
            return
        argv[0] = shutil.which(argv[0], path=full_env["PATH"]) or argv[0]
        mounts = [(run.mounts[m["name"]], m["mountPath"], bool(m.get("readOnly")))
                  for m in c.spec.get("volumeMounts") or [] if m["name"] in run.mounts and not m.get("subPath")]
        try:
            keep = (sys.prefix, os.path.realpath(sys.executable), str(run.home),
                    *full_env.get("PYTHONPATH", "").split(":"))
            wrapped = self.network.exec_argv(run.netns, run.name, argv, mounts, run.home / "scratch" / c.name,
                                             tuple(k for k in keep if k), c.spec.get("workingDir"))
        except ValueError as e:
            c.state = {"waiting": {"reason": "CreateContainerError", "message": str(e)}}
            c.next_start = time.monotonic() + self.backoff_s
            await self._report(run)
            return
        with open(self._log_file(run, c), "ab") as log:
            try:
                c.proc = subprocess.Popen(wrapped, env=full_env, cwd=run.home, stdin=subprocess.DEVNULL, stdout=log,
                                          stderr=subprocess.STDOUT, start_new_session=True)
            except OSError as e:
                c.state = {"terminated": {"exitCode": 128, "reason": "ContainerCannotRun", "message": str(e),
                                          "startedAt": _now(), "finishedAt": _now()}}
                return
        c.started_mono = time.monotonic()
        c.state = {"running": {"startedAt": _now()}}
        c.ready = not c.init and not c.spec.get("readinessProbe")
        c.probe_due = {k: time.monotonic() + float((c.spec.get(k) or {}).get("initialDelaySeconds", 0))
                       for k in ("readinessProbe", "livenessProbe") if c.spec.get(k)}
        c.probe_counts = {k: [0, 0] for k in c.probe_due}

    # ---- environment and volumes ----

    async def _object(self, run: PodRun, kind: str, name: str) -> dict[str, Any] | None:
        return await self.api.get(f"/api/v1/namespaces/{run.namespace}/{kind}/{name}")

    async def _key(self, run: PodRun, kind: str, ref: dict[str, Any]) -> str | None:
        obj = await self._object(run, kind, ref["name"])
        if obj is None:
            if ref.get("optional"):
                return None
            raise ConfigError(f"{kind[:-1]} \"{ref['name']}\" not found")
        if kind == "secrets":
            data = {k: base64.b64decode(v).decode() for k, v in (obj.get("data") or {}).items()}
        else:
            data = obj.get("data") or {}
        if ref["key"] not in data:
            if ref.get("optional"):
                return None
            raise ConfigError(f"couldn't find key {ref['key']} in {kind[:-1]} {run.namespace}/{ref['name']}")
        return data[ref["key"]]

    def _field(self, run: PodRun, path: str) -> str:
        meta = run.pod["metadata"]
        labels = re.fullmatch(r"metadata\.(labels|annotations)\['(.+)'\]", path)
        if labels:
            return (meta.get(labels.group(1)) or {}).get(labels.group(2), "")
        return {"status.podIP": run.ip, "status.podIPs": run.ip, "metadata.name": run.name,
                "metadata.namespace": run.namespace, "metadata.uid": run.uid, "status.hostIP": self.network.gateway,
                "status.hostIPs": self.network.gateway, "spec.nodeName": self.node,
                "spec.serviceAccountName": run.pod["spec"].get("serviceAccountName", "default")}.get(path, "")

    async def _env(self, run: PodRun, c: Container) -> dict[str, str]:
        """The container's env as the kubelet builds it: the `kubernetes` Service's variables,
        envFrom, then env in order (later entries may use earlier ones)."""
        env = {"KUBERNETES_SERVICE_HOST": KUBERNETES_SERVICE_IP, "KUBERNETES_SERVICE_PORT": "443",
               "KUBERNETES_SERVICE_PORT_HTTPS": "443", "KUBERNETES_PORT": f"tcp://{KUBERNETES_SERVICE_IP}:443"}
        for source in c.spec.get("envFrom") or []:
            prefix = source.get("prefix", "")
            for kind, key in (("secrets", "secretRef"), ("configmaps", "configMapRef")):
                if key in source:
                    obj = await self._object(run, kind, source[key]["name"])
                    if obj is None:
                        if source[key].get("optional"):
                            continue
                        raise ConfigError(f"{kind[:-1]} \"{source[key]['name']}\" not found")
                    for k, v in (obj.get("data") or {}).items():
                        env[prefix + k] = base64.b64decode(v).decode() if kind == "secrets" else v
        for item in c.spec.get("env") or []:
            if "valueFrom" not in item:
                env[item["name"]] = expand(item.get("value", ""), env)
                continue
            source = item["valueFrom"]
            value: str | None = ""
            if "secretKeyRef" in source:
                value = await self._key(run, "secrets", source["secretKeyRef"])
            elif "configMapKeyRef" in source:
                value = await self._key(run, "configmaps", source["configMapKeyRef"])
            elif "fieldRef" in source:
                value = self._field(run, source["fieldRef"]["fieldPath"])
            elif "resourceFieldRef" in source:
                value = "1"
            if value is not None:
                env[item["name"]] = value
        return env

    async def _prepare_volumes(self, run: PodRun) -> None:
        """Each volume as a directory under the pod's home (bind-mounted when a container starts)."""
        for volume in run.pod["spec"].get("volumes") or []:
            target = run.home / "volumes" / volume["name"]
            if target.exists() and "emptyDir" in volume:
                run.mounts[volume["name"]] = str(target)
                continue
            files: dict[str, bytes] = {}
            if "secret" in volume:
                files = await self._source_files(run, "secrets", volume["secret"]["secretName"], volume["secret"])
            elif "configMap" in volume:
                files = await self._source_files(run, "configmaps", volume["configMap"]["name"], volume["configMap"])
            elif "projected" in volume:
                for source in volume["projected"].get("sources") or []:
                    files.update(await self._projected(run, source))
            elif "downwardAPI" in volume:
                files = {item["path"]: self._field(run, item["fieldRef"]["fieldPath"]).encode()
                         for item in volume["downwardAPI"].get("items") or [] if "fieldRef" in item}
            elif "persistentVolumeClaim" in volume:
                run.mounts[volume["name"]] = await self._claim_dir(run, volume["persistentVolumeClaim"]["claimName"])
                continue
            elif "emptyDir" not in volume:
                continue  # hostPath and the like: not this harness's
            target.mkdir(parents=True, exist_ok=True)
            for rel, data in files.items():
                (target / rel).parent.mkdir(parents=True, exist_ok=True)
                (target / rel).write_bytes(data)
            run.mounts[volume["name"]] = str(target)

    async def _claim_dir(self, run: PodRun, claim_name: str) -> str:
        """The host directory of the PersistentVolume bound to the pod's claim (a hostPath or
        local volume, as `provisioner.py` makes). An unbound claim waits, as a real kubelet's
        volume manager does (the scheduler does not bind such a pod to a node at all)."""
        claim = await self._object(run, "persistentvolumeclaims", claim_name)
        if claim is None:
            raise ConfigError(f"MountVolume.SetUp failed: persistentvolumeclaim \"{claim_name}\" not found")
        volume_name = claim["spec"].get("volumeName")
        if not volume_name or (claim.get("status") or {}).get("phase") != "Bound":
            raise ConfigError(f"persistentvolumeclaim \"{claim_name}\" is not bound")
        pv = await self.api.get(f"/api/v1/persistentvolumes/{volume_name}")
        if pv is None:
            raise ConfigError(f"MountVolume.SetUp failed: persistentvolume \"{volume_name}\" not found")
        source = pv["spec"].get("hostPath") or pv["spec"].get("local")
        if source is None:
            kinds = sorted(set(pv["spec"]) - PV_COMMON_FIELDS)
            raise ConfigError(f"MountVolume.SetUp failed: persistentvolume \"{volume_name}\" is {kinds}; the process "
                              f"kubelet mounts only hostPath and local volumes (tests/k8s/provisioner.py makes them)")
        path = Path(source["path"])
        if not path.is_dir():
            if pv["spec"].get("hostPath", {}).get("type") != "DirectoryOrCreate":
                raise ConfigError(f"MountVolume.SetUp failed: {path} of persistentvolume \"{volume_name}\" "
                                  f"is not a directory")
            path.mkdir(parents=True, exist_ok=True)
        return str(path)

    async def _source_files(self, run: PodRun, kind: str, name: str, source: dict[str, Any]) -> dict[str, bytes]:
        obj = await self._object(run, kind, name)
        if obj is None:
            if source.get("optional"):
                return {}
            raise ConfigError(f"MountVolume.SetUp failed: {kind[:-1]} \"{name}\" not found")
        data = {k: base64.b64decode(v) if kind == "secrets" else v.encode() for k, v in (obj.get("data") or {}).items()}
        items = source.get("items") or [{"key": k, "path": k} for k in data]
        files = {}
        for item in items:
            if item["key"] not in data:
                raise ConfigError(f"MountVolume.SetUp failed: {kind[:-1]} {name} has no key {item['key']}")
            files[item["path"]] = data[item["key"]]
        return files

    async def _projected(self, run: PodRun, source: dict[str, Any]) -> dict[str, bytes]:
        if "serviceAccountToken" in source:
            spec = source["serviceAccountToken"]
            sa = run.pod["spec"].get("serviceAccountName", "default")
            answer = await self.api.request(
                "POST", f"/api/v1/namespaces/{run.namespace}/serviceaccounts/{sa}/token",
                {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                 "spec": {"audiences": [spec["audience"]] if spec.get("audience") else None,
                          "expirationSeconds": max(3600, spec.get("expirationSeconds", 3607)),
                          "boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": run.name, "uid": run.uid}}},
                ok=(404,))
            if answer is None:
                raise ConfigError(f"serviceaccount \"{sa}\" not found")
            return {spec["path"]: answer["status"]["token"].encode()}
        if "configMap" in source:
            return await self._source_files(run, "configmaps", source["configMap"]["name"], source["configMap"])
        if "secret" in source:
            return await self._source_files(run, "secrets", source["secret"]["name"], source["secret"])
        if "downwardAPI" in source:
            return {item["path"]: self._field(run, item["fieldRef"]["fieldPath"]).encode()
                    for item in source["downwardAPI"].get("items") or [] if "fieldRef" in item}
        return {}

    # ---- probes ----

    async def _probe(self, run: PodRun, c: Container) -> None:
        now = time.monotonic()
        for kind, due in list(c.probe_due.items()):
            if now < due:
                continue
            spec = c.spec[kind]
            c.probe_due[kind] = now + float(spec.get("periodSeconds", 10))
            ok = await self._probe_once(run, c, spec)
            counts = c.probe_counts[kind]
            counts[0], counts[1] = (counts[0] + 1, 0) if ok else (0, counts[1] + 1)
            if kind == "readinessProbe":
                if ok and counts[0] >= int(spec.get("successThreshold", 1)):
                    c.ready = True
                elif not ok and counts[1] >= int(spec.get("failureThreshold", 3)):
                    c.ready = False
            elif not ok and counts[1] >= int(spec.get("failureThreshold", 3)):
                self._log(f"{run.namespace}/{run.name} {c.name}: liveness probe failed {counts[1]} times, restarting")
                c.liveness_killed = True
                grace = float(spec.get("terminationGracePeriodSeconds",
                                       run.pod["spec"].get("terminationGracePeriodSeconds", 30)))
                assert c.proc is not None
                proc = c.proc
                _signal_group(proc, signal.SIGTERM)
                try:
                    await asyncio.to_thread(proc.wait, grace)
                except subprocess.TimeoutExpired:
                    _signal_group(proc, signal.SIGKILL)
                return

    def _port(self, c: Container, port: int | str) -> int:
        if isinstance(port, str) and not port.isdigit():
            for p in c.spec.get("ports") or []:
                if p.get("name") == port:
                    return int(p["containerPort"])
            return 0
        return int(port)

    async def _probe_once(self, run: PodRun, c: Container, spec: dict[str, Any]) -> bool:
        timeout = float(spec.get("timeoutSeconds", 1))
        try:
            if "tcpSocket" in spec:
                port = self._port(c, spec["tcpSocket"]["port"])
                # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow the pod task's
                # cancellation when the connection completes at the same moment, and the pod's
                # task then keeps probing while its deletion waits for it.
                async with asyncio.timeout(timeout):
                    _, writer = await asyncio.open_connection(run.ip, port)
                writer.close()
                return True
            if "httpGet" in spec:
                get = spec["httpGet"]
                scheme, port = get.get("scheme", "HTTP").lower(), self._port(c, get["port"])
                url = f"{scheme}://{run.ip}:{port}{get.get('path', '/')}"
                async with aiohttp.ClientSession() as session, session.get(
                        url, timeout=aiohttp.ClientTimeout(total=timeout), ssl=False) as r:
                    return 200 <= r.status < 400
            if "exec" in spec:
                assert c.proc is not None
                proc = await asyncio.create_subprocess_exec(
                    "nsenter", "--target", str(c.proc.pid), "--mount", "--net", *spec["exec"]["command"],
                    stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL, cwd=str(run.home))
                try:
                    async with asyncio.timeout(timeout):
                        return await proc.wait() == 0
                except TimeoutError:
                    proc.kill()
                    await proc.wait()
                    return False
            return True  # grpc probes: not run
        except (TimeoutError, OSError, aiohttp.ClientError):
            return False

    # ---- status ----

    def pod_status(self, run: PodRun) -> dict[str, Any]:
        ready = run.initialized and all(c.ready for c in run.containers)
        conditions = []
        for kind, value in (("PodScheduled", True), ("Initialized", run.initialized),
                            ("ContainersReady", ready), ("Ready", ready)):
            flag = "True" if value else "False"
            previous = run.transitions.get(kind)
            if previous is None or previous[0] != flag:
                run.transitions[kind] = (flag, _now())
            condition = {"type": kind, "status": flag, "lastTransitionTime": run.transitions[kind][1]}
            if not value and kind != "PodScheduled":
                waiting = [c.name for c in (run.inits if kind == "Initialized" else run.containers) if not c.ready
                           and not (kind == "Initialized" and "terminated" in c.state)]
                condition["reason"] = "PodCompleted" if run.phase in ("Succeeded", "Failed") else \
                    ("ContainersNotInitialized" if kind == "Initialized" else "ContainersNotReady")
                condition["message"] = f"containers with unready status: [{' '.join(waiting)}]"
            conditions.append(condition)
        status = {"phase": run.phase, "conditions": conditions, "hostIP": self.network.gateway,
                  "hostIPs": [{"ip": self.network.gateway}], "startTime": run.started_at or None,
                  "containerStatuses": [c.status() for c in run.containers]}
        if run.ip:
            status["podIP"], status["podIPs"] = run.ip, [{"ip": run.ip}]
        if run.inits:
            status["initContainerStatuses"] = [c.status() for c in run.inits]
        return status

    async def _report(self, run: PodRun) -> None:
        """Writes the pod's status if it changed since the last write."""
        if self.lost:
            return
        status = self.pod_status(run)
        text = json.dumps(status, sort_keys=True)
        if text == run.last_status:
            return
        await self.api.merge_patch(f"/api/v1/namespaces/{run.namespace}/pods/{run.name}/status", {"status": status})
        run.last_status = text

    # ---- for tests ----

    def find(self, namespace: str, name: str) -> PodRun | None:
        for run in self.pods.values():
            if run.namespace == namespace and run.name == name:
                return run
        return None

    def log(self, namespace: str, name: str, container: str | None = None) -> str:
        """A container's output so far (its first container's by default)."""
        run = self.find(namespace, name)
        if run is None:
            return ""
        c = next((c for c in run.containers if container in (None, c.name)), None)
        path = self._log_file(run, c) if c is not None else None
        return path.read_text(errors="replace") if path is not None and path.exists() else ""


def _signal_group(proc: subprocess.Popen[bytes], sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _exit_code(returncode: int | None) -> int:
    if returncode is None:
        return 137
    return returncode if returncode >= 0 else 128 - returncode
