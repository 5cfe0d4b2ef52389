"""The operator's watch of a head (`operator/head_watch.py` against `runtime/cluster_watch.py`), on a
real multi-process cluster: the head tells what changed (a node joining or dying, a named
actor's record) on one open stream, says nothing while nothing changes, and a watch that drops
with a restarted head reconnects and asks for one full reconcile (issue 12 defect 6)."""

import contextlib
import os
import signal
import threading
import time
from collections.abc import Iterator

import kastor
import pytest
from gcs_cluster import TOKEN, GcsCluster, own_redis_cluster
from kastor.operator.head_watch import Change, HeadWatches, Target
from kastor.runtime import cluster_watch
from redis_server import RedisServer
from support import wait_until

DEADLINE_S = 60
CLUSTER = ("default", "watched")


class Seen:
    """The changes a watch reported, in order."""

    def __init__(self) -> None:
        self.changes: list[Change] = []
        self._lock = threading.Lock()

    def __call__(self, cluster, change: Change) -> None:
        assert cluster == CLUSTER
        with self._lock:
            self.changes.append(change)

    def since(self, mark: int) -> list[Change]:
        with self._lock:
            return self.changes[mark:]

    def mark(self) -> int:
        with self._lock:
            return len(self.changes)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with own_redis_cluster(tmp_path_factory.mktemp("watch"), {"n1"}) as c:
        yield c


@pytest.fixture
def watch(cluster):
    seen = Seen()
    watches = HeadWatches(seen)
    watches.start()
    watches.ensure(CLUSTER, Target(cluster.address, TOKEN))
    wait_until(lambda: watches.synced(CLUSTER), "the watch open", DEADLINE_S)
    yield watches, seen
    watches.stop()


@kastor.remote
class Named:
    def ping(self) -> str:
        return "pong"


def test_the_head_says_what_changed_and_nothing_while_nothing_does(cluster, watch):
    watches, seen = watch
    assert seen.since(0)[0] == Change(resync=True), "opening the watch asks for one full reconcile"

    mark = seen.mark()
    cluster.add_node("n2", num_cpus=1)
    wait_until(lambda: any(c.scaling for c in seen.since(mark)), "a scaling change for the node that joined",
               DEADLINE_S)

    mark = seen.mark()
    actor = Named.options(name="mirrored", namespace="watchers", lifetime="detached").remote()
    assert kastor.get(actor.ping.remote()) == "pong"
    wait_until(lambda: any(("watchers", "mirrored") in c.actors for c in seen.since(mark)),
               "the named actor's change", DEADLINE_S)

    # Settled (the nodes idle long enough to count as idle): no message for a while.
    def quiet_for(seconds: float) -> bool:
        """Whether no change comes for `seconds` (an absence is only seen over a window)."""
        mark, deadline = seen.mark(), time.monotonic() + seconds
        while time.monotonic() < deadline:
            if seen.since(mark):
                return False
            time.sleep(0.1)
        return True

    wait_until(lambda: quiet_for(cluster_watch.WATCH_MIN_INTERVAL_S + 3), "the cluster settled", DEADLINE_S)
    assert quiet_for(cluster_watch.WATCH_KEEPALIVE_S + 2), "keepalives are not changes"
    assert watches.synced(CLUSTER)

    mark = seen.mark()
    cluster.kill_node("n2")
    wait_until(lambda: any(c.scaling for c in seen.since(mark)), "a scaling change for the node that died",
               DEADLINE_S)
    kastor.kill(actor)


@contextlib.contextmanager
def watched_head_of_its_own(tmp_path, cluster_id: str) -> Iterator[tuple[GcsCluster, RedisServer, Seen, HeadWatches]]:
    """A Redis and a head of their own (no node, no driver), for a test that kills or freezes
    one of them, and an open watch of that head."""
    redis = RedisServer(tmp_path / "redis-data")
    redis.data_dir.mkdir()
    redis.start()
    head = GcsCluster(tmp_path, redis, cluster_id=cluster_id)
    seen = Seen()
    watches = HeadWatches(seen)
    try:
        head.start_head()
        watches.start()
        watches.ensure(CLUSTER, Target(head.address, TOKEN))
        wait_until(lambda: watches.synced(CLUSTER), "the watch open", DEADLINE_S)
        yield head, redis, seen, watches
    finally:
        watches.stop()
        head.stop()
        redis.stop()


def test_a_watch_dropped_by_a_head_restart_reconnects_and_resyncs(tmp_path):
    """A head of its own, with no driver: this one is killed and started again."""
    with watched_head_of_its_own(tmp_path, "restarted") as (restarted, _, seen, watches):
        mark = seen.mark()
        restarted.kill_head()
        wait_until(lambda: not watches.synced(CLUSTER), "the watch dropped with the head", DEADLINE_S)
        assert Change(resync=True) in seen.since(mark), "a dropped watch asks for a reconcile"
        mark = seen.mark()
        restarted.start_head()
        wait_until(lambda: watches.synced(CLUSTER), "the watch reopened on the new head", DEADLINE_S)
        assert seen.since(mark)[0] == Change(resync=True)


def test_a_store_that_stops_answering_is_a_change_and_so_is_its_return(tmp_path):
    """A managed Redis on a lost node: its pod reports nothing and the head keeps answering, so
    the head's PING of its store is what tells the operator to reconcile (and find the node
    lost). SIGSTOP freezes the Redis as a lost node does: connections stay open, nothing answers."""
    with watched_head_of_its_own(tmp_path, "frozen") as (_, redis, seen, watches):
        mark = seen.mark()
        os.kill(redis.proc.pid, signal.SIGSTOP)
        try:
            wait_until(lambda: any(c.scaling for c in seen.since(mark)), "a change for the store gone silent",
                       DEADLINE_S)
        finally:
            os.kill(redis.proc.pid, signal.SIGCONT)
        mark = seen.mark()
        wait_until(lambda: any(c.scaling for c in seen.since(mark)), "a change for the store back", DEADLINE_S)
        assert watches.synced(CLUSTER), "the head itself kept answering"


def test_a_watch_with_a_wrong_token_is_refused(cluster):
    seen = Seen()
    watches = HeadWatches(seen)
    watches.start()
    try:
        watches.ensure(CLUSTER, Target(cluster.address, "not-the-token"))
        ok = HeadWatches(Seen())
        ok.start()
        try:  # a watch with the right token, started after the wrong one, opens: the wrong one had its chance
            ok.ensure(CLUSTER, Target(cluster.address, TOKEN))
            wait_until(lambda: ok.synced(CLUSTER), "the right token's watch open", DEADLINE_S)
        finally:
            ok.stop()
        assert not watches.synced(CLUSTER) and not seen.since(0)
    finally:
        watches.stop()



def test_a_checkpoint_is_noticed_in_redis_without_polling_the_head(cluster):
    """A DetachedActor whose status mirrors its checkpoints (spec.state.store: redis): the actor
    writes them to Redis behind the head's back, so the operator reads the checkpoint's header
    there, asks the head where it is only once, and hands the actor to its reconcile when the
    header differs from the status."""
    from kastor.operator.checkpoint_watch import CheckpointWatch
    from kastor.operator.head_client import HeadClient
    from kastor.runtime import checkpoint
    from kastor.runtime.checkpoint_stores import RedisStore

    class CountingHead(HeadClient):
        asked = 0

        def checkpoint_store(self, *args, **kwargs):
            CountingHead.asked += 1
            return super().checkpoint_store(*args, **kwargs)

    client = CountingHead()
    changed: list[tuple[str, str]] = []
    watch = CheckpointWatch(client, lambda ns, name: changed.append((ns, name)), period_s=0.2)
    watch.start()
    try:
        watch.follow("default", "ledger", Target(cluster.address, TOKEN), ("ckpt", "ledger"), {})
        time.sleep(2)  # an absence is only seen over a window: ten reads, nothing saved yet
        assert changed == [] and CountingHead.asked == 1, "the head asked once, not at every read"
        where = HeadClient().checkpoint_store(cluster.address, TOKEN)
        store = RedisStore(where.redis_address, prefix=where.key_prefix, password=where.redis_password or None)
        store.save("ckpt/ledger", store.claim("ckpt/ledger"), checkpoint.encode(b"state", 1, "ledger.Ledger"))
        wait_until(lambda: changed == [("default", "ledger")], "the saved checkpoint noticed", DEADLINE_S)
        assert ("default", "ledger") not in watch.followed(), "handed to its reconcile, which follows it anew"
        assert CountingHead.asked == 1
    finally:
        watch.stop()
        client.close()
