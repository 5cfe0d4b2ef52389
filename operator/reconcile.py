"""The one skeleton every reconcile runs: lock, re-fetch, observe, plan, act, write status.

kopf may call a resource's handlers concurrently (create, spec change, pod event, resync
timer): a per-object lock serialises them, and the resource is re-read under the lock
because a caller's copy may be stale. A resource gone or being deleted is left alone
(its finalizer, if any, does the rest).
"""

from __future__ import annotations

import logging
import threading
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from kastor.operator import actions, metrics
from kastor.operator.conditions import same_ignoring_time
from kastor.operator.head_client import HeadClient
from kastor.operator.kube import Kube

log = logging.getLogger("kastor.operator")


class Locks:
    """One lock per (plural, namespace, name); the table lives in kopf's memo, not in a module."""

    def __init__(self) -> None:
        self._locks: defaultdict[tuple[str, str, str], threading.Lock] = defaultdict(threading.Lock)
        self._guard = threading.Lock()

    def of(self, plural: str, namespace: str, name: str) -> threading.Lock:
        with self._guard:
            return self._locks[(plural, namespace, name)]


@metrics.counted(plural_arg=3)
def run(kube: Kube, head: HeadClient | None, locks: Locks, plural: str, body: dict[str, Any],
        step: Callable[[dict[str, Any]], actions.Plan], state_key: str) -> actions.Plan | None:
    """Re-reads the resource under its lock, plans with `step(fresh)`, applies the plan and
    writes its status if it changed (ignoring condition timestamps); returns the plan (its
    status as written), or None if the resource is gone or being deleted.
    `state_key` names the status field whose transitions are logged (phase, state)."""
    meta = body["metadata"]
    ns, name = meta["namespace"], meta["name"]
    with locks.of(plural, ns, name):
        fresh = kube.get_custom(plural, ns, name)
        if fresh is None or fresh["metadata"].get("deletionTimestamp"):
            return None
        plan = step(fresh)
        actions.apply(kube, head, fresh, plan)
        old = fresh.get("status") or {}
        if old.get(state_key) != plan.status.get(state_key):
            message = plan.status.get("message")
            log.info("%s %s/%s: %s -> %s%s", fresh.get("kind", plural), ns, name, old.get(state_key),
                     plan.status.get(state_key), f" ({message})" if message else "")
        if not same_ignoring_time(old, plan.status):
            kube.patch_status(plural, ns, name, plan.status)
        return plan
