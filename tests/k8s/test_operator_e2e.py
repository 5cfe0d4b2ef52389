"""End to end, without Docker: the operator (a real `python -m kastor.operator` process, kopf)
against the kmock-based API server, with the kubelet harness running every pod it creates
as real local processes (head, node agents, actor pods, redis-server) talking real gRPC.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap

import kubernetes
import pytest

from .cluster import NEEDS_PRIVATE_HOSTS, TEST_IMAGE, EmulatedCluster

NS = "default"
# Pods of these tests start no spare workers (2 cores). Nodes are declared dead after the
# default 10 s of silence: a shorter timeout declares live nodes dead on a loaded machine.
POD_ENV = [{"name": "KASTOR_PRESTART_WORKERS", "value": "0"}]
TEMPLATE = {"spec": {"containers": [{"name": "kastor", "env": POD_ENV}]}}

pytestmark = NEEDS_PRIVATE_HOSTS


def cluster_cr(name: str, replicas: int = 2, **spec) -> dict:
    return {"apiVersion": "kastor.dev/v1alpha1", "kind": "ActorCluster", "metadata": {"name": name},
            "spec": {"image": TEST_IMAGE, "head": {"template": TEMPLATE},
                     "workerGroups": [{"name": "cpu", "replicas": replicas, "template": TEMPLATE}], **spec}}


def actor_cr(name: str, cluster: str, **spec) -> dict:
    return {"apiVersion": "kastor.dev/v1alpha1", "kind": "DetachedActor", "metadata": {"name": name},
            "spec": {"clusterRef": cluster, "actorClass": "sample_actors:Counter", "env": POD_ENV, **spec}}


def create(k8s: EmulatedCluster, plural: str, body: dict) -> dict:
    return k8s.custom.create_namespaced_custom_object("kastor.dev", "v1alpha1", NS, plural, body)


def patch_spec(k8s: EmulatedCluster, plural: str, name: str, spec: dict) -> None:
    k8s.custom.patch_namespaced_custom_object("kastor.dev", "v1alpha1", NS, plural, name, {"spec": spec})


def status(k8s: EmulatedCluster, plural: str, name: str) -> dict:
    return (k8s.get_custom(plural, name) or {}).get("status") or {}


def token(k8s: EmulatedCluster, cluster: str) -> str:
    return base64.b64decode(k8s.core.read_namespaced_secret(f"{cluster}-token", NS).data["token"]).decode()


def run_driver(k8s: EmulatedCluster, cluster: str, code: str, address_field: str = "headAddress") -> str:
    """Runs a Kastor driver program against the cluster's head Service; returns its stdout."""
    address = status(k8s, "actorclusters", cluster)[address_field]
    program = f"import kastor\nkastor.init(address={address!r})\n" + textwrap.dedent(code)
    env = {**os.environ, "KASTOR_TOKEN": token(k8s, cluster)}
    result = subprocess.run(k8s.command([sys.executable, "-c", program]), env=env, capture_output=True, text=True,
                            timeout=90)
    assert result.returncode == 0, f"driver failed:\n{result.stdout}\n{result.stderr[-3000:]}"
    return result.stdout


def start_driver(k8s: EmulatedCluster, cluster: str, code: str) -> subprocess.Popen:
    """A long-lived driver the test talks to over stdin/stdout."""
    address = status(k8s, "actorclusters", cluster)["headAddress"]
    program = f"import kastor\nkastor.init(address={address!r})\n" + textwrap.dedent(code)
    env = {**os.environ, "KASTOR_TOKEN": token(k8s, cluster)}
    return subprocess.Popen(k8s.command([sys.executable, "-c", program]), env=env, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def worker_pods(k8s: EmulatedCluster, cluster: str) -> list:
    return [p for p in k8s.pods(f"kastor.dev/cluster={cluster},kastor.dev/role=worker")
            if p.metadata.deletion_timestamp is None]


def event_reasons(k8s: EmulatedCluster, name: str) -> set[str]:
    return {e.reason for e in k8s.events(name)}


def test_actor_cluster_starts_and_serves_a_client(k8s):
    create(k8s, "actorclusters", cluster_cr("demo"))
    k8s.wait(lambda: status(k8s, "actorclusters", "demo").get("phase") == "Ready", "ActorCluster demo Ready")
    st = status(k8s, "actorclusters", "demo")
    assert (st["readyWorkers"], st["desiredWorkers"]) == (2, 2)
    assert st["headAddress"] == "demo-head.default.svc:6380"
    assert {c["type"]: c["status"] for c in st["conditions"]} == \
        {"GcsReady": "True", "HeadReady": "True", "WorkersReady": "True", "Ready": "True"}
    assert k8s.core.read_namespaced_service("demo-head", NS).spec.selector == \
        {"kastor.dev/cluster": "demo", "kastor.dev/role": "head"}
    out = run_driver(k8s, "demo", """
        import time
        deadline = time.time() + 30
        while sum(n["Alive"] for n in kastor.nodes()) < 3 and time.time() < deadline:
            time.sleep(0.1)
        print(sum(n["Alive"] for n in kastor.nodes()))

        @kastor.remote
        def square(x):
            return x * x

        @kastor.remote
        class Acc:
            def __init__(self):
                self.total = 0
            def add(self, x):
                self.total += x
                return self.total

        print(kastor.get([square.remote(i) for i in range(5)]))
        acc = Acc.remote()
        print(kastor.get([acc.add.remote(i) for i in range(4)]))
    """)
    assert out.split("\n")[:3] == ["3", "[0, 1, 4, 9, 16]", "[0, 1, 3, 6]"]
    # a driver outside the cluster network uses the Service's client port (the head's gateway)
    assert st["clientAddress"] == "kastor://demo-head.default.svc:10001"
    assert run_driver(k8s, "demo", "print(len(kastor.nodes()))", address_field="clientAddress").strip() == "3"


def test_scaling_replaces_failed_workers_and_suspends(k8s):
    patch_spec(k8s, "actorclusters", "demo", {"workerGroups": [{"name": "cpu", "replicas": 3, "template": TEMPLATE}]})
    k8s.wait(lambda: status(k8s, "actorclusters", "demo").get("readyWorkers") == 3 and
             len(worker_pods(k8s, "demo")) == 3, "3 ready workers")
    assert status(k8s, "actorclusters", "demo")["desiredWorkers"] == 3

    victim = worker_pods(k8s, "demo")[0].metadata.name
    k8s.pod_process(victim).kill()  # the container crashes; restartPolicy Always: the kubelet restarts it in place

    def restarted(name: str) -> bool:
        pod = next((p for p in worker_pods(k8s, "demo") if p.metadata.name == name), None)
        return pod is not None and (pod.status.container_statuses or [None])[0] is not None and \
            pod.status.container_statuses[0].restart_count >= 1
    k8s.wait(lambda: restarted(victim) and len(worker_pods(k8s, "demo")) == 3 and
             status(k8s, "actorclusters", "demo").get("readyWorkers") == 3,
             "the crashed worker restarted in place and rejoined")

    patch_spec(k8s, "actorclusters", "demo", {"workerGroups": [{"name": "cpu", "replicas": 1, "template": TEMPLATE}]})
    k8s.wait(lambda: len(worker_pods(k8s, "demo")) == 1, "scaled down to 1 worker")
    k8s.wait(lambda: status(k8s, "actorclusters", "demo").get("desiredWorkers") == 1, "status follows the scale-down")

    patch_spec(k8s, "actorclusters", "demo", {"suspend": True})
    k8s.wait(lambda: status(k8s, "actorclusters", "demo").get("phase") == "Suspended" and
             not k8s.pods("kastor.dev/cluster=demo,kastor.dev/role in (head,worker)"), "suspended: no pods")
    patch_spec(k8s, "actorclusters", "demo", {"suspend": False})
    k8s.wait(lambda: status(k8s, "actorclusters", "demo").get("phase") == "Ready", "resumed")


def head_pod_name(k8s, cluster: str) -> str:
    """The cluster's live head pod: its name is generated, so that a head stuck Terminating
    never blocks its replacement."""
    live = [p for p in k8s.pods(f"kastor.dev/cluster={cluster},kastor.dev/role=head")
            if p.metadata.deletion_timestamp is None]
    assert len(live) == 1, [p.metadata.name for p in live]
    return live[0].metadata.name


def test_dead_head_shows_in_status_and_is_replaced(k8s):
    head = head_pod_name(k8s, "demo")
    k8s.pod_process(head).kill()  # restartPolicy Always: the kubelet restarts the head in place
    k8s.wait(lambda: status(k8s, "actorclusters", "demo").get("phase") == "Degraded", "a dead head shows")
    k8s.wait(lambda: "HeadRestarted" in event_reasons(k8s, "demo"), "a HeadRestarted Event")
    k8s.wait(lambda: status(k8s, "actorclusters", "demo").get("phase") == "Ready", "the restarted head is Ready")
    assert head_pod_name(k8s, "demo") == head and status(k8s, "actorclusters", "demo")["headRestarts"] >= 1


def test_detached_actor_restarts_up_to_max_restarts_then_dies(k8s):
    create(k8s, "detachedactors", actor_cr("counter", "demo", args=[10], kwargs={"step": 5}, maxRestarts=1))
    k8s.wait(lambda: status(k8s, "detachedactors", "counter").get("state") == "Alive", "DetachedActor Alive")
    first = status(k8s, "detachedactors", "counter")
    assert (first["podName"], first["restarts"]) == ("counter-actor-1", 0)
    assert run_driver(k8s, "demo", """
        counter = kastor.get_actor("counter", namespace="default")
        print(kastor.get(counter.incr.remote()))
    """).strip() == "15"

    # a driver holds a handle across the pod's death
    holder = start_driver(k8s, "demo", """
        import sys
        counter = kastor.get_actor("counter", namespace="default")
        print("ready", flush=True)
        sys.stdin.readline()
        print(kastor.get(counter.incr.remote()), flush=True)
    """)
    try:
        assert holder.stdout.readline().strip() == "ready"
        k8s.pod_process("counter-actor-1").kill()  # the pod dies; the head restarts the actor on its replacement
        k8s.wait(lambda: status(k8s, "detachedactors", "counter").get("restarts") == 1 and
                 status(k8s, "detachedactors", "counter").get("state") == "Alive", "restarted once, Alive again")
        second = status(k8s, "detachedactors", "counter")
        assert second["podName"] == "counter-actor-2" and second["actorId"] == first["actorId"]  # same actor
        out, err = holder.communicate("go\n", timeout=60)
        assert out.strip() == "15", err[-2000:]  # the old handle works; the constructor ran again on the new pod
    finally:
        holder.kill()

    k8s.pod_process("counter-actor-2").kill()  # maxRestarts=1 is used up
    k8s.wait(lambda: status(k8s, "detachedactors", "counter").get("state") == "Dead", "Dead after maxRestarts")
    dead = status(k8s, "detachedactors", "counter")
    assert dead["restarts"] == 1
    assert next(c for c in dead["conditions"] if c["type"] == "Ready")["reason"] == "MaxRestartsExceeded"
    k8s.wait(lambda: "MaxRestartsExceeded" in event_reasons(k8s, "counter"), "a MaxRestartsExceeded Event")
    assert run_driver(k8s, "demo", """
        try:
            kastor.get_actor("counter", namespace="default")
        except ValueError:
            print("gone from the GCS")
    """).strip() == "gone from the GCS"
    assert not k8s.pods("kastor.dev/detached-actor=counter") or \
        all(p.status.phase in ("Failed", "Succeeded") for p in k8s.pods("kastor.dev/detached-actor=counter"))


def test_deleting_a_detached_actor_kills_it(k8s):
    create(k8s, "detachedactors", actor_cr("keeper", "demo", maxRestarts=-1))
    k8s.wait(lambda: status(k8s, "detachedactors", "keeper").get("state") == "Alive", "keeper Alive")
    k8s.core.delete_namespaced_pod("keeper-actor-1", NS)  # eviction or `kubectl delete pod`: the pod is replaced
    k8s.wait(lambda: status(k8s, "detachedactors", "keeper").get("podName") == "keeper-actor-2" and
             status(k8s, "detachedactors", "keeper").get("state") == "Alive" and
             status(k8s, "detachedactors", "keeper").get("restarts") == 1, "keeper restarted on a new pod")
    k8s.custom.delete_namespaced_custom_object("kastor.dev", "v1alpha1", NS, "detachedactors", "keeper")
    k8s.wait(lambda: k8s.get_custom("detachedactors", "keeper") is None, "the DetachedActor is gone")
    k8s.wait(lambda: not k8s.pods("kastor.dev/detached-actor=keeper"), "its pod is gone")
    assert run_driver(k8s, "demo", """
        try:
            kastor.get_actor("keeper", namespace="default")
        except ValueError:
            print("killed")
    """).strip() == "killed"


def test_spec_change_rolls_the_actor(k8s):
    create(k8s, "detachedactors", actor_cr("roller", "demo", args=[1]))
    k8s.wait(lambda: status(k8s, "detachedactors", "roller").get("state") == "Alive", "roller Alive")
    old_id = status(k8s, "detachedactors", "roller")["actorId"]
    patch_spec(k8s, "detachedactors", "roller", {"args": [100]})
    k8s.wait(lambda: status(k8s, "detachedactors", "roller").get("state") == "Alive" and
             status(k8s, "detachedactors", "roller").get("actorId") not in (None, old_id), "rolled to a new actor")
    assert run_driver(k8s, "demo", """
        print(kastor.get(kastor.get_actor("roller", namespace="default").incr.remote()))
    """).strip() == "101"


@pytest.mark.parametrize("name, spec, state, reason", [
    ("orphan", {"clusterRef": "no-such-cluster"}, "Pending", "ClusterNotFound"),
    ("noclass", {"actorClass": "sample_actors:Missing"}, "Dead", "ClassNotImportable"),
    ("badargs", {"args": [1, 2, 3, 4]}, "Dead", "ArgumentsMismatch"),
    ("broken", {"actorClass": "sample_actors:Broken", "maxRestarts": 3}, "Dead", "ConstructorFailed"),
])
def test_bad_detached_actors_end_in_a_condition_and_an_event(k8s, name, spec, state, reason):
    create(k8s, "detachedactors", {**actor_cr(name, "demo"), "spec": {**actor_cr(name, "demo")["spec"], **spec}})
    k8s.wait(lambda: any(c.get("reason") == reason
                         for c in status(k8s, "detachedactors", name).get("conditions", [])), f"{name}: {reason}")
    assert status(k8s, "detachedactors", name)["state"] == state
    k8s.wait(lambda: reason in event_reasons(k8s, name), f"a {reason} Event")
    assert k8s.operator.poll() is None  # no crash loop
    if state == "Dead":  # no pod churn: exactly one attempt
        assert [p.metadata.name for p in k8s.pods(f"kastor.dev/detached-actor={name}")] == [f"{name}-actor-1"]


def test_a_constructor_failure_reads_the_same_whoever_sees_it_first(k8s, tmp_path):
    """The operator (from the GCS) and the actor's pod (its exit message) both see a constructor
    fail; the condition must not depend on which is first. Here the operator sees the actor
    registered before its constructor fails, so it reads the death from the GCS."""
    release = tmp_path / "release"
    create(k8s, "detachedactors", actor_cr("stalled", "demo", actorClass="sample_actors:FailsWhenReleased",
                                           args=[str(release)], maxRestarts=3))
    k8s.wait(lambda: status(k8s, "detachedactors", "stalled").get("actorId"), "the operator sees the actor registered")
    release.touch()
    k8s.wait(lambda: status(k8s, "detachedactors", "stalled").get("state") == "Dead", "stalled Dead")
    ready = next(c for c in status(k8s, "detachedactors", "stalled")["conditions"] if c["type"] == "Ready")
    assert ready["reason"] == "ConstructorFailed", ready
    k8s.wait(lambda: "ConstructorFailed" in event_reasons(k8s, "stalled"), "a ConstructorFailed Event")


def test_schema_rejects_what_it_can(k8s):
    with pytest.raises(kubernetes.client.ApiException) as e:
        create(k8s, "detachedactors", actor_cr("negative", "demo", maxRestarts=-5))
    assert e.value.status == 422 and "maxRestarts" in e.value.body
    with pytest.raises(kubernetes.client.ApiException) as e:
        create(k8s, "actorclusters", {"apiVersion": "kastor.dev/v1alpha1", "kind": "ActorCluster",
                                      "metadata": {"name": "noimage"}, "spec": {}})
    assert e.value.status == 422 and "image" in e.value.body


def test_invalid_cluster_spec_is_reported_not_crashed_on(k8s):
    bad = cluster_cr("lopsided")
    bad["spec"]["workerGroups"] = [{"name": "cpu", "replicas": 2, "minReplicas": 5, "maxReplicas": 1}]
    create(k8s, "actorclusters", bad)  # CEL would reject this on a real API server; the operator must cope anyway
    k8s.wait(lambda: status(k8s, "actorclusters", "lopsided").get("phase") == "Failed", "phase Failed")
    ready = next(c for c in status(k8s, "actorclusters", "lopsided")["conditions"] if c["type"] == "Ready")
    assert ready["reason"] == "InvalidSpec" and "minReplicas" in ready["message"]
    k8s.wait(lambda: "InvalidSpec" in event_reasons(k8s, "lopsided"), "an InvalidSpec Event")
    assert not k8s.pods("kastor.dev/cluster=lopsided")
    assert k8s.operator.poll() is None


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
def test_kubectl_shows_printer_columns(k8s):
    out = k8s.kubectl("get", "actorclusters", "demo").stdout
    assert out.split()[:6] == ["NAME", "DESIRED", "READY", "STATE", "HEAD", "AGE"], out
    assert out.split()[6:10] == ["demo", "1", "1", "Ready"], out
    out = k8s.kubectl("get", "da", "counter").stdout
    assert out.split()[:6] == ["NAME", "CLUSTER", "STATE", "RESTARTS", "POD", "AGE"], out
    assert out.split()[6:11] == ["counter", "demo", "Dead", "1", "counter-actor-2"], out


def test_managed_redis_cluster(k8s):
    create(k8s, "actorclusters", {**cluster_cr("persist", replicas=1), "spec": {
        **cluster_cr("persist", replicas=1)["spec"], "gcs": {"redis": {"managed": True}}}})
    k8s.wait(lambda: status(k8s, "actorclusters", "persist").get("phase") == "Ready", "managed-Redis cluster Ready",
             timeout=90)
    redis_pod = k8s.pods("kastor.dev/cluster=persist,kastor.dev/role=redis")[0]
    assert redis_pod.status.phase == "Running"
    # Issue 12 defect 13: the password is on no command line: not in the argv the container was
    # started with (what `docker inspect`, `crictl inspect` and ps at start-up show), nor now.
    password = base64.b64decode(k8s.core.read_namespaced_secret("persist-token", NS).data["redis-password"]).decode()
    process = k8s.pod_process(redis_pod.metadata.name)
    assert password not in " ".join(map(str, process.args)), process.args
    with open(f"/proc/{process.pid}/cmdline", "rb") as f:
        assert password.encode() not in f.read()
    assert run_driver(k8s, "persist", """
        @kastor.remote
        def one():
            return 1
        print(kastor.get(one.remote()))
    """).strip() == "1"


def test_a_worker_advertises_its_containers_resources(k8s):
    """Issue 12 defect 14: CPUs, GPUs and memory a worker advertises come from its container's
    resources (as KubeRay derives them), not from a numCpus set by hand; /dev/shm is sized
    to the object store."""
    body = cluster_cr("sized", replicas=1)
    body["spec"]["workerGroups"][0]["resources"] = {"limits": {"cpu": "2500m", "memory": "1Gi"}}
    create(k8s, "actorclusters", body)
    k8s.wait(lambda: status(k8s, "actorclusters", "sized").get("phase") == "Ready", "ActorCluster sized Ready")
    worker = worker_pods(k8s, "sized")[0]
    shm = next(v for v in worker.spec.volumes if v.name == "dshm")
    assert shm.empty_dir.size_limit == str(int(2**30 * 0.3))
    out = run_driver(k8s, "sized", """
        import time
        deadline = time.time() + 30
        while sum(n["Alive"] for n in kastor.nodes()) < 2 and time.time() < deadline:
            time.sleep(0.1)
        print(sorted((n["Resources"].get("CPU"), n["Resources"].get("memory", 0)) for n in kastor.nodes()))
    """)
    assert out.strip() == f"[(1.0, 0), (3.0, {float(2**30)})]", out
    k8s.custom.delete_namespaced_custom_object("kastor.dev", "v1alpha1", NS, "actorclusters", "sized")


def test_external_redis_keys_are_cleaned_when_the_cluster_is_deleted(k8s, tmp_path):
    import redis
    from redis_server import RedisServer

    server = RedisServer(tmp_path, password="s3cret").start()
    try:
        k8s.core.create_namespaced_secret(NS, {"metadata": {"name": "ext-redis"}, "stringData": {"password": "s3cret"}})
        create(k8s, "actorclusters", {**cluster_cr("ext", replicas=1), "spec": {
            **cluster_cr("ext", replicas=1)["spec"],
            "gcs": {"redis": {"address": server.address, "passwordSecret": {"name": "ext-redis"}}}}})
        k8s.wait(lambda: status(k8s, "actorclusters", "ext").get("phase") == "Ready", "external-Redis cluster Ready")
        assert "kastor.dev/finalizer" in k8s.get_custom("actorclusters", "ext")["metadata"]["finalizers"]
        run_driver(k8s, "ext", """
            @kastor.remote
            class Keep:
                pass
            Keep.options(name="kept", lifetime="detached").remote()
        """)
        client = redis.Redis(port=server.port, password="s3cret")
        keys = lambda: client.keys("kastor:default.ext:*")  # noqa: E731
        assert keys(), "the head keeps its state in the external Redis"
        k8s.custom.delete_namespaced_custom_object("kastor.dev", "v1alpha1", NS, "actorclusters", "ext")
        k8s.wait(lambda: k8s.get_custom("actorclusters", "ext") is None, "the ActorCluster is gone")
        assert keys() == [], "deleting the cluster deletes its keys"
        client.close()
    finally:
        server.stop()


def test_deleting_a_cluster_does_not_wait_for_a_busy_resync(k8s):
    """A deletion first stops the cluster's resync timer. One caught mid-reconcile (here: waiting
    on a hung head) cannot be cancelled, and kopf re-checked it only every 60 s by default."""
    create(k8s, "actorclusters", cluster_cr("stuck", replicas=0))
    k8s.wait(lambda: status(k8s, "actorclusters", "stuck").get("phase") == "Ready", "ActorCluster stuck Ready")
    head = k8s.pod_process(head_pod_name(k8s, "stuck"))
    os.killpg(head.pid, signal.SIGSTOP)  # the head hangs: a call to it waits for its deadline
    try:
        k8s.wait(lambda: any(c["type"] == "HeadReady" and c["reason"] == "HeadUnreachable"
                             for c in status(k8s, "actorclusters", "stuck").get("conditions", [])),
                 "the operator finds the head hung")
        calls = k8s.service_connections("stuck-head")  # a failed call drops its channel: the next one reconnects
        k8s.wait(lambda: k8s.service_connections("stuck-head") > calls, "a resync calling the hung head again")
        k8s.custom.delete_namespaced_custom_object("kastor.dev", "v1alpha1", NS, "actorclusters", "stuck")
        k8s.wait(lambda: k8s.get_custom("actorclusters", "stuck") is None,
                 "the ActorCluster gone, well before kopf's 60-s re-check", timeout=40)
    finally:
        try:
            os.killpg(head.pid, signal.SIGCONT)
        except ProcessLookupError:
            pass


def test_every_object_the_operator_created_is_valid_kubernetes(k8s):
    import kubernetes_validate
    made = [b for b in k8s.api.created
            if (b.get("metadata", {}).get("labels") or {}).get("app.kubernetes.io/managed-by") == "kastor-operator"]
    assert {b["kind"] for b in made} >= {"Pod", "Service", "Secret", "ActorWorkerGroup"}
    for body in made:
        if body["apiVersion"].startswith("kastor.dev/"):
            continue  # ours (ActorWorkerGroup): its CRD's schema, not Kubernetes', checked it
        body = {**body, "metadata": {**body["metadata"], "name": body["metadata"].get("name") or "generated"}}
        kubernetes_validate.validate(body, "1.32.0", strict=True)


def test_deleting_the_cluster_collects_everything(k8s):
    k8s.custom.delete_namespaced_custom_object("kastor.dev", "v1alpha1", NS, "actorclusters", "demo")
    selector = "kastor.dev/cluster=demo,kastor.dev/role in (head,worker,redis)"
    try:
        k8s.wait(lambda: not k8s.pods(selector), "every pod of the cluster deleted")
    except AssertionError as e:
        left = [(p.metadata.name, p.status.phase, p.metadata.deletion_timestamp) for p in k8s.pods(selector)]
        raise AssertionError(f"{e}\npods left: {left}") from None
    # DetachedActors outlive their cluster (they are separate resources) and say so
    k8s.wait(lambda: any(c.get("reason") == "ClusterNotFound"
                         for c in status(k8s, "detachedactors", "roller").get("conditions", [])),
             "roller reports its cluster missing")
    # ...but their pods, useless without a head, stop at once (issue 12 defect 8)
    k8s.wait(lambda: not k8s.pods("kastor.dev/detached-actor=roller"), "roller's pod stopped with its cluster", 30)
    assert not [s for s in k8s.core.list_namespaced_service(NS).items if s.metadata.name.startswith("demo-")]
    assert not [s for s in k8s.core.list_namespaced_secret(NS).items if s.metadata.name == "demo-token"]
    if shutil.which("kubectl"):
        names = [p["metadata"]["name"] for p in json.loads(k8s.kubectl("get", "pods", "-o", "json").stdout)["items"]]
        assert not [n for n in names if n.startswith("demo-")], names


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
def test_the_readme_examples_apply_with_kubectl(k8s):
    """charts/kastor-cluster/examples, as a user applies them (image swapped for the test image)."""
    examples = os.path.join(os.path.dirname(__file__), "..", "..", "charts", "kastor-cluster", "examples")
    for name in ("actorcluster.yaml", "detachedactor.yaml"):
        with open(os.path.join(examples, name)) as f:
            k8s.kubectl("apply", "--validate=false", "-f", "-", input=f.read().replace("kastor:dev", TEST_IMAGE))
    k8s.wait(lambda: status(k8s, "actorclusters", "demo").get("phase") == "Ready", "example cluster Ready", 90)
    k8s.wait(lambda: status(k8s, "detachedactors", "alice").get("state") == "Alive", "example actor Alive", 60)
    assert run_driver(k8s, "demo", """
        alice = kastor.get_actor("alice", namespace="default")
        print(kastor.get(alice.deposit.remote(5)))
    """).strip() == "105"
    k8s.kubectl("delete", "detachedactor", "alice")
    k8s.kubectl("delete", "actorcluster", "demo")


def test_liveness_and_leader_election_by_peering(k8s, tmp_path):
    """Last in the module: it replaces the operator, and the tests before it want the original one.
    Its actor names a cluster that does not exist, so reconciling it needs no pods."""
    import urllib.request
    k8s.wait_for_operator()
    log = tmp_path / "second-operator.log"
    second = k8s.start_operator(priority=50, log=log)

    def peers() -> int:
        body = k8s.custom.get_cluster_custom_object("kopf.dev", "v1", "clusterkopfpeerings", "kastor-operator")
        return len(body.get("status") or {})

    def reconciled(generation: int) -> bool:
        got = status(k8s, "detachedactors", "peered")
        return got.get("observedGeneration") == generation and got.get("state") == "Pending"

    # A new process first imports kopf and kastor: seen taking 80 s at a load average of 170 on
    # 2 cores. Its liveness endpoint answering means it runs; then it must register at once.
    k8s.wait_for_operator(second)
    k8s.wait(lambda: peers() == 2, "both replicas registered in the peering object")
    # the lower-priority replica stands by: the leader alone reconciles
    create(k8s, "detachedactors", actor_cr("peered", "not-created"))
    k8s.wait(lambda: reconciled(1), "reconciled by the leader")
    assert "kastor.operator" not in log.read_text(errors="replace")
    with urllib.request.urlopen(k8s.operator.liveness_url, timeout=5) as reply:
        assert reply.status == 200

    # the leader goes away: the standby resumes and takes over
    first = k8s.operator
    first.terminate()
    first.wait(30)
    k8s.operator = second
    k8s.wait(lambda: "Resuming operations" in log.read_text(errors="replace"), "the standby takes over")
    k8s.operator_log = log
    patch_spec(k8s, "detachedactors", "peered", {"args": [7]})
    k8s.wait(lambda: reconciled(2), "the new leader reconciles")
