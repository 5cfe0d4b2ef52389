"""A StatefulSet controller for the emulated API server (the real control plane runs Kubernetes' own).

Enough for the operator's managed Redis: for each StatefulSet it keeps the pods `<name>-0` ..
`<name>-<replicas - 1>` made from its template, controlled by the StatefulSet (so the API
server's garbage collection deletes them with it), and makes a deleted one again once it is
gone, as Kubernetes' controller does (one name, at most one pod). Simplifications, said rather
than pretended: volumeClaimTemplates become emptyDir volumes (the emulated kubelet has no
PersistentVolumes), a changed template does not roll running pods, and no status is written.
"""

from __future__ import annotations

import asyncio
import copy
import json
from pathlib import Path
from typing import Any

import aiohttp


class StatefulSetController:
    def __init__(self, api_url: str, log_path: Path, period_s: float = 0.25):
        self.api = api_url.rstrip("/")
        self.log_path = log_path
        self.period_s = period_s
        self.session: aiohttp.ClientSession | None = None
        self.task: asyncio.Task | None = None

    async def start(self) -> None:
        self.session = aiohttp.ClientSession()
        self.task = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
        if self.session is not None:
            await self.session.close()

    def _log(self, line: str) -> None:
        with open(self.log_path, "a") as f:
            f.write(line + "\n")

    async def _items(self, path: str) -> list[dict[str, Any]]:
        async with self.session.get(self.api + path) as r:
            return (await r.json())["items"] if r.status == 200 else []

    async def _loop(self) -> None:
        while True:  # a controller's resync: the pods it must make appear on its next pass
            try:
                await self._sync_once()
            except Exception as e:  # a controller survives anything; the log says what
                self._log(f"statefulset sync: {e!r}")
            await asyncio.sleep(self.period_s)

    async def _sync_once(self) -> None:
        pods = {(p["metadata"]["namespace"], p["metadata"]["name"]) for p in await self._items("/api/v1/pods")}
        for sts in await self._items("/apis/apps/v1/statefulsets"):
            meta = sts["metadata"]
            if meta.get("deletionTimestamp"):
                continue
            for ordinal in range(int(sts["spec"].get("replicas", 1))):
                name = f"{meta['name']}-{ordinal}"
                if (meta["namespace"], name) not in pods:
                    await self._create_pod(sts, name)

    async def _create_pod(self, sts: dict[str, Any], name: str) -> None:
        meta, spec = sts["metadata"], sts["spec"]
        template = copy.deepcopy(spec["template"])
        pod_spec = template["spec"]
        pod_spec["volumes"] = list(pod_spec.get("volumes") or []) + [
            {"name": claim["metadata"]["name"], "emptyDir": {}} for claim in spec.get("volumeClaimTemplates") or []]
        pod_spec.update(hostname=name, subdomain=spec.get("serviceName", ""))
        pod = {"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": name, "namespace": meta["namespace"],
                            "labels": dict((template.get("metadata") or {}).get("labels") or {}),
                            "annotations": dict((template.get("metadata") or {}).get("annotations") or {}),
                            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "StatefulSet", "name": meta["name"],
                                                 "uid": meta["uid"], "controller": True,
                                                 "blockOwnerDeletion": True}]},
               "spec": pod_spec}
        url = f"{self.api}/api/v1/namespaces/{meta['namespace']}/pods"
        async with self.session.post(url, data=json.dumps(pod), headers={"Content-Type": "application/json"}) as r:
            if r.status not in (201, 409):  # 409: the old pod of that name is still going
                self._log(f"statefulset {meta['name']}: creating pod {name}: {r.status} {await r.text()}")
