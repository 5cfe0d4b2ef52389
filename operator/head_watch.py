"""The operator's watches of running clusters' heads: reconcile when the head says something
changed, instead of asking it every few seconds (issue 12 defect 6).

One `WatchCluster` stream per running ActorCluster (`runtime/cluster_watch.py` is the head's
side), all on one asyncio loop of their own thread. A message says what changed: the
cluster's nodes, their idleness or its unmet demand (`scaling`: the cluster is reconciled),
or named actors' records (the DetachedActors that mirror them are reconciled). The first
message of a stream, and a stream that drops (the head restarts, its pod or node is lost),
reconcile the cluster and the DetachedActors that follow it once, since something may have
changed unseen; a dropped stream is opened again with an exponential back-off. A stream
silent for longer than SILENCE_S (the head sends a keepalive every WATCH_KEEPALIVE_S) is
treated as dropped: a head on a lost node may never close its connection.

`synced(cluster)` says whether a stream is open now: only then may a running cluster wait for
the long resync (`handlers.due_in`); without one, the operator polls as before.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import grpc
from kastor.runtime import auth, tls
from kastor.runtime.cluster_watch import WATCH_KEEPALIVE_S
from kastor.runtime.protocol import kastor_pb2 as pb
from kastor.runtime.protocol import kastor_pb2_grpc as pb_grpc
from kastor.runtime.rpc import CHANNEL_OPTIONS

log = logging.getLogger("kastor.operator.head_watch")

SILENCE_S = 3 * WATCH_KEEPALIVE_S
BACKOFF_FIRST_S, BACKOFF_MAX_S = 1.0, 30.0

ClusterKey = tuple[str, str]  # (namespace, ActorCluster name)


@dataclass(frozen=True)
class Target:
    """How to reach a cluster's head: its address, the cluster token and the CA of a TLS cluster."""
    address: str
    token: str = field(repr=False)
    ca: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class Change:
    """What one message (or a stream's opening or drop) asks to reconcile: the cluster (`scaling`),
    the DetachedActors mirroring these named actors (`actors`: (namespace, name) in the GCS), or
    everything of the cluster (`resync`)."""
    scaling: bool = False
    actors: frozenset[tuple[str, str]] = frozenset()
    resync: bool = False


class HeadWatches:
    """`ensure(cluster, target)` keeps one stream open to the cluster's head; `on_change(cluster,
    change)` is called on the watches' thread for every message."""

    def __init__(self, on_change: Callable[[ClusterKey, Change], None]):
        self._on_change = on_change
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="kastor-head-watch", daemon=True)
        self._lock = threading.Lock()
        self._tasks: dict[ClusterKey, tuple[Target, asyncio.Future]] = {}
        self._synced: set[ClusterKey] = set()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        with self._lock:
            keys = list(self._tasks)
        for key in keys:
            self.forget(key)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    def ensure(self, cluster: ClusterKey, target: Target) -> None:
        """Watches the cluster's head at `target` (a changed address, token or CA reopens the stream)."""
        with self._lock:
            current = self._tasks.get(cluster)
            if current is not None and current[0] == target:
                return
            if current is not None:
                self._loop.call_soon_threadsafe(current[1].cancel)
                self._synced.discard(cluster)
            self._tasks[cluster] = (target, asyncio.run_coroutine_threadsafe(self._watch(cluster, target),
                                                                             self._loop))

    def forget(self, cluster: ClusterKey) -> None:
        """Stops watching (the cluster is gone, suspended, or its spec cannot run)."""
        with self._lock:
            current = self._tasks.pop(cluster, None)
            self._synced.discard(cluster)
        if current is not None:
            current[1].cancel()

    def synced(self, cluster: ClusterKey) -> bool:
        """Whether a stream to the cluster's head is open now (so its changes will be told)."""
        with self._lock:
            return cluster in self._synced

    def target(self, cluster: ClusterKey) -> Target | None:
        """The head the cluster's watch is on (None: not watched)."""
        with self._lock:
            current = self._tasks.get(cluster)
            return current[0] if current is not None else None

    def watched(self) -> set[ClusterKey]:
        with self._lock:
            return set(self._tasks)

    def _set_synced(self, cluster: ClusterKey, target: Target, on: bool) -> bool:
        """Marks the stream open or not; False if this watch was replaced or forgotten meanwhile."""
        with self._lock:
            current = self._tasks.get(cluster)
            if current is None or current[0] != target:
                return False
            (self._synced.add if on else self._synced.discard)(cluster)
            return True

    async def _watch(self, cluster: ClusterKey, target: Target) -> None:
        backoff = BACKOFF_FIRST_S
        while True:
            channel = _channel(target)
            opened = False
            try:
                call = pb_grpc.HeadStub(channel).WatchCluster(pb.WatchClusterRequest(),
                                                               metadata=auth.metadata(target.token))
                while True:
                    message = await asyncio.wait_for(call.read(), SILENCE_S)
                    if message is grpc.aio.EOF:
                        raise ConnectionError("the head ended the stream")
                    if not opened:
                        opened = True
                        backoff = BACKOFF_FIRST_S
                        if not self._set_synced(cluster, target, True):
                            return
                        log.info("watching the head of %s/%s at %s", *cluster, target.address)
                        self._tell(cluster, Change(resync=True))
                    elif not message.keepalive:
                        self._tell(cluster, Change(scaling=message.scaling, actors=frozenset(
                            (a.namespace, a.name) for a in message.actors)))
            except asyncio.CancelledError:
                raise
            except Exception as e:  # an RPC error, silence (TimeoutError), an ended stream: reopen it
                why = e.code().name if isinstance(e, grpc.RpcError) else f"{type(e).__name__}: {e}"
                if opened and self._set_synced(cluster, target, False):
                    log.info("the watch of %s/%s's head dropped (%s); reopening it", *cluster, why)
                    self._tell(cluster, Change(resync=True))
                else:
                    log.debug("the watch of %s/%s's head did not open (%s)", *cluster, why)
            finally:
                await channel.close()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, BACKOFF_MAX_S)

    def _tell(self, cluster: ClusterKey, change: Change) -> None:
        try:
            self._on_change(cluster, change)
        except Exception:  # a bug in the callback must not end the watch
            log.exception("handling a change of %s/%s failed", *cluster)


def _channel(target: Target) -> grpc.aio.Channel:
    if target.ca is None:
        return grpc.aio.insecure_channel(target.address, options=CHANNEL_OPTIONS)
    return tls.aio_channel_trusting(target.address, target.ca.encode(), CHANNEL_OPTIONS)


@dataclass(frozen=True)
class Follower:
    """A DetachedActor as the watches see it: its ActorCluster (in its own namespace), its
    actor's (namespace, name) in the GCS, and whether its status mirrors checkpoints on Redis,
    which the actor writes there itself, unseen by the head."""
    cluster: str
    actor: tuple[str, str]
    checkpoints: bool = False


class Followers:
    """Which DetachedActors mirror which cluster's actors, kept from their watch events."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_key: dict[tuple[str, str], Follower] = {}

    def follow(self, namespace: str, name: str, follower: Follower | None) -> None:
        with self._lock:
            if follower is None:
                self._by_key.pop((namespace, name), None)
            else:
                self._by_key[(namespace, name)] = follower

    def of(self, namespace: str, name: str) -> Follower | None:
        with self._lock:
            return self._by_key.get((namespace, name))

    def affected(self, cluster: ClusterKey, change: Change) -> list[str]:
        """The DetachedActors (names, in the cluster's namespace) that `change` asks to reconcile."""
        ns, cluster_name = cluster
        with self._lock:
            return [name for (namespace, name), f in self._by_key.items()
                    if namespace == ns and f.cluster == cluster_name and (change.resync or f.actor in change.actors)]
