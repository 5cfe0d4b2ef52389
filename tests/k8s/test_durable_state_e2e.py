"""DetachedActor.spec.state end to end (emulated API server and kubelet, real processes): the status
shows the last checkpoint, and after `kubectl delete pod` of the actor's pod, the recreated actor
continues counting where it was."""

from __future__ import annotations

from .test_operator_e2e import NEEDS_PRIVATE_HOSTS, NS, actor_cr, cluster_cr, create, run_driver, status

pytestmark = NEEDS_PRIVATE_HOSTS
# Each wait spans process starts (the operator's own: importing kopf alone took 12 s of wall time
# at load 40; a pod's Python and gRPC), which under load take minutes, not seconds. With 90 s, 5
# of 10 runs under `stress-ng --cpu 2` (load 30-40) timed out at "vault Ready" before the operator
# had even started; with 240 s, 2 of 2 passed. The real-cluster tests wait as long
# (test_real_user_flow.DEADLINE_S).
DEADLINE_S = 240


def test_a_durable_actor_continues_counting_after_its_pod_is_deleted(k8s):
    create(k8s, "actorclusters", {**cluster_cr("vault", replicas=0), "spec": {
        **cluster_cr("vault", replicas=0)["spec"], "gcs": {"redis": {"managed": True}}}})
    k8s.wait(lambda: status(k8s, "actorclusters", "vault").get("phase") == "Ready", "ActorCluster vault Ready",
             timeout=DEADLINE_S)
    create(k8s, "detachedactors", actor_cr("ledger", "vault", args=[100], maxRestarts=-1,
                                           state={"store": "redis", "every": "call"}))
    k8s.wait(lambda: status(k8s, "detachedactors", "ledger").get("state") == "Alive", "ledger Alive",
             timeout=DEADLINE_S)
    incr = """
        counter = kastor.get_actor("ledger", namespace="default")
        print(kastor.get([counter.incr.remote() for _ in range(3)])[-1])
    """
    assert run_driver(k8s, "vault", incr).strip() == "103"
    k8s.wait(lambda: status(k8s, "detachedactors", "ledger").get("lastCheckpointBytes", 0) > 0,
             "the checkpoint's time and size in the status", timeout=DEADLINE_S)
    assert status(k8s, "detachedactors", "ledger")["lastCheckpointTime"].endswith("Z")

    k8s.core.delete_namespaced_pod("ledger-actor-1", NS)  # `kubectl delete pod`: the operator replaces it
    k8s.wait(lambda: status(k8s, "detachedactors", "ledger").get("podName") == "ledger-actor-2" and
             status(k8s, "detachedactors", "ledger").get("state") == "Alive" and
             status(k8s, "detachedactors", "ledger").get("restarts") == 1, "ledger restarted on a new pod",
             timeout=DEADLINE_S)
    assert run_driver(k8s, "vault", incr).strip() == "106", "restored from its checkpoint, not constructed again"
