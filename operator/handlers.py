"""kopf registrations: small async functions that hand each event to a reconciler.

Every path into a reconciler is level-triggered (it re-reads the world), so create,
resume, spec updates, pod events and the periodic resync all call the same function and
may overlap safely (a per-object lock serialises them). Run with `python -m kastor.operator`
or `kopf run -m kastor.operator.handlers`.

Handlers are `async def`, so kopf runs them on its event loop; the reconcilers are blocking
(the kubernetes client, gRPC to the head) and run on the operator's own thread pool
(`KASTOR_OPERATOR_WORKERS`), so neither kopf's loop nor the liveness probe ever waits for a
thread a slow reconcile holds.

What the operator asks of the API server: one watch per resource type, and the pod watch is
filtered by the API server to the operator's own pods (`settings.watching.label_selectors`);
the pods it sees fill a kopf index (`owned_pods`), which reconcilers read instead of LISTing.
A pod event queues its owner's reconcile (`operator/resync.py` coalesces bursts). What a
running cluster's head knows (nodes lost, idle or draining, unmet demand, a DetachedActor's
actor restarting) arrives on one watch stream per cluster (`operator/head_watch.py`), which
queues the reconciles it concerns. A resource still settling is re-checked after
`KASTOR_OPERATOR_POLL_S`; a settled one (a Ready cluster whose head is watched, a live actor,
a suspended cluster) only at a deadline no event reports (an idle timeout, a lost node's
grace) and at the long resync, `KASTOR_OPERATOR_RESYNC_S` (minutes), the safety net.

Only resources with something to clean up carry a finalizer: a DetachedActor (its actor
is killed in the GCS) and an ActorCluster on an external Redis (its keys are deleted).
Any other ActorCluster is deleted by the API server at once, with the operator down too,
and garbage collection removes its children; the resync is therefore not a kopf timer
(timers put a finalizer on every object) but `operator/resync.py`.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import kopf
from kastor.operator import actor_reconciler, cluster_reconciler, kube, pod_cache
from kastor.operator.checkpoint_watch import CheckpointWatch
from kastor.operator.head_client import HeadClient
from kastor.operator.head_watch import Change, ClusterKey, Follower, Followers, HeadWatches
from kastor.operator.reconcile import Locks
from kastor.operator.resync import Resync
from kastor.operator.spec import SpecError, parse_actor
from kastor.runtime import k8s_contract as contract
from kastor.runtime import settings

kastor_settings = settings  # kopf names its handlers' OperatorSettings argument `settings` too
CLUSTERS = dict(group=contract.GROUP, version=contract.VERSION, plural=contract.CLUSTER_PLURAL)
ACTORS = dict(group=contract.GROUP, version=contract.VERSION, plural=contract.ACTOR_PLURAL)
WORKER_GROUPS = dict(group=contract.GROUP, version=contract.VERSION, plural=contract.WORKER_GROUP_PLURAL)
OWNED_PODS = dict(labels={contract.LABEL_MANAGED_BY: contract.MANAGER})
# The API server sends the operator only its own pods (kopf's `labels=` alone filters client side).
OWNED_PODS_SELECTOR = kube.selector(OWNED_PODS["labels"])
PROBE_TIMEOUT_S = 10.0
T = TypeVar("T")


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, owned_pods: kopf.Index, **_: Any) -> None:
    """Annotations under kastor.dev keep kopf's bookkeeping off our status; events are posted for Warnings.

    The API client, the head client, the per-object locks, the reconcile pool and the pod
    cache live in kopf's memo (every handler gets a shallow copy of it, so they are shared),
    not in module globals.
    """
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="kastor.dev")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix="kastor.dev")
    settings.persistence.finalizer = "kastor.dev/finalizer"
    settings.posting.level = logging.WARNING
    settings.watching.server_timeout = kastor_settings.OPERATOR_WATCH_TIMEOUT_S.get()
    settings.watching.label_selectors["v1", "pods"] = OWNED_PODS_SELECTOR
    kube.load_config()
    memo.pool = ThreadPoolExecutor(kastor_settings.OPERATOR_WORKERS.get(), thread_name_prefix="kastor-reconcile")
    memo.probe_pool = ThreadPoolExecutor(1, thread_name_prefix="kastor-probe")
    memo.kube = kube.Kube(pods=pod_cache.PodCache(asyncio.get_running_loop(), owned_pods))
    memo.head = HeadClient()
    memo.locks = Locks()
    poll_s = kastor_settings.OPERATOR_POLL_S.get()
    memo.resync = Resync(lambda plural, ns, name: _reconcile(memo, plural, ns, name, poll_s),
                         kastor_settings.OPERATOR_RESYNC_S.get(), retry_s=poll_s)
    memo.followers = Followers()
    memo.watches = HeadWatches(lambda cluster, change: _head_changed(memo, cluster, change))
    memo.watches.start()
    memo.checkpoints = CheckpointWatch(memo.head, lambda ns, name: memo.resync.soon(contract.ACTOR_PLURAL, ns, name),
                                       poll_s)
    memo.checkpoints.start()
    memo.resync.start()


@kopf.on.cleanup()
async def close(memo: kopf.Memo, **_: Any) -> None:
    if "resync" in memo:
        memo.resync.stop()
    if "watches" in memo:
        memo.watches.stop()
    if "checkpoints" in memo:
        memo.checkpoints.stop()
    if "head" in memo:
        memo.head.close()
    for pool in ("pool", "probe_pool"):
        if pool in memo:
            memo[pool].shutdown(wait=False, cancel_futures=True)


async def _blocking(memo: kopf.Memo, fn: Callable[..., T], *args: Any) -> T:
    """Runs a blocking reconciler call on the operator's reconcile pool, not on kopf's loop."""
    return await asyncio.get_running_loop().run_in_executor(memo.pool, functools.partial(fn, *args))


def _reconcile(memo: kopf.Memo, plural: str, namespace: str, name: str, poll_s: float) -> float | None:
    """Reconciles one resource by name (the reconcilers re-read it under its lock), keeps its
    cluster's head watched while it runs, and returns when it is due again (`due_in`: None for
    the long resync, Resync.GONE once it no longer exists)."""
    body = {"metadata": {"namespace": namespace, "name": name}}
    if plural == contract.CLUSTER_PLURAL:
        key: ClusterKey = (namespace, name)
        done = cluster_reconciler.reconcile(memo.kube, body, memo.head, memo.locks)
        if done is None or done.status.get("phase") in ("Suspended", "Failed"):
            memo.watches.forget(key)
        elif done.watch is not None:
            memo.watches.ensure(key, done.watch)
        if done is None:
            return Resync.GONE
        return cluster_reconciler.due_in(done, memo.watches.synced(key), poll_s)
    done = actor_reconciler.reconcile(memo.kube, memo.head, body, memo.locks)
    if done is None:
        return Resync.GONE
    follower = memo.followers.of(namespace, name)
    watched = follower is not None and memo.watches.synced((namespace, follower.cluster))
    head = memo.watches.target((namespace, follower.cluster)) if follower is not None else None
    if watched and head is not None and follower.checkpoints and done.status.get("state") == "Alive":
        memo.checkpoints.follow(namespace, name, head, follower.actor, done.status)  # read from Redis, not polled
        return actor_reconciler.due_in(done.status, watched, poll_s)
    memo.checkpoints.forget(namespace, name)
    return actor_reconciler.due_in(done.status, watched, poll_s, follower is not None and follower.checkpoints)


def _head_changed(memo: kopf.Memo, cluster: ClusterKey, change: Change) -> None:
    """A watched head says something changed: queue the reconciles it concerns (no API call here)."""
    namespace, name = cluster
    if change.scaling or change.resync:
        memo.resync.soon(contract.CLUSTER_PLURAL, namespace, name)
    for actor in memo.followers.affected(cluster, change):
        memo.resync.soon(contract.ACTOR_PLURAL, namespace, actor)


def _follower(body: dict[str, Any], namespace: str, name: str) -> Follower | None:
    """What the watches need of a DetachedActor (None: a spec that cannot run)."""
    try:
        actor = parse_actor(body.get("spec") or {}, name, namespace)
    except SpecError:
        return None
    return Follower(actor.cluster, (actor.namespace, actor.name),
                    checkpoints=actor.state is not None and actor.state.store == "redis")


@kopf.on.probe(id="api")
async def api_reachable(memo: kopf.Memo, **_: Any) -> str:
    """The liveness endpoint answers only while the API server answers us. The check runs on a
    thread of its own: with every reconcile thread busy (a slow head, a slow API), the operator
    is still alive, and a probe that queued behind them would get it restarted for nothing."""
    import kubernetes
    call = kubernetes.client.VersionApi(memo.kube.api_client).get_code
    await asyncio.wait_for(asyncio.get_running_loop().run_in_executor(
        memo.probe_pool, functools.partial(call, _request_timeout=PROBE_TIMEOUT_S)), PROBE_TIMEOUT_S + 1)
    return "ok"


@kopf.index("", "v1", "pods", **OWNED_PODS)
async def owned_pods(namespace: str, body: kopf.Body, **_: Any) -> dict[pod_cache.IndexKey, dict[str, Any]]:
    """The cache of the operator's pods (`pod_cache`): reconcilers read it instead of LISTing."""
    return pod_cache.index_entries(namespace, body)


# ---- ActorCluster ----

@kopf.on.create(**CLUSTERS)
@kopf.on.resume(**CLUSTERS)
@kopf.on.update(**CLUSTERS, field="spec")
async def cluster_changed(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    await _blocking(memo, cluster_reconciler.reconcile, memo.kube, dict(body), memo.head, memo.locks)


@kopf.on.event(**CLUSTERS)
@kopf.on.event(**ACTORS)
async def track_for_resync(event: dict[str, Any], resource: kopf.Resource, namespace: str, name: str,
                           memo: kopf.Memo, **_: Any) -> None:
    """Keeps the resync's set of resources current (watch events cost no finalizer, timers did),
    and which cluster each DetachedActor follows."""
    deleted = event.get("type") == "DELETED"
    if resource.plural == contract.ACTOR_PLURAL:
        memo.followers.follow(namespace, name, None if deleted else _follower(event.get("object") or {}, namespace,
                                                                                name))
    if deleted:
        memo.resync.forget(resource.plural, namespace, name)
        if resource.plural == contract.ACTOR_PLURAL:
            memo.checkpoints.forget(namespace, name)
    else:
        memo.resync.track(resource.plural, namespace, name)


def _external_redis(spec: kopf.Spec, **_: Any) -> bool:
    return bool(((spec.get("gcs") or {}).get("redis") or {}).get("address"))


@kopf.on.delete(**CLUSTERS, when=_external_redis, retries=60, backoff=2)
async def cluster_deleted(body: kopf.Body, logger: kopf.Logger, memo: kopf.Memo, **_: Any) -> None:
    """Only clusters on an external Redis get this finalizer: their GCS keys outlive them."""
    try:
        logger.info(await _blocking(memo, cluster_reconciler.clean_external_redis, memo.kube, dict(body)))
    except cluster_reconciler.StillRunning as e:
        raise kopf.TemporaryError(str(e), delay=1) from None


@kopf.on.event(**WORKER_GROUPS)
async def worker_group_changed(event: dict[str, Any], namespace: str, memo: kopf.Memo, **_: Any) -> None:
    """A `kubectl scale` or an HPA changed an ActorWorkerGroup (operator/worker_groups.py), or it was
    deleted: its cluster's reconcile is queued at once. The operator's own status writes leave
    generation == status.observedGeneration, so they queue nothing."""
    obj = event.get("object") or {}
    meta, cluster = obj.get("metadata") or {}, (obj.get("spec") or {}).get("cluster")
    if cluster and (event.get("type") == "DELETED"
                    or meta.get("generation") != (obj.get("status") or {}).get("observedGeneration")):
        memo.resync.soon(contract.CLUSTER_PLURAL, namespace, cluster)


# ---- DetachedActor ----

@kopf.on.create(**ACTORS)
@kopf.on.resume(**ACTORS)
@kopf.on.update(**ACTORS, field="spec")
async def actor_changed(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    await _blocking(memo, actor_reconciler.reconcile, memo.kube, memo.head, dict(body), memo.locks)


@kopf.on.delete(**ACTORS)
async def actor_deleted(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    await _blocking(memo, actor_reconciler.delete, memo.kube, memo.head, dict(body))


# ---- pods we own: their owner's reconcile is queued at once instead of waiting for a resync ----

@kopf.on.event("", "v1", "pods", **OWNED_PODS)
async def owned_pod_changed(body: kopf.Body, namespace: str, memo: kopf.Memo, **_: Any) -> None:
    """No API call here: the queue coalesces a burst of pod events into one reconcile of the owner."""
    labels = body.get("metadata", {}).get("labels", {})
    if contract.LABEL_ACTOR in labels:
        memo.resync.soon(contract.ACTOR_PLURAL, namespace, labels[contract.LABEL_ACTOR])
    elif contract.LABEL_CLUSTER in labels:
        memo.resync.soon(contract.CLUSTER_PLURAL, namespace, labels[contract.LABEL_CLUSTER])
