"""What the operator asks of the real API server (issue 12 defect 6), seen through a recording
proxy (`apirecorder.py`) between the operator and the control plane: its pod watch is
filtered by the API server, an idle operator LISTs nothing however often it reconciles, and
its liveness probe answers while every reconcile thread waits on a slow API server.
"""

from __future__ import annotations

import socket
import urllib.request
from collections import Counter
from collections.abc import Iterator

import kubernetes
import pytest
from support import wait_until

from .apirecorder import ApiRecorder
from .test_operator_real import NAMESPACE, get, namespace, start_operator, stop  # noqa: F401
from .test_real_apiserver import CONTROLLER_DEADLINE_S, GROUP, VERSION, api, custom_object  # noqa: F401

OWN_PODS = "app.kubernetes.io/managed-by=kastor-operator"


@pytest.fixture
def recorder(real_k8s, tmp_path) -> Iterator[ApiRecorder]:
    rec = ApiRecorder(real_k8s.api_client, tmp_path).start()
    yield rec
    rec.stop()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def create_cluster(api, name: str) -> None:  # noqa: F811
    kubernetes.client.CustomObjectsApi(api).create_namespaced_custom_object(
        GROUP, VERSION, NAMESPACE, "actorclusters", custom_object("actorclusters", name, {"image": "kastor:dev"}))


def delete_cluster(api, name: str) -> None:  # noqa: F811
    kubernetes.client.CustomObjectsApi(api).delete_namespaced_custom_object(GROUP, VERSION, NAMESPACE,
                                                                            "actorclusters", name)


def test_the_pod_watch_is_filtered_by_the_api_server(real_k8s, namespace, recorder, tmp_path):  # noqa: F811
    """The operator's pod watch (and its initial list) carries a labelSelector: the API server
    sends it its own pods only, not every pod of the namespace (kopf's `labels=` filters client side)."""
    log = tmp_path / "operator.log"
    proc = start_operator(real_k8s, log, kubeconfig=recorder.kubeconfig)
    try:
        wait_until(lambda: recorder.seen(lambda r: r.resource == "pods" and r.verb == "WATCH"),
                   f"the operator's pod watch (log: {log})", CONTROLLER_DEADLINE_S)
        pod_reads = recorder.seen(lambda r: r.resource == "pods" and r.verb in ("LIST", "WATCH"))
        assert pod_reads and all(r.query.get("labelSelector") == OWN_PODS for r in pod_reads), pod_reads
    finally:
        stop(proc)


def test_an_idle_operator_lists_nothing_however_often_it_reconciles(real_k8s, api, namespace, recorder,  # noqa: F811
                                                                     tmp_path):
    """Reconciles read pods from the operator's watch cache (a kopf index), not a LIST each. With
    no node, the head stays Pending, so the cluster is polled every 2 s; over five polls the
    operator sends no LIST at all (its watches stay open)."""
    log = tmp_path / "operator.log"
    proc = start_operator(real_k8s, log, kubeconfig=recorder.kubeconfig)
    try:
        create_cluster(api, "idle")
        wait_until(lambda: (get(api, "actorclusters", "idle") or {}).get("status", {}).get("conditions"),
                   f"the operator wrote status (log: {log})", CONTROLLER_DEADLINE_S)
        mark = len(recorder.seen())

        def polls() -> int:
            return sum(1 for r in recorder.seen()[mark:]
                       if r.verb == "GET" and r.resource == "actorclusters" and r.path.endswith("/idle"))

        wait_until(lambda: polls() >= 5, f"five polls of the cluster (log: {log})", CONTROLLER_DEADLINE_S)
        window = recorder.seen()[mark:]
        verbs = Counter((r.verb, r.resource) for r in window)
        assert not [r for r in window if r.verb == "LIST"], f"requests in the idle window: {dict(verbs)}"
        head_pods = kubernetes.client.CoreV1Api(api).list_namespaced_pod(
            NAMESPACE, label_selector="kastor.dev/cluster=idle,kastor.dev/role=head").items
        assert len(head_pods) == 1, "one head, though the cache lags the operator's own create"
    finally:
        stop(proc)
        delete_cluster(api, "idle")


def test_liveness_answers_while_every_reconcile_thread_waits(real_k8s, api, namespace, recorder,  # noqa: F811
                                                             tmp_path):
    """Two reconcile threads, both stuck on a slow API server (the recorder holds their reads of
    the token Secrets): the liveness probe has a thread of its own and still answers, where it
    used to queue behind them and get a healthy operator restarted."""
    log = tmp_path / "operator.log"
    port = free_port()
    proc = start_operator(real_k8s, log, kubeconfig=recorder.kubeconfig,
                          env={"KASTOR_OPERATOR_WORKERS": "2"}, liveness=f"http://127.0.0.1:{port}/healthz")
    try:
        recorder.hold(lambda r: r.verb == "GET" and r.resource == "secrets")
        create_cluster(api, "slow-a")
        create_cluster(api, "slow-b")
        wait_until(lambda: recorder.held() >= 2, f"two reconciles waiting on the API server (log: {log})",
                   CONTROLLER_DEADLINE_S)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=15) as reply:
            assert reply.status == 200
        assert recorder.held() >= 2, "the reconciles were still waiting when the probe answered"
    finally:
        recorder.release()
        stop(proc)
        for name in ("slow-a", "slow-b"):
            delete_cluster(api, name)
