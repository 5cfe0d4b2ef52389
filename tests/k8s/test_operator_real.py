"""The operator against the real control plane (`controlplane_fixture.py`): what only real
admission, finalizer handling and garbage collection show.

There is no kubelet here, so pods stay Pending: these tests check what the operator does
to the API objects, not Kastor processes (the emulated cluster covers those).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import kubernetes
import pytest
from kastor.runtime.launcher import free_port
from kubernetes.client.rest import ApiException
from support import wait_until

from .test_real_apiserver import CONTROLLER_DEADLINE_S, GROUP, VERSION, api, custom_object  # noqa: F401

NAMESPACE = "kastor-real-operator"


@pytest.fixture(scope="module")
def namespace(api) -> str:  # noqa: F811 - the fixture imported above
    try:
        kubernetes.client.CoreV1Api(api).create_namespace({"metadata": {"name": NAMESPACE}})
    except ApiException as e:
        if e.status != 409:
            raise
    return NAMESPACE


def start_operator(real_k8s, log_path, *extra: str, kubeconfig=None, env=None, liveness: str = "",
                   namespace: str = NAMESPACE, wrap: Callable[[list[str]], list[str]] = list) -> subprocess.Popen:
    """`python -m kastor.operator --standalone` on the host, watching `namespace`, its output in
    `log_path`; `wrap` turns its argv into the command to run (RealCluster.command: outside the
    pod network, resolving Services' names)."""
    env = {**os.environ, "KUBECONFIG": str(kubeconfig or real_k8s.kubeconfig), "KASTOR_OPERATOR_RESYNC_S": "2",
           "KASTOR_OPERATOR_POLL_S": "2", "PYTHONUNBUFFERED": "1", **(env or {})}
    with open(log_path, "ab") as out:
        return subprocess.Popen(wrap([sys.executable, "-m", "kastor.operator", "--namespace", namespace,
                                      "--standalone", "--liveness", liveness, *extra]),
                                env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                cwd=log_path.parent)


@contextlib.contextmanager
def running_operator(real_k8s, log_path, *extra: str, **options: Any) -> Iterator[subprocess.Popen]:
    """start_operator (same arguments) for the duration of a `with`, stopped at its end."""
    proc = start_operator(real_k8s, log_path, *extra, **options)
    try:
        yield proc
    finally:
        stop(proc)


@pytest.fixture
def operator(real_k8s, namespace, tmp_path) -> Iterator[subprocess.Popen]:
    proc = start_operator(real_k8s, tmp_path / "operator.log")
    proc.log_path = tmp_path / "operator.log"  # type: ignore[attr-defined]
    yield proc
    stop(proc)


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def get(api, plural: str, name: str) -> dict | None:  # noqa: F811
    try:
        return kubernetes.client.CustomObjectsApi(api).get_namespaced_custom_object(GROUP, VERSION, NAMESPACE,
                                                                                    plural, name)
    except ApiException as e:
        if e.status == 404:
            return None
        raise


def pods_of(api, cluster: str) -> list[str]:  # noqa: F811
    pods = kubernetes.client.CoreV1Api(api).list_namespaced_pod(NAMESPACE,
                                                                label_selector=f"kastor.dev/cluster={cluster}")
    return [p.metadata.name for p in pods.items]


def test_a_cluster_carries_no_finalizer_and_is_deleted_with_the_operator_down(api, operator):  # noqa: F811
    """Issue 12 defect 1: only resources with cleanup to do carry a finalizer, so deleting an
    in-memory ActorCluster takes no operator at all; garbage collection removes its pods."""
    objects = kubernetes.client.CustomObjectsApi(api)
    spec = {"image": "kastor:dev", "workerGroups": [{"name": "cpu", "replicas": 1}]}
    objects.create_namespaced_custom_object(GROUP, VERSION, NAMESPACE, "actorclusters",
                                            custom_object("actorclusters", "nofin", spec))
    log = operator.log_path
    wait_until(lambda: len(pods_of(api, "nofin")) == 1, "the operator created the head pod (workers wait for it)",
               CONTROLLER_DEADLINE_S)
    wait_until(lambda: (get(api, "actorclusters", "nofin") or {}).get("status", {}).get("phase"),
               f"the operator wrote status (log: {log})", CONTROLLER_DEADLINE_S)
    # kopf adds a finalizer before it runs the first handler, so with status written it would be there.
    assert not (get(api, "actorclusters", "nofin")["metadata"].get("finalizers")), log.read_text()[-3000:]

    stop(operator)
    objects.delete_namespaced_custom_object(GROUP, VERSION, NAMESPACE, "actorclusters", "nofin")
    wait_until(lambda: get(api, "actorclusters", "nofin") is None, "the ActorCluster gone without the operator", 10)
    wait_until(lambda: not pods_of(api, "nofin"), "garbage collection removed its pods", CONTROLLER_DEADLINE_S)


def test_clusters_with_cleanup_to_do_carry_the_finalizer(api, operator):  # noqa: F811
    """An external Redis outlives the cluster, and so would its keys: that cluster keeps the finalizer."""
    objects = kubernetes.client.CustomObjectsApi(api)
    spec = {"image": "kastor:dev", "gcs": {"redis": {"address": "127.0.0.1:1"}}}
    objects.create_namespaced_custom_object(GROUP, VERSION, NAMESPACE, "actorclusters",
                                            custom_object("actorclusters", "ext", spec))
    wait_until(lambda: "kastor.dev/finalizer" in ((get(api, "actorclusters", "ext") or {})["metadata"]
                                                 .get("finalizers") or []),
               f"the external-Redis cluster's finalizer (log: {operator.log_path})", CONTROLLER_DEADLINE_S)


HOLD = "kastor.test/hold"  # a finalizer of the test's: keeps a deleted object Terminating, as a lost node does


def hold(api, kind: str, name: str, on: bool) -> None:  # noqa: F811
    core = kubernetes.client.CoreV1Api(api)
    patch = {"metadata": {"finalizers": [HOLD] if on else None}}
    try:
        (core.patch_namespaced_pod if kind == "pod" else core.patch_namespaced_secret)(name, NAMESPACE, patch)
    except ApiException as e:
        if e.status != 404:
            raise


def head_pods(api, cluster: str) -> list:  # noqa: F811
    return kubernetes.client.CoreV1Api(api).list_namespaced_pod(
        NAMESPACE, label_selector=f"kastor.dev/cluster={cluster},kastor.dev/role=head").items


def test_a_head_stuck_terminating_is_replaced_and_a_namesakes_children_are_not_adopted(api, operator):  # noqa: F811
    """Issue 12 defect 2. A head pod on a lost node stays Terminating: with a fixed name it was
    never replaced. And a cluster re-created under its name must neither adopt the old head
    nor mount the old token Secret, which garbage collection is about to delete."""
    objects = kubernetes.client.CustomObjectsApi(api)
    spec = {"image": "kastor:dev"}
    held: list[tuple[str, str]] = []
    try:
        objects.create_namespaced_custom_object(GROUP, VERSION, NAMESPACE, "actorclusters",
                                                custom_object("actorclusters", "lost", spec))
        wait_until(lambda: len(head_pods(api, "lost")) == 1, "the first head pod", CONTROLLER_DEADLINE_S)
        first = head_pods(api, "lost")[0].metadata.name
        hold(api, "pod", first, True)
        held.append(("pod", first))
        kubernetes.client.CoreV1Api(api).delete_namespaced_pod(first, NAMESPACE)
        wait_until(lambda: any(p.metadata.deletion_timestamp is None for p in head_pods(api, "lost")),
                   f"a new head beside the one stuck Terminating (log: {operator.log_path})", CONTROLLER_DEADLINE_S)

        # Delete the cluster while its Secret and a head are held, and re-create it at once.
        old_uid = get(api, "actorclusters", "lost")["metadata"]["uid"]
        hold(api, "secret", "lost-token", True)
        held.append(("secret", "lost-token"))
        for pod in head_pods(api, "lost"):
            hold(api, "pod", pod.metadata.name, True)
            held.append(("pod", pod.metadata.name))
        objects.delete_namespaced_custom_object(GROUP, VERSION, NAMESPACE, "actorclusters", "lost")
        wait_until(lambda: get(api, "actorclusters", "lost") is None, "the first ActorCluster gone", 30)
        objects.create_namespaced_custom_object(GROUP, VERSION, NAMESPACE, "actorclusters",
                                                custom_object("actorclusters", "lost", spec))
        new_uid = get(api, "actorclusters", "lost")["metadata"]["uid"]
        assert new_uid != old_uid

        def ready_reason() -> str:
            conditions = ((get(api, "actorclusters", "lost") or {}).get("status") or {}).get("conditions") or []
            return next((c["reason"] for c in conditions if c["type"] == "Ready"), "")

        wait_until(lambda: ready_reason() == "WaitingForOldSecret",
                   f"the new cluster waiting out the old Secret (log: {operator.log_path})", CONTROLLER_DEADLINE_S)
        owners = {p.metadata.owner_references[0].uid for p in head_pods(api, "lost")}
        assert owners == {old_uid}, "no head for the new cluster while its token would be the old one"

        hold(api, "secret", "lost-token", False)  # garbage collection may now finish with it
        held.remove(("secret", "lost-token"))

        def new_head() -> bool:
            return any(p.metadata.owner_references[0].uid == new_uid for p in head_pods(api, "lost"))

        wait_until(new_head, f"a head pod of the new cluster (log: {operator.log_path})", CONTROLLER_DEADLINE_S)
        secret = kubernetes.client.CoreV1Api(api).read_namespaced_secret("lost-token", NAMESPACE)
        assert secret.metadata.owner_references[0].uid == new_uid
        old_heads = [p for p in head_pods(api, "lost") if p.metadata.owner_references[0].uid == old_uid]
        assert old_heads and all(p.metadata.deletion_timestamp for p in old_heads), "the old heads left alone"
    finally:
        for kind, name in held:
            hold(api, kind, name, False)


def test_a_head_that_cannot_be_scheduled_says_why(api, operator):  # noqa: F811
    """Issue 12 defect 10: this control plane has no node, so the scheduler marks the head
    Unschedulable; the HeadReady condition and a Warning Event carry its message."""
    objects = kubernetes.client.CustomObjectsApi(api)
    objects.create_namespaced_custom_object(GROUP, VERSION, NAMESPACE, "actorclusters",
                                            custom_object("actorclusters", "nowhere", {"image": "kastor:dev"}))

    def head_condition() -> dict:
        conditions = ((get(api, "actorclusters", "nowhere") or {}).get("status") or {}).get("conditions") or []
        return next((c for c in conditions if c["type"] == "HeadReady"), {})

    wait_until(lambda: head_condition().get("reason") == "Unschedulable",
               f"HeadReady Unschedulable (log: {operator.log_path})", CONTROLLER_DEADLINE_S)
    pod = kubernetes.client.CoreV1Api(api).list_namespaced_pod(
        NAMESPACE, label_selector="kastor.dev/cluster=nowhere,kastor.dev/role=head").items[0]
    scheduler_says = next(c.message for c in pod.status.conditions if c.type == "PodScheduled")
    assert scheduler_says and scheduler_says in head_condition()["message"], head_condition()
    events = kubernetes.client.CoreV1Api(api).list_namespaced_event(NAMESPACE).items
    wait_until(lambda: any(e.reason == "Unschedulable" and e.involved_object.name == "nowhere" and e.type == "Warning"
                           for e in kubernetes.client.CoreV1Api(api).list_namespaced_event(NAMESPACE).items),
               f"a Warning Event on the ActorCluster (events: {[(e.reason, e.involved_object.name) for e in events]})",
               CONTROLLER_DEADLINE_S)
    objects.delete_namespaced_custom_object(GROUP, VERSION, NAMESPACE, "actorclusters", "nowhere")


def test_a_spec_change_rolls_the_head_and_patches_the_service(api, operator):  # noqa: F811
    """Issue 12 defect 4: a new image reached no running pod, and a new Service type or port
    never reached the Service, while status claimed the new generation. Now the head is
    recreated from the new spec, the Service is patched in place (same cluster IP, node ports
    kept), and observedGeneration says the generation every running pod was built from."""
    objects = kubernetes.client.CustomObjectsApi(api)
    core = kubernetes.client.CoreV1Api(api)
    log = operator.log_path
    objects.create_namespaced_custom_object(GROUP, VERSION, NAMESPACE, "actorclusters",
                                            custom_object("actorclusters", "roll", {"image": "kastor:1"}))

    def live_heads() -> list:
        return [p for p in head_pods(api, "roll") if p.metadata.deletion_timestamp is None]

    def observed() -> int | None:
        return ((get(api, "actorclusters", "roll") or {}).get("status") or {}).get("observedGeneration")

    wait_until(lambda: len(live_heads()) == 1 and observed() == 1, f"the first head (log: {log})",
               CONTROLLER_DEADLINE_S)
    first = live_heads()[0].metadata.name
    cluster_ip = core.read_namespaced_service("roll-head", NAMESPACE).spec.cluster_ip

    objects.patch_namespaced_custom_object(GROUP, VERSION, NAMESPACE, "actorclusters", "roll", {"spec": {
        "image": "kastor:2", "head": {"serviceType": "NodePort", "ports": {"control": 7000}}}})

    def rolled() -> bool:
        heads = live_heads()
        return len(heads) == 1 and heads[0].metadata.name != first and heads[0].spec.containers[0].image == "kastor:2"

    wait_until(rolled, f"a head built from the new spec (log: {log})", CONTROLLER_DEADLINE_S)
    assert "--port" in (args := live_heads()[0].spec.containers[0].args) and args[args.index("--port") + 1] == "7000"

    def service() -> tuple[str, dict[str, int]]:
        spec = core.read_namespaced_service("roll-head", NAMESPACE).spec
        return spec.type, {p.name: p.port for p in spec.ports}

    wait_until(lambda: service() == ("NodePort", {"control": 7000, "client": 10001, "relay": 10002, "dashboard": 8265}),
               f"the Service patched (log: {log})", CONTROLLER_DEADLINE_S)
    patched = core.read_namespaced_service("roll-head", NAMESPACE).spec
    assert patched.cluster_ip == cluster_ip, "patched in place, not re-created"
    node_ports = {p.name: p.node_port for p in patched.ports}
    wait_until(lambda: observed() == 2, f"observedGeneration 2 once the head runs it (log: {log})",
               CONTROLLER_DEADLINE_S)
    assert get(api, "actorclusters", "roll")["metadata"]["generation"] == 2

    # A change that shapes only the Service restarts nothing, and the allocated node ports stay.
    head = live_heads()[0].metadata.name
    objects.patch_namespaced_custom_object(GROUP, VERSION, NAMESPACE, "actorclusters", "roll",
                                           {"spec": {"head": {"ports": {"clientNodePort": 30123}}}})

    def node_ports_now() -> dict[str, int]:
        return {p.name: p.node_port for p in core.read_namespaced_service("roll-head", NAMESPACE).spec.ports}

    wait_until(lambda: node_ports_now()["client"] == 30123, f"the client node port patched (log: {log})",
               CONTROLLER_DEADLINE_S)
    assert node_ports_now()["control"] == node_ports["control"], "an allocated node port is kept"
    objects.patch_namespaced_custom_object(GROUP, VERSION, NAMESPACE, "actorclusters", "roll",
                                           {"spec": {"head": {"serviceType": "ClusterIP"}}})
    wait_until(lambda: service()[0] == "ClusterIP", f"back to ClusterIP (log: {log})", CONTROLLER_DEADLINE_S)
    wait_until(lambda: observed() == 4, f"observedGeneration 4 (log: {log})", CONTROLLER_DEADLINE_S)
    assert [p.metadata.name for p in live_heads()] == [head], "Service fields are not in the head's hash"
    objects.delete_namespaced_custom_object(GROUP, VERSION, NAMESPACE, "actorclusters", "roll")


def test_dev_shm_and_advertised_resources_follow_the_containers_resources(api, operator):  # noqa: F811
    """Issue 12 defect 14 on real admission: objectStoreMemory is a quantity (a bad one is
    refused by the CRD schema), it becomes /dev/shm's sizeLimit, which the API server's pod
    validation accepts, and the head advertises CPUs and memory from its resources."""
    objects = kubernetes.client.CustomObjectsApi(api)
    bad = {"image": "kastor:dev", "head": {"objectStoreMemory": "lots"}}
    with pytest.raises(ApiException) as refused:
        objects.create_namespaced_custom_object(GROUP, VERSION, NAMESPACE, "actorclusters",
                                                custom_object("actorclusters", "shm", bad))
    assert refused.value.status == 422 and "objectStoreMemory" in refused.value.body
    spec = {"image": "kastor:dev", "head": {"objectStoreMemory": "256Mi",
                                           "resources": {"limits": {"cpu": "1200m", "memory": "1Gi"}}}}
    objects.create_namespaced_custom_object(GROUP, VERSION, NAMESPACE, "actorclusters",
                                            custom_object("actorclusters", "shm", spec))
    wait_until(lambda: len(head_pods(api, "shm")) == 1, f"the head pod (log: {operator.log_path})",
               CONTROLLER_DEADLINE_S)
    head = head_pods(api, "shm")[0]
    assert next(v for v in head.spec.volumes if v.name == "dshm").empty_dir.size_limit == str(256 * 2**20)
    args = head.spec.containers[0].args
    assert args[args.index("--num-cpus") + 1] == "2" and args[args.index("--memory") + 1] == str(2**30)
    objects.delete_namespaced_custom_object(GROUP, VERSION, NAMESPACE, "actorclusters", "shm")


def events_on(api, name: str) -> list:  # noqa: F811
    return [e for e in kubernetes.client.CoreV1Api(api).list_namespaced_event(NAMESPACE).items
            if e.involved_object.name == name]


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
        return reply.read().decode()


def test_disruption_budgets_the_dashboard_service_and_an_event_per_pod(api, namespace, real_k8s,  # noqa: F811
                                                                       tmp_path):
    """Issue 12 features: the head and the managed Redis get PodDisruptionBudgets the disruption
    controller counts them by (and that go when switched off), the dashboard port has a Service
    of its own, and every pod the operator creates or deletes is an Event on the ActorCluster
    that names the pod and says why, and a count on the operator's metrics port."""
    port = free_port()
    operator = start_operator(real_k8s, tmp_path / "operator.log", "--metrics-port", str(port),
                              "--metrics-address", "127.0.0.1")
    operator.log_path = tmp_path / "operator.log"  # type: ignore[attr-defined]
    try:
        _budgets_service_and_events(api, operator, port)
    finally:
        stop(operator)


def _budgets_service_and_events(api, operator, port: int) -> None:  # noqa: F811
    objects = kubernetes.client.CustomObjectsApi(api)
    policy = kubernetes.client.PolicyV1Api(api)
    core = kubernetes.client.CoreV1Api(api)
    log = operator.log_path
    spec = {"image": "kastor:dev", "gcs": {"redis": {"managed": True}}}
    objects.create_namespaced_custom_object(GROUP, VERSION, NAMESPACE, "actorclusters",
                                            custom_object("actorclusters", "pdb", spec))
    uid = get(api, "actorclusters", "pdb")["metadata"]["uid"]

    def budgets() -> dict:
        return {b.metadata.name: b for b in policy.list_namespaced_pod_disruption_budget(NAMESPACE).items
                if b.metadata.name.startswith("pdb-")}

    # expectedPods is the disruption controller's count of the pods the selector matches
    wait_until(lambda: {n: b.status and b.status.expected_pods for n, b in budgets().items()}
               == {"pdb-head": 1, "pdb-redis": 1},
               f"both budgets, each matching its one pod (log: {log})", CONTROLLER_DEADLINE_S)
    for role in ("head", "redis"):
        budget = budgets()[f"pdb-{role}"]
        assert budget.spec.min_available == 1 and budget.spec.unhealthy_pod_eviction_policy == "AlwaysAllow"
        assert budget.spec.selector.match_labels == {"kastor.dev/cluster": "pdb", "kastor.dev/role": role}
        assert budget.metadata.owner_references[0].uid == uid and budget.metadata.owner_references[0].controller

    wait_until(lambda: any(s.metadata.name == "pdb-dashboard" for s in core.list_namespaced_service(NAMESPACE).items),
               f"the dashboard Service (log: {log})", CONTROLLER_DEADLINE_S)
    dashboard = core.read_namespaced_service("pdb-dashboard", NAMESPACE)
    assert [(p.name, p.port) for p in dashboard.spec.ports] == [("dashboard", 8265)]
    assert dashboard.spec.selector == {"kastor.dev/cluster": "pdb", "kastor.dev/role": "head"}
    assert dashboard.metadata.owner_references[0].uid == uid

    pods = {p.metadata.labels["kastor.dev/role"]: p.metadata.name
            for p in core.list_namespaced_pod(NAMESPACE, label_selector="kastor.dev/cluster=pdb").items}

    def created(role: str) -> list:
        return [e for e in events_on(api, "pdb") if e.reason == "CreatedPod" and pods[role] in e.message]

    def created_redis_set() -> list:  # the managed Redis is a StatefulSet: its controller makes the pod
        return [e for e in events_on(api, "pdb") if e.reason == "CreatedStatefulSet" and "pdb-redis" in e.message]

    wait_until(lambda: created("head") and created_redis_set(), f"a CreatedPod Event for the head, "
               f"CreatedStatefulSet for the Redis (events: {[(e.reason, e.message) for e in events_on(api, 'pdb')]})",
               CONTROLLER_DEADLINE_S)
    assert "HeadMissing" in created("head")[0].message and created("head")[0].type == "Normal"
    assert "RedisMissing" in created_redis_set()[0].message

    objects.patch_namespaced_custom_object(GROUP, VERSION, NAMESPACE, "actorclusters", "pdb",
                                           {"spec": {"disruptionBudget": {"enabled": False}}})
    wait_until(lambda: not budgets(), f"the budgets deleted when switched off (log: {log})", CONTROLLER_DEADLINE_S)

    objects.patch_namespaced_custom_object(GROUP, VERSION, NAMESPACE, "actorclusters", "pdb",
                                           {"spec": {"suspend": True}})

    def deleted_head() -> list:
        return [e for e in events_on(api, "pdb") if e.reason == "DeletedPod" and pods["head"] in e.message]

    wait_until(deleted_head, f"a DeletedPod Event for the head (events: "
               f"{[(e.reason, e.message) for e in events_on(api, 'pdb')]})", CONTROLLER_DEADLINE_S)
    assert "Suspended" in deleted_head()[0].message
    metrics = scrape(port)
    for line in ('kastor_operator_pod_actions_total{action="created",reason="HeadMissing",role="head"} 1.0',
                 'kastor_operator_pod_actions_total{action="deleted",reason="Suspended",role="head"} 1.0'):
        assert line in metrics, metrics
    assert 'kastor_operator_reconciles_total{resource="actorclusters",result="ok"}' in metrics, metrics
    objects.delete_namespaced_custom_object(GROUP, VERSION, NAMESPACE, "actorclusters", "pdb")


def test_conditions_are_a_list_map_keyed_by_type(api, namespace):  # noqa: F811
    """Conditions have metav1.Condition's shape: one per type (the API server rejects a second
    entry of a type), with reason, message and lastTransitionTime required."""
    objects = kubernetes.client.CustomObjectsApi(api)
    for plural, name, spec in (("actorclusters", "conds", {"image": "kastor:dev"}),
                               ("detachedactors", "conds", {"clusterRef": "conds", "actorClass": "m:C"})):
        objects.create_namespaced_custom_object(GROUP, VERSION, NAMESPACE, plural, custom_object(plural, name, spec))
        try:
            good = {"type": "Ready", "status": "False", "reason": "Testing", "message": "a test",
                    "lastTransitionTime": "2026-01-01T00:00:00Z", "observedGeneration": 1}

            def patch(conditions: list, plural: str = plural, name: str = name) -> None:
                objects.patch_namespaced_custom_object_status(
                    GROUP, VERSION, NAMESPACE, plural, name, {"status": {"conditions": conditions}},
                    _content_type="application/merge-patch+json")

            patch([good])
            with pytest.raises(ApiException) as twice:
                patch([good, {**good, "status": "True"}])
            assert twice.value.status == 422 and "Duplicate value" in twice.value.body, twice.value.body
            with pytest.raises(ApiException) as bare:
                patch([{"type": "Ready", "status": "True"}])
            assert bare.value.status == 422 and "reason" in bare.value.body, bare.value.body
        finally:
            objects.delete_namespaced_custom_object(GROUP, VERSION, NAMESPACE, plural, name)
