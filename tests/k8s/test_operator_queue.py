"""The operator's work queue (`operator/resync.py`) and pod cache (`operator/pod_cache.py`),
on real threads and a real event loop: what replaced a LIST and a fixed 5-s timer per
resource (issue 12 defect 6)."""

from __future__ import annotations

import threading
from collections import Counter

import pytest
from kastor.operator.pod_cache import PodCache, index_entries
from kastor.operator.resync import Resync
from kastor.runtime import k8s_contract as contract
from support import wait_until

from .loop_thread import LoopThread

NS = "default"


def pod(name: str, cluster: str = "c", **meta) -> dict:
    return {"metadata": {"name": name, "namespace": NS, "labels": {contract.LABEL_CLUSTER: cluster,
                                                                   contract.LABEL_MANAGED_BY: contract.MANAGER},
                         **meta}}


@pytest.fixture
def loop():
    thread = LoopThread("pod-cache-test")
    thread.start()
    yield thread
    thread.stop()


class FakeIndex(dict):
    """A kopf index's shape: key -> the collection of values of every object under that key."""

    def put(self, body: dict) -> None:
        for key, value in index_entries(NS, body).items():
            self[key] = [v for v in self.get(key, []) if v["metadata"]["name"] != body["metadata"]["name"]] + [value]


def names(pods: list[dict]) -> list[tuple[str, bool]]:
    return sorted((p["metadata"]["name"], bool(p["metadata"].get("deletionTimestamp"))) for p in pods)


def test_the_cache_shows_its_own_writes_until_the_watch_does(loop):
    index = FakeIndex()
    index.put(pod("head-1"))
    cache = PodCache(loop.loop, index)
    assert names(cache.list(NS, {contract.LABEL_CLUSTER: "c"})) == [("head-1", False)]

    cache.created(NS, pod("worker-1"))  # created, its ADDED event not here yet
    cache.deleted(NS, "head-1")  # deleted, its MODIFIED (deletionTimestamp) event not here yet
    assert names(cache.list(NS, {contract.LABEL_CLUSTER: "c"})) == [("head-1", True), ("worker-1", False)]
    assert cache.list(NS, {contract.LABEL_CLUSTER: "other"}) == []

    index.put(pod("worker-1"))
    index.put(pod("head-1", deletionTimestamp="2026-01-01T00:00:00Z"))
    assert names(cache.list(NS, {contract.LABEL_CLUSTER: "c"})) == [("head-1", True), ("worker-1", False)]
    index.clear()  # the watch says both are gone: nothing of ours is left to overlay
    assert cache.list(NS, {contract.LABEL_CLUSTER: "c"}) == []


def test_the_cache_refuses_a_query_it_cannot_answer(loop):
    cache = PodCache(loop.loop, FakeIndex())
    with pytest.raises(ValueError, match="selects by one of"):
        cache.list(NS, {contract.LABEL_ROLE: "head"})


def test_the_queue_coalesces_events_requeues_as_told_and_forgets_what_is_gone():
    runs: Counter[str] = Counter()
    release = threading.Event()
    answers = {"settling": 0.05, "settled": None, "gone": Resync.GONE}

    def reconcile(plural: str, ns: str, name: str) -> float | None:
        runs[name] += 1
        if name == "slow":
            release.wait(30)
        return answers.get(name)

    queue = Resync(reconcile, interval=3600)
    queue.start()
    try:
        for name in ("settling", "settled", "gone", "slow"):
            queue.track("actorclusters", NS, name)  # new: reconciled at once
        wait_until(lambda: runs["slow"] == 1 and runs["settled"] == 1 and runs["gone"] == 1, "the first reconciles")
        wait_until(lambda: runs["settling"] >= 3, "a settling resource polled again and again")
        assert ("actorclusters", NS, "gone") not in queue.known()
        for _ in range(5):  # a burst of pod events while its reconcile runs: one more run, not five
            queue.soon("actorclusters", NS, "slow")
        release.set()
        wait_until(lambda: runs["slow"] == 2, "one more reconcile after the burst")
        queue.soon("actorclusters", NS, "settled")
        wait_until(lambda: runs["settled"] == 2, "a pod event reconciles a settled resource at once")
        assert runs["slow"] == 2 and runs["settled"] == 2, "the long resync is not due yet"
    finally:
        release.set()
        queue.stop()


@pytest.mark.parametrize("phase, watched, recheck, due", [
    ("Ready", True, None, None),       # its head says when something changes: the long resync only
    ("Ready", True, 12.0, 12.0),       # ... and a deadline no event reports (an idle timeout)
    ("Ready", False, None, 5.0),       # no watch open (yet): polled as before
    ("Pending", True, None, 5.0),      # settling: re-checked soon
    ("Degraded", True, 1.5, 1.5),      # settling, with a deadline sooner than the re-check
    ("Suspended", False, None, None),  # only a spec change or a pod event changes it
    ("Failed", False, None, None)])
def test_a_ready_watched_cluster_waits_for_its_head_a_settling_one_is_polled(phase, watched, recheck, due):
    """Issue 12 defect 6: a running cluster is no longer polled every 5 s once its head is watched."""
    from kastor.operator import cluster_reconciler
    from kastor.operator.actions import Plan
    assert cluster_reconciler.due_in(Plan(status={"phase": phase}, recheck_s=recheck), watched, 5.0) == due


@pytest.mark.parametrize("state, watched, checkpoints, due", [
    ("Alive", True, False, None), ("Alive", False, False, 5.0), ("Alive", True, True, 5.0),
    ("Pending", True, False, 5.0), ("Restarting", True, False, 5.0), ("Dead", False, False, None)])
def test_a_live_actor_of_a_watched_cluster_waits_for_its_head(state, watched, checkpoints, due):
    from kastor.operator import actor_reconciler
    assert actor_reconciler.due_in({"state": state}, watched, 5.0, checkpoints) == due


def test_a_namespace_being_deleted_is_one_log_line_not_a_retry_storm(caplog):
    """A create refused because the namespace is terminating (403 NamespaceTerminating) waits for
    the long resync with one INFO line; any other failure is retried soon, with its traceback."""
    from kubernetes.client.exceptions import ApiException

    refused = ApiException(status=403, reason="Forbidden")
    refused.body = ('{"kind":"Status","reason":"Forbidden","details":{"name":"demo-head-x","kind":"pods",'
                    '"causes":[{"reason":"NamespaceTerminating","message":"namespace readme is being terminated"}]}}')
    runs: Counter[str] = Counter()

    def reconcile(plural: str, ns: str, name: str) -> float | None:
        runs[name] += 1
        raise refused if name == "doomed" else RuntimeError("the head did not answer")

    queue = Resync(reconcile, interval=3600, retry_s=0.05)
    caplog.set_level("INFO", logger="kastor.operator.resync")
    queue.start()
    try:
        queue.track("actorclusters", NS, "doomed")
        queue.track("actorclusters", NS, "flaky")
        wait_until(lambda: runs["flaky"] >= 4, "an ordinary failure retried soon")
        assert runs["doomed"] == 1, "a namespace being deleted is not retried before the long resync"
    finally:
        queue.stop()
    doomed = [r for r in caplog.records if "doomed" in r.getMessage()]
    assert len(doomed) == 1 and doomed[0].levelname == "INFO" and doomed[0].exc_info is None
    assert "namespace is being deleted" in doomed[0].getMessage()
    assert any(r.exc_info for r in caplog.records if "flaky" in r.getMessage())


def test_the_deadlines_no_event_reports_are_when_the_next_reconcile_is_due():
    """A Ready, watched cluster is not polled, so what changes with time alone must be asked for:
    a NotReady node reaching the lost-node grace, a Terminating pod reaching its deletion
    deadline, an idle worker reaching idleTimeoutSeconds."""
    import datetime

    from kastor.operator import lost_nodes, scaling
    from kastor.operator.spec import parse_cluster
    from kastor.runtime.protocol import kastor_pb2 as pb

    now = 1_000_000.0
    on = {"spec": {"nodeName": "n-lost"}, "metadata": {"name": "w"}}
    stamp = datetime.datetime.fromtimestamp(now + 7, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    dying = {"spec": {"nodeName": "n-lost"}, "metadata": {"name": "x", "deletionTimestamp": stamp}}
    fresh = {"n-lost": lost_nodes.NodeHealth(exists=True, ready=False, not_ready_since=now - 20)}
    old = {"n-lost": lost_nodes.NodeHealth(exists=True, ready=False, not_ready_since=now - 100)}
    assert lost_nodes.next_deadline([on], fresh, now, 60) == 40
    assert lost_nodes.next_deadline([on, dying], old, now, 60) == 7
    assert lost_nodes.next_deadline([on], {}, now, 60) is None

    spec = parse_cluster({"image": "i", "autoscaling": {"enabled": True, "idleTimeoutSeconds": 30},
                          "workerGroups": [{"name": "cpu", "replicas": 1, "maxReplicas": 2}]})
    demand = pb.ClusterDemand(nodes=[pb.NodeUsage(node_id="busy", idle_s=0), pb.NodeUsage(node_id="a", idle_s=10),
                                     pb.NodeUsage(node_id="b", idle_s=25), pb.NodeUsage(node_id="c", idle_s=99),
                                     pb.NodeUsage(node_id="d", idle_s=29, draining=True)])
    assert scaling.next_idle_deadline(spec, demand) == 5 + scaling.IDLE_MARGIN_S
    assert scaling.next_idle_deadline(spec, None) is None
    no_autoscaling = parse_cluster({"image": "i", "workerGroups": [{"name": "cpu", "replicas": 1}]})
    assert scaling.next_idle_deadline(no_autoscaling, demand) is None
