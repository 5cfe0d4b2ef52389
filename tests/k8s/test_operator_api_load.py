"""What the operator asks of the real API server (issue 12 defect 6), seen through a recording
proxy (`apirecorder.py`) between the operator and the control plane: its pod watch is
filtered by the API server, an idle operator LISTs nothing however often it reconciles, and
its liveness probe answers while every reconcile thread waits on a slow API server.
"""

from __future__ import annotations

import os
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator

import kubernetes
import pytest
from kastor.runtime.launcher import free_port
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


# ---- a Ready cluster, idle: nothing is polled (its head is watched instead) ----

QUIET_NS = "kastor-api-quiet"
OLD_POLL_S = 5.0  # the default KASTOR_OPERATOR_POLL_S, with which a Ready cluster used to be reconciled
QUIET = {"image": "kastor:dev", "imagePullPolicy": "Never", "head": {"numCpus": 1},
         "autoscaling": {"enabled": True, "idleTimeoutSeconds": 3600},
         "workerGroups": [{"name": "cpu", "replicas": 1, "minReplicas": 1, "maxReplicas": 1, "numCpus": 1}]}
DRIVER = """
import kastor
kastor.init(address="quiet-head.kastor-api-quiet.svc:6380")
@kastor.remote
class Special:
    pass
Special.options(name="special", namespace="quiet", lifetime="detached", resources={"special": 1}).remote()
print("CREATED", flush=True)
"""


@pytest.fixture(scope="module")
def nodes(real_k8s, tmp_path_factory):
    from .real_cluster import RealCluster, netns_problem
    if netns_problem() is not None:
        pytest.skip(netns_problem())
    c = RealCluster(real_k8s, tmp_path_factory.mktemp("api-quiet"), nodes=("quiet-a",)).start()
    try:
        c.make_namespace(QUIET_NS)
        yield c
    finally:
        c.stop()


def head_counters(c, token: str) -> dict[str, float]:
    """The head's kastor_head_operator_requests_total by method, from its dashboard port (HTTP,
    not an RPC of the kind it counts)."""
    service = c.core.read_namespaced_service("quiet-head", QUIET_NS)
    port = next(p.port for p in service.spec.ports if p.name == "dashboard")
    request = urllib.request.Request(f"http://{c.service_host_address('quiet-head', QUIET_NS)}:{port}/metrics",
                                     headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=15) as reply:
        text = reply.read().decode()
    return {line.split('"')[1]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
            if line.startswith("kastor_head_operator_requests_total{")}


def test_an_idle_ready_cluster_costs_no_api_request_and_no_head_poll(real_k8s, api, nodes, recorder,  # noqa: F811
                                                                    tmp_path):
    """Issue 12 defect 6. A Ready cluster used to be reconciled every KASTOR_OPERATOR_POLL_S (its
    head asked which nodes it lost and what work waits): per poll a GET of the cluster, its token
    Secret, its two Services and its two PodDisruptionBudgets, and ListNodes and GetClusterDemand
    on the head. Now the operator holds one watch on the head, which says when something
    changed: over three old poll periods, an idle Ready cluster costs no API request (watches
    aside) and no head RPC. New unmet demand is still acted on at once (through the watch)."""
    import base64
    import subprocess
    import sys
    log = tmp_path / "operator.log"
    env = {**os.environ, "KUBECONFIG": str(recorder.kubeconfig), "KASTOR_OPERATOR_RESYNC_S": "600",
           "KASTOR_OPERATOR_POLL_S": "2", "PYTHONUNBUFFERED": "1"}
    with open(log, "ab") as out:
        proc = subprocess.Popen(nodes.command([sys.executable, "-m", "kastor.operator", "--namespace", QUIET_NS,
                                               "--standalone", "--liveness", ""]),
                                env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    objects = kubernetes.client.CustomObjectsApi(real_k8s.api_client)

    def phase() -> str:
        try:
            body = objects.get_namespaced_custom_object(GROUP, VERSION, QUIET_NS, "actorclusters", "quiet")
        except kubernetes.client.ApiException:
            return ""
        return (body.get("status") or {}).get("phase", "")

    try:
        objects.create_namespaced_custom_object(GROUP, VERSION, QUIET_NS, "actorclusters",
                                                {**custom_object("actorclusters", "quiet", QUIET),
                                                 "metadata": {"name": "quiet", "namespace": QUIET_NS}})
        nodes.wait(lambda: phase() == "Ready", f"ActorCluster quiet Ready (log: {log})", 240)
        token = base64.b64decode(nodes.core.read_namespaced_secret("quiet-token", QUIET_NS).data["token"]).decode()

        window_s = 3 * OLD_POLL_S
        windows: list[Counter] = []

        def a_quiet_window() -> bool:
            """Whether the operator sent nothing but watches for `window_s` (it settles first:
            its own status writes, the watch's first reconcile)."""
            mark, before = len(recorder.seen()), head_counters(nodes, token)
            deadline = time.monotonic() + window_s
            while time.monotonic() < deadline:
                time.sleep(0.5)  # an absence is only seen over a window
            sent = Counter((r.verb, r.resource) for r in recorder.seen()[mark:] if r.verb != "WATCH")
            after = head_counters(nodes, token)
            sent.update({("head", m): after.get(m, 0) - before.get(m, 0) for m in after
                         if after.get(m, 0) != before.get(m, 0)})
            windows.append(sent)
            return not sent

        deadline = time.monotonic() + 120
        while not a_quiet_window():
            assert time.monotonic() < deadline, \
                f"every {window_s:g} s window of the Ready cluster had requests: {[dict(w) for w in windows]}"
        assert phase() == "Ready"
        assert head_counters(nodes, token).get("WatchCluster") == 1, "one watch, held open"

        # Demand no group can hold: the head's watch says so, and status shows it at once.
        driver = subprocess.run(nodes.command([sys.executable, "-c", DRIVER]), capture_output=True, text=True,
                                env={**os.environ, "KASTOR_TOKEN": token}, timeout=180)
        assert "CREATED" in driver.stdout, driver.stderr[-3000:]

        def reported() -> bool:
            body = objects.get_namespaced_custom_object(GROUP, VERSION, QUIET_NS, "actorclusters", "quiet")
            return "fits no worker group" in ((body.get("status") or {}).get("lastScaling") or {}).get("reason", "")

        nodes.wait(reported, f"the unmet demand in status.lastScaling (log: {log})", 60)
    finally:
        stop(proc)
        try:
            objects.delete_namespaced_custom_object(GROUP, VERSION, QUIET_NS, "actorclusters", "quiet")
        except kubernetes.client.ApiException:
            pass
