"""The managed Redis (the GCS store) as a StatefulSet on a PersistentVolumeClaim, end to end on
the real control plane (issue 12 defect 13).

The operator (`python -m kastor.operator`, a host process with the admin kubeconfig) makes the
StatefulSet; Kubernetes' StatefulSet controller makes its pod and claim; the volume binder hands
the claim to the harness's local-path provisioner; the process kubelet mounts the volume as the
Redis container's working directory, where Redis keeps its append-only file. After
`kubectl delete pod` of the Redis pod, the StatefulSet makes it again on the same claim: the
head's tables (a named detached actor) are still in Redis, the head reconnects on its own and
writes again, and the actor still answers.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import kubernetes
import pytest
import redis

from .host_flows import run_driver, wait_explained
from .real_cluster import RealCluster, netns_problem
from .test_operator_real import running_operator
from .test_real_apiserver import api  # noqa: F401 - the fixture: crds/ applied

pytestmark = pytest.mark.skipif(netns_problem() is not None, reason=f"{netns_problem()}")
NS = "redis-sts"
GROUP, VERSION = "kastor.dev", "v1alpha1"
DEADLINE_S = 240.0  # real processes in pods on a loaded, shared 2-core machine
POD_ENV = [{"name": "KASTOR_PRESTART_WORKERS", "value": "0"}]
REDIS_PODS = "kastor.dev/cluster=gcs,kastor.dev/role=redis"


@pytest.fixture(scope="module")
def cluster(real_k8s, api, tmp_path_factory) -> Iterator[RealCluster]:  # noqa: F811 - the fixture imported above
    c = RealCluster(real_k8s, tmp_path_factory.mktemp("redis-sts"), nodes=("sts-a",), storage=True).start()
    try:
        c.make_namespace(NS)
        with running_operator(real_k8s, c.workdir / "operator.log", namespace=NS, wrap=c.command):
            yield c
    finally:
        c.stop()


def status(c: RealCluster) -> dict[str, Any]:
    try:
        return c.custom.get_namespaced_custom_object(GROUP, VERSION, NS, "actorclusters", "gcs").get("status") or {}
    except kubernetes.client.ApiException as e:
        if e.status == 404:
            return {}
        raise


def condition(c: RealCluster, kind: str) -> dict[str, Any]:
    return next((x for x in status(c).get("conditions") or [] if x.get("type") == kind), {})


def wait(c: RealCluster, predicate, what: str) -> Any:
    """c.wait, and on timeout the objects, events and the operator's log tail."""
    return wait_explained(c, predicate, what, DEADLINE_S, NS, "pods,pvc,pv,statefulsets,actorclusters")


def secret(c: RealCluster, key: str) -> str:
    return base64.b64decode(c.core.read_namespaced_secret("gcs-token", NS).data[key]).decode()


def driver(c: RealCluster, code: str) -> str:
    """A driver on the host, through the head's Service (its name resolves to the host-side address)."""
    return run_driver(c, status(c)["headAddress"], secret(c, "token"), code)


def gcs_actors(c: RealCluster) -> bytes | None:
    """The head's actor table as the Redis behind the cluster's Redis Service holds it (None while
    the Service has no ready endpoint)."""
    client = redis.Redis(host=c.service_host_address("gcs-redis", NS), port=6379,
                         password=secret(c, "redis-password"), socket_timeout=10, socket_connect_timeout=5)
    try:
        return b"".join(client.hgetall(f"kastor:{NS}.gcs:actors").values())
    except redis.exceptions.ConnectionError:
        return None
    finally:
        client.close()


def redis_pods(c: RealCluster) -> list[Any]:
    return c.core.list_namespaced_pod(NS, label_selector=REDIS_PODS).items


def ready(pod: Any) -> bool:
    return pod.metadata.deletion_timestamp is None and any(
        x.type == "Ready" and x.status == "True" for x in pod.status.conditions or [])


KEEPER = """
    @kastor.remote
    class Keeper:
        def __init__(self):
            self.n = 0

        def incr(self):
            self.n += 1
            return self.n

    k = Keeper.options(name={name!r}, namespace="redis-sts", lifetime="detached").remote()
    print(kastor.get(k.incr.remote()))
"""
CALL = """
    print(kastor.get(kastor.get_actor("keeper", namespace="redis-sts").incr.remote()))
"""


def test_the_gcs_survives_the_deletion_of_the_redis_pod(cluster):
    template = {"spec": {"containers": [{"name": "kastor", "env": POD_ENV}]}}
    cluster.custom.create_namespaced_custom_object(GROUP, VERSION, NS, "actorclusters", {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "ActorCluster", "metadata": {"name": "gcs"},
        "spec": {"image": "kastor:test", "head": {"template": template},
                 "workerGroups": [{"name": "cpu", "replicas": 0, "template": template}],
                 "gcs": {"redis": {"managed": True, "storage": {"size": "1Gi"}}}}})
    wait(cluster, lambda: status(cluster).get("phase") == "Ready", "ActorCluster gcs Ready")
    assert driver(cluster, KEEPER.format(name="keeper")).strip() == "1"
    assert b"keeper" in (gcs_actors(cluster) or b""), "the head wrote the named actor to its Redis"

    first = redis_pods(cluster)
    assert len(first) == 1, [p.metadata.name for p in first]
    cluster.kubectl("delete", "pod", first[0].metadata.name, "-n", NS)

    def replaced() -> bool:
        pods = redis_pods(cluster)
        return len(pods) == 1 and pods[0].metadata.uid != first[0].metadata.uid and ready(pods[0]) \
            and condition(cluster, "GcsReady").get("status") == "True"

    wait(cluster, replaced, "a new Redis pod Ready")
    [table] = wait(cluster, lambda: [t] if (t := gcs_actors(cluster)) is not None else None,
                   "the Redis Service answering")
    assert b"keeper" in table, "the append-only file on the claim brought the actor table back"
    assert driver(cluster, CALL).strip() == "2", "the actor lives on, and the head answers for it"
    # The head reconnected to the new Redis by itself: what it writes now reaches it.
    assert driver(cluster, KEEPER.format(name="after")).strip() == "1"
    assert b"after" in (gcs_actors(cluster) or b"")

    # What made it so: a StatefulSet of the cluster, its claim from the volumeClaimTemplate, Bound.
    sts = cluster.apps.read_namespaced_stateful_set("gcs-redis", NS)
    assert sts.metadata.owner_references[0].kind == "ActorCluster"
    assert [p.metadata.name for p in redis_pods(cluster)] == ["gcs-redis-0"]
    claim = cluster.core.read_namespaced_persistent_volume_claim("data-gcs-redis-0", NS)
    assert claim.status.phase == "Bound" and claim.spec.resources.requests["storage"] == "1Gi"
