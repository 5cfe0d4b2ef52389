"""Reading pod state, and deciding which worker pods to create or remove (pure functions)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kastor.runtime import k8s_contract as contract


def phase(pod: dict[str, Any]) -> str:
    return (pod.get("status") or {}).get("phase") or "Pending"


def terminating(pod: dict[str, Any]) -> bool:
    return bool(pod["metadata"].get("deletionTimestamp"))


def finished(pod: dict[str, Any]) -> bool:
    """The pod will never run again (restartPolicy Never, or evicted): it must be replaced."""
    return phase(pod) in ("Failed", "Succeeded")


def ready(pod: dict[str, Any]) -> bool:
    if terminating(pod) or phase(pod) != "Running":
        return False
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (pod.get("status") or {}).get("conditions") or [])


def _terminated(pod: dict[str, Any]) -> dict[str, Any]:
    for status in (pod.get("status") or {}).get("containerStatuses") or []:
        if status.get("name") == contract.CONTAINER or len(pod["spec"]["containers"]) == 1:
            return ((status.get("state") or {}).get("terminated")) or {}
    return {}


def restart_count(pod: dict[str, Any]) -> int:
    """How often the kubelet restarted the Kastor container in place."""
    for status in (pod.get("status") or {}).get("containerStatuses") or []:
        if status.get("name") == contract.CONTAINER or len(pod["spec"]["containers"]) == 1:
            return int(status.get("restartCount") or 0)
    return 0


def exit_code(pod: dict[str, Any]) -> int | None:
    return _terminated(pod).get("exitCode")


def termination_message(pod: dict[str, Any]) -> str:
    """The container's last words (its termination message), on one line."""
    terminated = _terminated(pod)
    text = (terminated.get("message") or terminated.get("reason") or (pod.get("status") or {}).get("reason")
            or "").strip()
    return text.splitlines()[-1].removeprefix("actor-pod: ") if text else ""


def controller_uid(obj: dict[str, Any]) -> str | None:
    """The uid of the object's controller (its controlling ownerReference), or None.

    Children are adopted by this, not by labels alone: a resource deleted and re-created
    under the same name must not take over its predecessor's dying children."""
    for ref in (obj.get("metadata") or {}).get("ownerReferences") or []:
        if ref.get("controller"):
            return ref.get("uid")
    return None


# Waiting reasons that are the normal way up, not a problem to report.
_STARTING = frozenset({"ContainerCreating", "PodInitializing"})


def stuck_reason(pod: dict[str, Any]) -> tuple[str, str] | None:
    """Why a pod that is not running is stuck, as (reason, message), or None if it is just starting.

    The scheduler's verdict (PodScheduled False: Unschedulable, with how many nodes fit) or
    a container's waiting reason (ImagePullBackOff, ErrImagePull, CreateContainerConfigError,
    CrashLoopBackOff...), as `kubectl describe` would show them.
    """
    status = pod.get("status") or {}
    for condition in status.get("conditions") or []:
        if condition.get("type") == "PodScheduled" and condition.get("status") == "False":
            return condition.get("reason") or "Unschedulable", condition.get("message") or "not scheduled"
    for container in (status.get("initContainerStatuses") or []) + (status.get("containerStatuses") or []):
        waiting = (container.get("state") or {}).get("waiting") or {}
        reason = waiting.get("reason")
        if reason and reason not in _STARTING:
            return reason, waiting.get("message") or reason
    return None


def attempt(pod: dict[str, Any]) -> int:
    return int((pod["metadata"].get("annotations") or {}).get(contract.ANNOTATION_ATTEMPT, "0"))


@dataclass(frozen=True)
class WorkerPlan:
    create: int
    delete: tuple[str, ...]


def plan_workers(pods: list[dict[str, Any]], desired: int) -> WorkerPlan:
    """How to get from these pods of one group to `desired` running ones.

    Finished pods are removed (and replaced). On scale-down the operator chooses, like
    KubeRay: pods that are not ready go first, then the newest (least likely to hold work).
    """
    live = [p for p in pods if not terminating(p) and not finished(p)]
    delete = [p["metadata"]["name"] for p in pods if not terminating(p) and finished(p)]
    if len(live) > desired:
        not_ready = [p for p in live if not ready(p)]
        is_ready = sorted((p for p in live if ready(p)), key=lambda p: p["metadata"].get("creationTimestamp", ""),
                          reverse=True)
        victims = (sorted(not_ready, key=lambda p: p["metadata"].get("creationTimestamp", ""), reverse=True)
                   + is_ready)[:len(live) - desired]
        delete += [p["metadata"]["name"] for p in victims]
        return WorkerPlan(0, tuple(delete))
    return WorkerPlan(desired - len(live), tuple(delete))
