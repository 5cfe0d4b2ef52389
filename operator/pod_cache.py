"""The pods the operator owns, as its pod watch shows them (a kopf index), plus its own writes.

Reconcilers read their children here instead of LISTing pods on every reconcile. The index
is fed by the operator's one pod watch, which the API server filters to the operator's own
pods (`settings.watching.label_selectors`, in `handlers.configure`), so an idle operator
costs the API server no request at all for pods.

The index lags the operator's own writes by one watch event: a reconcile in that gap would
miss a pod it has just created and create another (pods have generated names), or count one
it has just deleted. So the cache overlays what this process wrote until the watch shows it,
or until `expect_s` passes (controller-runtime calls these "expectations").
"""

from __future__ import annotations

import asyncio
import datetime
import threading
import time
from collections.abc import Mapping
from typing import Any

from kastor.runtime import k8s_contract as contract

# The labels a reconciler selects its pods by; the index is keyed by (namespace, label, value).
INDEXED_LABELS = (contract.LABEL_CLUSTER, contract.LABEL_ACTOR)
IndexKey = tuple[str, str, str]
READ_TIMEOUT_S = 30.0


def index_entries(namespace: str, body: Mapping[str, Any]) -> dict[IndexKey, dict[str, Any]]:
    """What a pod adds to the index (the body of the `@kopf.index` handler): the pod under each
    label a reconciler selects by."""
    labels = (body.get("metadata") or {}).get("labels") or {}
    pod = dict(body)
    return {(namespace, label, labels[label]): pod for label in INDEXED_LABELS if label in labels}


def _name(pod: Mapping[str, Any]) -> str:
    return pod["metadata"]["name"]


class PodCache:
    """Thread-safe reads of a kopf index owned by the event loop `loop`.

    kopf mutates its indexes on its event loop; reconcilers run on threads, so a read is a
    small coroutine run on that loop, which copies the pods out."""

    def __init__(self, loop: asyncio.AbstractEventLoop, index: Mapping[IndexKey, Any], expect_s: float = 60.0):
        self._loop = loop
        self._index = index
        self._expect_s = expect_s
        self._lock = threading.Lock()
        # (namespace, name) -> (the pod as created, deadline); (namespace, name) -> deadline
        self._created: dict[tuple[str, str], tuple[dict[str, Any], float]] = {}
        self._deleted: dict[tuple[str, str], float] = {}

    # ---- the operator's own writes ----

    def created(self, namespace: str, pod: dict[str, Any]) -> None:
        with self._lock:
            self._created[(namespace, _name(pod))] = (pod, time.monotonic() + self._expect_s)

    def deleted(self, namespace: str, name: str) -> None:
        with self._lock:
            self._deleted[(namespace, name)] = time.monotonic() + self._expect_s

    # ---- reads ----

    def list(self, namespace: str, labels: Mapping[str, str]) -> list[dict[str, Any]]:
        """The pods with these labels (exactly one of INDEXED_LABELS), as a LIST would return them."""
        if len(labels) != 1 or next(iter(labels)) not in INDEXED_LABELS:
            raise ValueError(f"the pod cache selects by one of {INDEXED_LABELS}, not by {dict(labels)}")
        label, value = next(iter(labels.items()))
        seen = self._read((namespace, label, value))
        return self._overlay(namespace, label, value, seen)

    def _read(self, key: IndexKey) -> list[dict[str, Any]]:
        async def copy() -> list[dict[str, Any]]:
            return list(self._index.get(key, ()))

        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self._loop:  # called on the loop itself: read directly
            return list(self._index.get(key, ()))
        return asyncio.run_coroutine_threadsafe(copy(), self._loop).result(READ_TIMEOUT_S)

    def _overlay(self, namespace: str, label: str, value: str, seen: list[dict[str, Any]]) -> list[dict[str, Any]]:
        now = time.monotonic()
        names = {_name(p) for p in seen}
        out: list[dict[str, Any]] = []
        with self._lock:
            for key, deadline in list(self._deleted.items()):
                if deadline < now:
                    del self._deleted[key]
            for key, (_, deadline) in list(self._created.items()):
                if deadline < now or (key[0] == namespace and key[1] in names):
                    del self._created[key]  # the watch has shown it: the index is the truth again
            for pod in seen:
                key = (namespace, _name(pod))
                if key in self._deleted:
                    if pod["metadata"].get("deletionTimestamp"):
                        del self._deleted[key]
                    else:
                        pod = _terminating(pod)
                out.append(pod)
            for (ns, _), (pod, _) in self._created.items():
                if ns == namespace and ((pod["metadata"].get("labels") or {}).get(label) == value):
                    out.append(_terminating(pod) if (ns, _name(pod)) in self._deleted else pod)
        return out


def _terminating(pod: dict[str, Any]) -> dict[str, Any]:
    """The pod as it will look once the watch shows our delete."""
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {**pod, "metadata": {**pod["metadata"], "deletionTimestamp": now}}
