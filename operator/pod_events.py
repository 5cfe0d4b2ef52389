"""An Event for every pod the operator creates or deletes, and why (as KubeRay's CreatedWorkerPod).

`kubectl describe actorcluster demo` (or `kubectl get events --field-selector
involvedObject.name=demo`) then tells the whole story of the cluster's pods: which pod was
made or removed, of which role, and the reason the plan gave (ScaleUp, RollingUpdate, NodeLost,
Suspended...). The same reason labels the operator's `kastor_operator_pod_actions` metric.
"""

from __future__ import annotations

from typing import Any

from kastor.operator import events, metrics
from kastor.runtime import k8s_contract as contract

CREATED = "CreatedPod"
DELETED = "DeletedPod"
FAILED_CREATE = "FailedCreatePod"


def role_of(pod: dict[str, Any]) -> str:
    """The pod's role label (head, worker, redis, actor), or "" if it has none."""
    return ((pod.get("metadata") or {}).get("labels") or {}).get(contract.LABEL_ROLE, "")


def _message(verb: str, role: str, name: str, reason: str, why: str) -> str:
    cause = f"{reason}: {why}" if reason and why else (reason or why or "no reason given")
    return f"{verb} {role + ' ' if role else ''}pod {name} ({cause})"


def created(kube: Any, body: dict[str, Any], pod: dict[str, Any], reason: str, why: str) -> None:
    """Posts `CreatedPod` for `pod` as the API server returned it (its generated name filled in)."""
    role = role_of(pod)
    metrics.pod_action("created", role, reason)
    events.post(kube, body, "Normal", CREATED, _message("Created", role, pod["metadata"]["name"], reason, why))


def deleted(kube: Any, body: dict[str, Any], name: str, role: str, reason: str, why: str,
            force: bool = False) -> None:
    """Posts `DeletedPod` (a Warning for a force delete: nothing confirmed that the pod stopped)."""
    metrics.pod_action("force_deleted" if force else "deleted", role, reason)
    verb = "Force-deleted" if force else "Deleted"
    events.post(kube, body, "Warning" if force else "Normal", DELETED, _message(verb, role, name, reason, why))


def failed_create(kube: Any, body: dict[str, Any], pod: dict[str, Any], reason: str, error: BaseException) -> None:
    """Posts `FailedCreatePod` with the API server's answer (a quota, an admission webhook...)."""
    meta = pod.get("metadata") or {}
    name = meta.get("name") or f"{meta.get('generateName', '')}*"
    detail = getattr(error, "reason", None) or str(error)
    body_text = getattr(error, "body", None)
    if body_text:
        detail = f"{detail}: {body_text if isinstance(body_text, str) else body_text.decode(errors='replace')}"
    metrics.pod_action("failed_create", role_of(pod), reason)
    events.post(kube, body, "Warning", FAILED_CREATE,
                f"could not create {role_of(pod) or 'a'} pod {name} ({reason or 'no reason given'}): {detail}")
