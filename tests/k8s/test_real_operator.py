"""The operator's behaviours that need Kastor processes in pods, on the real control plane with
the process kubelet (`real_cluster.py`): what the emulated API server used to cover.

One `RealCluster` (two nodes) and one operator process serve the whole module, so the module
costs one operator start; its tests run in order and share the ActorCluster `demo`. The
operator is a host process (the admin kubeconfig) started through the cluster's hosts file, so
it resolves the head Services' names as an in-cluster operator would. It peers (kopf's leader
election, `--priority auto` as the chart runs it): the module's last test starts a second
replica and stops the leader.

What the README's flow already proves (helm install, printer columns, a driver pod, restarts up
to maxRestarts, head and node loss, scale, suspend, delete) is in test_real_user_flow.py;
what needs no pod (finalizers, rolls of the head, PodDisruptionBudgets) in test_operator_real.py.
"""

from __future__ import annotations

import base64
import contextlib
import os
import signal
import socket
import subprocess
import sys
import textwrap
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from kubernetes.client.rest import ApiException

from .real_cluster import REPO, RealCluster, netns_problem
from .test_operator_real import stop
from .test_real_apiserver import api  # noqa: F401 - the fixture: crds/ applied

pytestmark = pytest.mark.skipif(netns_problem() is not None, reason=f"{netns_problem()}")
NS = "real-op"
GROUP, VERSION = "kastor.dev", "v1alpha1"
IMAGE = "kastor:dev"
PEERING = "kastor-operator"
PEERING_CRDS = REPO / "charts" / "kastor-operator" / "crds" / "kopf.dev_peerings.yaml"
# Real processes in pods on a loaded, shared 2-core machine (as test_real_user_flow.DEADLINE_S).
DEADLINE_S = float(os.environ.get("KASTOR_TEST_FLOW_DEADLINE_S", "240"))
# Pods of these tests start no spare workers (2 cores).
POD_ENV = [{"name": "KASTOR_PRESTART_WORKERS", "value": "0"}]
TEMPLATE = {"spec": {"containers": [{"name": "kastor", "env": POD_ENV}]}}


@dataclass
class Operators:
    """The module's operator replicas: each a host process with its log and liveness URL."""

    cluster: RealCluster
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    logs: list[Path] = field(default_factory=list)
    liveness: list[str] = field(default_factory=list)

    def start(self, name: str) -> int:
        """Starts a replica (peering, `--priority auto`); returns its index."""
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        log = self.cluster.workdir / f"operator-{name}.log"
        env = {**os.environ, "KUBECONFIG": str(self.cluster.cp.kubeconfig), "KASTOR_OPERATOR_RESYNC_S": "2",
               "KASTOR_OPERATOR_POLL_S": "2", "PYTHONUNBUFFERED": "1"}
        url = f"http://127.0.0.1:{port}/healthz"
        with open(log, "ab") as out:
            proc = subprocess.Popen(self.cluster.command(
                [sys.executable, "-m", "kastor.operator", "--namespace", NS, "--peering", PEERING,
                 "--priority", "auto", "--liveness", url]),
                env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.procs.append(proc)
        self.logs.append(log)
        self.liveness.append(url)
        return len(self.procs) - 1

    def live(self, i: int) -> bool:
        """The replica's liveness endpoint answers: it imported kopf and Kastor and runs."""
        try:
            with urllib.request.urlopen(self.liveness[i], timeout=5) as reply:
                return reply.status == 200
        except OSError:
            return False

    def log(self, i: int) -> str:
        return self.logs[i].read_text(errors="replace")

    def stop(self, i: int) -> None:
        stop(self.procs[i])


@dataclass
class Env:
    cluster: RealCluster
    operators: Operators


@pytest.fixture(scope="module")
def env(real_k8s, api, tmp_path_factory) -> Iterator[Env]:  # noqa: F811 - the fixture imported above
    c = RealCluster(real_k8s, tmp_path_factory.mktemp("real-operator"), nodes=("op-1", "op-2")).start()
    operators = Operators(c)
    try:
        # what the operator chart installs for kopf's peering (its leader election): the CRDs
        # and the namespace's KopfPeering object, without which a peering operator waits
        c.kubectl("apply", "-f", str(PEERING_CRDS))
        c.kubectl("wait", "--for=condition=Established", "crd/kopfpeerings.kopf.dev", "--timeout=120s")
        c.make_namespace(NS)
        try:
            c.custom.create_namespaced_custom_object("kopf.dev", "v1", NS, "kopfpeerings", {
                "apiVersion": "kopf.dev/v1", "kind": "KopfPeering", "metadata": {"name": PEERING}})
        except ApiException as e:
            if e.status != 409:
                raise
        operators.start("a")
        yield Env(c, operators)
    finally:
        for i in range(len(operators.procs)):
            operators.stop(i)
        c.stop()


# ---- helpers ----

def custom(c: RealCluster, plural: str, name: str) -> dict[str, Any] | None:
    try:
        return c.custom.get_namespaced_custom_object(GROUP, VERSION, NS, plural, name)
    except ApiException as e:
        if e.status == 404:
            return None
        raise


def status(c: RealCluster, plural: str, name: str) -> dict[str, Any]:
    return (custom(c, plural, name) or {}).get("status") or {}


def create(c: RealCluster, plural: str, body: dict[str, Any]) -> None:
    c.custom.create_namespaced_custom_object(GROUP, VERSION, NS, plural, body)


def delete(c: RealCluster, plural: str, name: str) -> None:
    c.custom.delete_namespaced_custom_object(GROUP, VERSION, NS, plural, name)


def patch_spec(c: RealCluster, plural: str, name: str, spec: dict[str, Any]) -> None:
    c.custom.patch_namespaced_custom_object(GROUP, VERSION, NS, plural, name, {"spec": spec})


def cluster_cr(name: str, replicas: int = 1, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "ActorCluster", "metadata": {"name": name},
            "spec": {"image": IMAGE, "head": {"template": TEMPLATE},
                     "workerGroups": [{"name": "cpu", "replicas": replicas, "template": TEMPLATE}], **spec}}


def actor_cr(name: str, cluster: str = "demo", **spec: Any) -> dict[str, Any]:
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "DetachedActor", "metadata": {"name": name},
            "spec": {"clusterRef": cluster, "actorClass": "sample_actors:Counter", "env": POD_ENV, **spec}}


def pods(c: RealCluster, selector: str) -> list[Any]:
    return [p for p in c.core.list_namespaced_pod(NS, label_selector=selector).items
            if p.metadata.deletion_timestamp is None]


def event_reasons(c: RealCluster, name: str) -> set[str]:
    return {e.reason for e in c.core.list_namespaced_event(NS).items if e.involved_object.name == name}


def condition(c: RealCluster, plural: str, name: str, kind: str = "Ready") -> dict[str, Any]:
    return next((x for x in status(c, plural, name).get("conditions") or [] if x.get("type") == kind), {})


def wait(env: Env, predicate, what: str, timeout: float = DEADLINE_S) -> Any:
    """env.cluster.wait, and on timeout the objects, events and the operators' log tails."""
    c = env.cluster
    try:
        return c.wait(predicate, what, timeout)
    except AssertionError as e:
        objects = c.kubectl("get", "pods,actorclusters,detachedactors", "-n", NS, "-o", "wide", check=False)
        events = c.kubectl("get", "events", "-n", NS, "--sort-by=.lastTimestamp", check=False).stdout
        logs = "\n".join(f"--- {p.name}:\n{p.read_text(errors='replace')[-3000:]}" for p in env.operators.logs)
        raise AssertionError(f"{e}\n--- objects:\n{objects.stdout}{objects.stderr}\n--- events:\n"
                             f"{chr(10).join(events.splitlines()[-30:])}\n{logs}") from None


def token(c: RealCluster, cluster: str) -> str:
    return base64.b64decode(c.core.read_namespaced_secret(f"{cluster}-token", NS).data["token"]).decode()


def outside(c: RealCluster, code: str, env: dict[str, str | None] | None = None,
            check: bool = True) -> subprocess.CompletedProcess[str]:
    """A program on the host, outside the pod network, resolving Service names through the
    cluster's hosts file (as a NodePort or LoadBalancer would serve them). A None in `env`
    removes that variable."""
    merged = {**os.environ, "KUBECONFIG": str(c.cp.kubeconfig), **(env or {})}
    done = subprocess.run(c.command([sys.executable, "-c", textwrap.dedent(code)]), capture_output=True, text=True,
                          timeout=180, env={k: v for k, v in merged.items() if v is not None})
    if check:
        assert done.returncode == 0, f"{done.stdout}\n{done.stderr[-3000:]}"
    return done


def driver(c: RealCluster, cluster: str, code: str, **extra_env: str | None) -> str:
    """A Kastor driver on the cluster's head Service; returns its stdout."""
    address = status(c, "actorclusters", cluster)["headAddress"]
    program = f"import kastor\nkastor.init(address={address!r})\n" + textwrap.dedent(code)
    return outside(c, program, {"KASTOR_TOKEN": token(c, cluster), **extra_env}).stdout


def kill_processes(c: RealCluster, pod: str, sig: int = signal.SIGKILL) -> None:
    """Sends `sig` to every process of the pod's containers."""
    for kubelet in c.kubelets.values():
        run = kubelet.find(NS, pod)
        if run is not None:
            for proc in run.processes():
                os.killpg(proc.pid, sig)
            return
    raise AssertionError(f"no kubelet runs pod {pod}")


# ---- the tests, in order ----

def test_the_schema_rejects_what_it_can(env):
    c = env.cluster
    with pytest.raises(ApiException) as e:
        create(c, "detachedactors", actor_cr("negative", maxRestarts=-5))
    assert e.value.status == 422 and "maxRestarts" in e.value.body
    with pytest.raises(ApiException) as e:
        create(c, "actorclusters", {"apiVersion": f"{GROUP}/{VERSION}", "kind": "ActorCluster",
                                    "metadata": {"name": "noimage"}, "spec": {}})
    assert e.value.status == 422 and "image" in e.value.body


def test_a_worker_advertises_its_containers_resources(env):
    """Issue 12 defect 14: CPUs and memory a worker advertises come from its container's
    resources (as KubeRay derives them); /dev/shm is sized to the object store."""
    c = env.cluster
    body = cluster_cr("demo")
    body["spec"]["workerGroups"][0]["resources"] = {"limits": {"cpu": "2500m", "memory": "1Gi"}}
    create(c, "actorclusters", body)
    wait(env, lambda: status(c, "actorclusters", "demo").get("phase") == "Ready", "ActorCluster demo Ready")
    assert {x["type"]: x["status"] for x in status(c, "actorclusters", "demo")["conditions"]} == \
        {"GcsReady": "True", "HeadReady": "True", "WorkersReady": "True", "Ready": "True"}
    [worker] = pods(c, "kastor.dev/cluster=demo,kastor.dev/role=worker")
    assert next(v for v in worker.spec.volumes if v.name == "dshm").empty_dir.size_limit == str(int(2**30 * 0.3))
    out = driver(c, "demo", """
        import time
        deadline = time.time() + 60
        while sum(n["Alive"] for n in kastor.nodes()) < 2 and time.time() < deadline:
            time.sleep(0.1)
        print(sorted((n["Resources"].get("CPU"), n["Resources"].get("memory", 0)) for n in kastor.nodes()))
    """)
    assert out.strip() == f"[(1.0, 0), (3.0, {float(2**30)})]", out


def test_deleting_a_detached_actor_kills_it(env):
    c = env.cluster
    create(c, "detachedactors", actor_cr("keeper", maxRestarts=-1))
    wait(env, lambda: status(c, "detachedactors", "keeper").get("state") == "Alive", "keeper Alive")
    first = status(c, "detachedactors", "keeper")["podName"]
    c.core.delete_namespaced_pod(first, NS)  # eviction or `kubectl delete pod`: the pod is replaced
    wait(env, lambda: (st := status(c, "detachedactors", "keeper")).get("podName") not in (None, first) and
         st.get("state") == "Alive" and st.get("restarts") == 1, "keeper restarted on a new pod")
    delete(c, "detachedactors", "keeper")
    wait(env, lambda: custom(c, "detachedactors", "keeper") is None, "the DetachedActor gone")
    wait(env, lambda: not c.core.list_namespaced_pod(NS, label_selector="kastor.dev/detached-actor=keeper").items,
         "its pods gone")
    assert driver(c, "demo", """
        try:
            kastor.get_actor("keeper", namespace="real-op")
        except ValueError:
            print("killed")
    """).strip() == "killed"


def test_a_spec_change_rolls_the_actor(env):
    c = env.cluster
    create(c, "detachedactors", actor_cr("roller", args=[1]))
    wait(env, lambda: status(c, "detachedactors", "roller").get("state") == "Alive", "roller Alive")
    old_id = status(c, "detachedactors", "roller")["actorId"]
    patch_spec(c, "detachedactors", "roller", {"args": [100]})
    wait(env, lambda: (st := status(c, "detachedactors", "roller")).get("state") == "Alive" and
         st.get("actorId") not in (None, old_id), "roller rolled to a new actor")
    assert driver(c, "demo", """
        print(kastor.get(kastor.get_actor("roller", namespace="real-op").incr.remote()))
    """).strip() == "101"


@pytest.mark.parametrize("name, spec, state, reason", [
    ("orphan", {"clusterRef": "no-such-cluster"}, "Pending", "ClusterNotFound"),
    ("noclass", {"actorClass": "sample_actors:Missing"}, "Dead", "ClassNotImportable"),
    ("badargs", {"args": [1, 2, 3, 4]}, "Dead", "ArgumentsMismatch"),
    ("broken", {"actorClass": "sample_actors:Broken", "maxRestarts": 3}, "Dead", "ConstructorFailed"),
])
def test_bad_detached_actors_end_in_a_condition_and_an_event(env, name, spec, state, reason):
    c = env.cluster
    body = actor_cr(name)
    create(c, "detachedactors", {**body, "spec": {**body["spec"], **spec}})
    wait(env, lambda: condition(c, "detachedactors", name).get("reason") == reason, f"{name}: {reason}")
    assert status(c, "detachedactors", name)["state"] == state
    wait(env, lambda: reason in event_reasons(c, name), f"a {reason} Event")
    assert env.operators.procs[0].poll() is None  # no crash loop
    if state == "Dead":  # no pod churn: exactly one attempt
        made = c.core.list_namespaced_pod(NS, label_selector=f"kastor.dev/detached-actor={name}").items
        assert [p.metadata.name for p in made] == [f"{name}-actor-1"]
    delete(c, "detachedactors", name)


def in_pod(c: RealCluster, pod: str, path: str) -> Path | None:
    """`path` as the pod's processes see it, reached from the host through their mount namespace
    (/proc/<pid>/root); None until a kubelet runs the pod's container. A pod's /tmp is its own
    volume, or an overlay of the host's /tmp with the volume on top: a file the test puts in
    the host's /tmp is not there, or (written behind the overlay's back) not reliably seen."""
    for kubelet in c.kubelets.values():
        run = kubelet.find(NS, pod)
        if run is not None:
            procs = run.processes()
            return Path(f"/proc/{procs[0].pid}/root") / path.lstrip("/") if procs else None
    return None


def test_a_constructor_failure_reads_the_same_whoever_sees_it_first(env):
    """The operator (from the GCS) and the actor's pod (its exit message) both see a constructor
    fail; the condition must not depend on which is first. Here the operator sees the actor
    registered (status.actorId, while its constructor still runs) before the constructor fails,
    so it reads the death from the GCS."""
    c = env.cluster
    create(c, "detachedactors", actor_cr("stalled", actorClass="sample_actors:FailsWhenReleased",
                                         args=["/tmp/release"], maxRestarts=3))
    release: Path | None = None
    try:
        wait(env, lambda: status(c, "detachedactors", "stalled").get("actorId"),
             "the operator sees the actor registered while its constructor runs")
        assert status(c, "detachedactors", "stalled")["state"] == "Pending"
        release = in_pod(c, status(c, "detachedactors", "stalled")["podName"], "/tmp/release")
        assert release is not None
        release.touch()
        wait(env, lambda: status(c, "detachedactors", "stalled").get("state") == "Dead", "stalled Dead")
        assert condition(c, "detachedactors", "stalled")["reason"] == "ConstructorFailed"
        wait(env, lambda: "ConstructorFailed" in event_reasons(c, "stalled"), "a ConstructorFailed Event")
    finally:
        release = release or in_pod(c, "stalled-actor-1", "/tmp/release")
        if release is not None:  # a wait above failed: the constructor ends, if its pod still runs
            with contextlib.suppress(OSError):
                release.touch()
        delete(c, "detachedactors", "stalled")


def test_init_by_an_unknown_cluster_name_is_a_clear_error(env):
    done = outside(env.cluster, """
        import kastor
        kastor.init(cluster="nope", k8s_namespace="real-op")
    """, check=False)
    assert done.returncode != 0
    assert "No ActorCluster 'nope' in namespace 'real-op'" in done.stderr, done.stderr[-3000:]


REDIS_POD = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "ext-redis", "labels": {"app": "ext-redis"}},
             "spec": {"containers": [{
                 "name": "redis", "image": "redis:7",
                 "command": ["redis-server", "--bind", "0.0.0.0", "--port", "6379", "--save", "", "--requirepass",
                             "s3cret"],
                 "readinessProbe": {"tcpSocket": {"port": 6379}, "periodSeconds": 1}}]}}
REDIS_SERVICE = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "ext-redis"},
                 "spec": {"selector": {"app": "ext-redis"}, "ports": [{"name": "redis", "port": 6379}]}}


def test_a_durable_actor_on_an_external_redis_continues_after_its_pod_is_deleted(env):
    """DetachedActor.spec.state with the Redis store: after `kubectl delete pod` the recreated
    actor continues counting from its checkpoint. The cluster's GCS is an external Redis (a
    pod and Service of the user's, under names of its own: the hung-head test makes another)."""
    c = env.cluster
    redis_pod = {**REDIS_POD, "metadata": {"name": "dur-redis", "labels": {"app": "dur-redis"}}}
    service = {**REDIS_SERVICE, "metadata": {"name": "dur-redis"},
               "spec": {**REDIS_SERVICE["spec"], "selector": {"app": "dur-redis"}}}
    c.core.create_namespaced_pod(NS, redis_pod)
    c.core.create_namespaced_service(NS, service)
    c.core.create_namespaced_secret(NS, {"metadata": {"name": "dur-redis"}, "stringData": {"password": "s3cret"}})
    try:
        create(c, "actorclusters", cluster_cr("dur", replicas=0, gcs={"redis": {
            "address": f"dur-redis.{NS}.svc:6379", "passwordSecret": {"name": "dur-redis"}}}))
        wait(env, lambda: status(c, "actorclusters", "dur").get("phase") == "Ready", "external-Redis cluster Ready")
        create(c, "detachedactors", actor_cr("ledger", "dur", args=[100], maxRestarts=-1,
                                             state={"store": "redis", "every": "call"}))
        wait(env, lambda: status(c, "detachedactors", "ledger").get("state") == "Alive", "ledger Alive")
        incr = """
            counter = kastor.get_actor("ledger", namespace="real-op")
            print(kastor.get([counter.incr.remote() for _ in range(3)])[-1])
        """
        assert driver(c, "dur", incr).strip() == "103"
        wait(env, lambda: status(c, "detachedactors", "ledger").get("lastCheckpointBytes", 0) > 0,
             "the checkpoint's time and size in the status")
        assert status(c, "detachedactors", "ledger")["lastCheckpointTime"].endswith("Z")
        first = status(c, "detachedactors", "ledger")["podName"]
        c.core.delete_namespaced_pod(first, NS)  # `kubectl delete pod`: the operator replaces it
        wait(env, lambda: (st := status(c, "detachedactors", "ledger")).get("podName") not in (None, first) and
             st.get("state") == "Alive" and st.get("restarts") == 1, "ledger restarted on a new pod")
        assert driver(c, "dur", incr).strip() == "106", "restored from its checkpoint, not constructed again"
        delete(c, "detachedactors", "ledger")
        wait(env, lambda: custom(c, "detachedactors", "ledger") is None, "ledger gone")
    finally:
        if custom(c, "actorclusters", "dur") is not None:
            delete(c, "actorclusters", "dur")
            wait(env, lambda: custom(c, "actorclusters", "dur") is None, "the dur cluster gone")
        c.core.delete_namespaced_pod("dur-redis", NS)
        c.core.delete_namespaced_service("dur-redis", NS)
        c.core.delete_namespaced_secret("dur-redis", NS)


HEAD_GRACE_S = 10  # the head pod's terminationGracePeriodSeconds (operator/build_cluster.py, _kastor_pod)


def test_deleting_a_cluster_with_a_hung_head_cleans_its_redis_keys_without_waiting_for_a_resync(env):
    """A cluster on an external Redis carries the finalizer (its keys outlive it). Its head
    hangs (SIGSTOP): a resync calling it waits for its deadline and cannot be cancelled. The
    deletion must still finish soon after the head pod is gone (its grace period, then
    SIGKILL), and leave no key of the cluster in the Redis. (A cluster without the finalizer
    is deleted without the operator at all: test_operator_real.py.)"""
    import redis

    c = env.cluster
    c.core.create_namespaced_pod(NS, REDIS_POD)
    c.core.create_namespaced_service(NS, REDIS_SERVICE)
    c.core.create_namespaced_secret(NS, {"metadata": {"name": "ext-redis"}, "stringData": {"password": "s3cret"}})
    create(c, "actorclusters", cluster_cr("ext", replicas=0, gcs={"redis": {
        "address": f"ext-redis.{NS}.svc:6379", "passwordSecret": {"name": "ext-redis"}}}))
    wait(env, lambda: status(c, "actorclusters", "ext").get("phase") == "Ready", "external-Redis cluster Ready")
    assert "kastor.dev/finalizer" in custom(c, "actorclusters", "ext")["metadata"]["finalizers"]
    client = redis.Redis(host=c.service_host_address("ext-redis", NS), port=6379, password="s3cret",
                         socket_timeout=10)
    [head] = pods(c, "kastor.dev/cluster=ext,kastor.dev/role=head")
    try:
        driver(c, "ext", """
            @kastor.remote
            class Keep:
                pass
            Keep.options(name="kept", lifetime="detached").remote()
        """)
        assert client.keys(f"kastor:{NS}.ext:*"), "the head keeps its state in the external Redis"
        kill_processes(c, head.metadata.name, signal.SIGSTOP)
        wait(env, lambda: condition(c, "actorclusters", "ext", "HeadReady").get("reason") == "HeadUnreachable",
             "the operator finds the head hung")
        delete(c, "actorclusters", "ext")
        wait(env, lambda: custom(c, "actorclusters", "ext") is None,
             "the ActorCluster gone soon after its head pod (a hung call to the head must not hold it)",
             timeout=HEAD_GRACE_S + 50)
        assert client.keys(f"kastor:{NS}.ext:*") == [], "deleting the cluster deletes its keys"
    finally:
        client.close()
        try:
            kill_processes(c, head.metadata.name, signal.SIGCONT)
        except (AssertionError, ProcessLookupError):
            pass  # the pod is gone already
        c.core.delete_namespaced_pod("ext-redis", NS)


def test_a_tls_cluster_end_to_end(env, tmp_path):
    """`spec.tls.secretName`: every pod serves TLS from the mounted Secret, the operator checks
    the head against its CA, and only a driver trusting the CA gets through."""
    pytest.importorskip("cryptography")
    from certs import tls_material

    c = env.cluster
    material = tls_material()
    c.core.create_namespaced_secret(NS, {
        "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls", "metadata": {"name": "secure-tls"},
        "data": {k: base64.b64encode(v).decode() for k, v in material.items()}})
    create(c, "actorclusters", cluster_cr("secure", replicas=0, tls={"secretName": "secure-tls"}))
    # Ready needs the operator to list the head's nodes: over TLS, checked against the CA.
    wait(env, lambda: status(c, "actorclusters", "secure").get("phase") == "Ready", "TLS ActorCluster Ready")
    create(c, "detachedactors", actor_cr("vault", "secure", args=[40]))
    wait(env, lambda: status(c, "detachedactors", "vault").get("state") == "Alive", "the actor Alive (GCS over TLS)")
    ca = tmp_path / "ca.crt"
    ca.write_bytes(material["ca.crt"])
    code = 'print(kastor.get(kastor.get_actor("vault", namespace="real-op").incr.remote()))'
    assert driver(c, "secure", code, KASTOR_TLS_CA=str(ca)).strip() == "41"
    address = status(c, "actorclusters", "secure")["headAddress"]
    plain = outside(c, f"import kastor\nkastor.init(address={address!r})\n{code}",
                    {"KASTOR_TOKEN": token(c, "secure"), "KASTOR_TLS_CA": None}, check=False)
    assert plain.returncode != 0, "a plain-text driver must not get through"
    delete(c, "detachedactors", "vault")
    delete(c, "actorclusters", "secure")


def test_detached_actors_outlive_their_cluster_but_their_pods_stop(env):
    """Issue 12 defect 8: a DetachedActor is a resource of its own and says its cluster is
    missing; its pod, useless without a head, stops at once."""
    c = env.cluster
    delete(c, "actorclusters", "demo")
    wait(env, lambda: condition(c, "detachedactors", "roller").get("reason") == "ClusterNotFound",
         "roller reports its cluster missing")
    wait(env, lambda: not pods(c, "kastor.dev/detached-actor=roller"), "roller's pod stopped with its cluster", 60)
    wait(env, lambda: not pods(c, "kastor.dev/cluster=demo,kastor.dev/role in (head,worker)"),
         "demo's head and worker pods gone")


def test_two_replicas_are_an_active_standby_pair_and_the_standby_takes_over(env):
    """Issue 12 defect 5: kopf pauses every replica sharing the highest peering priority, so
    the chart runs `--priority auto`; one replica acts, the other stands by and takes over when
    the leader goes. Last in the module: it replaces the module's operator. Its actor names a
    cluster that does not exist, so reconciling it needs no pods."""
    c, ops = env.cluster, env.operators
    wait(env, lambda: ops.live(0), "the first replica's liveness endpoint")
    ops.start("b")
    wait(env, lambda: ops.live(1), "the second replica's liveness endpoint")

    def peers() -> int:
        body = c.custom.get_namespaced_custom_object("kopf.dev", "v1", NS, "kopfpeerings", PEERING)
        return len(body.get("status") or {})

    def reconciled(generation: int) -> bool:
        got = status(c, "detachedactors", "paired")
        return got.get("observedGeneration") == generation and got.get("state") == "Pending"

    wait(env, lambda: peers() == 2, "both replicas registered in the peering object")
    before = [len(ops.log(i)) for i in (0, 1)]

    def acted(i: int) -> bool:  # kopf logs a handler's run on kastor.operator's loggers
        return "kastor.operator" in ops.log(i)[before[i]:]

    create(c, "detachedactors", actor_cr("paired", "not-created"))
    wait(env, lambda: reconciled(1), "reconciled by one of the two replicas (equal priorities: by none)")
    leader = 0 if acted(0) else 1
    standby = 1 - leader
    assert acted(leader) and not acted(standby), "exactly one replica acts"

    mark = len(ops.log(standby))
    ops.stop(leader)
    wait(env, lambda: "Resuming operations" in ops.log(standby)[mark:],
         "the standby takes over once the leader is gone")
    patch_spec(c, "detachedactors", "paired", {"args": [7]})
    wait(env, lambda: reconciled(2), "the former standby reconciles")
