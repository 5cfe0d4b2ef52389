"""Label-based scheduling (Ray 2.x's label_selector and fallback_strategy) on a multi-node cluster
whose node agents carry labels: the head places actors, and the node agents lease task workers,
only on nodes whose labels match; fallbacks are tried in order; work no node matches stays
pending, reported to the autoscaler with its selector, and runs once a matching node joins."""

import os
import subprocess
import sys
import textwrap

import kastor
import kastor.util.state
import pytest
from gcs_cluster import TOKEN, own_redis_cluster
from kastor.operator.head_client import HeadClient
from kastor.runtime import node_labels
from kastor.util.placement_group import placement_group, placement_group_table, remove_placement_group
from support import wait_until

DEADLINE_S = 60
LABELS = {
    "plain": {},
    "gpu-a": {"accel": "A100", "region": "us-west"},
    "spot": {"market": "spot", "region": "us-east"},
}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with own_redis_cluster(tmp_path_factory.mktemp("labels"), {"plain"}) as c:
        for node_id in ("gpu-a", "spot"):
            c.add_node(node_id, labels=LABELS[node_id])
        yield c


@pytest.fixture(scope="module")
def head():
    client = HeadClient()
    yield client
    client.close()


@kastor.remote
def node_of_task() -> str:
    return kastor.get_runtime_context().get_node_id()


@kastor.remote
def labels_here() -> dict[str, str]:
    return kastor.get_runtime_context().get_node_labels()


@kastor.remote
class Placed:
    def node(self) -> str:
        return kastor.get_runtime_context().get_node_id()


def placed_on(options: dict) -> tuple[str, set[str]]:
    """Where an actor with these options runs, and where four such tasks run."""
    actor = Placed.options(**options).remote()
    actor_node = kastor.get(actor.node.remote(), timeout=DEADLINE_S)
    kastor.kill(actor)
    tasks = kastor.get([node_of_task.options(**options).remote() for _ in range(4)], timeout=DEADLINE_S)
    return actor_node, set(tasks)


@pytest.mark.parametrize(("selector", "node"), [
    ({"accel": "A100"}, "gpu-a"),                                      # equals
    ({"region": "!us-west", "market": "spot"}, "spot"),                # not equal, and every key must match
    ({"region": "in(us-west, eu-central)"}, "gpu-a"),                  # in
    ({"accel": "!in(A100)", "region": "!in(us-east,us-west)"}, "plain"),  # not in: a node without the key too
    ({"kastor.io/node-id": "spot"}, "spot"),                           # the default node-id label
    ({"ray.io/node-id": "gpu-a"}, "gpu-a"),                            # Ray's key reads Kastor's
])
def test_actors_and_tasks_run_only_on_nodes_whose_labels_match(cluster, selector, node):
    assert placed_on({"label_selector": selector}) == (node, {node})


def test_fallbacks_are_tried_in_order_only_when_no_node_matches_before(cluster):
    fallbacks = [{"label_selector": {"market": "on-demand"}}, {"label_selector": {"region": "us-east"}},
                 {"label_selector": {"region": "us-west"}}]
    assert placed_on({"label_selector": {"region": "nowhere"}, "fallback_strategy": fallbacks}) == ("spot", {"spot"})
    # A primary selector some node matches wins over every fallback.
    assert placed_on({"label_selector": {"region": "us-west"}, "fallback_strategy": fallbacks}) == ("gpu-a", {"gpu-a"})
    # An empty fallback makes the selector a preference: anywhere when nothing matches.
    anywhere = placed_on({"label_selector": {"region": "nowhere"}, "fallback_strategy": [{"label_selector": {}}]})
    assert anywhere[0] in LABELS and anywhere[1] <= set(LABELS)


def test_spread_stays_within_the_nodes_the_selector_matches(cluster):
    options = {"label_selector": {"region": "in(us-west,us-east)"}, "scheduling_strategy": "SPREAD"}
    def idle() -> bool:  # SPREAD prefers nodes with room, then the fewest actors: start from equal nodes
        free = {n["node_id"]: n["available"].get("CPU") for n in kastor.util.state.list_nodes()}
        return free["gpu-a"] == free["spot"] == 2 and \
            not [a for a in kastor.util.state.list_actors() if a["state"] != "DEAD"]
    wait_until(idle, "gpu-a and spot free, the earlier tests' actors gone")
    # Created at once: the head counts the placements it has in flight.
    actors = [Placed.options(**options).remote() for _ in range(2)]
    nodes = kastor.get([a.node.remote() for a in actors], timeout=DEADLINE_S)
    # It failed once in CI (both on one node) and never since; if it does again, say what the head saw.
    assert sorted(nodes) == ["gpu-a", "spot"], (nodes, kastor.util.state.list_actors(), kastor.util.state.list_nodes())
    for actor in actors:
        kastor.kill(actor)
    tasks = kastor.get([node_of_task.options(**options).remote() for _ in range(6)], timeout=DEADLINE_S)
    assert set(tasks) <= {"gpu-a", "spot"}


def test_nodes_report_their_labels(cluster):
    by_id = {n["NodeID"]: n["Labels"] for n in kastor.nodes() if n["Alive"]}
    for node_id, labels in LABELS.items():
        assert by_id[node_id] == {**labels, "kastor.io/node-id": node_id}
    inside = kastor.get(labels_here.options(label_selector={"market": "spot"}).remote(), timeout=DEADLINE_S)
    assert inside == {**LABELS["spot"], "kastor.io/node-id": "spot"}


def pending_with(head, cluster, kind: str, selector: dict) -> bool:
    wanted = [selector]
    return any(d.kind == kind and [dict(s.match) for s in d.labels] == wanted
               for d in head.cluster_demand(cluster.address, TOKEN).pending)


def test_work_no_node_matches_stays_pending_in_the_demand_until_a_matching_node_joins(cluster, head):
    selector = {"zone": "late"}
    actor = Placed.options(label_selector=selector).remote()
    task = node_of_task.options(label_selector=selector).remote()
    wait_until(lambda: pending_with(head, cluster, "actor", selector), "the actor pending in the cluster demand")
    wait_until(lambda: pending_with(head, cluster, "task", selector), "the task pending in the cluster demand")
    ready, _ = kastor.wait([task, actor.node.remote()], num_returns=2, timeout=0)
    assert ready == []
    cluster.add_node("late", labels=selector)
    assert kastor.get(actor.node.remote(), timeout=DEADLINE_S) == "late"
    assert kastor.get(task, timeout=DEADLINE_S) == "late"
    wait_until(lambda: not pending_with(head, cluster, "actor", selector), "the actor gone from the demand")
    kastor.kill(actor)


@kastor.remote(label_selector={"market": "spot"})
def hold_until_fed(fifo: str) -> str:
    with open(fifo) as f:  # blocks, holding its CPU, until the test opens the FIFO for writing
        return f.read()


def test_work_queued_on_a_busy_matching_node_is_reported_with_its_labels(cluster, head, tmp_path):
    fifo = str(tmp_path / "gate")
    os.mkfifo(fifo)
    holders = [hold_until_fed.remote(fifo) for _ in range(2)]  # both of spot's CPUs

    def spot_full() -> bool:
        return next(n for n in kastor.util.state.list_nodes() if n["node_id"] == "spot")["available"]["CPU"] == 0
    wait_until(spot_full, "spot's CPUs held")
    queued = node_of_task.options(label_selector={"market": "spot"}).remote()
    wait_until(lambda: pending_with(head, cluster, "task", {"market": "spot"}), "the queued task in the demand")
    with open(fifo, "w") as f:
        f.write("go")
    kastor.get(holders, timeout=DEADLINE_S)
    assert kastor.get(queued, timeout=DEADLINE_S) == "spot"


def test_placement_group_bundles_go_to_nodes_their_selectors_match(cluster):
    pg = placement_group([{"CPU": 0.5}, {"CPU": 0.5}], strategy="PACK",
                         bundle_label_selector=[{"market": "spot"}, {"accel": "A100"}])
    try:
        assert pg.wait(DEADLINE_S)
        assert placement_group_table(pg)["bundles_to_node_id"] == {0: "spot", 1: "gpu-a"}
    finally:
        remove_placement_group(pg)
    waiting = placement_group([{"CPU": 0.5}], bundle_label_selector=[{"pool": "reserved"}])
    try:
        wait_until(lambda: "bundle_label_selector" in placement_group_table(waiting)["stats"]["scheduling_state"],
                   "the group pending for its labels")
        cluster.add_node("reserved", labels={"pool": "reserved"})
        assert waiting.wait(DEADLINE_S)
        assert placement_group_table(waiting)["bundles_to_node_id"] == {0: "reserved"}
    finally:
        remove_placement_group(waiting)


def test_label_syntax_of_nodes():
    assert node_labels.parse_node_labels(" region=us-west , cpu-family=amd,", "t") == \
        {"region": "us-west", "cpu-family": "amd"}
    with pytest.raises(ValueError, match="`novalue` is not a label: write key=value pairs"):
        node_labels.parse_node_labels("novalue", "t")
    with pytest.raises(ValueError, match="Invalid label key name `-x`"):
        node_labels.parse_node_labels("-x=1", "t")
    with pytest.raises(ValueError, match="invalid value `a b` for label `k`"):
        node_labels.parse_node_labels("k=a b", "t")
    with pytest.raises(ValueError, match="is the node's id"):
        node_labels.parse_node_labels("kastor.io/node-id=x", "t")
    # Ray's keys a node may carry (as a Ray cluster's rayStartParams would set them) read as Kastor's, and back.
    assert node_labels.matches({"ray.io/accelerator-type": "H100"}, {"kastor.io/accelerator-type": "H100"})
    assert node_labels.matches({"kastor.io/node-id": "n"}, {"ray.io/node-id": "in(m,n)"})


def test_kastor_start_refuses_malformed_labels_before_starting_anything(tmp_path):
    env = dict(os.environ, KASTOR_SESSION_ROOT=str(tmp_path))
    env.pop("KASTOR_ADDRESS", None)
    done = subprocess.run([sys.executable, "-m", "kastor.runtime.cli", "start", "--head", "--labels", "zone"],
                          capture_output=True, text=True, env=env, timeout=DEADLINE_S)
    assert done.returncode == 2
    assert "--labels / KASTOR_NODE_LABELS: `zone` is not a label" in done.stderr
    assert not list(tmp_path.iterdir())  # no session was started


def test_init_labels_label_the_embedded_clusters_node(tmp_path):
    script = textwrap.dedent("""
        import kastor
        import pytest

        with pytest.raises(ValueError, match="Invalid label key name"):
            kastor.init(labels={"bad key": "x"})
        with pytest.raises(ValueError, match="labels describe a new local cluster"):
            kastor.init(address="127.0.0.1:1", labels={"hardware": "mock-gpu"})
        kastor.init(num_cpus=1, labels={"hardware": "mock-gpu"})

        @kastor.remote(label_selector={"hardware": "mock-gpu"})
        def labels_here():
            return kastor.get_runtime_context().get_node_labels()

        got = kastor.get(labels_here.remote(), timeout=60)
        assert got["hardware"] == "mock-gpu" and got["kastor.io/node-id"], got
        assert kastor.nodes()[0]["Labels"] == got
        print("labelled", got["hardware"])
    """)
    env = dict(os.environ, KASTOR_SESSION_ROOT=str(tmp_path))
    for name in ("KASTOR_ADDRESS", "KASTOR_TOKEN", "KASTOR_NODE_LABELS"):
        env.pop(name, None)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env,
                          timeout=DEADLINE_S * 2)
    assert done.returncode == 0, done.stderr
    assert "labelled mock-gpu" in done.stdout
