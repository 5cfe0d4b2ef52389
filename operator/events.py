"""Kubernetes Events for what a user must see (bad specs, failures), posted once per change.

Posted through the API client, not `kopf.event`: kopf's poster works only inside a kopf
handler's context, and reconciles also run from the operator's own resync thread.
"""

from __future__ import annotations

import datetime
import logging
from typing import Any

from kastor.runtime import k8s_contract as contract

log = logging.getLogger("kastor.operator")
MAX_MESSAGE = 1024  # the API server rejects longer Event messages


def manifest(body: dict[str, Any], type_: str, reason: str, message: str) -> dict[str, Any]:
    """A core/v1 Event on the custom resource `body`, as `kubectl describe` shows it."""
    meta = body["metadata"]
    if len(message) > MAX_MESSAGE:
        message = message[:MAX_MESSAGE // 2 - 3] + "..." + message[-(MAX_MESSAGE // 2 - 3):]
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {"apiVersion": "v1", "kind": "Event",
            "metadata": {"namespace": meta["namespace"], "generateName": f"{meta['name']}."},
            "type": type_, "reason": reason, "message": message,
            "involvedObject": {"apiVersion": body.get("apiVersion", contract.API_VERSION), "kind": body.get("kind"),
                               "name": meta["name"], "namespace": meta["namespace"], "uid": meta.get("uid")},
            "source": {"component": contract.MANAGER}, "reportingComponent": contract.MANAGER,
            "firstTimestamp": now, "lastTimestamp": now, "count": 1}


def post(kube: Any, body: dict[str, Any], type_: str, reason: str, message: str) -> None:
    """Posts an Event; never lets an event failure break a reconcile (events are best-effort, like kubectl's)."""
    try:
        kube.create_event(body["metadata"]["namespace"], manifest(body, type_, reason, message))
    except Exception as e:
        log.warning("could not post event %s on %s: %s", reason, body.get("metadata", {}).get("name"), e)
