"""kopf registrations: small functions that hand each event to a reconciler.

Every path into a reconciler is level-triggered (it re-reads the world), so create,
resume, spec updates, pod events and the periodic resync all call the same function and
may overlap safely (a per-object lock serialises them). Run with `python -m kastor.operator`
or `kopf run -m kastor.operator.handlers`.

Only resources with something to clean up carry a finalizer: a DetachedActor (its actor
is killed in the GCS) and an ActorCluster on an external Redis (its keys are deleted).
Any other ActorCluster is deleted by the API server at once, with the operator down too,
and garbage collection removes its children; the resync is therefore not a kopf timer
(timers put a finalizer on every object) but `operator/resync.py`.
"""

from __future__ import annotations

import logging
from typing import Any

import kopf
from kastor.operator import actor_reconciler, cluster_reconciler, kube
from kastor.operator.head_client import HeadClient
from kastor.operator.reconcile import Locks
from kastor.operator.resync import Resync
from kastor.runtime import k8s_contract as contract
from kastor.runtime import settings

RESYNC_S = settings.OPERATOR_RESYNC_S.get()
kastor_settings = settings  # kopf names its handlers' OperatorSettings argument `settings` too
CLUSTERS = dict(group=contract.GROUP, version=contract.VERSION, plural=contract.CLUSTER_PLURAL)
ACTORS = dict(group=contract.GROUP, version=contract.VERSION, plural=contract.ACTOR_PLURAL)
OWNED_PODS = dict(labels={contract.LABEL_MANAGED_BY: contract.MANAGER})


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    """Annotations under kastor.dev keep kopf's bookkeeping off our status; events are posted for Warnings.

    The API client, the head client and the per-object locks live in kopf's memo (every
    handler gets a shallow copy of it, so they are shared), not in module globals.
    """
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="kastor.dev")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix="kastor.dev")
    settings.persistence.finalizer = "kastor.dev/finalizer"
    settings.posting.level = logging.WARNING
    settings.watching.server_timeout = kastor_settings.OPERATOR_WATCH_TIMEOUT_S.get()
    settings.execution.max_workers = kastor_settings.OPERATOR_WORKERS.get()
    kube.load_config()
    memo.kube = kube.Kube()
    memo.head = HeadClient()
    memo.locks = Locks()
    memo.resync = Resync(lambda plural, ns, name: _reconcile(memo, plural, ns, name), RESYNC_S)
    memo.resync.start()


@kopf.on.cleanup()
def close(memo: kopf.Memo, **_: Any) -> None:
    if "resync" in memo:
        memo.resync.stop()
    if "head" in memo:
        memo.head.close()


def _reconcile(memo: kopf.Memo, plural: str, namespace: str, name: str) -> None:
    """Reconciles one resource by name (the reconcilers re-read it under its lock)."""
    body = {"metadata": {"namespace": namespace, "name": name}}
    if plural == contract.CLUSTER_PLURAL:
        cluster_reconciler.reconcile(memo.kube, body, memo.head, memo.locks)
    else:
        actor_reconciler.reconcile(memo.kube, memo.head, body, memo.locks)


@kopf.on.probe(id="api")
def api_reachable(memo: kopf.Memo, **_: Any) -> str:
    """The liveness endpoint answers only while the API server answers us."""
    import kubernetes
    kubernetes.client.VersionApi(memo.kube.api_client).get_code()
    return "ok"


# ---- ActorCluster ----

@kopf.on.create(**CLUSTERS)
@kopf.on.resume(**CLUSTERS)
@kopf.on.update(**CLUSTERS, field="spec")
def cluster_changed(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    cluster_reconciler.reconcile(memo.kube, dict(body), memo.head, memo.locks)


@kopf.on.event(**CLUSTERS)
@kopf.on.event(**ACTORS)
def track_for_resync(event: dict[str, Any], resource: kopf.Resource, namespace: str, name: str, memo: kopf.Memo,
                     **_: Any) -> None:
    """Keeps the resync's set of resources current: watch events cost no finalizer, timers did."""
    if event.get("type") == "DELETED":
        memo.resync.forget(resource.plural, namespace, name)
    else:
        memo.resync.track(resource.plural, namespace, name)


def _external_redis(spec: kopf.Spec, **_: Any) -> bool:
    return bool(((spec.get("gcs") or {}).get("redis") or {}).get("address"))


@kopf.on.delete(**CLUSTERS, when=_external_redis, retries=60, backoff=2)
def cluster_deleted(body: kopf.Body, logger: kopf.Logger, memo: kopf.Memo, **_: Any) -> None:
    """Only clusters on an external Redis get this finalizer: their GCS keys outlive them."""
    try:
        logger.info(cluster_reconciler.clean_external_redis(memo.kube, dict(body)))
    except cluster_reconciler.StillRunning as e:
        raise kopf.TemporaryError(str(e), delay=1) from None


# ---- DetachedActor ----

@kopf.on.create(**ACTORS)
@kopf.on.resume(**ACTORS)
@kopf.on.update(**ACTORS, field="spec")
def actor_changed(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    actor_reconciler.reconcile(memo.kube, memo.head, dict(body), memo.locks)


@kopf.on.delete(**ACTORS)
def actor_deleted(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    actor_reconciler.delete(memo.kube, memo.head, dict(body))


# ---- pods we own: react at once instead of at the next resync ----

@kopf.on.event("", "v1", "pods", **OWNED_PODS)
def owned_pod_changed(body: kopf.Body, namespace: str, memo: kopf.Memo, **_: Any) -> None:
    labels = body.get("metadata", {}).get("labels", {})
    if contract.LABEL_ACTOR in labels:
        cr = memo.kube.get_custom(contract.ACTOR_PLURAL, namespace, labels[contract.LABEL_ACTOR])
        if cr is not None:
            actor_reconciler.reconcile(memo.kube, memo.head, cr, memo.locks)
    elif contract.LABEL_CLUSTER in labels:
        cr = memo.kube.get_custom(contract.CLUSTER_PLURAL, namespace, labels[contract.LABEL_CLUSTER])
        if cr is not None:
            cluster_reconciler.reconcile(memo.kube, cr, memo.head, memo.locks)
