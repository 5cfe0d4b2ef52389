"""Kastor's process kubelet on the real control plane: what a kubelet must do, shown on pods
the real scheduler bound to the harness's Nodes (`real_cluster.py`)."""

from __future__ import annotations

import ipaddress
import json
import sys
import textwrap
from pathlib import Path
from typing import Any

import kubernetes
import pytest

from .real_cluster import RealCluster, netns_problem

pytestmark = pytest.mark.skipif(netns_problem() is not None, reason=f"{netns_problem()}")
NS = "kubelet-real"
PY = "python"  # the harness's images run this checkout's venv Python


@pytest.fixture(scope="module")
def cluster(real_k8s, tmp_path_factory):
    c = RealCluster(real_k8s, tmp_path_factory.mktemp("real-kubelet"), nodes=("kubelet-a", "kubelet-b"),
                    storage=True).start()
    try:
        c.make_namespace(NS)
        yield c
    finally:
        c.stop()


def pod(name: str, containers: list[dict[str, Any]], **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": {"app": name}},
            "spec": {"containers": containers, **spec}}


def py(name: str, code: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "image": "kastor:test", "command": [PY, "-u", "-c", textwrap.dedent(code)], **extra}


SERVE_7000 = """
    import socket, sys
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((sys.argv[1] if len(sys.argv) > 1 else "0.0.0.0", 7000)); s.listen()
    while True:
        c, _ = s.accept(); c.sendall(socket.gethostname().encode()); c.close()
"""


def status(c: RealCluster, name: str) -> Any:
    p = c.pod(name, NS)
    return p.status if p is not None else None


def container_state(c: RealCluster, name: str, container: str | None = None) -> Any:
    s = status(c, name)
    for cs in (s.container_statuses or []) if s else []:
        if container in (None, cs.name):
            return cs
    return None


def ready(c: RealCluster, name: str) -> bool:
    s = status(c, name)
    return bool(s and any(x.type == "Ready" and x.status == "True" for x in s.conditions or []))


def finished(c: RealCluster, name: str) -> str | None:
    s = status(c, name)
    return s.phase if s is not None and s.phase in ("Succeeded", "Failed") else None


def test_node_registers_ready_and_untainted(cluster):
    def node_ready() -> bool:
        node = cluster.core.read_node("kubelet-a")
        is_ready = any(x.type == "Ready" and x.status == "True" for x in node.status.conditions or [])
        return is_ready and not node.spec.taints
    cluster.wait(node_ready, "Node kubelet-a Ready without the not-ready taint")
    lease = kubernetes.client.CoordinationV1Api(cluster.api_client).read_namespaced_lease("kubelet-a",
                                                                                          "kube-node-lease")
    assert lease.spec.holder_identity == "kubelet-a"


def test_each_pod_has_its_own_ip_and_loopback(cluster):
    """Two pods bind 127.0.0.1:7000 at once (a shared loopback would refuse the second), an
    exec readiness probe run inside each reaches its own, and each pod IP is in the run's CIDR."""
    probe = {"exec": {"command": [PY, "-c", "import socket; socket.create_connection(('127.0.0.1', 7000), 2)"]},
             "periodSeconds": 1, "timeoutSeconds": 30}  # a Python start: over the default 1 s on a loaded machine
    for name in ("loop-a", "loop-b"):
        cluster.core.create_namespaced_pod(NS, pod(name, [py("srv", SERVE_7000, args=["127.0.0.1"],
                                                              readinessProbe=probe)]))
    for name in ("loop-a", "loop-b"):
        cluster.wait(lambda name=name: ready(cluster, name), f"pod {name} Ready")
    ips = {status(cluster, n).pod_ip for n in ("loop-a", "loop-b")}
    assert len(ips) == 2
    assert all(ipaddress.ip_address(ip) in cluster.network.subnet for ip in ips), ips
    cs = container_state(cluster, "loop-a")
    assert cs.ready and cs.started and cs.state.running is not None and cs.restart_count == 0
    assert status(cluster, "loop-a").host_ip == cluster.network.gateway


def test_service_reached_by_cluster_ip_and_dns_names_from_another_pod(cluster):
    cluster.core.create_namespaced_pod(NS, pod("web", [py("srv", SERVE_7000, ports=[{"name": "w",
                                                                                       "containerPort": 7000}],
                                                          readinessProbe={"tcpSocket": {"port": "w"},
                                                                          "periodSeconds": 1})]))
    cluster.core.create_namespaced_service(NS, {"metadata": {"name": "web"}, "spec": {
        "selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "targetPort": "w"}]}})
    cluster.wait(lambda: ready(cluster, "web"), "pod web Ready")
    cluster_ip = cluster.core.read_namespaced_service("web", NS).spec.cluster_ip
    assert ipaddress.ip_address(cluster_ip) in ipaddress.ip_network("10.96.0.0/16")
    client = """
        import socket, sys
        for host in sys.argv[1:]:
            for attempt in range(600):  # the EndpointSlice follows readiness: wait for it, then read
                try:
                    data = socket.create_connection((host, 80), 5).recv(100).decode()
                except OSError:
                    import time; time.sleep(0.1); continue
                if data:
                    break
            print(host, data, flush=True)
            assert data == "web", (host, data)
    """
    names = [cluster_ip, "web", f"web.{NS}", f"web.{NS}.svc", f"web.{NS}.svc.cluster.local"]
    cluster.core.create_namespaced_pod(NS, pod("web-client", [py("client", client, args=names)],
                                               restartPolicy="Never"))
    phase = cluster.wait(lambda: finished(cluster, "web-client"), "pod web-client to finish")
    assert phase == "Succeeded", cluster.pod_log("web-client", NS)
    terminated = container_state(cluster, "web-client").state.terminated
    assert terminated.exit_code == 0 and terminated.reason == "Completed"
    # The host, outside the pod network, reaches the same Service through its host-side address.
    out = _host_run(cluster, [sys.executable, "-c", "import socket; print(socket.create_connection("
                              f"('web.{NS}.svc', 80), 10).recv(100).decode())"])
    assert out.strip() == "web"


def _host_run(cluster: RealCluster, argv: list[str]) -> str:
    import subprocess
    done = subprocess.run(cluster.command(argv), capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_in_cluster_client_authenticates_with_the_service_account_token(cluster):
    """The token volume and KUBERNETES_SERVICE_HOST let an in-pod client use in-cluster config;
    RBAC decides: without a Role it gets a 403, with one it lists pods."""
    cluster.core.create_namespaced_service_account(NS, {"metadata": {"name": "lister"}})
    code = """
        import kubernetes, sys
        kubernetes.config.load_incluster_config()
        try:
            names = [p.metadata.name for p in kubernetes.client.CoreV1Api().list_namespaced_pod(sys.argv[1]).items]
            print("LISTED", names)
        except kubernetes.client.ApiException as e:
            print("STATUS", e.status)
    """
    cluster.core.create_namespaced_pod(NS, pod("denied", [py("c", code, args=[NS])], restartPolicy="Never",
                                               serviceAccountName="lister"))
    cluster.wait(lambda: finished(cluster, "denied"), "pod denied to finish")
    assert "STATUS 403" in cluster.pod_log("denied", NS), cluster.pod_log("denied", NS)
    cluster.rbac.create_namespaced_role(NS, {"metadata": {"name": "pod-lister"}, "rules": [
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]}]})
    cluster.rbac.create_namespaced_role_binding(NS, {
        "metadata": {"name": "lister"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "pod-lister"},
        "subjects": [{"kind": "ServiceAccount", "name": "lister", "namespace": NS}]})
    cluster.core.create_namespaced_pod(NS, pod("allowed", [py("c", code, args=[NS])], restartPolicy="Never",
                                                serviceAccountName="lister"))
    cluster.wait(lambda: finished(cluster, "allowed"), "pod allowed to finish")
    log = cluster.pod_log("allowed", NS)
    assert "LISTED" in log and "'allowed'" in log, log


def test_crash_loop_backoff_with_restart_count_and_last_state(cluster):
    cluster.core.create_namespaced_pod(NS, pod("crasher", [py("c", "import sys; print('boom'); sys.exit(3)")]))

    def looping() -> Any:
        cs = container_state(cluster, "crasher")
        if cs is None or cs.restart_count < 2 or cs.state.waiting is None:
            return None
        return cs if cs.state.waiting.reason == "CrashLoopBackOff" else None

    cs = cluster.wait(looping, "crasher in CrashLoopBackOff after two restarts")
    assert cs.last_state.terminated.exit_code == 3 and cs.last_state.terminated.reason == "Error"
    assert "back-off" in cs.state.waiting.message
    assert status(cluster, "crasher").phase == "Running"  # restartPolicy Always: the pod is not over


def test_init_containers_then_every_container_with_volumes_and_env(cluster):
    cluster.core.create_namespaced_secret(NS, {"metadata": {"name": "creds"}, "stringData": {"token": "s3cret"}})
    cluster.core.create_namespaced_config_map(NS, {"metadata": {"name": "conf"}, "data": {"mode": "fast"}})
    check = """
        import os
        print("TOKEN", open("/etc/creds/token").read(), "MODE", open("/etc/conf/mode").read(),
              "SEEN", open("/work/seed").read(), "ENV", os.environ["MODE"], os.environ["POD"], os.environ["NS"])
    """
    spec = pod("multi", [
        py("first", check, volumeMounts=[{"name": "creds", "mountPath": "/etc/creds", "readOnly": True},
                                         {"name": "conf", "mountPath": "/etc/conf"},
                                         {"name": "work", "mountPath": "/work"}],
           env=[{"name": "MODE", "valueFrom": {"configMapKeyRef": {"name": "conf", "key": "mode"}}},
                {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                {"name": "NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}}]),
        py("second", "print('SECOND', open('/work/seed').read())", volumeMounts=[{"name": "work",
                                                                                   "mountPath": "/work"}]),
    ], restartPolicy="Never", initContainers=[
        py("seed", "open('/work/seed', 'w').write('from-init')", volumeMounts=[{"name": "work",
                                                                                 "mountPath": "/work"}])],
        volumes=[{"name": "creds", "secret": {"secretName": "creds"}},
                 {"name": "conf", "configMap": {"name": "conf"}}, {"name": "work", "emptyDir": {}}])
    cluster.core.create_namespaced_pod(NS, spec)
    phase = cluster.wait(lambda: finished(cluster, "multi"), "pod multi to finish")
    assert phase == "Succeeded", (cluster.pod_log("multi", NS, "first"), cluster.pod_log("multi", NS, "second"))
    assert cluster.pod_log("multi", NS, "first").split() == ["TOKEN", "s3cret", "MODE", "fast", "SEEN", "from-init",
                                                             "ENV", "fast", "multi", NS]
    assert "SECOND from-init" in cluster.pod_log("multi", NS, "second")
    s = status(cluster, "multi")
    assert [c.state.terminated.reason for c in s.init_container_statuses] == ["Completed"]
    assert sorted(c.name for c in s.container_statuses) == ["first", "second"]
    for host_path in ("/etc/creds", "/etc/conf", "/var/run/secrets/kubernetes.io"):  # in the pod only
        assert not Path(host_path).exists(), f"the kubelet wrote {host_path} on the host"


def test_liveness_probe_failure_restarts_the_container(cluster):
    # Serves /healthz until the file `sick` exists in its working directory, then answers 500.
    code = """
        import http.server, os
        class H(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                self.send_response(500 if os.path.exists("sick") else 200); self.end_headers()
            def log_message(self, *a): pass
        http.server.HTTPServer(("0.0.0.0", 8080), H).serve_forever()
    """
    probe = {"httpGet": {"path": "/healthz", "port": 8080}, "periodSeconds": 1, "failureThreshold": 2}
    cluster.core.create_namespaced_pod(NS, pod("lively", [py("c", code, livenessProbe=probe)],
                                               terminationGracePeriodSeconds=5))
    cluster.wait(lambda: (container_state(cluster, "lively") or {}) and
                 container_state(cluster, "lively").state.running, "lively running")
    run = next(k.find(NS, "lively") for k in cluster.kubelets.values() if k.find(NS, "lively"))
    (run.home / "sick").write_text("")
    cs = cluster.wait(lambda: (c := container_state(cluster, "lively")) and c.restart_count >= 1 and c,
                      "lively restarted by its liveness probe")
    assert cs.last_state.terminated is not None


def test_deletion_honours_the_grace_period_then_removes_the_pod(cluster):
    """SIGTERM first (the process logs it and keeps running: it ignores it), SIGKILL after the
    pod's terminationGracePeriodSeconds, then the kubelet deletes the object."""
    code = """
        import signal, time
        signal.signal(signal.SIGTERM, lambda *a: print("TERM", flush=True))
        print("UP", flush=True)
        while True: time.sleep(1)
    """
    cluster.core.create_namespaced_pod(NS, pod("stubborn", [py("c", code)], terminationGracePeriodSeconds=2))
    cluster.wait(lambda: "UP" in cluster.pod_log("stubborn", NS), "stubborn up")
    run = next(k.find(NS, "stubborn") for k in cluster.kubelets.values() if k.find(NS, "stubborn"))
    proc = run.containers[0].proc
    log_path = run.home / "c.log"
    cluster.core.delete_namespaced_pod("stubborn", NS)
    cluster.wait(lambda: cluster.pod("stubborn", NS) is None, "pod stubborn deleted by its kubelet")
    assert proc.poll() is not None
    assert "TERM" in log_path.read_text()


def claim(name: str, storage_class: str | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}
    if storage_class:
        spec["storageClassName"] = storage_class
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": name}, "spec": spec}


def claim_volume(c: RealCluster, name: str) -> Any:
    pvc = c.core.read_namespaced_persistent_volume_claim(name, NS)
    return c.core.read_persistent_volume(pvc.spec.volume_name) if pvc.status.phase == "Bound" else None


def gone(read, *args: str) -> bool:
    try:
        read(*args)
        return False
    except kubernetes.client.ApiException as e:
        if e.status == 404:
            return True
        raise


def test_a_claim_is_provisioned_bound_and_mounted_and_its_data_outlives_the_pod(cluster):
    """The control plane's volume binder hands the claim (default StorageClass) to the harness's
    provisioner, which makes a hostPath volume; a pod writes into it on one node, a later pod on
    the other node reads it; the claim's deletion deletes the volume and its directory."""
    cluster.core.create_namespaced_persistent_volume_claim(NS, claim("data"))
    pv = cluster.wait(lambda: claim_volume(cluster, "data"), "claim data Bound")
    assert cluster.core.read_namespaced_persistent_volume_claim("data", NS).spec.storage_class_name == "standard"
    assert pv.spec.claim_ref.name == "data" and pv.spec.persistent_volume_reclaim_policy == "Delete"
    mount = [{"name": "data", "mountPath": "/var/lib/kastor-test-data"}]
    volumes = [{"name": "data", "persistentVolumeClaim": {"claimName": "data"}}]
    write = "open('/var/lib/kastor-test-data/note', 'w').write('kept')"
    cluster.core.create_namespaced_pod(NS, pod("writer", [py("c", write, volumeMounts=mount)], restartPolicy="Never",
                                               volumes=volumes, nodeName="kubelet-a"))
    assert cluster.wait(lambda: finished(cluster, "writer"), "pod writer to finish") == "Succeeded", \
        cluster.pod_log("writer", NS)
    directory = Path(pv.spec.host_path.path)
    assert (directory / "note").read_text() == "kept", "the pod wrote into the volume's directory"
    assert not Path("/var/lib/kastor-test-data").exists(), "mounted in the pod only"
    cluster.core.delete_namespaced_pod("writer", NS)
    read = "print('READ', open('/var/lib/kastor-test-data/note').read())"
    cluster.core.create_namespaced_pod(NS, pod("reader", [py("c", read, volumeMounts=mount)], restartPolicy="Never",
                                               volumes=volumes, nodeName="kubelet-b"))
    assert cluster.wait(lambda: finished(cluster, "reader"), "pod reader to finish") == "Succeeded"
    assert "READ kept" in cluster.pod_log("reader", NS)

    cluster.core.delete_namespaced_pod("reader", NS)
    cluster.core.delete_namespaced_persistent_volume_claim("data", NS)
    cluster.wait(lambda: gone(cluster.core.read_persistent_volume, pv.metadata.name),
                 "the Released volume deleted (reclaimPolicy Delete)")
    assert not directory.exists()


def test_a_retained_volume_keeps_its_data_after_its_claim_is_deleted(cluster):
    cluster.core.create_namespaced_persistent_volume_claim(NS, claim("kept", "standard-retain"))
    pv = cluster.wait(lambda: claim_volume(cluster, "kept"), "claim kept Bound")
    (Path(pv.spec.host_path.path) / "note").write_text("still here")
    cluster.core.delete_namespaced_persistent_volume_claim("kept", NS)
    cluster.wait(lambda: cluster.core.read_persistent_volume(pv.metadata.name).status.phase == "Released",
                 "the volume Released")
    assert (Path(pv.spec.host_path.path) / "note").read_text() == "still here"
    cluster.core.delete_persistent_volume(pv.metadata.name)  # an administrator's part with Retain


def test_a_pod_of_an_unbound_claim_waits_in_container_creating(cluster):
    """A claim of a StorageClass nobody serves stays Pending. The scheduler would not place a pod
    of it; one bound to the node by name waits, as a real kubelet's volume manager makes it."""
    cluster.core.create_namespaced_persistent_volume_claim(NS, claim("orphan", "no-such-class"))
    cluster.core.create_namespaced_pod(NS, pod("waits", [py("c", "print('RAN')")], restartPolicy="Never",
                                               nodeName="kubelet-a", volumes=[
        {"name": "v", "persistentVolumeClaim": {"claimName": "orphan"}}]))

    def waiting() -> Any:
        cs = container_state(cluster, "waits")
        return cs is not None and cs.state.waiting is not None and cs.state.waiting.reason == "ContainerCreating" \
            and cs.state.waiting.message and cs.state.waiting
    assert 'persistentvolumeclaim "orphan" is not bound' in cluster.wait(waiting, "waits ContainerCreating").message
    assert cluster.pod_log("waits", NS) == ""
    cluster.core.delete_namespaced_pod("waits", NS)
    cluster.core.delete_namespaced_persistent_volume_claim("orphan", NS)


def test_lost_node_leaves_its_deleted_pods_terminating(cluster):
    for name, node in (("on-lost", "kubelet-b"), ("on-live", "kubelet-a")):
        cluster.core.create_namespaced_pod(NS, pod(name, [py("c", "import time; print('UP', flush=True); "
                                                                 "time.sleep(3600)")], nodeName=node))
    for name in ("on-lost", "on-live"):
        cluster.wait(lambda name=name: ready(cluster, name), f"{name} Ready")
    proc = cluster.kubelets["kubelet-b"].find(NS, "on-lost").containers[0].proc
    cluster.lose_node("kubelet-b")
    assert proc.poll() is not None  # its processes are gone with it

    def not_ready() -> bool:
        node = cluster.core.read_node("kubelet-b")
        return any(x.type == "Ready" and x.status != "True" for x in node.status.conditions or [])

    cluster.wait(not_ready, "Node kubelet-b NotReady")
    for name in ("on-lost", "on-live"):
        cluster.core.delete_namespaced_pod(name, NS)
    cluster.wait(lambda: cluster.pod("on-live", NS) is None, "on-live deleted by its (live) kubelet")
    stuck = cluster.pod("on-lost", NS)
    assert stuck is not None and stuck.metadata.deletion_timestamp is not None, "on-lost should stay Terminating"
    out = cluster.kubectl("get", "pod", "on-lost", "-n", NS, "-o", "json").stdout
    assert json.loads(out)["metadata"]["deletionTimestamp"]


def test_stop_removes_every_namespace_link_and_node(real_k8s, tmp_path):
    """A cluster's end leaves nothing on the machine: no netns, veth, bridge or /etc/netns
    entry of its prefix, no Node; its pods' processes are gone."""
    import subprocess

    c = RealCluster(real_k8s, tmp_path, nodes=("kubelet-tmp",)).start()
    try:
        c.make_namespace("kubelet-tmp")
        c.core.create_namespaced_pod("kubelet-tmp", pod("sleeper", [py("c", "import time; time.sleep(3600)")],
                                                        nodeName="kubelet-tmp"))
        c.wait(lambda: (p := c.pod("sleeper", "kubelet-tmp")) and p.status.phase == "Running", "sleeper Running")
        proc = c.kubelets["kubelet-tmp"].find("kubelet-tmp", "sleeper").containers[0].proc
        prefix = c.network.prefix
    finally:
        c.stop()
    assert proc.poll() is not None
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
    assert prefix + "-" not in netns and f" {prefix}" not in links, (netns, links)
    assert not list(Path("/etc/netns").glob(prefix + "*")) if Path("/etc/netns").exists() else True
    with pytest.raises(kubernetes.client.ApiException) as gone:
        c.core.read_node("kubelet-tmp")
    assert gone.value.status == 404
    c.core.delete_namespace("kubelet-tmp")
