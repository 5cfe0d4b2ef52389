"""Placement groups on a real three-node cluster (2 CPUs each, head state in Redis).

Each strategy places bundles where it promises; work scheduled into a bundle runs on that
bundle's node and draws on the bundle's resources, not the node's free pool; a group that
cannot be placed stays pending until resources free up; removing a group kills its actors and
tasks and gives the resources back; groups survive a head restart.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import kastor
import pytest
from gcs_cluster import TOKEN, own_redis_cluster
from kastor.exceptions import ActorDiedError, GetTimeoutError, TaskPlacementGroupRemoved, WorkerCrashedError
from kastor.runtime.protocol import kastor_pb2 as pb
from kastor.util import (
    get_current_placement_group,
    get_placement_group,
    placement_group,
    placement_group_table,
    remove_placement_group,
)
from kastor.util.placement_group import PlacementGroup, PlacementGroupID
from kastor.util.scheduling_strategies import PlacementGroupSchedulingStrategy
from kastor.util.state import list_nodes, list_placement_groups
from support import wait_until

DEADLINE_S = 60
NODES = {"n1", "n2", "n3"}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with own_redis_cluster(tmp_path_factory.mktemp("placement"), NODES) as c:
        yield c


@pytest.fixture
def idle(cluster):
    """Every node's CPUs free (earlier tests' groups and leases returned), and groups removed after."""
    created = []
    try:
        wait_until(lambda: all(n["available"].get("CPU") == 2 for n in list_nodes() if n["alive"]), "idle nodes",
                   timeout=DEADLINE_S)
    except BaseException:
        print("NODES", [(n["node_id"], n["available"], n["leases"]) for n in list_nodes() if n["alive"]])
        raise
    yield created
    for pg in created:
        remove_placement_group(pg)


@kastor.remote(num_cpus=1)
def node_of_task(hold_s: float = 0.0) -> str:
    time.sleep(hold_s)
    return kastor.get_runtime_context().get_node_id()


@kastor.remote(num_cpus=1)
class Placed:
    def node(self) -> str:
        return kastor.get_runtime_context().get_node_id()

    def group(self) -> str | None:
        pg = get_current_placement_group()
        return None if pg is None else pg.id.hex()


def bundle_nodes(pg) -> list[str]:
    row = placement_group_table(pg)
    return [row["bundles_to_node_id"][i] for i in range(len(row["bundles"]))]


def make(idle, bundles, strategy, **kw):
    pg = placement_group(bundles, strategy=strategy, **kw)
    idle.append(pg)
    return pg


def in_bundle(pg, index: int = -1, capture: bool = False) -> PlacementGroupSchedulingStrategy:
    return PlacementGroupSchedulingStrategy(pg, placement_group_bundle_index=index,
                                            placement_group_capture_child_tasks=capture)


def test_strict_spread_puts_each_bundle_on_its_own_node_and_work_follows_its_bundle(idle):
    pg = make(idle, [{"CPU": 1}] * 3, "STRICT_SPREAD")
    assert kastor.get(pg.ready(), timeout=DEADLINE_S) == pg
    assert pg.wait(DEADLINE_S)
    where = bundle_nodes(pg)
    assert sorted(where) == sorted(NODES)
    assert pg.bundle_count == 3 and pg.bundle_specs == [{"CPU": 1.0}] * 3
    for i, node in enumerate(where):
        assert kastor.get(node_of_task.options(scheduling_strategy=in_bundle(pg, i)).remote(),
                          timeout=DEADLINE_S) == node
        actor = Placed.options(scheduling_strategy=in_bundle(pg, i)).remote()
        assert kastor.get(actor.node.remote(), timeout=DEADLINE_S) == node
        assert kastor.get(actor.group.remote(), timeout=DEADLINE_S) == pg.id.hex()
        kastor.kill(actor)


def test_strict_pack_and_pack(idle):
    strict = make(idle, [{"CPU": 1}, {"CPU": 1}], "STRICT_PACK")
    assert strict.wait(DEADLINE_S)
    assert len(set(bundle_nodes(strict))) == 1
    # PACK: two 2-CPU bundles cannot share a 2-CPU node, so it packs best effort over two nodes.
    packed = make(idle, [{"CPU": 2}, {"CPU": 2}], "PACK")
    assert packed.wait(DEADLINE_S)
    assert len(set(bundle_nodes(packed))) == 2
    assert not set(bundle_nodes(packed)) & set(bundle_nodes(strict))


def test_spread_uses_distinct_nodes_while_it_can(idle):
    pg = make(idle, [{"CPU": 0.5}] * 3, "SPREAD")
    assert pg.wait(DEADLINE_S)
    assert sorted(bundle_nodes(pg)) == sorted(NODES)


def test_infeasible_strict_groups_stay_pending(idle):
    too_many = make(idle, [{"CPU": 1}] * 4, "STRICT_SPREAD")  # four bundles, three nodes
    too_big = make(idle, [{"CPU": 2}, {"CPU": 1}], "STRICT_PACK")  # three CPUs, on a 2-CPU node
    assert not too_many.wait(1) and not too_big.wait(0)
    states = {row["placement_group_id"]: row["state"] for row in list_placement_groups()}
    assert states[too_many.id.hex()] == states[too_big.id.hex()] == "PENDING"


def test_a_pending_group_is_placed_when_resources_free_up(idle):
    everything = make(idle, [{"CPU": 2}] * 3, "STRICT_SPREAD")
    assert everything.wait(DEADLINE_S)
    waiting = make(idle, [{"CPU": 1}], "PACK")
    ready = waiting.ready()
    assert kastor.wait([ready], timeout=1)[0] == []
    assert placement_group_table(waiting)["state"] == "PENDING"
    remove_placement_group(everything)  # its CPUs go back to the nodes, and the waiting group gets one
    assert kastor.get(ready, timeout=DEADLINE_S) == waiting
    assert placement_group_table(everything)["state"] == "REMOVED"


def test_work_waiting_for_a_group_fails_when_the_group_is_removed(idle):
    never = make(idle, [{"CPU": 3}], "PACK")  # no node has 3 CPUs
    ready = never.ready()
    task = node_of_task.options(scheduling_strategy=in_bundle(never), num_cpus=0).remote()
    actor = Placed.options(scheduling_strategy=in_bundle(never), num_cpus=0).remote()
    assert kastor.wait([ready, task], timeout=1)[0] == []
    remove_placement_group(never)
    for ref in (ready, task):
        with pytest.raises(TaskPlacementGroupRemoved, match=never.id.hex()):
            kastor.get(ref, timeout=DEADLINE_S)
    with pytest.raises(ActorDiedError, match="placement group"):
        kastor.get(actor.node.remote(), timeout=DEADLINE_S)


def test_bundles_are_reserved_for_the_groups_work_only(idle):
    pg = make(idle, [{"CPU": 2}] * 3, "SPREAD")  # every CPU of the cluster
    assert pg.wait(DEADLINE_S)
    outside = node_of_task.remote()
    assert kastor.wait([outside], timeout=1)[0] == [], "a task outside the group took a reserved CPU"
    inside = [node_of_task.options(scheduling_strategy=in_bundle(pg)).remote() for _ in range(6)]
    assert set(kastor.get(inside, timeout=DEADLINE_S)) <= NODES
    # Work larger than its bundle cannot run in it, whatever the node has: refused at once, as in Ray.
    with pytest.raises(ValueError, match="cannot fit into bundle 0"):
        node_of_task.options(num_cpus=3, scheduling_strategy=in_bundle(pg, 0)).remote()
    with pytest.raises(ValueError, match="cannot fit into any of its bundles"):
        Placed.options(num_cpus=3, scheduling_strategy=in_bundle(pg)).remote()
    remove_placement_group(pg)
    assert kastor.get(outside, timeout=DEADLINE_S) in NODES


def test_removing_a_group_kills_its_actors_and_tasks(idle):
    pg = make(idle, [{"CPU": 1}, {"CPU": 1}], "STRICT_SPREAD")
    assert pg.wait(DEADLINE_S)
    actor = Placed.options(scheduling_strategy=in_bundle(pg, 0)).remote()
    assert kastor.get(actor.node.remote(), timeout=DEADLINE_S) in NODES
    running = node_of_task.options(scheduling_strategy=in_bundle(pg, 1), max_retries=0).remote(600)
    retried = node_of_task.options(scheduling_strategy=in_bundle(pg, 1), num_cpus=0).remote(600)
    wait_until(lambda: sum(1 for n in list_nodes() for lease in n["leases"] if lease["kind"] == "task" and
                           any(pg.id.hex() in name for name in lease["resources"])) == 2,
               "both tasks running in bundle 1", timeout=DEADLINE_S)
    remove_placement_group(pg)
    with pytest.raises(ActorDiedError, match="placement group"):
        kastor.get(actor.node.remote(), timeout=DEADLINE_S)
    with pytest.raises(WorkerCrashedError):
        kastor.get(running, timeout=DEADLINE_S)
    with pytest.raises(TaskPlacementGroupRemoved, match="was removed"):  # its retry can never run
        kastor.get(retried, timeout=DEADLINE_S)
    wait_until(lambda: all(n["available"].get("CPU") == 2 and not any(pg.id.hex() in k for k in n["total"])
                           for n in list_nodes() if n["alive"]), "the group's resources returned", timeout=DEADLINE_S)
    with pytest.raises(ActorDiedError, match="placement group"):  # a removed group takes no new actors
        kastor.get(Placed.options(scheduling_strategy=in_bundle(pg, 0)).remote().node.remote(), timeout=DEADLINE_S)


@kastor.remote(num_cpus=0.5)
def parent_and_child(capture_expected: bool) -> tuple[str | None, str, str | None, str]:
    """Where this task runs and in which group, and the same for a child task it submits."""
    here = get_current_placement_group()
    child = kastor.get(child_task.remote(), timeout=DEADLINE_S)
    return (None if here is None else here.id.hex(), kastor.get_runtime_context().get_node_id(), *child)


@kastor.remote(num_cpus=0.5)
def child_task() -> tuple[str | None, str]:
    pg = get_current_placement_group()
    return None if pg is None else pg.id.hex(), kastor.get_runtime_context().get_node_id()


def test_current_group_and_capture_child_tasks_and_legacy_options(idle):
    pg = make(idle, [{"CPU": 1}], "PACK", name="trainer")
    assert pg.wait(DEADLINE_S)
    assert get_current_placement_group() is None  # a driver is in no group
    node = bundle_nodes(pg)[0]
    captured = parent_and_child.options(scheduling_strategy=in_bundle(pg, 0, capture=True)).remote(True)
    assert kastor.get(captured, timeout=DEADLINE_S) == (pg.id.hex(), node, pg.id.hex(), node)
    free = kastor.get(parent_and_child.options(scheduling_strategy=in_bundle(pg, 0)).remote(False),
                      timeout=DEADLINE_S)
    assert free[0] == pg.id.hex() and free[2] is None
    legacy = node_of_task.options(placement_group=pg, placement_group_bundle_index=0).remote()
    assert kastor.get(legacy, timeout=DEADLINE_S) == node
    assert get_placement_group("trainer") == pg
    with pytest.raises(ValueError, match="already exists"):
        placement_group([{"CPU": 1}], name="trainer")
    remove_placement_group(pg)
    with pytest.raises(ValueError, match="no live placement group"):
        get_placement_group("trainer")


def test_bad_arguments_are_named(cluster):
    with pytest.raises(ValueError, match="strategy"):
        placement_group([{"CPU": 1}], strategy="EVERYWHERE")
    with pytest.raises(ValueError, match="non-empty list"):
        placement_group([])
    with pytest.raises(ValueError, match="no resources"):
        placement_group([{"CPU": 0}])
    with pytest.raises(ValueError, match="lifetime"):
        placement_group([{"CPU": 1}], lifetime="forever")
    with pytest.warns(UserWarning, match="_soft_target_node_id"):
        remove_placement_group(placement_group([{"CPU": 0.1}], _soft_target_node_id="n1"))
    with pytest.raises(ValueError, match="1 selector.s. for 2 bundle.s.: give one per bundle"):
        placement_group([{"CPU": 0.1}] * 2, bundle_label_selector=[{"zone": "a"}])
    with pytest.raises(ValueError, match="Invalid label key name"):
        placement_group([{"CPU": 0.1}], bundle_label_selector=[{"-zone": "a"}])
    pg = placement_group([{"CPU": 0.1}])
    try:
        with pytest.raises(ValueError, match="placement_group_bundle_index"):
            node_of_task.options(scheduling_strategy=in_bundle(pg, 1))
        with pytest.raises(TypeError, match="PlacementGroup"):
            node_of_task.options(placement_group="my-group")
    finally:
        remove_placement_group(pg)


def test_kastor_status_and_list_show_groups(cluster, idle):
    pg = make(idle, [{"CPU": 1}, {"CPU": 1}], "STRICT_SPREAD", name="shown")
    assert pg.wait(DEADLINE_S)
    env = dict(os.environ, KASTOR_TOKEN=TOKEN)
    listed = subprocess.run([sys.executable, "-m", "kastor.runtime.cli", "list", "placement-groups", "--json",
                             "--address", cluster.address], env=env, capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0, listed.stderr
    rows = {r["placement_group_id"]: r for r in json.loads(listed.stdout)}
    assert rows[pg.id.hex()]["state"] == "CREATED" and rows[pg.id.hex()]["name"] == "shown"
    status = subprocess.run([sys.executable, "-m", "kastor.runtime.cli", "status", "--address", cluster.address],
                            env=env, capture_output=True, text=True, timeout=60)
    assert f"placement group {pg.id.hex()[:12]} shown STRICT_SPREAD CREATED" in status.stdout, status.stdout
    assert "_group_" not in status.stdout, "the nodes' lines list the group's own resource names"


def test_a_groups_job_ending_removes_it_unless_detached(cluster, idle):
    script = (
        "import sys, kastor\n"
        "from kastor.util import placement_group\n"
        "kastor.init(address=sys.argv[1], token=sys.argv[2])\n"
        "a = placement_group([{'CPU': 1}], name='of-the-job')\n"
        "b = placement_group([{'CPU': 1}], name='detached', lifetime='detached')\n"
        "assert a.wait(60) and b.wait(60)\n"
        "print(a.id.hex(), b.id.hex(), flush=True)\n"
        "kastor.shutdown()\n")
    out = subprocess.run([sys.executable, "-c", script, cluster.address, TOKEN], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    job_group, detached_id = out.stdout.split()
    wait_until(lambda: placement_group_table()[job_group]["state"] == "REMOVED", "the job's group removed",
               timeout=DEADLINE_S)
    detached = PlacementGroup(PlacementGroupID(bytes.fromhex(detached_id)))
    idle.append(detached)
    assert placement_group_table(detached)["state"] == "CREATED" and detached.bundle_specs == [{"CPU": 1.0}]


def test_groups_survive_a_head_restart(cluster, idle):
    pg = make(idle, [{"CPU": 1}] * 3, "STRICT_SPREAD", name="durable")
    assert pg.wait(DEADLINE_S)
    before = bundle_nodes(pg)
    cluster.kill_head()
    cluster.start_head()
    try:
        row = placement_group_table(pg)
    except GetTimeoutError:
        pytest.fail("the restarted head did not answer")
    assert row["state"] == "CREATED" and bundle_nodes(pg) == before
    assert kastor.get(node_of_task.options(scheduling_strategy=in_bundle(pg, 2)).remote(),
                      timeout=DEADLINE_S) == before[2]
    remove_placement_group(pg)
    wait_until(lambda: all(n["available"].get("CPU") == 2 for n in list_nodes() if n["alive"]),
               "the group's CPUs back after the restart", timeout=DEADLINE_S)


def test_bundles_on_a_dead_node_are_rescheduled_and_their_actors_follow(cluster, idle):
    """Two extra nodes with a resource no other node has, so the test knows where the bundle must go."""
    cluster.add_node("spare-a", resources={"pgtest": 1})
    pg = make(idle, [{"pgtest": 1}], "PACK")
    assert pg.wait(DEADLINE_S) and bundle_nodes(pg) == ["spare-a"]
    actor = Placed.options(scheduling_strategy=in_bundle(pg, 0), max_restarts=1, num_cpus=0).remote()
    assert kastor.get(actor.node.remote(), timeout=DEADLINE_S) == "spare-a"
    cluster.add_node("spare-b", resources={"pgtest": 1})
    cluster.kill_node("spare-a")
    wait_until(lambda: placement_group_table(pg)["bundles_to_node_id"] == {0: "spare-b"},
               "the bundle reserved again on the other node", timeout=DEADLINE_S)
    assert placement_group_table(pg)["state"] == "CREATED"
    assert kastor.get(actor.node.remote(), timeout=DEADLINE_S) == "spare-b"


@kastor.remote(num_cpus=1)
def parent_in_full_bundle() -> str:
    """Holds its bundle's one CPU and waits for a child that needs that CPU (captured into the bundle)."""
    return kastor.get(node_of_task.remote(), timeout=DEADLINE_S)


def test_a_blocked_task_lends_its_bundles_cpu_to_the_work_it_waits_for(idle):
    pg = make(idle, [{"CPU": 1}], "PACK")
    assert pg.wait(DEADLINE_S)
    parent = parent_in_full_bundle.options(scheduling_strategy=in_bundle(pg, 0, capture=True)).remote()
    assert kastor.get(parent, timeout=DEADLINE_S) == bundle_nodes(pg)[0]


def test_a_restarted_node_agent_gets_its_lost_bundles_back(cluster, idle):
    """The agent comes back (same node id) without the reservations it held: the head reserves them again."""
    cluster.add_node("restarting", resources={"pgrestart": 1})
    pg = make(idle, [{"pgrestart": 1}], "PACK")
    assert pg.wait(DEADLINE_S) and bundle_nodes(pg) == ["restarting"]
    cluster.kill_node("restarting")
    cluster.add_node("restarting", resources={"pgrestart": 1})
    wait_until(lambda: any("pgrestart_group_0_" + pg.id.hex() in n["total"] for n in list_nodes()
                           if n["node_id"] == "restarting" and n["alive"]),
               "the bundle reserved again on the restarted agent", timeout=DEADLINE_S)
    assert kastor.get(node_of_task.options(scheduling_strategy=in_bundle(pg, 0), num_cpus=0).remote(),
                      timeout=DEADLINE_S) == "restarting"


@kastor.remote(num_cpus=2)
def omp_threads() -> str | None:
    return os.environ.get("OMP_NUM_THREADS")


@kastor.remote(num_cpus=2)
class OmpActor:
    def threads(self) -> str | None:
        return os.environ.get("OMP_NUM_THREADS")


@pytest.mark.skipif("OMP_NUM_THREADS" in os.environ, reason="the user's OMP_NUM_THREADS wins in every worker")
def test_omp_threads_follow_the_cpus_asked_of_a_bundle(idle):
    pg = make(idle, [{"CPU": 2}, {"CPU": 2}], "STRICT_SPREAD")
    assert pg.wait(DEADLINE_S)
    assert kastor.get(omp_threads.options(scheduling_strategy=in_bundle(pg, 0)).remote(), timeout=DEADLINE_S) == "2"
    actor = OmpActor.options(scheduling_strategy=in_bundle(pg, 1)).remote()
    assert kastor.get(actor.threads.remote(), timeout=DEADLINE_S) == "2"


@kastor.remote(num_cpus=0)
class GroupMaker:
    def make(self, detached: bool) -> str:
        return placement_group([{"CPU": 0.5}], lifetime="detached" if detached else None).id.hex()


def test_a_group_an_actor_created_goes_with_the_actor_unless_detached(idle):
    maker = GroupMaker.remote()
    owned, detached = (kastor.get(maker.make.remote(d), timeout=DEADLINE_S) for d in (False, True))
    idle.append(PlacementGroup(PlacementGroupID(bytes.fromhex(detached))))
    wait_until(lambda: placement_group_table()[owned]["state"] == "CREATED", "the actor's group created",
               timeout=DEADLINE_S)
    kastor.kill(maker)
    wait_until(lambda: placement_group_table()[owned]["state"] == "REMOVED", "the actor's group removed",
               timeout=DEADLINE_S)
    assert placement_group_table()[detached]["state"] == "CREATED"


def test_a_restarted_head_takes_back_bundles_it_lost_track_of(cluster, idle):
    """The head crashed after saving a removal and before telling the node: the bundle must not leak."""
    import redis

    cluster.add_node("leaky", resources={"pgleak": 1})
    pg = make(idle, [{"pgleak": 1}], "PACK")
    assert pg.wait(DEADLINE_S) and bundle_nodes(pg) == ["leaky"]
    cluster.kill_head()
    store = redis.Redis(port=cluster.redis.port)
    key = f"kastor:{cluster.cluster_id}:placement_groups"
    info = pb.PlacementGroupInfo.FromString(store.hget(key, pg.id.hex()))
    info.state = pb.PG_REMOVED
    store.hset(key, pg.id.hex(), info.SerializeToString())
    cluster.start_head()
    wait_until(lambda: [n["available"].get("pgleak") for n in list_nodes() if n["node_id"] == "leaky"] == [1.0]
               and not any(pg.id.hex() in k for n in list_nodes() for k in n["total"]),
               "the node's bundle returned", timeout=DEADLINE_S)
