"""Spec changes that reach running pods: pod-template hashes and the upgrade strategy (pure).

Every head and worker pod carries, in its `kastor.dev/spec-hash` annotation, a hash of the
part of the ActorCluster spec it was built from. A pod whose hash differs from the current
spec's is outdated and is replaced as `spec.upgradeStrategy.type` says:

- `RollingUpdate` (the default): the head is recreated (a cluster has one head; KubeRay's
  `Recreate`), workers are replaced one at a time, each once every other worker of its group
  is ready (at most one unavailable, like a Deployment with maxSurge 0, maxUnavailable 1).
- `Recreate`: the head and every outdated worker are deleted at once.
- `None`: running pods keep their spec; only pods created later get the new one.

The hash covers the operator's *input* (the spec fields that shape the pod), not the pod it
builds, so an operator upgrade that builds pods differently restarts nothing (as KubeRay);
a field that only shapes a Service (serviceType, dashboardServiceType, clientNodePort) or the
group's size restarts nothing either. A field added to one of the hashed sections later must not carry
a schema default, or every stored cluster would change hash on the CRD upgrade and roll.

A pod without the annotation was made by an operator from before hashes: it is outdated
only once the spec changes (generation != status.observedGeneration), so an operator upgrade
alone does not restart it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Any

from kastor.operator.pods import ready
from kastor.operator.spec import ClusterSpec, canonical_json
from kastor.runtime import k8s_contract as contract


def _hash(value: Any) -> str:
    return hashlib.sha256(canonical_json(value).encode()).hexdigest()[:16]


def _shared(raw: dict[str, Any]) -> dict[str, Any]:
    """What every Kastor pod of the cluster is built from: image, token and TLS Secrets."""
    return {k: raw.get(k) for k in ("image", "imagePullPolicy", "auth", "tls")}


def head_hash(raw: dict[str, Any]) -> str:
    """The head pod's template hash: the shared fields, `head` without what only shapes its
    Service, and the GCS fields the head is started with."""
    head = dict(raw.get("head") or {})
    head.pop("serviceType", None)
    head.pop("dashboardServiceType", None)
    ports = dict(head.get("ports") or {})
    ports.pop("clientNodePort", None)
    head["ports"] = ports
    redis = ((raw.get("gcs") or {}).get("redis")) or {}
    gcs = {k: redis.get(k) for k in ("managed", "address", "passwordSecret")}
    return _hash({**_shared(raw), "head": head, "gcs": gcs})


def redis_hash(raw: dict[str, Any]) -> str:
    """The managed Redis StatefulSet's template hash: its image and resources, and the token
    Secret its password comes from. A change patches the StatefulSet's template, and the
    StatefulSet controller replaces the Redis pod (its data stays on its volume)."""
    redis = ((raw.get("gcs") or {}).get("redis")) or {}
    return _hash({"redis": {k: redis.get(k) for k in ("image", "resources")}, "auth": raw.get("auth")})


def worker_hash(raw: dict[str, Any], spec: ClusterSpec, group: str) -> str:
    """A worker pod's template hash: the shared fields, the head's control port (its address)
    and the group's entry without its size (replicas, minReplicas, maxReplicas)."""
    entry = next((dict(g) for g in raw.get("workerGroups") or [] if g.get("name") == group), {})
    for key in ("replicas", "minReplicas", "maxReplicas"):
        entry.pop(key, None)
    return _hash({**_shared(raw), "control": spec.head.ports.control, "group": entry})


def outdated(pod: dict[str, Any], want: str, spec_changed: bool) -> bool:
    """True if the pod was built from another spec than the one whose hash is `want`."""
    have = (pod["metadata"].get("annotations") or {}).get(contract.ANNOTATION_SPEC_HASH)
    if have is None:  # made before hashes: outdated once the spec changed since it was observed
        return spec_changed
    return have != want


def workers_to_replace(live: list[dict[str, Any]], want: str, spec_changed: bool, how: str,
                       can_roll: bool) -> list[str]:
    """The names of this group's outdated worker pods to delete now (`live`: its pods that are
    neither terminating, finished nor being removed). An outdated pod that is not ready
    serves nothing and goes at once; a ready one waits its turn unless the strategy is Recreate."""
    old = [p for p in live if outdated(p, want, spec_changed)]
    if how == "None" or not old:
        return []
    if how == "Recreate":
        return [p["metadata"]["name"] for p in old]
    not_ready = [p["metadata"]["name"] for p in old if not ready(p)]
    if not_ready:
        return not_ready
    if not can_roll or not all(ready(p) for p in live):
        return []  # the previous replacement is not ready yet (or the head is not): one at a time
    oldest = min(old, key=lambda p: (p["metadata"].get("creationTimestamp", ""), p["metadata"]["name"]))
    return [oldest["metadata"]["name"]]


def any_outdated(pods: Iterable[tuple[dict[str, Any], str]], spec_changed: bool) -> bool:
    """True while some (pod, wanted hash) pair still runs an older spec."""
    return any(outdated(pod, want, spec_changed) for pod, want in pods)
