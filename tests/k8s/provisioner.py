"""A local-path volume provisioner for the real control plane: what kind's `standard`
StorageClass (Rancher's local-path-provisioner) gives a cluster, for the process kubelet.

The split of work is a real cluster's. The control plane's own PersistentVolume controller
(kube-controller-manager's `persistentvolume-binder`) sees a claim of a StorageClass whose
provisioner is not in-tree and hands it to that provisioner by annotating the claim with
`volume.kubernetes.io/storage-provisioner`; the external provisioner (this class) creates
a PersistentVolume for it, a `hostPath` directory under the run's workdir, pre-bound to the
claim through `spec.claimRef`; the binder then binds the claim to it (both Bound). The
process kubelet (`nodekubelet.py`) mounts the volume's directory into the pod. When the
claim is deleted, the binder marks the volume Released; with reclaimPolicy Delete this
provisioner removes the directory and the PersistentVolume, with Retain both stay.

All nodes of a run share the host's filesystem, so a volume here can be mounted on any
node (it behaves like network storage, not like a node-local disk: the volumes carry no
node affinity, and the StorageClass binds at once, `volumeBindingMode: Immediate`).
"""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path
from typing import Any

import aiohttp

from .kubeapi import ApiError, KubeApi

PROVISIONER = "kastor.test/local-path"
PROVISIONED_BY = "pv.kubernetes.io/provisioned-by"
# The binder's hand-over annotations (the beta one is what older binders set).
HANDED_TO = ("volume.kubernetes.io/storage-provisioner", "volume.beta.kubernetes.io/storage-provisioner")
DEFAULT_CLASS = "storageclass.kubernetes.io/is-default-class"


def storage_class(name: str, reclaim_policy: str = "Delete", default: bool = False) -> dict[str, Any]:
    """A StorageClass served by this provisioner."""
    annotations = {DEFAULT_CLASS: "true"} if default else {}
    return {"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
            "metadata": {"name": name, "annotations": annotations}, "provisioner": PROVISIONER,
            "reclaimPolicy": reclaim_policy, "volumeBindingMode": "Immediate"}


class LocalPathProvisioner:
    """Provisions and deletes the hostPath volumes of the StorageClasses it serves (see the
    module docstring). `classes` are created at `start()` and deleted at `stop()`."""

    def __init__(self, api: KubeApi, root: Path, classes: list[dict[str, Any]]):
        self.api = api
        self.root = root
        self.classes = classes
        self.tasks: list[asyncio.Task[None]] = []
        self.log_path = root.parent / "provisioner.log"

    async def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        for sc in self.classes:
            await self.api.request("POST", "/apis/storage.k8s.io/v1/storageclasses", sc, ok=(409,))
        self.tasks = [asyncio.create_task(self._watch_claims()), asyncio.create_task(self._watch_volumes())]

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        for sc in self.classes:
            try:
                await self.api.request("DELETE", f"/apis/storage.k8s.io/v1/storageclasses/{sc['metadata']['name']}",
                                       ok=(404,))
            except (ApiError, aiohttp.ClientError) as e:  # the control plane may be gone already
                self._log(f"delete StorageClass {sc['metadata']['name']}: {e!r}")

    def volume_dir(self, pv: dict[str, Any]) -> Path:
        return Path(pv["spec"]["hostPath"]["path"])

    def _log(self, line: str) -> None:
        with open(self.log_path, "a") as f:
            f.write(line + "\n")

    # ---- provisioning ----

    async def _watch_claims(self) -> None:
        async for kind, claim in self.api.watch("/api/v1/persistentvolumeclaims"):
            if kind not in ("ADDED", "MODIFIED"):
                continue
            try:
                await self._provision(claim)
            except (ApiError, aiohttp.ClientError, OSError) as e:  # a provisioner keeps going; the next event retries
                self._log(f"provision {claim['metadata'].get('namespace')}/{claim['metadata'].get('name')}: {e!r}")

    async def _provision(self, claim: dict[str, Any]) -> None:
        meta, spec = claim["metadata"], claim["spec"]
        annotations = meta.get("annotations") or {}
        if (PROVISIONER not in (annotations.get(a) for a in HANDED_TO) or spec.get("volumeName")
                or meta.get("deletionTimestamp")):
            return  # not handed to this provisioner (yet), or bound already
        sc = next((c for c in self.classes if c["metadata"]["name"] == spec.get("storageClassName")), None)
        if sc is None:
            return
        name = f"pvc-{meta['uid']}"
        directory = self.root / f"{meta['namespace']}_{meta['name']}_{name}"
        directory.mkdir(parents=True, exist_ok=True)
        pv = {"apiVersion": "v1", "kind": "PersistentVolume",
              "metadata": {"name": name, "annotations": {PROVISIONED_BY: PROVISIONER}},
              "spec": {"capacity": {"storage": spec["resources"]["requests"]["storage"]},
                       "accessModes": spec.get("accessModes") or ["ReadWriteOnce"],
                       "volumeMode": spec.get("volumeMode") or "Filesystem",
                       "persistentVolumeReclaimPolicy": sc.get("reclaimPolicy", "Delete"),
                       "storageClassName": sc["metadata"]["name"],
                       "hostPath": {"path": str(directory), "type": "DirectoryOrCreate"},
                       "claimRef": {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                                    "namespace": meta["namespace"], "name": meta["name"], "uid": meta["uid"]}}}
        if await self.api.request("POST", "/api/v1/persistentvolumes", pv, ok=(409,)) is not None:
            self._log(f"provisioned {name} for {meta['namespace']}/{meta['name']} at {directory}")

    # ---- reclaiming ----

    async def _watch_volumes(self) -> None:
        async for kind, pv in self.api.watch("/api/v1/persistentvolumes"):
            if kind not in ("ADDED", "MODIFIED"):
                continue
            try:
                await self._reclaim(pv)
            except (ApiError, aiohttp.ClientError, OSError) as e:
                self._log(f"reclaim {pv['metadata'].get('name')}: {e!r}")

    async def _reclaim(self, pv: dict[str, Any]) -> None:
        """A Released volume of this provisioner with reclaimPolicy Delete: its directory, then the object."""
        if ((pv["metadata"].get("annotations") or {}).get(PROVISIONED_BY) != PROVISIONER
                or (pv.get("status") or {}).get("phase") != "Released"
                or pv["spec"].get("persistentVolumeReclaimPolicy") != "Delete"
                or self.root not in self.volume_dir(pv).parents):  # another run's volume: not ours to remove
            return
        await asyncio.to_thread(shutil.rmtree, self.volume_dir(pv), ignore_errors=True)
        if await self.api.request("DELETE", f"/api/v1/persistentvolumes/{pv['metadata']['name']}",
                                  ok=(404,)) is not None:
            self._log(f"deleted {pv['metadata']['name']} and {self.volume_dir(pv)}")
