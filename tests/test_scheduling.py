"""scheduling_strategy on a three-node cluster: SPREAD, and NodeAffinitySchedulingStrategy hard and soft."""

import asyncio
import time

import grpc
import kastor
import pytest
from gcs_cluster import own_redis_cluster
from kastor.exceptions import ActorDiedError, TaskUnschedulableError
from kastor.runtime import auth, context
from kastor.runtime.ids import new_task_id, return_id
from kastor.runtime.owned_values import OwnedValues
from kastor.runtime.ownership import ObjectTable
from kastor.runtime.peers import Peers
from kastor.runtime.pending import PendingCall
from kastor.runtime.protocol import kastor_pb2 as pb
from kastor.runtime.protocol import kastor_pb2_grpc as pb_grpc
from kastor.runtime.rpc import ChannelCache
from kastor.runtime.task_submitter import TaskSubmitter
from kastor.util.scheduling_strategies import NodeAffinitySchedulingStrategy, PlacementGroupSchedulingStrategy
from kastor.util.state import list_actors, list_nodes
from support import wait_until
from test_submitter_parts import _until

DEADLINE_S = 60
NODES = {"n1", "n2", "n3"}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with own_redis_cluster(tmp_path_factory.mktemp("scheduling"), NODES) as c:
        yield c


@kastor.remote
def node_of_task(hold_s: float = 0.0) -> str:
    time.sleep(hold_s)  # keeps its lease busy, so that later tasks need other leases
    return kastor.get_runtime_context().get_node_id()


@kastor.remote
class Barrier:
    """Releases its waiters once `parties` of them wait at once."""

    def __init__(self, parties: int):
        self.parties = parties
        self.arrived = 0
        self.all_here = asyncio.Event()

    async def wait(self) -> None:
        self.arrived += 1
        if self.arrived == self.parties:
            self.all_here.set()
        await self.all_here.wait()


@kastor.remote
def node_after_barrier(barrier) -> str:
    kastor.get(barrier.wait.remote())  # every task of the batch runs at once, each on its own lease
    return kastor.get_runtime_context().get_node_id()


@kastor.remote
def slow_node_of_task(hold_s: float) -> str:
    """node_of_task, but with no history of short runs (those would be pipelined onto one lease)."""
    time.sleep(hold_s)
    return kastor.get_runtime_context().get_node_id()


@kastor.remote
class Placed:
    def node(self) -> str:
        return kastor.get_runtime_context().get_node_id()


def test_node_affinity_pins_actors_and_tasks(cluster):
    for node in ("n2", "n3"):
        pinned = NodeAffinitySchedulingStrategy(node, soft=False)
        actor = Placed.options(scheduling_strategy=pinned).remote()
        assert kastor.get(actor.node.remote(), timeout=DEADLINE_S) == node
        kastor.kill(actor)  # leaves the nodes empty for the SPREAD test
        tasks = [node_of_task.options(scheduling_strategy=pinned).remote() for _ in range(4)]
        assert set(kastor.get(tasks, timeout=DEADLINE_S)) == {node}


def test_hard_affinity_to_a_missing_node_fails_and_soft_runs_elsewhere(cluster):
    missing = NodeAffinitySchedulingStrategy("no-such-node", soft=False)
    with pytest.raises(ActorDiedError, match="pinned to node no-such-node"):
        kastor.get(Placed.options(scheduling_strategy=missing).remote().node.remote(), timeout=DEADLINE_S)
    with pytest.raises(TaskUnschedulableError, match="soft=True"):
        kastor.get(node_of_task.options(scheduling_strategy=missing).remote(), timeout=DEADLINE_S)
    anywhere = NodeAffinitySchedulingStrategy("no-such-node", soft=True)
    actor = Placed.options(scheduling_strategy=anywhere).remote()
    assert kastor.get(actor.node.remote(), timeout=DEADLINE_S) in NODES
    kastor.kill(actor)
    assert kastor.get(node_of_task.options(scheduling_strategy=anywhere).remote(), timeout=DEADLINE_S) in NODES


def test_spread_uses_every_node(cluster):
    assert not [a for a in list_actors() if a["state"] == "ALIVE"], "earlier tests left actors behind"
    # SPREAD weighs the free resources nodes report in heartbeats: wait until the last tests' leases are back.
    wait_until(lambda: all(n["available"].get("CPU") == 2 for n in list_nodes() if n["alive"]), "idle nodes")
    actors = [Placed.options(scheduling_strategy="SPREAD").remote() for _ in range(3)]
    assert sorted(kastor.get([a.node.remote() for a in actors], timeout=DEADLINE_S)) == sorted(NODES)
    # Three tasks that can only finish together need three leases at once, and SPREAD asks the
    # nodes in turn: one lease each. (Tasks that finish on their own may all reuse the first
    # leases granted, however busy the machine is, so they would prove nothing.)
    barrier = Barrier.remote(len(NODES))
    before = lease_requests()
    tasks = [node_after_barrier.options(scheduling_strategy="SPREAD").remote(barrier) for _ in NODES]
    assert sorted(kastor.get(tasks, timeout=DEADLINE_S)) == sorted(NODES)
    # One lease asked for per task. A lease granted but whose stream was still opening once did not
    # count as asked for, so the tasks still queued asked again: each extra request took the next
    # SPREAD turn, and when the extra lease's stream opened first it took the task of the node whose
    # turn it was (tasks on n2, n2, n3).
    asked = {node: count - before[node] for node, count in lease_requests().items()}
    assert asked == dict.fromkeys(NODES, 1), f"lease requests per node for {len(NODES)} SPREAD tasks: {asked}"


def test_default_tasks_stay_on_the_drivers_node_while_it_has_room(cluster):
    wait_until(lambda: all(n["available"].get("CPU") == 2 for n in list_nodes() if n["alive"]), "idle nodes")
    assert {kastor.get(node_of_task.remote(), timeout=DEADLINE_S) for _ in range(6)} == {"n1"}


def test_a_busy_node_spills_tasks_to_nodes_with_room(cluster):
    """As in Ray: the driver's node grants what fits, and sends the rest to idle nodes instead of queueing."""
    wait_until(lambda: all(n["available"].get("CPU") == 2 for n in list_nodes() if n["alive"]), "idle nodes")
    before = lease_requests()
    nodes = kastor.get([slow_node_of_task.remote(3.0) for _ in range(6)], timeout=DEADLINE_S)
    asked = {node: count - before[node] for node, count in lease_requests().items()}
    assert len(set(nodes)) >= 2, f"6 tasks of 3s on a 2-CPU node, and all ran there: {nodes} (lease requests " \
        f"per node: {asked}; WorkerIdle per node since the start: {lease_requests('WorkerIdle')})"


def test_bad_strategies_are_named(cluster):
    with pytest.raises(ValueError, match="scheduling_strategy"):
        node_of_task.options(scheduling_strategy="EVERYWHERE")
    with pytest.raises(TypeError, match="node id"):
        Placed.options(scheduling_strategy=NodeAffinitySchedulingStrategy(None, soft=False))
    with pytest.raises(TypeError, match="PlacementGroup"):
        node_of_task.options(scheduling_strategy=PlacementGroupSchedulingStrategy(object()))


def lease_requests(method: str = "RequestLease") -> dict[str, int]:
    """Each node agent's count of `method` calls served (its Stats): RequestLease is called only
    by task owners, WorkerIdle by a worker done with its lease or an owner handing one back."""
    counts = {}
    for node in [n for n in kastor.nodes() if n["Alive"]]:
        with grpc.insecure_channel(node["Address"]) as channel:
            stats = pb_grpc.NodeAgentStub(channel).Stats(pb.Empty(), metadata=auth.metadata(context.core.token),
                                                         timeout=DEADLINE_S)
        counts[node["NodeID"]] = stats.rpcs_served.get(method, 0)
    return counts


def test_a_spread_task_whose_streams_are_refused_keeps_its_node_and_hands_each_lease_back(cluster):
    """A stream lost before its worker accepted it (here: a data-port token the workers refuse)
    ran nothing, so its task asks again; it asks the node it was given, not the next SPREAD
    turn, and the lease goes back to that node at once rather than when the node reclaims it."""
    wait_until(idle_nodes, "idle nodes")
    requests, idles = lease_requests(), lease_requests("WorkerIdle")
    submitter = asyncio.run(_spread_task_on_refused_streams(cluster.address, sum(requests.values()) + 4))
    asked = {node: count - requests[node] for node, count in lease_requests().items()}
    assert len([n for n, count in asked.items() if count]) == 1, f"lease requests per node: {asked}"
    assert submitter.handed_back >= 1
    wait_until(lambda: sum(lease_requests("WorkerIdle").values()) - sum(idles.values()) >= submitter.handed_back,
               "the handed-back leases to reach their node")
    wait_until(idle_nodes, "every lease back")


async def _spread_task_on_refused_streams(head: str, total_requests: int) -> TaskSubmitter:
    """One SPREAD task submitted by a TaskSubmitter of its own whose data-port token is wrong,
    until the nodes served `total_requests` lease requests; then it is cancelled and closed."""
    nodes = [n for n in kastor.nodes() if n["Alive"]]
    peers = Peers(ChannelCache(), auth.metadata(context.core.token), head_address=head,
                  node_address=nodes[0]["Address"], token="not-this-clusters-token", framed_calls=True)
    peers.address = context.core.address  # the owner the leases name: this driver, which is alive
    objects = ObjectTable(free_value=lambda value: None)
    owned = OwnedValues(objects, lambda object_id, value: None,
                        lambda ref, callback: objects.store.on_ready(ref.binary(), callback), objects.free_value)
    tasks = TaskSubmitter(peers, owned)
    task_id = new_task_id()
    objects.add_local_ref(return_id(task_id, 1))
    spec = pb.TaskSpec(task_id=task_id, name="refused", num_returns=1)
    tasks.submit(PendingCall(spec, [return_id(task_id, 1)], [], 0, key=("refused", (("CPU", 1.0),), b"", "", 0),
                             required={"CPU": 1.0}, placement=pb.Placement(spread=True)))
    await _until(lambda: sum(lease_requests().values()) >= total_requests, "the task's streams to be refused")
    tasks.cancel(task_id, force=False, recursive=False)
    await _until(lambda: task_id not in tasks.calls, "the cancelled task to finish")
    tasks.close()
    await _until(lambda: not sum(tasks.requesting.values()), "the lease requests to end after close()")
    await peers.close()
    return tasks


def idle_nodes() -> bool:
    """No live actor, and every node's CPUs free in the head's view (SPREAD weighs both)."""
    return not [a for a in list_actors() if a["state"] != "DEAD"] and \
        all(n["available"].get("CPU") == 2 for n in list_nodes() if n["alive"])


@pytest.mark.parametrize(("selector", "nodes"), [(None, NODES), ({"kastor.io/node-id": "in(n2,n3)"}, {"n2", "n3"})])
def test_spread_actors_created_at_once_land_on_distinct_nodes(cluster, selector, nodes):
    """Creations in flight together (one placement pass) count each other, as in Ray: every
    round of len(nodes) SPREAD actors created back to back covers every node it may use."""
    options = {"scheduling_strategy": "SPREAD", **({"label_selector": selector} if selector else {})}
    for round_ in range(5):
        wait_until(idle_nodes, "idle nodes, the last round's actors gone", DEADLINE_S)
        actors = [Placed.options(**options).remote() for _ in nodes]
        placed = sorted(kastor.get([a.node.remote() for a in actors], timeout=DEADLINE_S))
        for actor in actors:
            kastor.kill(actor)
        assert placed == sorted(nodes), f"round {round_}: SPREAD actors created at once shared a node: {placed}"
